import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { LOCK_FILE, openStateDir } from "./state-dir.js";

const dirs: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-state-"));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe("openStateDir", () => {
  it("creates the directory (0700), locks it, and releases the lock", async () => {
    const dir = path.join(tempDir(), "a", "b");
    const state = await openStateDir(dir, silentLogger);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(state.bufferDir).toBe(path.join(dir, "buffer"));
    expect(fs.readFileSync(path.join(dir, LOCK_FILE), "utf8").trim()).toBe(String(process.pid));
    await state.release();
    await state.release();
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it("refuses a directory whose lock is held by a running agent, naming the fix", async () => {
    const dir = tempDir();
    // A live process whose command line names trueidle stands in for another agent.
    const other = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)", "trueidle", "agent"]);
    try {
      fs.writeFileSync(path.join(dir, LOCK_FILE), `${other.pid}\n`);
      await expect(openStateDir(dir, silentLogger)).rejects.toThrow(
        new RegExp(
          `Another agent \\(pid ${other.pid}\\) is using the state directory .*; give each agent its own --state-dir\\.`,
        ),
      );
    } finally {
      other.kill();
      await new Promise((r) => other.once("exit", r));
    }
  });

  it("takes over a lock whose pid now belongs to another program (a container restart reused it)", async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, LOCK_FILE), `${process.ppid}\n`);
    const state = await openStateDir(dir, silentLogger);
    expect(fs.readFileSync(path.join(dir, LOCK_FILE), "utf8").trim()).toBe(String(process.pid));
    await state.release();
  });

  it("takes over a lock left by a process that is gone", async () => {
    const dir = tempDir();
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
      encoding: "utf8",
    }).stdout;
    fs.writeFileSync(path.join(dir, LOCK_FILE), `${gone}\n`);
    const state = await openStateDir(dir, silentLogger);
    expect(fs.readFileSync(path.join(dir, LOCK_FILE), "utf8").trim()).toBe(String(process.pid));
    await state.release();
  });

  it("says what to do when the path cannot be a directory", async () => {
    const file = path.join(tempDir(), "file");
    fs.writeFileSync(file, "x");
    await expect(openStateDir(path.join(file, "sub"), silentLogger)).rejects.toThrow(
      /is not usable .*; create it and make it writable by the agent's user, or pass another --state-dir\./,
    );
  });
});
