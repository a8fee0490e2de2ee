/**
 * Writes the spool to InfluxDB from its head, in order: reads a chunk of records (about
 * `chunkBytes`, a few thousand lines), submits its lines to the writer — which retries with
 * backoff until InfluxDB takes them, after waiting for the schema — and consumes the chunk
 * once written. Two chunks are in the writer at a time, so a request is always ready while
 * the previous one is answered; chunks are consumed strictly in order.
 *
 * When the spool reads empty the drainer asks `caughtUp`: the sink switches back to direct
 * writes unless appends arrived meanwhile, in which case the drainer reads on and otherwise
 * ends (`finished`). `stop()` withdraws the chunks in the writer; what is not consumed stays
 * for the next start (a chunk that was written but not yet consumed is written again then,
 * which is harmless).
 */
import { errorMessage } from "../../common/errors.js";
import type { Service } from "../../common/lifecycle.js";
import type { Logger } from "../../common/log.js";
import type { LogPosition } from "../../common/segment-log.js";
import type { WriteOutcome } from "../influx/writer.js";
import type { WriterPort } from "./durable-sink.js";
import { decodeRecord, type SpoolStore } from "./spool-record.js";

/** About this many payload bytes per chunk: some 4,500 lines of ~450 bytes. */
export const DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024;
const MAX_RECORDS_PER_CHUNK = 10_000;
const MAX_CHUNKS_IN_FLIGHT = 2;
/** Pause before starting over after the writer refused a chunk or the spool could not be read. */
const RETRY_MS = 1_000;
const LOG_EVERY_MS = 30_000;

export interface SpoolDrainerOptions {
  store: SpoolStore;
  writer: WriterPort;
  logger: Logger;
  chunkBytes?: number | undefined;
  /** A chunk is written and consumed: `lines` from records of `bytes` payload bytes. */
  drained(lines: readonly string[], bytes: number): void;
  /** How many appends have completed so far; a change means the spool has more to read. */
  appendMark(): number;
  /** The spool read empty after `mark`: true once the sink is back to direct writes, false to read on. */
  caughtUp(mark: number): Promise<boolean>;
}

interface Chunk {
  lines: string[];
  bytes: number;
  end: LogPosition;
  outcome: Promise<WriteOutcome>;
}

export class SpoolDrainer implements Service {
  private readonly stopCtl = new AbortController();
  /** Aborted to withdraw the chunks in the writer (stop, or starting over). */
  private round = new AbortController();
  private lastReadErrorLogAt = -Infinity;
  private loop: Promise<void> | undefined;

  constructor(private readonly opts: SpoolDrainerOptions) {}

  /** Starts draining, in the background, until caught up or stopped. Once; nothing after stop(). */
  start(): void {
    if (this.loop || this.stopped) return;
    this.loop = this.drain();
  }

  /**
   * Resolves once the drainer has ended (caught up or stopped), at once if it never started.
   * Rejects only with an error nothing inside expected (read and write failures are retried).
   */
  get finished(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /**
   * Withdraws the chunks in the writer, ends a pause before a retry, and resolves once the
   * drainer has ended; an error that ended it is `finished`'s. Safe twice and before start().
   */
  stop(): Promise<void> {
    this.stopCtl.abort();
    this.round.abort();
    return this.finished.catch(() => undefined);
  }

  private async drain(): Promise<void> {
    const { store, writer } = this.opts;
    const chunkBytes = this.opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const inFlight: Chunk[] = [];
    // Where the next read starts: after the last chunk handed to the writer. With nothing
    // in flight everything read is consumed, so the next read starts at the head.
    let from: LogPosition | undefined;
    let mark = this.opts.appendMark();
    while (!this.stopped) {
      try {
        while (inFlight.length < MAX_CHUNKS_IN_FLIGHT) {
          mark = this.opts.appendMark();
          const records = await store.read(inFlight.length === 0 ? undefined : from, MAX_RECORDS_PER_CHUNK, chunkBytes);
          if (this.stopped) return;
          const last = records[records.length - 1];
          if (!last) break;
          const lines: string[] = [];
          let bytes = 0;
          for (const r of records) {
            for (const l of decodeRecord(r.payload)) lines.push(l);
            bytes += r.payload.length;
          }
          from = last.end;
          inFlight.push({ lines, bytes, end: last.end, outcome: writer.submit(lines, this.round.signal) });
        }
      } catch (err) {
        this.readFailed(err);
        this.startOver(inFlight);
        await this.pause();
        continue;
      }
      const head = inFlight.shift();
      if (!head) {
        if (await this.opts.caughtUp(mark)) return;
        continue;
      }
      const o = await head.outcome;
      if (this.stopped) return;
      if (o.status === "done") {
        // A read returns consecutive records (SegmentLog.read), so this consumes only what was written.
        store.consume(head.end);
        this.opts.drained(head.lines, head.bytes);
        continue;
      }
      // The write queue had no room (direct writes still in it) or the chunk was withdrawn:
      // start over from the head, in order.
      this.startOver(inFlight);
      await this.pause();
    }
  }

  private get stopped(): boolean {
    return this.stopCtl.signal.aborted;
  }

  private startOver(inFlight: Chunk[]): void {
    this.round.abort();
    this.round = new AbortController();
    inFlight.length = 0;
  }

  private readFailed(err: unknown): void {
    const now = Date.now();
    if (now - this.lastReadErrorLogAt < LOG_EVERY_MS) return;
    this.lastReadErrorLogAt = now;
    this.opts.logger.error(
      `Could not read the spool to write it to InfluxDB (${errorMessage(err)}); retrying. ` +
        "Its windows are kept; if this persists, check the disk and restart the collector. Further failures are logged at most every 30 s.",
    );
  }

  private pause(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, RETRY_MS);
      t.unref();
      const signal = this.stopCtl.signal;
      function done(): void {
        clearTimeout(t);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
  }
}
