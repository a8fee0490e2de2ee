/**
 * Keeps `fleet_hour` reaching back as far as `gpu_hour`. The continuous query rolls up only
 * the last hours; after an upgrade (history from before `fleet_hour` existed) or a change
 * of the fleet's group keys (which drops `fleet_hour`, schema.ts), the older hours are
 * rolled up here, in the background, with the query's own SELECT (`rollupStatement`).
 *
 * Newest hours first, a day per statement: what is done is always one stretch from some
 * hour up to now, so `fleet_hour`'s earliest point says how far it reaches, to this
 * process after a restart (it goes on from there) and to the report, which reads
 * `gpu_hour` for whatever lies before it. Every `checkEveryMs` it also makes the query
 * match the GPUs' tag keys again (`ensureFleetRollup`): a label key new to the fleet is
 * picked up within that time; and once done, it checks that `fleet_hour` still reaches
 * back (a change made by another collector, or by the roll-up of late windows, drops it
 * too) and rolls it up again when it does not.
 *
 * A failure is logged (at most once a minute) and tried again at the next check; it never
 * throws, and never holds up writes.
 */
import { errorMessage } from "../../common/errors.js";
import { InfluxQueryClient, firstPointMs } from "../../common/influx/client.js";
import { describeTarget, type InfluxTarget } from "../../common/influx/target.js";
import type { Logger } from "../../common/log.js";
import {
  DAY_MS,
  HOUR_MS,
  MEASUREMENT_FLEET_HOUR,
  MEASUREMENT_HOUR,
  RP_HOUR,
  ensureFleetRollup,
  qualified,
  rollupFleetRange,
} from "./schema.js";
import type { SchemaGate } from "./writer.js";

export interface FleetBackfillOptions {
  target: InfluxTarget;
  logger: Logger;
  /** Waited for before anything runs: the schema in place. */
  schema: Pick<SchemaGate, "ready">;
  /** How often the group keys are checked, and an unfinished back-fill resumed (default 60 s). */
  checkEveryMs?: number | undefined;
  /** Hours per statement (default 24). */
  chunkHours?: number | undefined;
  /** Per statement (default 5 min: a day of 10,000 GPUs takes about 10 s on 2 cores). */
  statementTimeoutMs?: number | undefined;
  now?: (() => number) | undefined;
}

/** Progress is logged at most this often. */
const LOG_EVERY_MS = 60_000;

/** Where the back-fill stands, for tests and logs. */
export interface FleetBackfillStatus {
  /** `fleet_hour` holds every hour from here on (ms); undefined before the first check. */
  reachesMs: number | undefined;
  /** The earliest `gpu_hour` point; the back-fill is done when `reachesMs` is at or before it. */
  goalMs: number | undefined;
  done: boolean;
  /** Fleet-hour statements run since start. */
  statements: number;
}

export class FleetBackfill {
  private readonly stopCtl = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly client: InfluxQueryClient;
  private readonly st: FleetBackfillStatus = { reachesMs: undefined, goalMs: undefined, done: false, statements: 0 };
  private lastFailureLogAt = -Infinity;
  /** After a change: the newest hours are rolled up again at the next check (see check()). */
  private redoNewest = false;
  private readonly checked: Array<() => void> = [];

  constructor(private readonly opts: FleetBackfillOptions) {
    this.now = opts.now ?? Date.now;
    this.client = new InfluxQueryClient({ target: opts.target, timeoutMs: opts.statementTimeoutMs ?? 300_000 });
  }

  status(): FleetBackfillStatus {
    return { ...this.st };
  }

  /** Resolves after the next check has run to its end (done, failed or stopped). */
  nextCheck(): Promise<void> {
    return new Promise((resolve) => this.checked.push(resolve));
  }

  start(): void {
    if (this.running || this.stopCtl.signal.aborted) return;
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.stopCtl.abort();
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private async loop(): Promise<void> {
    const signal = this.stopCtl.signal;
    try {
      await this.opts.schema.ready(signal);
    } catch {
      return;
    }
    while (!signal.aborted) {
      try {
        await this.check(signal);
      } catch (err) {
        if (signal.aborted) break;
        const t = this.now();
        if (t - this.lastFailureLogAt >= LOG_EVERY_MS) {
          this.lastFailureLogAt = t;
          this.opts.logger.warn(
            `Could not roll fleet_hour up from gpu_hour: ${errorMessage(err)}. Reports read gpu_hour where fleet_hour does not reach; trying again in the background.`,
            { target: describeTarget(this.opts.target) },
          );
        }
      }
      for (const f of this.checked.splice(0)) f();
      if (signal.aborted) break;
      await new Promise<void>((resolve) => {
        this.timer = setTimeout(resolve, this.opts.checkEveryMs ?? 60_000);
        this.timer.unref();
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    }
    for (const f of this.checked.splice(0)) f();
  }

  /** The time of the earliest point of `measurement` in the `gpu_hour` policy, or undefined. */
  private earliest(measurement: string, field: string, signal: AbortSignal): Promise<number | undefined> {
    return firstPointMs(
      this.client,
      qualified(this.opts.target.database, RP_HOUR, measurement),
      field,
      undefined,
      signal,
    );
  }

  private async check(signal: AbortSignal): Promise<void> {
    const log = this.opts.logger;
    const db = this.opts.target.database;
    let { rollup, change } = await ensureFleetRollup(this.client, db, signal);
    const top = Math.floor(this.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
    if (change) {
      log.info(`The fleet roll-up changed: ${change}.`, { target: describeTarget(this.opts.target) });
      this.st.done = false;
      this.st.reachesMs = undefined;
      this.st.goalMs = undefined;
      this.redoNewest = true;
    } else if (this.redoNewest) {
      // A continuous query run by the old keys may have landed after the drop: the hours it
      // covers are cleared and rolled up again, once, a check after the change.
      this.redoNewest = false;
      rollup = (await rollupFleetRange(this.client, db, top - 5 * HOUR_MS, top, rollup, { signal, clearFirst: true }))
        .rollup;
      this.st.statements++;
    }
    if (this.st.done) {
      // Done once does not mean done for good: another collector, or this one's roll-up of
      // late windows, may have changed the keys and dropped fleet_hour. A cheap look at its
      // earliest point says whether it still reaches back; gpu_hour's is asked again only
      // when it may not (retention moves both).
      const reach = await this.earliest(MEASUREMENT_FLEET_HOUR, "gpus", signal);
      if (this.st.goalMs !== undefined && reach !== undefined && reach <= this.st.goalMs) return;
      this.st.goalMs = await this.earliest(MEASUREMENT_HOUR, "observed_s", signal);
      if (this.st.goalMs === undefined || (reach !== undefined && reach <= this.st.goalMs)) return;
      log.info(
        `fleet_hour ${reach === undefined ? "is empty" : `reaches back only to ${new Date(reach).toISOString()}`} (dropped elsewhere, after a change of the fleet's keys): rolling it up again from gpu_hour.`,
        { target: describeTarget(this.opts.target) },
      );
      this.st.done = false;
      this.st.reachesMs = reach;
    }
    this.st.goalMs ??= await this.earliest(MEASUREMENT_HOUR, "observed_s", signal);
    const goal = this.st.goalMs;
    if (goal === undefined) {
      // No GPU-hour yet: the continuous query rolls up what comes.
      this.st.done = true;
      return;
    }
    // The stretch done so far: from fleet_hour's earliest point up to now. Nothing yet: from
    // the hour after the current one down (the query covers the newest hours too; the same
    // SELECT writes the same points).
    this.st.reachesMs ??= (await this.earliest(MEASUREMENT_FLEET_HOUR, "gpus", signal)) ?? top;
    const startedAt = this.now();
    const from = this.st.reachesMs;
    let lastLogAt = startedAt;
    const chunk = Math.max(1, Math.floor(this.opts.chunkHours ?? 24)) * HOUR_MS;
    if (from > goal)
      log.info(
        `Rolling fleet_hour up from gpu_hour, newest hours first: ${Math.ceil((from - goal) / DAY_MS)} days to go back to ${new Date(goal).toISOString()}. Reports read gpu_hour (slower) where fleet_hour does not reach yet.`,
        { target: describeTarget(this.opts.target) },
      );
    while (this.st.reachesMs > goal) {
      signal.throwIfAborted();
      // Another collector on the same database may be further back: go on from there.
      const theirs = await this.earliest(MEASUREMENT_FLEET_HOUR, "gpus", signal);
      if (theirs !== undefined && theirs < this.st.reachesMs) this.st.reachesMs = Math.max(goal, theirs);
      if (this.st.reachesMs <= goal) break;
      const end = this.st.reachesMs;
      const start = Math.max(goal, end - chunk);
      // The range should hold nothing yet: cleared first, so nothing by other keys stays in it.
      rollup = (await rollupFleetRange(this.client, db, start, end, rollup, { signal, clearFirst: true })).rollup;
      this.st.statements++;
      this.st.reachesMs = Math.floor(start / HOUR_MS) * HOUR_MS;
      const t = this.now();
      if (t - lastLogAt >= LOG_EVERY_MS && this.st.reachesMs > goal) {
        lastLogAt = t;
        const doneMs = from - this.st.reachesMs;
        const leftMs = this.st.reachesMs - goal;
        log.info(
          `fleet_hour reaches back to ${new Date(this.st.reachesMs).toISOString()}: ${Math.round((doneMs / (from - goal)) * 100)}% done, about ${Math.ceil((((t - startedAt) / doneMs) * leftMs) / 60_000)} min left.`,
          { target: describeTarget(this.opts.target) },
        );
      }
    }
    if (from > goal)
      log.info(
        `fleet_hour now reaches back to ${new Date(goal).toISOString()}, as gpu_hour does (${Math.round((this.now() - startedAt) / 1000)} s).`,
        { target: describeTarget(this.opts.target) },
      );
    this.st.done = true;
  }
}
