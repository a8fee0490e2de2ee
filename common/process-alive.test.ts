import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { ownerMayBeRunning } from "./process-alive.js";

describe("ownerMayBeRunning", () => {
  it("is false for a pid that is gone and for a live process that is not trueidle", async () => {
    const child = spawn("sleep", ["30"]);
    try {
      // A live pid whose command line does not name trueidle: a reused pid, not an owner.
      expect(ownerMayBeRunning(child.pid!)).toBe(false);
    } finally {
      child.kill();
      await new Promise((r) => child.once("exit", r));
    }
    expect(ownerMayBeRunning(child.pid!)).toBe(false);
  });

  it("is true for a live process running the trueidle program, not for one that only has it in a path", async () => {
    const other = spawn(process.execPath, [
      "-e",
      "setTimeout(() => {}, 30000)",
      "/home/ops/trueidle/node_modules/.bin/vitest",
    ]);
    try {
      expect(ownerMayBeRunning(other.pid!)).toBe(false);
    } finally {
      other.kill();
      await new Promise((r) => other.once("exit", r));
    }
    const child = spawn(process.execPath, [
      "-e",
      "setTimeout(() => {}, 30000)",
      "/usr/local/lib/node_modules/trueidle/bin/trueidle.js",
      "agent",
    ]);
    try {
      expect(ownerMayBeRunning(child.pid!)).toBe(true);
    } finally {
      child.kill();
      await new Promise((r) => child.once("exit", r));
    }
  });
});
