/**
 * `trueidle demo --backfill 30d`: simulated fleet history written into InfluxDB so that
 * `trueidle report` has months to show without waiting months.
 *
 * The windows come from the agent's own aggregator (`SamplePipeline`, one per host as one
 * agent per host) driven by a simulated clock: `ingest(t, readings)` for t stepping by the
 * interval over the range, readings from `FleetHistoryModel`. They are encoded by the
 * collector's line encoder into `gpu_window`, and each day is rolled up into `gpu_hour`
 * with the continuous query's own SELECT (`rollup`). So the history is what agents and a
 * collector would have written, only sampled more coarsely:
 *
 * - Sampling every 60 s into 5-minute windows (the live defaults are 1 s and 10 s). A
 *   window means the same either way — seconds per state over the window, each sample
 *   standing for one interval, timestamp = window start — and the report sums seconds, so
 *   only the resolution differs. 30 days of the 64-GPU demo fleet are 553k windows,
 *   generated, written and rolled up in about 25 s on two cores; at 10 s windows they
 *   would be 30 times as many.
 * - The range ends at the last window boundary before now (or at `endMs`) and starts
 *   `durationMs` earlier. Readings depend only on (seed, GPU, time), so backfilling the same
 *   range again writes the same points, and overlapping ranges agree where they overlap.
 * - InfluxDB drops points older than their retention policy's duration. When the range
 *   reaches further back than the configured raw retention (30 days), `gpu_window` is
 *   given a duration that covers it (and `gpu_hour` likewise); the demo's own collector
 *   keeps that duration. A collector started later with the defaults sets 30 days back,
 *   and InfluxDB then ages the old windows out, leaving the hours: what a long-running
 *   collector would have left.
 * - Days are generated at most DAYS_AHEAD ahead of what InfluxDB has taken (memory stays
 *   bounded for two years); each day is handed to the writer whole, and rolled up once
 *   written, while the next days are generated.
 */
import { SamplePipeline } from "../agent/pipeline.js";
import { DEFAULT_THRESHOLDS, type Thresholds } from "../common/types.js";
import { TrueidleError } from "../common/errors.js";
import { formatDuration } from "../common/duration.js";
import { silentLogger, type Logger } from "../common/log.js";
import { DAY_MS, HOUR_MS, DEFAULT_HOUR_RETENTION_MS, DEFAULT_RAW_RETENTION_MS } from "../collector/influx/schema.js";
import { FleetHistoryModel, HISTORY_FLEET, type HistoryHost } from "./fleet-history.js";
import { DEMO_SETTINGS } from "./settings.js";
import { ensureHistorySchema, hostLines, rollupHours, WindowWriter, type InfluxTarget } from "./history-sink.js";

export const BACKFILL_INTERVAL_MS = 60_000;
export const BACKFILL_WINDOW_MS = 300_000;
/** The longest backfill: two years, gpu_hour's default retention. */
export const MAX_BACKFILL_MS = 730 * DAY_MS;
/** Days generated ahead of the one being written and rolled up. */
const DAYS_AHEAD = 2;
/** Kept between the oldest backfilled point and a retention policy's edge while the backfill runs (two years take minutes). */
const RETENTION_MARGIN_MS = HOUR_MS;

export interface BackfillOptions {
  target: InfluxTarget;
  /** How far back from the end, at most MAX_BACKFILL_MS. */
  durationMs: number;
  /** End of the range, exclusive (default: now); rounded down to a window boundary. */
  endMs?: number | undefined;
  intervalMs?: number | undefined;
  windowMs?: number | undefined;
  hosts?: readonly HistoryHost[] | undefined;
  seed?: number | undefined;
  thresholds?: Thresholds | undefined;
  /** The configured retention; widened when the range needs it (see above). */
  rawRetentionMs?: number | undefined;
  hourRetentionMs?: number | undefined;
  /** For the writer's warnings (failed requests being retried). */
  logger?: Logger | undefined;
  /** Progress lines, e.g. "backfill: day 12/30, 1.2M points" (the CLI prints them on stderr). */
  progress?: ((line: string) => void) | undefined;
  signal?: AbortSignal | undefined;
  now?: (() => number) | undefined;
}

export interface BackfillResult {
  hosts: number;
  gpus: number;
  fromMs: number;
  toMs: number;
  /** Points written to gpu_window, one per GPU window. */
  windows: number;
  /** Points written to gpu_hour by the roll-up, one per GPU-hour. */
  hourPoints: number;
  elapsedMs: number;
  /** What ensureSchema changed, one sentence each. */
  schemaChanges: string[];
  /** The retention the backfill set (the configured one, or wider to cover the range). */
  rawRetentionMs: number;
  hourRetentionMs: number;
}

/** Checks the options a person gives; every problem at once. */
export function backfillProblems(o: Pick<BackfillOptions, "durationMs" | "intervalMs" | "windowMs">): string[] {
  const problems: string[] = [];
  const interval = o.intervalMs ?? BACKFILL_INTERVAL_MS;
  const window = o.windowMs ?? BACKFILL_WINDOW_MS;
  if (!(o.durationMs >= window))
    problems.push(
      `the backfill (${formatDuration(o.durationMs)}) must be at least one window (${formatDuration(window)})`,
    );
  if (o.durationMs > MAX_BACKFILL_MS)
    problems.push(`the backfill (${formatDuration(o.durationMs)}) may be at most ${formatDuration(MAX_BACKFILL_MS)}`);
  if (!(interval > 0) || !(window >= interval) || window % interval !== 0) {
    problems.push(
      `the backfill window (${formatDuration(window)}) must be a whole multiple of its interval (${formatDuration(interval)})`,
    );
  }
  if (HOUR_MS % window !== 0)
    problems.push(
      `the backfill window (${formatDuration(window)}) must divide an hour, so hours roll up from whole windows`,
    );
  return problems;
}

export async function runBackfill(opts: BackfillOptions): Promise<BackfillResult> {
  const problems = backfillProblems(opts);
  if (problems.length > 0) throw new TrueidleError("bad_config", `bad backfill: ${problems.join("; ")}`);
  const now = opts.now ?? Date.now;
  const started = now();
  const intervalMs = opts.intervalMs ?? BACKFILL_INTERVAL_MS;
  const windowMs = opts.windowMs ?? BACKFILL_WINDOW_MS;
  const toMs = Math.floor((opts.endMs ?? started) / windowMs) * windowMs;
  const fromMs = Math.floor((toMs - opts.durationMs) / windowMs) * windowMs;
  const hosts = opts.hosts ?? HISTORY_FLEET;
  const model = new FleetHistoryModel(hosts, opts.seed ?? DEMO_SETTINGS.seed.default);
  const thresholds = opts.thresholds ?? DEFAULT_THRESHOLDS;
  const progress = opts.progress ?? (() => {});
  const signal = opts.signal;

  // InfluxDB drops writes older than a policy's duration: make both cover the range.
  const reach = started - fromMs + RETENTION_MARGIN_MS;
  const rawRetentionMs = Math.max(opts.rawRetentionMs ?? DEFAULT_RAW_RETENTION_MS, roundUpDays(reach));
  const hourRetentionMs = Math.max(opts.hourRetentionMs ?? DEFAULT_HOUR_RETENTION_MS, roundUpDays(reach));
  const schemaChanges = await ensureHistorySchema(opts.target, { rawRetentionMs, hourRetentionMs }, signal);
  for (const c of schemaChanges) progress(`backfill: ${c}.`);
  if (rawRetentionMs > (opts.rawRetentionMs ?? DEFAULT_RAW_RETENTION_MS)) {
    progress(
      `backfill: gpu_window keeps ${formatDuration(rawRetentionMs)} so that InfluxDB takes windows that old; a collector ` +
        `started with the default settings sets ${formatDuration(opts.rawRetentionMs ?? DEFAULT_RAW_RETENTION_MS)} back, and InfluxDB then ages the older windows out (gpu_hour keeps their hours).`,
    );
  }

  const pipelines = hosts.map(() => new SamplePipeline({ windowMs, intervalMs, thresholds }));
  const encode = hosts.map((h) => hostLines(h.hostname, h.labels));
  const totalGpus = model.gpuCount;
  // A window and at most one owner line (each simulated GPU has one owner at a time).
  const linesPerDay = 2 * totalGpus * Math.ceil(DAY_MS / windowMs);
  const writer = new WindowWriter(opts.target, {
    logger: opts.logger ?? silentLogger,
    maxQueuedLines: (DAYS_AHEAD + 1) * linesPerDay,
  });

  // Days start on the hour, so no hour is rolled up from two days (the first day may be short).
  const firstHour = Math.floor(fromMs / HOUR_MS) * HOUR_MS;
  const chunks = Math.ceil((toMs - firstHour) / DAY_MS);
  const totalDays = Math.ceil((toMs - fromMs) / DAY_MS);
  let windowCount = 0;
  let hourPoints = 0;
  let failure: unknown;
  // Each day's windows go to the writer at once; generation runs at most DAYS_AHEAD days
  // ahead of what InfluxDB has taken. Roll-ups follow one day after another, each once its
  // day is written, without holding generation up (InfluxDB is the slower side).
  let chain: Promise<void> = Promise.resolve();
  const waiting: Array<Promise<void>> = [];
  try {
    for (let c = 0; c < chunks; c++) {
      const cs = Math.max(fromMs, firstHour + c * DAY_MS);
      const ce = Math.min(toMs, firstHour + (c + 1) * DAY_MS);
      for (let t = cs; t < ce; t += intervalMs) {
        for (let h = 0; h < hosts.length; h++) pipelines[h]!.ingest(t, model.readings(h, t));
      }
      const lines: string[] = [];
      for (let h = 0; h < hosts.length; h++) {
        const p = pipelines[h]!;
        // Windows that end with the day; the next day's first sample would close them too.
        p.closeUntil(ce);
        const enc = encode[h]!;
        for (const w of p.drain()) {
          enc(w, lines);
          windowCount++;
        }
      }
      const written = writer.write(lines, signal);
      // Seen through the chain; this keeps a failure from also surfacing as unhandled.
      written.catch(() => {});
      chain = chain
        .then(() => written)
        .then(async () => {
          hourPoints += await rollupHours(opts.target, cs, ce, signal);
        });
      chain.catch((err: unknown) => {
        failure ??= err;
      });
      waiting.push(written);
      if (waiting.length > DAYS_AHEAD) await waiting.shift();
      signal?.throwIfAborted();
      if (failure !== undefined) throw failure;
      // One line per simulated day, after the last stretch that belongs to it.
      const day = Math.ceil((ce - fromMs) / DAY_MS);
      const nextEnd = Math.min(toMs, firstHour + (c + 2) * DAY_MS);
      if (c === chunks - 1 || Math.ceil((nextEnd - fromMs) / DAY_MS) > day) {
        progress(`backfill: day ${day}/${totalDays}, ${totalGpus} GPUs, ${compact(windowCount)} windows`);
      }
    }
    await chain;
  } catch (err) {
    // Let what is in flight settle before the caller stops InfluxDB: the writer first (it
    // gives up on what it cannot write within its stop timeout), then the roll-ups.
    await writer.stop();
    await Promise.allSettled([chain]);
    throw err;
  }
  await writer.stop();
  // Every line was written (the writer stops at the first refusal, which throws above).
  const windows = windowCount;
  return {
    hosts: hosts.length,
    gpus: totalGpus,
    fromMs,
    toMs,
    windows,
    hourPoints,
    elapsedMs: now() - started,
    schemaChanges,
    rawRetentionMs,
    hourRetentionMs,
  };
}

function roundUpDays(ms: number): number {
  return Math.ceil(ms / DAY_MS) * DAY_MS;
}

/** 1234 → "1,234"; 1234567 → "1.2M". */
export function compact(n: number): string {
  if (n >= 1_000_000) return `${(n / 1_000_000).toFixed(1)}M`;
  return n.toLocaleString("en-US");
}

/** The summary line the CLI prints after a backfill. */
export function backfillSummary(r: BackfillResult): string {
  const days = (r.toMs - r.fromMs) / DAY_MS;
  const span = Number.isInteger(days) ? `${days} day${days === 1 ? "" : "s"}` : formatDuration(r.toMs - r.fromMs);
  return (
    `Backfilled ${span} of ${r.gpus} GPUs on ${r.hosts} hosts (${new Date(r.fromMs).toISOString()} to ${new Date(r.toMs).toISOString()}): ` +
    `${r.windows.toLocaleString("en-US")} windows into gpu_window, ${r.hourPoints.toLocaleString("en-US")} GPU-hours into gpu_hour, ` +
    `in ${(r.elapsedMs / 1000).toFixed(1)} s.`
  );
}
