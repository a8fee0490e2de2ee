/**
 * The processes of a fault-test fleet: a collector and an agent subprocess that can be
 * killed or stopped and started again on the same ports and directories, each keeping
 * what it printed and when it ran, for the accounting (fleet-accounting.ts).
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { loadScenario } from "../../agent/sim/scenario.js";
import { parseExposition, sumOf, type ExpositionSample } from "./exposition.js";
import { startTrueidle, type TrueidleProcess } from "./trueidle-process.js";

/** Agents sample every INTERVAL_MS into windows of WINDOW_MS, aligned to wall-clock seconds. */
export const INTERVAL_MS = 100;
export const WINDOW_MS = 1_000;
/** observed_s of a complete window, added up sample by sample as the agent does. */
export const FULL_WINDOW_S = Array.from({ length: WINDOW_MS / INTERVAL_MS }, () => INTERVAL_MS / 1000).reduce(
  (a, b) => a + b,
  0,
);

/** Resident memory of a process in bytes, from /proc/PID/status (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Waits for a line of `proc`'s output; fails at once, with its output, when it exits first. */
async function waitForLine(proc: TrueidleProcess, re: RegExp, what: string): Promise<void> {
  const exited = proc.exited.then((code) => {
    throw new Error(
      `${what} exited (${code ?? proc.child.signalCode}) before printing ${re}; output:\n${proc.output().slice(-4000)}`,
    );
  });
  exited.catch(() => undefined);
  await Promise.race([proc.waitForOutput(re, 60_000), exited]);
}

/** The JSON log records in a process's output; other lines are skipped. */
function logRecords(output: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of output.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // Not a log record.
    }
  }
  return out;
}

export interface CollectorSpec {
  /** Arguments added after the harness's own (e.g. --agent-tokens-file FILE). */
  args?: string[];
  /** Give the collector a disk spool (default true). */
  spool?: boolean;
  /** The loopback address and port its gRPC side listens on (default 127.0.0.1 and a free port). */
  grpcHost?: string;
  grpcPort?: number;
  env?: NodeJS.ProcessEnv;
}

/** A collector subprocess that keeps its ports and spool dir across restarts. */
export class CollectorNode {
  proc: TrueidleProcess | undefined;
  /** Processes started so far (1 after the first start). */
  starts = 0;
  private readonly earlier: TrueidleProcess[] = [];

  constructor(
    readonly name: string,
    readonly grpcPort: number,
    readonly httpPort: number,
    readonly spoolDir: string | undefined,
    private readonly argv: string[],
    private readonly env: NodeJS.ProcessEnv,
    readonly grpcHost = "127.0.0.1",
  ) {}

  /** "HOST:PORT" for agents. */
  get address(): string {
    return `${this.grpcHost}:${this.grpcPort}`;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.child.exitCode === null && this.proc.child.signalCode === null;
  }

  /** Starts the process and waits until it listens. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`collector ${this.name} is already running`);
    if (this.proc) this.earlier.push(this.proc);
    this.proc = startTrueidle(this.argv, this.env);
    this.starts++;
    await waitForLine(this.proc, /The collector is listening/, `collector ${this.name}`);
  }

  /** Kills the process (SIGKILL by default) and waits for it to exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    await this.proc?.stop(signal);
  }

  /** Stops with SIGTERM (drains), waits for the exit code. */
  async stop(): Promise<number | null | undefined> {
    return this.proc?.stop("SIGTERM", 30_000);
  }

  async metrics(): Promise<ExpositionSample[]> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
    if (res.status !== 200) throw new Error(`GET /metrics of collector ${this.name} answered ${res.status}`);
    return parseExposition(await res.text());
  }

  async metric(name: string, match: Record<string, string> = {}): Promise<number> {
    return sumOf(await this.metrics(), name, match);
  }

  rss(): number {
    if (!this.proc?.child.pid || !this.running) throw new Error(`collector ${this.name} is not running`);
    return rssBytes(this.proc.child.pid);
  }

  /** Output of every process started so far, for failure messages. */
  output(): string {
    return [...this.earlier, ...(this.proc ? [this.proc] : [])]
      .map((p, i) => `--- ${this.name} process ${i + 1}\n${p.output()}`)
      .join("\n");
  }
}

/** One process lifetime of an agent. */
export interface AgentRun {
  proc: TrueidleProcess;
  /** The agent's own timestamp of "The agent is sampling." (ticks come after it). */
  samplingAtMs?: number | undefined;
  /** When the harness signalled it to end, and how. */
  endedAtMs?: number | undefined;
  end?: "sigterm" | "sigkill" | undefined;
  /** Fields of its last "The agent stopped." line, after a SIGTERM. */
  final?: Record<string, unknown> | undefined;
  /** Windows it had finished when it was killed (read from its /metrics just before), with AgentSpec.httpListen. */
  measuredAtKill?: number | undefined;
}

export interface AgentSpec {
  /** Scenario file name in test/faults/scenarios, or an absolute path. Its host names the agent. */
  scenario: string;
  /** Collector addresses, tried in turn (one --collector a,b list). */
  collectors: string[];
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Serve the agent's own /metrics on a free port (--http-listen). */
  httpListen?: boolean;
}

/** An agent subprocess with the sim source and a state dir that survives restarts. */
export class AgentNode {
  readonly runs: AgentRun[] = [];
  readonly host: string;
  readonly uuids: readonly string[];

  constructor(
    readonly scenarioPath: string,
    readonly stateDir: string,
    private readonly argv: string[],
    private readonly env: NodeJS.ProcessEnv,
    /** Port of the agent's /metrics, with AgentSpec.httpListen. */
    readonly httpPort?: number,
  ) {
    const scenario = loadScenario(scenarioPath);
    if (!scenario.host) throw new Error(`scenario ${scenarioPath} names no host`);
    this.host = scenario.host;
    this.uuids = scenario.gpus.map((g) => g.uuid);
  }

  get current(): AgentRun | undefined {
    return this.runs[this.runs.length - 1];
  }

  get running(): boolean {
    const c = this.current?.proc.child;
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  }

  /** Starts a process and waits until it samples. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`agent ${this.host} is already running`);
    const run: AgentRun = { proc: startTrueidle(this.argv, this.env) };
    this.runs.push(run);
    await waitForLine(run.proc, /The agent is sampling\./, `agent ${this.host}`);
    const rec = logRecords(run.proc.output()).find((r) => r["msg"] === "The agent is sampling.");
    run.samplingAtMs = Date.parse(String(rec?.["ts"]));
    if (!Number.isFinite(run.samplingAtMs)) throw new Error(`agent ${this.host}: no timestamp on its sampling line`);
  }

  /**
   * SIGKILL: no flush, no drain. With its /metrics served (AgentSpec.httpListen), the kill
   * comes mid-window, right after reading trueidle_agent_windows_total: windows close only
   * on a window boundary, so that count is exactly what this run measured (measuredAtKill).
   */
  async kill(): Promise<void> {
    const run = this.current;
    if (!run || !this.running) throw new Error(`agent ${this.host} is not running`);
    if (this.httpPort !== undefined) {
      for (;;) {
        await sleep((1.5 * WINDOW_MS - (Date.now() % WINDOW_MS)) % WINDOW_MS);
        const measured = sumOf(await this.metrics(), "trueidle_agent_windows_total");
        // Still well before the next boundary (a slow answer means: try in the next window).
        if (Date.now() % WINDOW_MS < 0.85 * WINDOW_MS) {
          run.measuredAtKill = measured;
          break;
        }
      }
    }
    run.end = "sigkill";
    run.endedAtMs = Date.now();
    await run.proc.stop("SIGKILL");
  }

  /** SIGTERM: the agent flushes its partial windows and drains; returns its final log fields. */
  async stop(): Promise<Record<string, unknown>> {
    const run = this.current;
    if (!run || !this.running) throw new Error(`agent ${this.host} is not running`);
    run.end = "sigterm";
    run.endedAtMs = Date.now();
    const code = await run.proc.stop("SIGTERM", 60_000);
    const final = logRecords(run.proc.output())
      .reverse()
      .find((r) => r["msg"] === "The agent stopped.");
    if (code !== 0 || !final)
      throw new Error(
        `agent ${this.host} did not stop cleanly (exit ${code}); output:\n${run.proc.output().slice(-4000)}`,
      );
    run.final = final;
    return final;
  }

  /** The agent's own metrics (AgentSpec.httpListen). */
  async metrics(): Promise<ExpositionSample[]> {
    if (this.httpPort === undefined) throw new Error(`agent ${this.host} serves no metrics; start it with httpListen`);
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
    if (res.status !== 200) throw new Error(`GET /metrics of agent ${this.host} answered ${res.status}`);
    return parseExposition(await res.text());
  }

  output(): string {
    return this.runs.map((r, i) => `--- agent ${this.host} process ${i + 1}\n${r.proc.output()}`).join("\n");
  }
}
