/**
 * One agent process of section (f): the agent's sampling loop over one GPU source, with
 * nothing else in the process. bench/gpu-sources.ts starts one per source, side by side,
 *
 *   node --import tsx bench/gpu-source-child.ts '<ChildConfig as JSON>'
 *
 * and reads one JSON line (ChildResult) from its stdout.
 *
 * The loop is the agent's tick (agent/agent.ts): `sample(now)`, `SamplePipeline.ingest`,
 * `drain`, every interval on the wall clock; shipping and the HTTP endpoint are left out.
 * Ticks fall half an interval after the grid the sources sample on, so each tick finds the
 * reading of the grid point before it rather than racing it. Measurement windows are
 * fixed in wall-clock time by the parent (`firstWindowAtMs`, then `windows` windows of
 * `ticksPerWindow` ticks back to back), so every process measures the same seconds. Before
 * them the process warms up: the source starts, code is optimised, and V8's memory reducer
 * has done its one-off collections about 8 s after start. In each window:
 *
 * * agent CPU: `process.cpuUsage()` (getrusage RUSAGE_SELF: user + system of every thread
 *   of this process, the NVML worker thread included; child processes excluded);
 * * child CPU: utime + stime from /proc of the fake nvidia-smi children alive at either
 *   edge, plus cutime + cstime of this process (children that exited and were reaped
 *   meanwhile), at /proc's 10 ms resolution;
 * * GPU readings the source received from its sampler, and readings with `error` at ticks,
 *   so a source that skips ticks cannot look cheap.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { DEFAULT_THRESHOLDS, type GpuProcess, type GpuReading } from "../common/types.js";
import { createLogger } from "../common/log.js";
import { SamplePipeline } from "../agent/pipeline.js";
import { readingsAt } from "../agent/sim/evaluate.js";
import { loadScenario } from "../agent/sim/scenario.js";
import type { GpuSource } from "../agent/sources/source.js";
import { NvmlSource } from "../agent/sources/nvml/nvml-source.js";
import { NvidiaSmiSource } from "../agent/sources/nvidia-smi/nvidia-smi-source.js";
import { LatestReadings } from "../agent/sources/nvidia-smi/latest-readings.js";
import { chooseQueryFields, parseHelpQueryGpu } from "../agent/sources/nvidia-smi/fields.js";
import { COMPUTE_APPS_FIELDS, parseComputeApps } from "../agent/sources/nvidia-smi/parse-compute-apps.js";
import { columnsFromFields, parseQueryGpuLine, type QueryColumn } from "../agent/sources/nvidia-smi/parse-query-gpu.js";
import type { SourceMode } from "./gpu-sources.js";

export interface ChildConfig {
  mode: SourceMode;
  intervalMs: number;
  processIntervalMs: number;
  /** Wall-clock ms of the first window's first tick (on the tick grid: a multiple of intervalMs plus half of it). */
  firstWindowAtMs: number;
  windows: number;
  ticksPerWindow: number;
  /** The fake nvidia-smi wrapper (nvidia-smi modes). */
  nvidiaSmi: string;
  /** A string in the command line of the fake's processes, to tell them from other children. */
  fakeMarker: string;
  /** The stub libnvidia-ml.so.1 (nvml); its table comes through the environment. */
  nvmlLib: string;
  /** The scenario file (no-source: the canned readings). */
  scenario: string;
}

export interface WindowResult {
  wallMs: number;
  agentCpuUs: number;
  /** CPU of the fake nvidia-smi's processes (a Node script, not a real nvidia-smi). */
  childCpuUs: number;
  /** Valid GPU readings the source received from its sampler. */
  readingsReceived: number;
  /** GPU readings with `error` (stale, unavailable) among those the ticks got. */
  errorReadingsAtTicks: number;
  /** Ticks that ran more than half an interval late. */
  lateTicks: number;
  /** spawn-per-tick: nvidia-smi runs started (the query each tick, the process list). */
  spawns: number;
  /** spawn-per-tick: ticks whose run did not start because the previous one was still going. */
  spawnsSkipped: number;
}

export interface ChildResult {
  mode: SourceMode;
  gpus: number;
  windows: WindowResult[];
  /** Warnings and errors the source logged during the whole run. */
  warnings: string[];
}

/** USER_HZ: the unit of /proc/<pid>/stat times on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_S = 100;

interface ProcTimes {
  ppid: number;
  /** utime + stime, µs. */
  selfUs: number;
  /** cutime + cstime (reaped children), µs. */
  childrenUs: number;
}

function procTimes(pid: number | "self"): ProcTimes | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Fields after the command name, which is in parentheses and may hold spaces.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const n = (i: number): number => Number(f[i - 3]);
  const us = (ticks: number): number => (ticks * 1e6) / CLOCK_TICKS_PER_S;
  return { ppid: n(4), selfUs: us(n(14) + n(15)), childrenUs: us(n(16) + n(17)) };
}

/** CPU µs of each live child of this process whose command line holds `marker`. */
function liveChildren(marker: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const t = procTimes(Number(name));
    if (!t || t.ppid !== process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").includes(marker)) out.set(Number(name), t.selfUs);
    } catch {
      // exited meanwhile: its time is in cutime
    }
  }
  return out;
}

/** Counts calls of a method without changing what it does. */
function countCalls<T extends object>(proto: T, method: keyof T & string, count: (args: unknown[]) => number): { n: number } {
  const counter = { n: 0 };
  const orig = proto[method] as unknown;
  if (typeof orig !== "function") throw new Error(`bench: ${method} is not a method any more; update bench/gpu-source-child.ts`);
  (proto as Record<string, unknown>)[method] = function (this: unknown, ...args: unknown[]): unknown {
    counter.n += count(args);
    return (orig as (...a: unknown[]) => unknown).apply(this, args);
  };
  return counter;
}

/**
 * The baseline: what node-nvidia-smi and Telegraf-style pollers do, one nvidia-smi run per
 * tick, here `--query-gpu` with the fields the nvidia-smi source would choose, parsed with
 * its parser. A run still going at the next tick makes that tick skip its run (counted).
 * The compute process list is read every process interval, as the nvidia-smi source does,
 * so both nvidia-smi rows hold the same information.
 */
class SpawnPerTick implements GpuSource {
  readonly name = "spawn-per-tick";
  private columns: QueryColumn[] = [];
  private fields: string[] = [];
  private readonly latest = new Map<string, GpuReading>();
  private processes: Map<string, GpuProcess[]> | undefined;
  private inFlight = false;
  private processTimer: NodeJS.Timeout | undefined;
  readonly counts = { readings: 0, spawns: 0, skipped: 0, parseErrors: 0 };

  constructor(private readonly path: string, private readonly processIntervalMs: number) {}

  async start(): Promise<void> {
    const help = await run(this.path, ["--help-query-gpu"]);
    this.fields = chooseQueryFields(parseHelpQueryGpu(help));
    this.columns = columnsFromFields(this.fields);
    await Promise.all([this.query(), this.readProcesses()]);
    if (this.latest.size === 0) throw new Error(`${this.path} gave no GPU readings`);
    const every = (): void => {
      this.processTimer = setTimeout(() => { void this.readProcesses().then(every); }, this.processIntervalMs);
      this.processTimer.unref();
    };
    every();
  }

  /** The tick's run: started unless the previous one is still going. */
  poll(): void {
    if (this.inFlight) {
      this.counts.skipped++;
      return;
    }
    void this.query();
  }

  sample(): GpuReading[] {
    const out: GpuReading[] = [];
    for (const r of this.latest.values()) {
      out.push({ ...r, processes: this.processes === undefined ? undefined : (this.processes.get(r.uuid) ?? []).map((p) => ({ ...p })) });
    }
    return out.sort((a, b) => a.index - b.index);
  }

  async stop(): Promise<void> {
    clearTimeout(this.processTimer);
  }

  stats(): { restarts: number; parseErrors: number } {
    return { restarts: 0, parseErrors: this.counts.parseErrors };
  }

  private async query(): Promise<void> {
    this.inFlight = true;
    this.counts.spawns++;
    try {
      const out = await run(this.path, [`--query-gpu=${this.fields.join(",")}`, "--format=csv,noheader,nounits"]);
      for (const line of out.split("\n")) {
        const parsed = parseQueryGpuLine(this.columns, line);
        if (parsed.kind === "reading") {
          this.latest.set(parsed.reading.uuid, parsed.reading);
          this.counts.readings++;
        } else if (parsed.kind === "invalid") {
          this.counts.parseErrors++;
        }
      }
    } finally {
      this.inFlight = false;
    }
  }

  private async readProcesses(): Promise<void> {
    this.counts.spawns++;
    const out = await run(this.path, [`--query-compute-apps=${COMPUTE_APPS_FIELDS.join(",")}`, "--format=csv,noheader,nounits"]);
    this.processes = parseComputeApps(out, columnsFromFields(COMPUTE_APPS_FIELDS)).byUuid;
  }
}

function run(path: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(path, args, { encoding: "utf8", timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
}

/** The ticks' readings without a source: the floor of the loop itself (timers, pipeline, an idle Node). */
class NoSource implements GpuSource {
  readonly name = "no-source";
  private readonly readings: GpuReading[][];
  private k = 0;
  constructor(scenarioPath: string, cfg: ChildConfig) {
    const scenario = loadScenario(scenarioPath);
    const t0 = Date.now();
    const ticks = Math.ceil((cfg.firstWindowAtMs - t0) / cfg.intervalMs) + cfg.windows * cfg.ticksPerWindow + 2;
    this.readings = Array.from({ length: ticks }, (_, i) => readingsAt(scenario, t0 + i * cfg.intervalMs));
  }
  async start(): Promise<void> {}
  sample(): GpuReading[] {
    const r = this.readings[Math.min(this.k++, this.readings.length - 1)] as GpuReading[];
    return r.map((x) => ({ ...x, processes: x.processes?.map((p) => ({ ...p })) }));
  }
  async stop(): Promise<void> {}
  stats(): { restarts: number; parseErrors: number } {
    return { restarts: 0, parseErrors: 0 };
  }
}


/** What is counted at a window edge. */
interface Edge {
  cpuEnd: NodeJS.CpuUsage;
  cpuStart: NodeJS.CpuUsage;
  at: number;
  reapedUs: number;
  live: Map<number, number>;
  readings: number;
  spawns: number;
  skipped: number;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "") as ChildConfig;
  const warnings: string[] = [];
  const logger = createLogger({ level: "warn", write: (line) => void warnings.push(line.trim()) });

  // Readings received, counted where each source takes them in.
  let readingsReceived = (): number => 0;
  let spawnCounts = (): { spawns: number; skipped: number } => ({ spawns: 0, skipped: 0 });
  let poll = (): void => {};
  let source: GpuSource;
  switch (cfg.mode) {
    case "nvml": {
      const nvml = new NvmlSource({ libPath: cfg.nvmlLib, intervalMs: cfg.intervalMs, processIntervalMs: cfg.processIntervalMs, logger });
      // sample() hands out the worker's reading objects as they arrived: a new object is a new reading.
      const seen = new WeakSet<GpuReading>();
      let fresh = 0;
      const sample = nvml.sample.bind(nvml);
      nvml.sample = (now: number): GpuReading[] => {
        const rs = sample(now);
        for (const r of rs) {
          if (r.error === undefined && !seen.has(r)) {
            seen.add(r);
            fresh++;
          }
        }
        return rs;
      };
      readingsReceived = () => fresh;
      source = nvml;
      break;
    }
    case "nvidia-smi-loop": {
      const lines = countCalls(LatestReadings.prototype, "record", (args) => ((args[0] as GpuReading).error === undefined ? 1 : 0));
      readingsReceived = () => lines.n;
      source = new NvidiaSmiSource({ path: cfg.nvidiaSmi, intervalMs: cfg.intervalMs, processIntervalMs: cfg.processIntervalMs, logger });
      break;
    }
    case "spawn-per-tick": {
      const s = new SpawnPerTick(cfg.nvidiaSmi, cfg.processIntervalMs);
      readingsReceived = () => s.counts.readings;
      spawnCounts = () => ({ spawns: s.counts.spawns, skipped: s.counts.skipped });
      poll = () => s.poll();
      source = s;
      break;
    }
    case "no-source": {
      const s = new NoSource(cfg.scenario, cfg);
      let n = 0;
      const sample = s.sample.bind(s);
      s.sample = () => {
        const rs = sample();
        n += rs.length;
        return rs;
      };
      readingsReceived = () => n;
      source = s;
      break;
    }
  }
  await source.start();
  if (Date.now() > cfg.firstWindowAtMs - cfg.intervalMs) {
    throw new Error(`the ${cfg.mode} source took until ${Date.now() - cfg.firstWindowAtMs} ms past the first window to start; give it more warm-up`);
  }

  const pipeline = new SamplePipeline({ windowMs: 60_000, intervalMs: cfg.intervalMs, thresholds: DEFAULT_THRESHOLDS });
  const iv = cfg.intervalMs;
  const edges: Edge[] = [];
  const perWindow = Array.from({ length: cfg.windows }, () => ({ errors: 0, late: 0 }));
  let gpus = 0;
  const edge = (): Edge => {
    // The /proc reads fall between the end of one window's CPU reading and the start of the next one's.
    const cpuEnd = process.cpuUsage();
    const at = performance.now();
    const { spawns, skipped } = spawnCounts();
    const readings = readingsReceived();
    const live = liveChildren(cfg.fakeMarker);
    const reapedUs = procTimes("self")?.childrenUs ?? 0;
    return { cpuEnd, at, readings, spawns, skipped, live, reapedUs, cpuStart: process.cpuUsage() };
  };

  await new Promise<void>((resolve) => {
    const endAt = cfg.firstWindowAtMs + cfg.windows * cfg.ticksPerWindow * iv;
    const schedule = (): void => {
      const now = Date.now();
      let next = Math.floor(now / iv) * iv + iv / 2;
      if (next <= now) next += iv;
      setTimeout(() => tick(next), next - now);
    };
    const tick = (tickMs: number): void => {
      const k = Math.round((tickMs - cfg.firstWindowAtMs) / iv);
      if (k >= 0 && k % cfg.ticksPerWindow === 0 && tickMs <= endAt) edges.push(edge());
      if (tickMs >= endAt) {
        resolve();
        return;
      }
      const readings = source.sample(tickMs);
      const w = k >= 0 ? perWindow[Math.floor(k / cfg.ticksPerWindow)] : undefined;
      if (w) {
        gpus = Math.max(gpus, readings.length);
        for (const r of readings) if (r.error !== undefined) w.errors++;
        if (Date.now() - tickMs > iv / 2) w.late++;
      }
      if (readings.length > 0) pipeline.ingest(tickMs, readings);
      pipeline.drain();
      poll();
      schedule();
    };
    schedule();
  });
  await source.stop();

  if (edges.length !== cfg.windows + 1) throw new Error(`the ${cfg.mode} process missed a window edge (${edges.length} of ${cfg.windows + 1})`);
  const windows: WindowResult[] = perWindow.map((w, i) => {
    const s = edges[i] as Edge, e = edges[i + 1] as Edge;
    let liveUs = 0;
    for (const [pid, us] of e.live) liveUs += us - (s.live.get(pid) ?? 0);
    return {
      wallMs: e.at - s.at,
      agentCpuUs: e.cpuEnd.user - s.cpuStart.user + (e.cpuEnd.system - s.cpuStart.system),
      childCpuUs: liveUs + (e.reapedUs - s.reapedUs),
      readingsReceived: e.readings - s.readings,
      errorReadingsAtTicks: w.errors,
      lateTicks: w.late,
      spawns: e.spawns - s.spawns,
      spawnsSkipped: e.skipped - s.skipped,
    };
  });
  const result: ChildResult = { mode: cfg.mode, gpus, windows, warnings };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
