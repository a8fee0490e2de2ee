/**
 * Runs nvidia-smi once (`execFile`, never a shell) and collects what it printed. Never
 * rejects: a missing executable, a timeout or an abort are fields of the result, so the
 * caller decides what each means.
 */
import { execFile } from "node:child_process";

export interface RunOnceOptions {
  timeoutMs: number;
  env?: NodeJS.ProcessEnv | undefined;
  signal?: AbortSignal | undefined;
  /** Bytes of stdout or stderr kept; more kills the child. */
  maxBuffer?: number;
}

export interface RunOnceResult {
  /** Exit code; null when killed by a signal or never started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  aborted: boolean;
  /** Why the executable could not be started (ENOENT, EACCES…), if it could not. */
  spawnError?: NodeJS.ErrnoException | undefined;
}

export function runOnce(path: string, args: readonly string[], opts: RunOnceOptions): Promise<RunOnceResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    execFile(
      path,
      args,
      {
        encoding: "utf8",
        timeout: opts.timeoutMs,
        killSignal: "SIGKILL",
        maxBuffer: opts.maxBuffer ?? 16 * 1024 * 1024,
        env: opts.env,
        signal: opts.signal,
        windowsHide: true,
      },
      (err, stdout, stderr) => {
        const result: RunOnceResult = { code: 0, signal: null, stdout, stderr, timedOut: false, aborted: false };
        if (err) {
          const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: NodeJS.Signals | null };
          result.code = typeof e.code === "number" ? e.code : null;
          result.signal = e.signal ?? null;
          if (e.name === "AbortError") result.aborted = true;
          else if (typeof e.code === "string" && e.code !== "ERR_CHILD_PROCESS_STDIO_MAXBUFFER") result.spawnError = e;
          else if (e.killed && Date.now() - started >= opts.timeoutMs) result.timedOut = true;
        }
        resolve(result);
      },
    );
  });
}

/** "exit code 2", "killed by SIGKILL", "timed out after 10 s": for log lines and errors. */
export function describeExit(r: RunOnceResult, timeoutMs: number): string {
  if (r.spawnError) return r.spawnError.message;
  if (r.timedOut) return `timed out after ${Math.round(timeoutMs / 100) / 10} s`;
  if (r.aborted) return "aborted";
  if (r.signal) return `killed by ${r.signal}`;
  return `exit code ${r.code}`;
}
