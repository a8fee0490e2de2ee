/**
 * Rolls up hours the continuous query will not reach. `cq_gpu_hour` looks back two hours
 * at each run, so windows that arrive later than that — an agent catching up after an
 * outage, a collector that was down — would be in `gpu_window` but missing from
 * `gpu_hour`, and a long report would disagree with a short one. The collector notes the
 * hour of every window it wrote; hours the query may no longer cover are rolled up with
 * `rollup()` (the query's own SELECT) every `intervalMs`, and once more at stop.
 * A failed roll-up keeps its hours for the next turn.
 */
import { errorMessage } from "../../common/errors.js";
import { InfluxQueryClient } from "../../common/influx/client.js";
import { describeTarget, type InfluxTarget } from "../../common/influx/target.js";
import type { Logger } from "../../common/log.js";
import { HOUR_MS, rollup } from "./schema.js";

export interface LateRollupOptions {
  target: InfluxTarget;
  logger: Logger;
  /** How often pending hours are rolled up (default 10 min, the query's own period). */
  intervalMs?: number | undefined;
  now?: (() => number) | undefined;
}

/** The query runs every 10 minutes over the previous and the current hour. */
const CQ_EVERY_MS = 10 * 60_000;
/** Hours kept pending at most: windows are at most 7 days old (validation), 168 hours. */
const MAX_PENDING_HOURS = 24 * 8;

export class LateRollup {
  private readonly pending = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly now: () => number;
  private stopped = false;

  constructor(private readonly opts: LateRollupOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Hours waiting for a roll-up (starts, ms), oldest first. */
  pendingHours(): number[] {
    return [...this.pending].sort((a, b) => a - b);
  }

  /**
   * Notes windows just written. An hour counts as late when the query's next run may not
   * cover it: older than the hour before the one the next run (within 10 min) falls in.
   */
  note(startMs: number): void {
    const hour = Math.floor(startMs / HOUR_MS) * HOUR_MS;
    const covered = Math.floor((this.now() + CQ_EVERY_MS) / HOUR_MS) * HOUR_MS - HOUR_MS;
    if (hour >= covered || this.stopped) return;
    if (this.pending.size >= MAX_PENDING_HOURS && !this.pending.has(hour)) {
      this.pending.delete(Math.min(...this.pending));
    }
    this.pending.add(hour);
  }

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => void this.runNow(), this.opts.intervalMs ?? CQ_EVERY_MS);
    this.timer.unref();
  }

  /** Rolls every pending hour up now; resolves when done (a failure is logged, its hours stay). */
  runNow(signal?: AbortSignal): Promise<void> {
    this.running ??= this.run(signal).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Stops the timer after a last roll-up, given at most `timeoutMs` (default 3 s). Safe twice. */
  async stop(timeoutMs = 3_000): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.stopped) return;
    this.stopped = true;
    await this.running;
    await this.runNow(AbortSignal.timeout(timeoutMs));
  }

  private async run(signal: AbortSignal | undefined): Promise<void> {
    const hours = this.pendingHours();
    if (hours.length === 0) return;
    const client = new InfluxQueryClient({ target: this.opts.target, timeoutMs: 60_000 });
    // Contiguous hours go in one statement.
    const ranges: Array<[number, number]> = [];
    for (const h of hours) {
      const last = ranges[ranges.length - 1];
      if (last && last[1] === h) last[1] = h + HOUR_MS;
      else ranges.push([h, h + HOUR_MS]);
    }
    for (const [from, to] of ranges) {
      try {
        const points = await rollup(this.opts.target, from, to, { client, signal });
        for (let h = from; h < to; h += HOUR_MS) this.pending.delete(h);
        this.opts.logger.info(
          `Rolled up ${(to - from) / HOUR_MS} hour(s) of late windows into gpu_hour (${points.gpuHours} points) and gpu_owner_hour ` +
            `(${points.ownerHours} points), from ${new Date(from).toISOString()}.`,
          { target: describeTarget(this.opts.target) },
        );
      } catch (err) {
        this.opts.logger.warn(
          `Could not roll up late windows from ${new Date(from).toISOString()} into gpu_hour and gpu_owner_hour: ${errorMessage(err)}; trying again in the next turn.`,
          { target: describeTarget(this.opts.target) },
        );
      }
    }
  }
}
