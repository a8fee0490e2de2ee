/**
 * Runs test/swarm/agent-swarm.mjs — many in-process agents, each with its own connection —
 * as a subprocess and reads the JSON totals it prints. The swarm loads dist/: build first.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { REPO_ROOT } from "./trueidle-process.js";

export const AGENT_SWARM_SCRIPT = path.join(REPO_ROOT, "test", "swarm", "agent-swarm.mjs");

/** One line of the swarm's totals. */
export interface SwarmStats {
  t: string;
  agents: number;
  started: number;
  connected: number;
  /** Agents with an ack within the last two window lengths. */
  acking: number;
  /** Windows the agents measured. */
  windows: number;
  acked: number;
  buffered: number;
  dropped: number;
  rejected: number;
  reconnects: number;
  rss_bytes: number;
  final?: boolean;
}

export interface SwarmOptions {
  collector: string;
  agents: number;
  /** Host names are PREFIX-000, PREFIX-001, … */
  prefix: string;
  gpus?: number;
  interval?: string;
  window?: string;
  statsEvery?: string;
  tokenFile?: string;
}

export class SwarmProcess {
  readonly child: ChildProcess;
  /** The latest totals line; undefined before the first. */
  last: SwarmStats | undefined;
  private err = "";
  private readonly exited: Promise<number | null>;
  private waiters: Array<() => void> = [];

  constructor(readonly opts: SwarmOptions) {
    const args = [
      AGENT_SWARM_SCRIPT,
      "--collector",
      opts.collector,
      "--agents",
      String(opts.agents),
      "--prefix",
      opts.prefix,
      "--gpus",
      String(opts.gpus ?? 2),
      "--interval",
      opts.interval ?? "500ms",
      "--window",
      opts.window ?? "5s",
      "--stats-every",
      opts.statsEvery ?? "1s",
      ...(opts.tokenFile ? ["--token-file", opts.tokenFile] : []),
    ];
    this.child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let buf = "";
    this.child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const line of lines) {
        try {
          this.last = JSON.parse(line) as SwarmStats;
        } catch {}
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      this.err = (this.err + d).slice(-20_000);
    });
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code) => {
        resolve(code);
        for (const w of this.waiters.splice(0)) w();
      }),
    );
  }

  /** The swarm's stderr (agents log errors only), for failure messages. */
  stderr(): string {
    return this.err;
  }

  /** Resolves with the first totals line for which `ok` holds; rejects on exit or after `timeoutMs`. */
  waitFor(what: string, ok: (s: SwarmStats) => boolean, timeoutMs = 120_000): Promise<SwarmStats> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `swarm ${this.opts.prefix}: ${what} did not happen within ${timeoutMs} ms; last ${JSON.stringify(this.last)}; stderr:\n${this.err.slice(-3000)}`,
            ),
          ),
        timeoutMs,
      );
      const check = (): void => {
        if (this.last && ok(this.last)) {
          clearTimeout(timer);
          resolve(this.last);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          clearTimeout(timer);
          reject(
            new Error(
              `swarm ${this.opts.prefix} exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}; stderr:\n${this.err.slice(-3000)}`,
            ),
          );
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  /** SIGTERM: every agent drains; resolves with the final totals. */
  async stop(timeoutMs = 90_000): Promise<SwarmStats> {
    const kill = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    this.child.kill("SIGTERM");
    const code = await this.exited;
    clearTimeout(kill);
    if (code !== 0 || !this.last?.final) {
      throw new Error(
        `swarm ${this.opts.prefix} did not stop cleanly (exit ${code}); last ${JSON.stringify(this.last)}; stderr:\n${this.err.slice(-3000)}`,
      );
    }
    return this.last;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}
