/** Runs the real `trueidle` binary as a subprocess, keeping its output for failure messages. */
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const TRUEIDLE_BIN = path.join(REPO_ROOT, "bin", "trueidle.js");

export interface TrueidleProcess {
  child: ChildProcess;
  /** Everything printed so far, stdout and stderr interleaved. */
  output(): string;
  /** Resolves when a printed line matches. */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal and waits for the exit code (SIGKILL after `graceMs`). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

export interface StartOptions {
  /**
   * Start it as a terminal starts a command: leader of a process group of its own, so that
   * `process.kill(-child.pid, "SIGINT")` is Ctrl-C (the signal reaches every process of
   * the group that has not left it).
   */
  ownProcessGroup?: boolean;
}

export function startTrueidle(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  options: StartOptions = {},
): TrueidleProcess {
  const child = spawn(process.execPath, [TRUEIDLE_BIN, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: options.ownProcessGroup === true,
  });
  let out = "";
  const waiters: Array<() => void> = [];
  const onData = (b: Buffer): void => {
    out += b.toString("utf8");
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
    for (const w of waiters.splice(0)) w();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    exited,
    output: () => out,
    waitForOutput: (re, timeoutMs = 30_000) =>
      new Promise<string>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no output matching ${re} within ${timeoutMs} ms; output:\n${out.slice(-4000)}`)),
          timeoutMs,
        );
        const check = (): void => {
          const m = re.exec(out);
          if (m) {
            clearTimeout(timer);
            resolve(m[0]);
          } else if (child.exitCode !== null) {
            clearTimeout(timer);
            reject(new Error(`process exited (${child.exitCode}) before printing ${re}; output:\n${out.slice(-4000)}`));
          } else {
            waiters.push(check);
          }
        };
        check();
      }),
    stop: async (signal = "SIGTERM", graceMs = 10_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Runs the binary to completion. */
export async function runTrueidle(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 60_000,
): Promise<{ code: number | null; output: string }> {
  const p = startTrueidle(args, env);
  const timer = setTimeout(() => p.child.kill("SIGKILL"), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, output: p.output() };
}
