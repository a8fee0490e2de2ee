/**
 * The collector's disk spool: a batch is acknowledged once it is durable — in InfluxDB, or
 * appended (fsynced) to the spool while InfluxDB is away or slow.
 *
 * Two modes:
 * - *direct* while the spool is empty: a batch goes to the InfluxDB writer and is
 *   acknowledged when written. If it is not written within `spoolAfterMs`, or the write
 *   queue is full, every batch waiting for the writer is withdrawn from it and appended to
 *   the spool instead (a line already in a request may be written as well: points are
 *   idempotent), and the sink switches to spooling.
 * - *spooling* while the spool holds anything: new batches are appended behind it (group
 *   commit in the segment log), and a SpoolDrainer writes the spool to InfluxDB from its
 *   head, in order; once it catches up the sink is direct again.
 *
 * Overflow policy: the spool holds at most `maxBytes`; a batch that does not fit answers
 * `full` with a jittered retry delay, and the agent, pushed back with RESOURCE_EXHAUSTED,
 * keeps its windows. Nothing is dropped.
 *
 * If the spool cannot be written (a disk error), that is logged as an ERROR once and the
 * sink falls back to what a collector without a spool does — acks wait for InfluxDB — so
 * nothing is acknowledged that is not durable. A spool left non-empty by an earlier run is
 * drained first, from start(), once InfluxDB and its schema are ready (the writer waits for
 * them).
 *
 * When the stop begins, batches waiting for the writer are moved to the spool at once and
 * acknowledged; then the drainer stops and the spool is kept for the next start.
 */
import { TrueidleError, errorMessage } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { SegmentLog } from "../../common/segment-log.js";
import { formatSize } from "../../common/size.js";
import {
  noteWritten,
  windowsIn,
  type DurableSink,
  type SinkOutcome,
  type SinkSummary,
  type WriterPort,
} from "./durable-sink.js";
import { SpoolDrainer } from "./spool-drainer.js";
import { SpoolLock } from "./spool-lock.js";
import { encodeRecord, type SpoolStore } from "./spool-record.js";
import { WaitForInfluxSink } from "./wait-for-influx-sink.js";
import { COLLECTOR_SPOOL_SETTINGS } from "../settings.js";

export const DEFAULT_SPOOL_MAX_BYTES: number = COLLECTOR_SPOOL_SETTINGS.maxBytes.default;
export const DEFAULT_SPOOL_AFTER_MS: number = COLLECTOR_SPOOL_SETTINGS.spoolAfterMs.default;
/** Agents pushed back by a full spool return after 10–30 s, spread so they do not all return at once. */
const FULL_RETRY_MIN_MS = 10_000;
const FULL_RETRY_SPREAD_MS = 20_000;
const LOG_EVERY_MS = 30_000;
/**
 * A spool episode is logged at WARN (and its end at INFO) at most this often; those between
 * go to debug and are counted in the next WARN. At scale InfluxDB falls behind for a few
 * seconds now and then, and each time is an episode.
 */
const EPISODE_LOG_EVERY_MS = 10 * 60_000;

/** The collector's gauges the spool keeps current (SelfMetrics has both). */
export interface SpoolCounters {
  spoolBytes: number;
  spooledWindows: number;
}

export interface SpoolingSinkOptions {
  /** Spool directory; created (mode 0700) when missing, locked while in use. */
  dir: string;
  writer: WriterPort;
  logger: Logger;
  counters: SpoolCounters;
  /** Bytes the spool holds at most (default 1 GiB). */
  maxBytes?: number | undefined;
  /** A batch not written within this long goes to the spool (default 1.5 s). */
  spoolAfterMs?: number | undefined;
  /** Told the start of every window InfluxDB took (late hours get rolled up). */
  written?: ((startMs: number) => void) | undefined;
  /** Grace at stop for batches waiting on InfluxDB after the spool failed (default 10 s). */
  stopGraceMs?: number | undefined;
  /** Payload bytes per drained chunk (default 2 MiB). */
  chunkBytes?: number | undefined;
  random?: (() => number) | undefined;
  now?: (() => number) | undefined;
  /** Opens the store in the locked directory; tests pass one that fails. Default: SegmentLog. */
  openStore?: ((dir: string, maxBytes: number, logger: Logger) => Promise<SpoolStore>) | undefined;
}

interface DirectEntry {
  lines: readonly string[];
  /** The stream's signal. */
  signal: AbortSignal;
  /** Withdraws this batch from the writer. */
  ctl: AbortController;
  timer: NodeJS.Timeout | undefined;
  moved: boolean;
  outcome: Promise<SinkOutcome>;
  resolve: (o: SinkOutcome) => void;
}

export class SpoolingSink implements DurableSink {
  private mode: "direct" | "spooling" = "direct";
  private broken = false;
  private closed = false;
  private readonly pending = new Set<DirectEntry>();
  private readonly appending = new Set<Promise<unknown>>();
  private appendsDone = 0;
  private drainer: SpoolDrainer | undefined;
  private draining: Promise<void> = Promise.resolve();
  private episode = {
    since: 0,
    reason: "",
    windows: 0,
    bytes: 0,
    drainedWindows: 0,
    drainedBytes: 0,
    logged: true,
  };
  private lastEpisodeLogAt = -Infinity;
  private episodesNotLogged = 0;
  private readonly totals = { written: 0, spooled: 0, drained: 0 };
  private lastFullLogAt = -Infinity;
  private started = false;
  private stopBegun: Promise<void> | undefined;
  private stopping: Promise<SinkSummary> | undefined;
  private readonly fallback: WaitForInfluxSink;
  private readonly spoolAfterMs: number;
  private readonly now: () => number;

  private constructor(
    private readonly opts: SpoolingSinkOptions,
    private readonly lock: SpoolLock,
    private readonly store: SpoolStore,
    readonly maxBytes: number,
  ) {
    this.spoolAfterMs = opts.spoolAfterMs ?? DEFAULT_SPOOL_AFTER_MS;
    this.now = opts.now ?? Date.now;
    this.fallback = new WaitForInfluxSink({
      writer: opts.writer,
      logger: opts.logger,
      written: opts.written,
      graceMs: opts.stopGraceMs,
    });
  }

  /**
   * Locks and opens the spool; start() then drains what an earlier run left, and stop()
   * releases both. Throws a TrueidleError naming the fix.
   */
  static async open(opts: SpoolingSinkOptions): Promise<SpoolingSink> {
    const maxBytes = opts.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES;
    const lock = await SpoolLock.acquire(opts.dir, opts.logger);
    let store: SpoolStore;
    try {
      store = opts.openStore
        ? await opts.openStore(lock.dir, maxBytes, opts.logger)
        : await SegmentLog.open({ dir: lock.dir, maxBytes, logger: opts.logger });
    } catch (err) {
      await lock.release();
      if (err instanceof TrueidleError) throw err;
      throw new TrueidleError("unavailable", `cannot open the spool in ${lock.dir}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const sink = new SpoolingSink(opts, lock, store, maxBytes);
    sink.resume();
    return sink;
  }

  /** Starts writing what an earlier run left in the spool to InfluxDB. Safe twice; nothing after a stop began. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    if (this.mode === "spooling" && !this.drainer) this.startDrainer();
  }

  get dir(): string {
    return this.lock.dir;
  }

  submit(lines: readonly string[], signal: AbortSignal): Promise<SinkOutcome> {
    if (this.closed) return Promise.resolve({ status: "stopped" });
    if (signal.aborted) return Promise.resolve({ status: "withdrawn" });
    if (lines.length === 0) return Promise.resolve({ status: "written" });
    if (this.broken) return this.fallback.submit(lines, signal);
    if (this.mode === "spooling") return this.append(lines, signal);
    return this.direct(lines, signal);
  }

  beginStop(): Promise<void> {
    this.stopBegun ??= (async () => {
      this.closed = true;
      const entries = [...this.pending];
      if (entries.length > 0 && !this.broken) {
        const windows = entries.reduce((n, e) => n + windowsIn(e.lines), 0);
        this.moveToSpool("the collector is shutting down");
        this.opts.logger.info(
          `Moved ${entries.length} batches (${windows} windows) still waiting for InfluxDB to the spool at shutdown; ` +
            "their agents are acknowledged and the windows are written at the next start.",
          { dir: this.dir, batches: entries.length, windows },
        );
      }
      while (this.appending.size > 0) await Promise.allSettled([...this.appending]);
      await Promise.all([this.fallback.beginStop(), this.settleStuck()]);
    })();
    return this.stopBegun;
  }

  stop(): Promise<SinkSummary> {
    this.stopping ??= (async () => {
      await this.beginStop();
      await this.drainer?.stop();
      await this.draining;
      const left = this.store.stats().bytes;
      try {
        await this.store.close();
      } catch (err) {
        // Only the read position may be stale: the next start writes some windows again.
        this.opts.logger.warn(
          `Could not close the spool at ${this.dir} cleanly (${errorMessage(err)}); the next start may write some of its windows again.`,
        );
      }
      await this.lock.release();
      this.opts.counters.spoolBytes = left;
      return {
        windowsWritten: this.totals.written + this.fallback.written,
        windowsSpooled: this.totals.spooled,
        windowsDrained: this.totals.drained,
        spoolBytesLeft: left,
      };
    })();
    return this.stopping;
  }

  /** Takes up a spool an earlier run left: batches go behind it from the first; start() drains it. */
  private resume(): void {
    const bytes = this.store.stats().bytes;
    this.opts.counters.spoolBytes = bytes;
    if (bytes === 0) return;
    this.mode = "spooling";
    this.episode = {
      since: this.now(),
      reason: "left by an earlier run",
      windows: 0,
      bytes: 0,
      drainedWindows: 0,
      drainedBytes: 0,
      logged: true,
    };
    this.opts.logger.info(
      `The spool at ${this.dir} holds ${bytes} bytes of windows from an earlier run; they are written to InfluxDB first, in order, ` +
        "once it is reachable, and new windows are spooled behind them until then.",
      { dir: this.dir, spoolBytes: bytes },
    );
  }

  private direct(lines: readonly string[], signal: AbortSignal): Promise<SinkOutcome> {
    let resolve!: (o: SinkOutcome) => void;
    const outcome = new Promise<SinkOutcome>((r) => (resolve = r));
    const entry: DirectEntry = {
      lines,
      signal,
      ctl: new AbortController(),
      timer: undefined,
      moved: false,
      outcome,
      resolve,
    };
    const onEnd = (): void => {
      if (!entry.moved) entry.ctl.abort();
    };
    signal.addEventListener("abort", onEnd, { once: true });
    entry.timer = setTimeout(
      () => this.moveToSpool(`a write to InfluxDB was not done within ${this.spoolAfterMs} ms`),
      this.spoolAfterMs,
    );
    entry.timer.unref();
    this.pending.add(entry);
    void this.opts.writer.submit(lines, entry.ctl.signal).then((o) => {
      signal.removeEventListener("abort", onEnd);
      clearTimeout(entry.timer);
      // Moved to the spool: moveToSpool settles it; a write that won the race is harmless.
      if (entry.moved) return;
      if (o.status === "queue_full" && !this.broken) return this.moveToSpool("the InfluxDB write queue is full");
      this.pending.delete(entry);
      if (o.status === "done") {
        this.totals.written += windowsIn(lines);
        noteWritten(lines, this.opts.written);
        resolve({ status: "written" });
      } else if (o.status === "queue_full") {
        resolve({ status: "busy" });
      } else {
        resolve({ status: o.status === "withdrawn" && signal.aborted ? "withdrawn" : "stopped" });
      }
    });
    return outcome;
  }

  /** Withdraws every batch waiting for the writer and appends it to the spool, in order. */
  private moveToSpool(reason: string): void {
    if (this.broken || this.pending.size === 0) return;
    const entries = [...this.pending];
    this.pending.clear();
    this.enterSpooling(reason);
    for (const e of entries) {
      e.moved = true;
      clearTimeout(e.timer);
      e.ctl.abort();
      void this.append(e.lines, e.signal).then(e.resolve);
    }
  }

  private async append(lines: readonly string[], signal: AbortSignal): Promise<SinkOutcome> {
    const payload = encodeRecord(lines);
    const appended = this.store.append([payload]);
    this.appending.add(appended);
    let full: boolean;
    try {
      full = (await appended).full;
    } catch (err) {
      this.appending.delete(appended);
      this.spoolFailed(err);
      return this.fallback.submit(lines, signal);
    }
    // In the same turn as the delete, so the drainer never sees the append neither pending nor done.
    this.appending.delete(appended);
    if (full) return this.full();
    this.appendsDone++;
    const windows = windowsIn(lines);
    this.totals.spooled += windows;
    this.episode.windows += windows;
    this.episode.bytes += payload.length;
    this.opts.counters.spooledWindows += windows;
    this.opts.counters.spoolBytes = this.store.stats().bytes;
    return { status: "spooled" };
  }

  private full(): SinkOutcome {
    const random = this.opts.random ?? Math.random;
    const retryAfterMs = Math.round(FULL_RETRY_MIN_MS + random() * FULL_RETRY_SPREAD_MS);
    const now = this.now();
    if (now - this.lastFullLogAt >= LOG_EVERY_MS) {
      this.lastFullLogAt = now;
      this.opts.logger.warn(
        `The spool at ${this.dir} is full (${this.store.stats().bytes} bytes of ${formatSize(this.maxBytes)}) while InfluxDB catches up; ` +
          "agents are pushed back with RESOURCE_EXHAUSTED for 10 to 30 s and keep their windows. Further pushbacks are logged at most every 30 s.",
        { dir: this.dir, spoolBytes: this.store.stats().bytes, maxBytes: this.maxBytes },
      );
    }
    return { status: "full", retryAfterMs };
  }

  private enterSpooling(reason: string): void {
    if (this.mode === "spooling") return;
    this.mode = "spooling";
    const now = this.now();
    const loud = !this.closed && now - this.lastEpisodeLogAt >= EPISODE_LOG_EVERY_MS;
    this.episode = { since: now, reason, windows: 0, bytes: 0, drainedWindows: 0, drainedBytes: 0, logged: loud };
    if (this.closed) return;
    const message =
      `InfluxDB is slow or away (${reason}): agents are now acknowledged once their windows are in the spool at ${this.dir}, ` +
      "which is written to InfluxDB in order as soon as it takes them.";
    const fields = { dir: this.dir, reason, maxBytes: this.maxBytes };
    if (loud) {
      const more = this.episodesNotLogged;
      this.lastEpisodeLogAt = now;
      this.episodesNotLogged = 0;
      this.opts.logger.warn(
        more > 0
          ? `${message} ${more} shorter spells of spooling since the last such line (logged at most every 10 minutes).`
          : message,
        { ...fields, ...(more > 0 ? { unlogged_episodes: more } : {}) },
      );
    } else {
      this.episodesNotLogged++;
      this.opts.logger.debug(message, fields);
    }
    this.startDrainer();
  }

  private startDrainer(): void {
    const drainer = new SpoolDrainer({
      store: this.store,
      writer: this.opts.writer,
      logger: this.opts.logger,
      chunkBytes: this.opts.chunkBytes,
      drained: (lines, bytes) => {
        const windows = windowsIn(lines);
        this.totals.drained += windows;
        this.episode.drainedWindows += windows;
        this.episode.drainedBytes += bytes;
        this.opts.counters.spoolBytes = this.store.stats().bytes;
        noteWritten(lines, this.opts.written);
      },
      appendMark: () => this.appendsDone,
      caughtUp: (mark) => this.caughtUp(mark),
    });
    this.drainer = drainer;
    // After the previous drainer, which may still be returning from its last check.
    this.draining = this.draining
      .then(() => {
        drainer.start();
        return drainer.finished;
      })
      .catch((err: unknown) => {
        this.opts.logger.error(
          `Writing the spool at ${this.dir} to InfluxDB stopped on an error (${errorMessage(err)}); its windows are kept for the next start.`,
        );
      });
  }

  private async caughtUp(mark: number): Promise<boolean> {
    if (this.appending.size > 0) {
      await Promise.allSettled([...this.appending]);
      return false;
    }
    if (this.closed) return true;
    if (this.appendsDone !== mark) return false;
    this.mode = "direct";
    this.drainer = undefined;
    this.opts.counters.spoolBytes = this.store.stats().bytes;
    const e = this.episode;
    const secs = Math.round((this.now() - e.since) / 1000);
    const message =
      `The spool is drained: ${e.drainedWindows} windows (${e.drainedBytes} bytes) were written to InfluxDB from it ` +
      `after ${secs} s of spooling; agents are acknowledged once InfluxDB has their windows again.`;
    const fields = {
      dir: this.dir,
      windows: e.drainedWindows,
      bytes: e.drainedBytes,
      spooledWindows: e.windows,
      seconds: secs,
    };
    if (e.logged) this.opts.logger.info(message, fields);
    else this.opts.logger.debug(message, fields);
    return true;
  }

  private spoolFailed(err: unknown): void {
    if (this.broken) return;
    this.broken = true;
    this.opts.logger.error(
      `Could not write the spool at ${this.dir} (${errorMessage(err)}); agents are now acknowledged only once InfluxDB has ` +
        "their windows, as without a spool. Fix the disk and restart the collector to spool again.",
      { dir: this.dir },
    );
  }

  /** After the spool failed: direct batches still waiting for InfluxDB get the grace, then are withdrawn. */
  private async settleStuck(): Promise<void> {
    const entries = [...this.pending];
    if (entries.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.opts.stopGraceMs ?? 10_000)));
    await Promise.race([Promise.all(entries.map((e) => e.outcome)), late]);
    clearTimeout(timer);
    for (const e of entries) e.ctl.abort();
    await Promise.all(entries.map((e) => e.outcome));
  }
}
