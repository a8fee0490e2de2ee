/**
 * vitest globalSetup: compiles the sources into dist/ once before any test runs, so tests
 * that execute `bin/trueidle.js` (which loads dist/) always run the current code.
 *
 * tsc exit 2 means type errors but every file emitted: dist/ is current, so the run goes on
 * with the errors printed (`npm test` fails on them in its own typecheck step). Any other
 * failure (exit 1: nothing emitted, a bad tsconfig, npm missing) fails the whole run.
 *
 * `scripts/test.sh` builds just before starting vitest and sets TRUEIDLE_TEST_BUILT=1 so
 * the same build is not run twice.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** tsc: "diagnostics present, outputs generated". */
const TSC_EMITTED_WITH_ERRORS = 2;

export default async function setup(): Promise<void> {
  if (process.env["TRUEIDLE_TEST_BUILT"] === "1") return;
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    child.on("error", reject);
    child.on("close", (c) => resolve({ code: c, output }));
  });
  if (code === 0) return;
  if (code === TSC_EMITTED_WITH_ERRORS) {
    process.stderr.write(
      `\nWARNING: \`npm run build\` reported type errors; dist/ was still emitted from the current sources:\n${output}\n`,
    );
    return;
  }
  throw new Error(`\`npm run build\` failed (exit ${code}); tests would run stale dist/ code:\n${output}`);
}
