/**
 * Agent CPU per GPU-sample: nvidia-smi loop-mode output → lines → parse → latest reading
 * per GPU → classify → aggregate into windows, as NvidiaSmiSource and the agent's tick do,
 * without the child process and the timers.
 *
 * Baseline, in the same rounds: a bare `line.split(", ")` of the same lines, the least any
 * parser of this output must do.
 */
import { DEFAULT_THRESHOLDS, GPU_STATES, type GpuProcess, type GpuReading, type GpuState } from "../common/types.js";
import { SamplePipeline } from "../agent/pipeline.js";
import { readingsAt } from "../agent/sim/evaluate.js";
import {
  chooseQueryFields,
  IDLE_REASON_FIELD,
  MEDIA_FIELDS,
  REQUIRED_FIELDS,
} from "../agent/sources/nvidia-smi/fields.js";
import { LineBuffer } from "../agent/sources/nvidia-smi/line-buffer.js";
import {
  busIdKey,
  columnsFromFields,
  parseQueryGpuLine,
  type QueryColumn,
} from "../agent/sources/nvidia-smi/parse-query-gpu.js";
import { rounds, sink, spread, timed, type Spread } from "./harness.js";
import { queryGpuLine } from "./query-gpu-lines.js";
import { GPUS_PER_HOST, hostScenario } from "./sim-hosts.js";

export interface AgentBenchOptions {
  /** Sampling ticks per round; each gives one line per GPU. */
  ticks: number;
  warmup: number;
  rounds: number;
}

export interface AgentBenchResult {
  fields: string[];
  gpusPerTick: number;
  samplesPerRound: number;
  meanLineChars: number;
  errorLinesPerRound: number;
  windowsPerRound: number;
  /** Share of observed GPU-seconds per state in the windows of one round (realism check). */
  stateShare: Record<GpuState, number>;
  /** CPU µs per GPU-sample, whole path (lines → windows). */
  fullUsPerSample: Spread;
  /** CPU µs per line for `parseQueryGpuLine` alone. */
  parseUsPerLine: Spread;
  /** CPU µs per line for the baseline `line.split(", ")`. */
  splitUsPerLine: Spread;
  /** Whole path ÷ split, paired per round. */
  ratioToSplit: Spread;
  /** Whole path wall µs per sample, for reference (CPU time is the figure). */
  fullWallUsPerSample: Spread;
}

const INTERVAL_MS = 1_000;
const WINDOW_MS = 60_000;
/** NvidiaSmiSource reads the compute process list this often, not every tick. */
const PROCESS_INTERVAL_MS = 5_000;
/** The split baseline is too quick to time once; its loop runs this many times a round. */
const SPLIT_PASSES = 10;
/** 2026-01-01T00:00:00Z: a fixed, window-aligned start, so every run sees the same data. */
const START_MS = Date.UTC(2026, 0, 1);

/**
 * The field list NvidiaSmiSource asks a current driver for: `chooseQueryFields` over what
 * that driver's `--help-query-gpu` lists (the captured 590-series help gives this set).
 */
export function currentDriverFields(): string[] {
  return chooseQueryFields(
    new Set<string>([...REQUIRED_FIELDS, "enforced.power.limit", IDLE_REASON_FIELD, ...MEDIA_FIELDS]),
  );
}

/**
 * The source's per-GPU state, as NvidiaSmiSource keeps it: the latest reading by uuid,
 * error lines matched to their GPU by bus id, and `sample()` copying the process list in.
 */
class LatestReadings {
  private readonly gpus = new Map<string, { reading: GpuReading; error?: string | undefined }>();
  private readonly uuidByBus = new Map<string, string>();

  record(reading: GpuReading): void {
    const key = reading.busId !== undefined ? busIdKey(reading.busId) : undefined;
    if (key !== undefined) this.uuidByBus.set(key, reading.uuid);
    this.gpus.set(reading.uuid, { reading });
  }

  recordError(busId: string, message: string): void {
    const uuid = this.uuidByBus.get(busIdKey(busId) ?? busId);
    const entry = uuid === undefined ? undefined : this.gpus.get(uuid);
    if (entry) entry.error = message;
  }

  sample(procs: ReadonlyMap<string, GpuProcess[]>): GpuReading[] {
    const out: GpuReading[] = [];
    for (const e of this.gpus.values()) {
      const r = e.reading;
      if (e.error !== undefined) {
        out.push({
          uuid: r.uuid,
          index: r.index,
          model: r.model,
          busId: r.busId,
          driverVersion: r.driverVersion,
          error: e.error,
        });
      } else {
        out.push({ ...r, processes: (procs.get(r.uuid) ?? []).map((p) => ({ ...p })) });
      }
    }
    return out.sort((a, b) => a.index - b.index);
  }
}

interface Prepared {
  fields: string[];
  columns: QueryColumn[];
  /** One stdout chunk per tick: every GPU's line. */
  chunks: string[];
  /** The process list in force at each tick. */
  procs: ReadonlyMap<string, GpuProcess[]>[];
  lines: string[];
  errorLines: number;
}

function prepare(ticks: number): Prepared {
  const scenario = hostScenario(0, "bench-agent");
  const fields = currentDriverFields();
  const chunks: string[] = [];
  const procs: ReadonlyMap<string, GpuProcess[]>[] = [];
  const lines: string[] = [];
  let current = new Map<string, GpuProcess[]>();
  let errorLines = 0;
  for (let k = 0; k < ticks; k++) {
    const t = START_MS + k * INTERVAL_MS;
    const readings = readingsAt(scenario, t);
    if ((k * INTERVAL_MS) % PROCESS_INTERVAL_MS === 0) {
      current = new Map(readings.filter((r) => r.error === undefined).map((r) => [r.uuid, r.processes ?? []]));
    }
    procs.push(current);
    const tickLines = readings.map((r) => queryGpuLine(fields, r, t));
    for (const r of readings) if (r.error !== undefined) errorLines++;
    lines.push(...tickLines);
    chunks.push(`${tickLines.join("\n")}\n`);
  }
  return { fields, columns: columnsFromFields(fields), chunks, procs, lines, errorLines };
}

interface FullRun {
  windows: number;
  stateS: Record<GpuState, number>;
}

function runFull(p: Prepared): FullRun {
  const pipeline = new SamplePipeline({ windowMs: WINDOW_MS, intervalMs: INTERVAL_MS, thresholds: DEFAULT_THRESHOLDS });
  const latest = new LatestReadings();
  const out = new LineBuffer();
  let windows = 0;
  const stateS: Record<GpuState, number> = { unavailable: 0, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 0 };
  const account = (done: ReturnType<SamplePipeline["drain"]>): void => {
    windows += done.length;
    for (const w of done) for (const s of GPU_STATES) stateS[s] += w.stateS[s];
  };
  for (let k = 0; k < p.chunks.length; k++) {
    for (const line of out.push(p.chunks[k] as string)) {
      const parsed = parseQueryGpuLine(p.columns, line);
      if (parsed.kind === "reading") latest.record(parsed.reading);
      else if (parsed.kind === "gpu_error") latest.recordError(parsed.busId, parsed.message);
      else throw new Error(`the bench printed a line the parser refused (${parsed.kind}): ${line}`);
    }
    pipeline.ingest(START_MS + k * INTERVAL_MS, latest.sample(p.procs[k] as ReadonlyMap<string, GpuProcess[]>));
    account(pipeline.drain());
  }
  account(pipeline.flushAll());
  return { windows, stateS };
}

function runParse(p: Prepared): void {
  let n = 0;
  for (const line of p.lines) if (parseQueryGpuLine(p.columns, line).kind === "reading") n++;
  sink.value += n;
}

function runSplit(p: Prepared): void {
  let n = 0;
  for (let pass = 0; pass < SPLIT_PASSES; pass++) for (const line of p.lines) n += line.split(", ").length;
  sink.value += n;
}

export function runAgentBench(opts: AgentBenchOptions): AgentBenchResult {
  const p = prepare(opts.ticks);
  const samples = p.lines.length;
  let last: FullRun | undefined;
  const measured = rounds(opts.warmup, opts.rounds, (r) => {
    const full = (): { wallMs: number; cpuUs: number } =>
      timed(() => {
        last = runFull(p);
      });
    const parse = (): { cpuUs: number } => timed(() => runParse(p));
    const split = (): { cpuUs: number } => timed(() => runSplit(p));
    // Alternate the order, so neither side always runs on a warmer or cooler machine.
    if (r % 2 === 0) {
      const s = split(),
        q = parse(),
        f = full();
      return { f, q, s };
    }
    const f = full(),
      q = parse(),
      s = split();
    return { f, q, s };
  });
  if (!last) throw new Error("no agent round ran");
  const fullUs = measured.map((m) => m.f.cpuUs / samples);
  const splitUs = measured.map((m) => m.s.cpuUs / (samples * SPLIT_PASSES));
  const observed = GPU_STATES.reduce((a, s) => a + (last as FullRun).stateS[s], 0);
  return {
    fields: p.fields,
    gpusPerTick: GPUS_PER_HOST,
    samplesPerRound: samples,
    meanLineChars: Math.round(p.lines.reduce((a, l) => a + l.length, 0) / samples),
    errorLinesPerRound: p.errorLines,
    windowsPerRound: last.windows,
    stateShare: Object.fromEntries(
      GPU_STATES.map((s) => [s, round3((last as FullRun).stateS[s] / observed)]),
    ) as Record<GpuState, number>,
    fullUsPerSample: spread(fullUs),
    parseUsPerLine: spread(measured.map((m) => m.q.cpuUs / samples)),
    splitUsPerLine: spread(splitUs),
    ratioToSplit: spread(fullUs.map((f, i) => f / (splitUs[i] as number))),
    fullWallUsPerSample: spread(measured.map((m) => (m.f.wallMs * 1000) / samples)),
  };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
