/**
 * Where the backfill puts its windows: the one module between the demo and InfluxDB, and
 * nothing in it is the backfill's own. Everything comes from `collector/influx/`, the
 * code the collector writes with — the database, retention policies and continuous queries
 * (`ensureSchema`), the lines for a window and its owners (`HostLineEncoder`), the batched writer with its
 * retry table (`InfluxWriter`) and the roll-up (`rollup`, the continuous query's SELECT
 * over an explicit range) — so backfilled history is the history a collector would have
 * written.
 *
 * The backfill's settings: large requests (10,000 lines, up to 8 MiB), the tail of each
 * day sent at once, and a stop at the first point InfluxDB refuses for good (counting and
 * going on would leave a history with holes nobody asked for). An InfluxDB that is away
 * or failing is retried with backoff, as the collector does, until it answers or Ctrl-C.
 */
import { TrueidleError } from "../common/errors.js";
import { OWNER_LABELS } from "../common/owner-fields.js";
import type { Logger } from "../common/log.js";
import type { GpuWindowRecord } from "../agent/window.js";
import { windowToProto } from "../agent/shipper/to-proto.js";
import { HostLineEncoder } from "../collector/influx/line-protocol.js";
import { ensureSchema, rollup, type RetentionConfig } from "../collector/influx/schema.js";
import { describeTarget, type InfluxTarget } from "../common/influx/target.js";
import { InfluxWriter } from "../collector/influx/writer.js";

export type { InfluxTarget } from "../common/influx/target.js";

/*
 * Statements are not abandoned once sent: each is short, and the signal is checked before
 * each one instead.
 */

/** Creates or corrects the database, retention policies and continuous query; returns what changed. */
export async function ensureHistorySchema(
  target: InfluxTarget,
  retention: RetentionConfig,
  signal?: AbortSignal,
): Promise<string[]> {
  signal?.throwIfAborted();
  return ensureSchema(target, retention);
}

/**
 * Turns one host's window records into lines, exactly as a collector with the default
 * `--owner-labels` encodes them: a `gpu_window` line per window, then a `gpu_owner_window`
 * line per owner of it, appended to `out`.
 */
export function hostLines(
  host: string,
  labels: Readonly<Record<string, string>>,
): (w: GpuWindowRecord, out: string[]) => void {
  const enc = new HostLineEncoder(host, labels, OWNER_LABELS);
  return (w, out) => {
    const pb = windowToProto(w);
    out.push(enc.line(pb));
    enc.ownerLines(pb, out);
  };
}

export interface WindowWriterOptions {
  logger: Logger;
  /** Lines queued at most (default 400,000); a write that does not fit is refused, so callers bound what they submit. */
  maxQueuedLines?: number | undefined;
}

/** Writes `gpu_window` lines through the collector's batched writer; stops at the first refusal. */
export class WindowWriter {
  private readonly writer: InfluxWriter;

  constructor(
    private readonly target: InfluxTarget,
    opts: WindowWriterOptions,
  ) {
    this.writer = new InfluxWriter({
      target,
      batchSize: 10_000,
      batchBytes: 8 * 1024 * 1024,
      flushIntervalMs: 20,
      maxQueuedPoints: opts.maxQueuedLines ?? 400_000,
      maxInFlight: 2,
      // Large bodies to a busy two-core server: give each request time.
      requestTimeoutMs: 120_000,
      logger: opts.logger,
    });
  }

  /** Resolves once InfluxDB holds every line; throws when it refuses any, or when `signal` aborts. */
  async write(lines: readonly string[], signal?: AbortSignal): Promise<void> {
    const submitted = this.writer.submit(lines, signal);
    // Send the tail now rather than after the flush interval: the writer's timers are
    // unref'd (right for a collector), and a one-shot backfill waiting on one would let the
    // process exit with its work unfinished.
    void this.writer.flush();
    const o = await submitted;
    if (o.status === "done" && o.rejected === 0) return;
    signal?.throwIfAborted();
    const why =
      o.status === "done"
        ? `refused ${o.rejected} of ${lines.length} points (the log above says why)`
        : o.status.replace("_", " ");
    throw new TrueidleError(
      "unavailable",
      `InfluxDB at ${describeTarget(this.target)} did not take the backfill's windows: ${why}`,
    );
  }

  /** Points InfluxDB has taken. */
  get pointsWritten(): number {
    return this.writer.stats().pointsWritten;
  }

  /** Flushes what is queued and stops; safe twice. */
  stop(): Promise<void> {
    return this.writer.stop();
  }
}

/** Rolls `[fromMs, toMs)` (widened to whole hours) up into `gpu_hour` and `gpu_owner_hour`; returns the GPU-hour points written. */
export async function rollupHours(
  target: InfluxTarget,
  fromMs: number,
  toMs: number,
  signal?: AbortSignal,
): Promise<number> {
  signal?.throwIfAborted();
  return (await rollup(target, fromMs, toMs)).gpuHours;
}
