import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "agent/**/*.test.ts",
      "collector/**/*.test.ts",
      "common/**/*.test.ts",
      "cli/**/*.test.ts",
      "demo/**/*.test.ts",
      "report/**/*.test.ts",
      "test/**/*.test.ts",
    ],
    // Compiles dist/ once, so subprocess tests of bin/trueidle.js run the current code.
    globalSetup: ["test/helpers/build.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    fileParallelism: true,
    maxWorkers: 2,
  },
});
