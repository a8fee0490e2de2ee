/**
 * The agent's buffer of windows not yet acknowledged by a collector, in the order they were
 * measured. Windows are held encoded (protobuf binary of GpuWindow) and decoded only when a
 * batch is built, which keeps memory small.
 *
 * Two variants behind one class: in memory only (`WindowBuffer.memory`), or backed by a
 * segment log on disk (`WindowBuffer.open`), where every handover of windows is one append
 * (fsynced; appends waiting together share one fsync) and acknowledged windows are consumed
 * from the front, so after a restart the unacknowledged ones are loaded and sent first, in
 * order.
 *
 * Every window goes through: pending (being written to disk) → unsent → sent (in a batch) →
 * done (acknowledged, rejected or dropped). A broken stream turns sent windows back into
 * unsent ones. Done windows leave the front of the buffer; on disk the log is consumed up to
 * the end of that contiguous done prefix. When the bound (windows or bytes) is hit, the
 * oldest unsent windows are dropped, counted and logged.
 *
 * On disk the byte bound counts what the log stores: each window's bytes plus its 8-byte
 * record header. The log's segments are sized from the bound (common/segment-log.ts,
 * `segmentBytesFor`), so the buffer's directory holds at most the bound plus one segment (a
 * sixteenth of the bound, 64 KiB to 8 MiB). Windows dropped while an older one waits for its
 * ack stay on disk until that ack, or until the stream breaks and the older one is dropped or
 * sent again.
 */
import { TrueidleError, errorMessage } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { SegmentLog, segmentBytesFor, type LogPosition } from "../../common/segment-log.js";
import { HEADER_BYTES } from "../../common/segment-file.js";
import { AGENT_SETTINGS } from "../settings.js";

export const DEFAULT_MAX_BUFFER_BYTES: number = AGENT_SETTINGS.maxBufferBytes.default;
const DROP_LOG_INTERVAL_MS = 10_000;
const LOAD_CHUNK_RECORDS = 10_000;

type EntryState = "pending" | "unsent" | "sent" | "done";

/** One buffered window; the shipper hands these back in `complete`. */
export interface BufferEntry {
  /** The encoded GpuWindow; emptied once done. */
  data: Buffer;
  state: EntryState;
  /** End of its record in the log, once durable there. */
  end: LogPosition | undefined;
}

export interface WindowBufferOptions {
  /** Windows kept at most (sent and unsent). */
  maxWindows: number;
  /** Encoded bytes kept at most, with 8 bytes of record header a window on disk; default 256 MiB. */
  maxBytes?: number | undefined;
  logger: Logger;
  now?: (() => number) | undefined;
}

export interface WindowBufferStats {
  /** Windows not yet done (acknowledged, rejected or dropped). */
  windows: number;
  /** Their encoded size. */
  bytes: number;
  /** Dropped for the bound, since start. */
  dropped: number;
  /** Windows found on disk at start (replayed first). */
  loaded: number;
}

const EMPTY = Buffer.alloc(0);

export class WindowBuffer {
  private entries: BufferEntry[] = [];
  /** Index of the first entry not done. */
  private start = 0;
  /** Entries before it are sent or done; from it on, pending, unsent or done. */
  private cursor = 0;
  private live = 0;
  private liveBytes = 0;
  private dropped = 0;
  private loaded = 0;
  private lastDropLogMs = -Infinity;
  private lastDiskErrorLogMs = -Infinity;
  private writing: Promise<void> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private readonly maxBytes: number;
  private readonly now: () => number;
  /** Called when pending windows became sendable (written to disk). */
  onSendable: () => void = () => {};

  private constructor(
    private readonly opts: WindowBufferOptions,
    private readonly log: SegmentLog | undefined,
    private readonly dir: string | undefined,
  ) {
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_BUFFER_BYTES;
    this.now = opts.now ?? Date.now;
  }

  static memory(opts: WindowBufferOptions): WindowBuffer {
    return new WindowBuffer(opts, undefined, undefined);
  }

  /** Opens (or creates) the log in `dir` and loads the windows it holds. */
  static async open(dir: string, opts: WindowBufferOptions): Promise<WindowBuffer> {
    const log = await SegmentLog.open({
      dir,
      segmentBytes: segmentBytesFor(opts.maxBytes ?? DEFAULT_MAX_BUFFER_BYTES),
      logger: opts.logger,
    });
    const buf = new WindowBuffer(opts, log, dir);
    try {
      let from: LogPosition | undefined;
      for (;;) {
        const records = await log.read(from, LOAD_CHUNK_RECORDS);
        if (records.length === 0) break;
        for (const r of records) buf.add({ data: r.payload, state: "unsent", end: r.end });
        buf.loaded += records.length;
        buf.enforceBound();
        from = records[records.length - 1]?.end;
      }
    } catch (err) {
      await log.close();
      throw new TrueidleError("unavailable", `Could not read the window buffer in ${dir}: ${errorMessage(err)}.`, {
        cause: err,
      });
    }
    buf.popDone();
    if (buf.loaded > 0) {
      opts.logger.info("Loaded windows that were not acknowledged before the last stop; they are sent first.", {
        windows: buf.live,
        dir,
        dropped: buf.dropped,
      });
    }
    return buf;
  }

  /** Adds windows at the back. With a disk log they become sendable once written and fsynced. */
  push(encoded: Buffer[]): void {
    if (this.closing) throw new TrueidleError("internal", "The window buffer is closed.");
    if (encoded.length === 0) return;
    const batch = encoded.map(
      (data): BufferEntry => ({ data, state: this.log ? "pending" : "unsent", end: undefined }),
    );
    for (const e of batch) this.add(e);
    this.enforceBound();
    if (!this.log) {
      this.onSendable();
      return;
    }
    const log = this.log;
    // Appends resolve in the order they were made, so windows become sendable in order.
    const write = log
      .append(encoded)
      .then(
        (res) => {
          if (!res.full)
            res.ends.forEach((end, i) => {
              (batch[i] as BufferEntry).end = end;
            });
        },
        (err: unknown) => this.diskError(err, batch.length),
      )
      .then(() => {
        for (const e of batch) if (e.state === "pending") e.state = "unsent";
        this.popDone();
        this.onSendable();
      })
      .catch((err: unknown) => {
        this.opts.logger.error("The window buffer failed to hand over written windows; they stay buffered.", {
          error: errorMessage(err),
        });
      });
    this.writing = Promise.all([this.writing, write]).then(() => undefined);
  }

  /**
   * Marks up to `max` of the oldest unsent windows, about `maxBytes` encoded at most (always
   * at least one), as sent and returns them.
   */
  takeUnsent(max: number, maxBytes = Infinity): BufferEntry[] {
    const out: BufferEntry[] = [];
    let bytes = 0;
    while (this.cursor < this.entries.length && out.length < max) {
      const e = this.entries[this.cursor] as BufferEntry;
      if (e.state === "pending") break;
      if (e.state === "unsent") {
        // A window costs its bytes plus a tag and a length prefix in the batch message.
        const size = e.data.length + 6;
        if (out.length > 0 && bytes + size > maxBytes) break;
        bytes += size;
        e.state = "sent";
        out.push(e);
      }
      this.cursor++;
    }
    return out;
  }

  /** Whether `takeUnsent` would return something. */
  hasUnsent(): boolean {
    for (let i = this.cursor; i < this.entries.length; i++) {
      const s = (this.entries[i] as BufferEntry).state;
      if (s === "unsent") return true;
      if (s === "pending") return false;
    }
    return false;
  }

  /** The windows were acknowledged (or rejected): they leave the buffer and, on disk, the log. */
  complete(entries: readonly BufferEntry[]): void {
    for (const e of entries) this.finish(e);
    this.popDone();
  }

  /** The stream broke: sent windows become unsent again, to go out first, in order. */
  unsendAll(): void {
    for (let i = this.start; i < this.cursor; i++) {
      const e = this.entries[i] as BufferEntry;
      if (e.state === "sent") e.state = "unsent";
    }
    this.cursor = this.start;
  }

  stats(): WindowBufferStats {
    return { windows: this.live, bytes: this.liveBytes, dropped: this.dropped, loaded: this.loaded };
  }

  /** Waits for writes in progress; the log keeps what is not done for the next start. Safe twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.writing;
      await this.log?.close();
    })();
    return this.closing;
  }

  private add(e: BufferEntry): void {
    this.entries.push(e);
    this.live++;
    this.liveBytes += e.data.length;
  }

  private finish(e: BufferEntry): void {
    if (e.state === "done") return;
    e.state = "done";
    this.live--;
    this.liveBytes -= e.data.length;
    e.data = EMPTY;
  }

  /** Drops done windows off the front and consumes the log up to the last of them. */
  private popDone(): void {
    let end: LogPosition | undefined;
    while (this.start < this.entries.length && (this.entries[this.start] as BufferEntry).state === "done") {
      end = (this.entries[this.start] as BufferEntry).end ?? end;
      this.start++;
    }
    if (this.cursor < this.start) this.cursor = this.start;
    if (this.start > 1024 && this.start * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.start);
      this.cursor -= this.start;
      this.start = 0;
    }
    if (end && this.log && !this.closing) this.log.consume(end);
  }

  /** What the windows not done take against the byte bound: on disk, with their record headers. */
  private boundBytes(): number {
    return this.log ? this.liveBytes + this.live * HEADER_BYTES : this.liveBytes;
  }

  /** Drops the oldest windows not in flight while a bound is exceeded. */
  private enforceBound(): void {
    let n = 0;
    while (
      (this.live > this.opts.maxWindows || this.boundBytes() > this.maxBytes) &&
      this.cursor < this.entries.length
    ) {
      const e = this.entries[this.cursor] as BufferEntry;
      if (e.state !== "done") {
        this.finish(e);
        n++;
      }
      this.cursor++;
    }
    if (n === 0) return;
    this.dropped += n;
    this.popDone();
    const now = this.now();
    if (now - this.lastDropLogMs >= DROP_LOG_INTERVAL_MS) {
      this.lastDropLogMs = now;
      this.opts.logger.error("The window buffer is full; the oldest windows were dropped.", {
        dropped_now: n,
        dropped_total: this.dropped,
        max_windows: this.opts.maxWindows,
        max_bytes: this.maxBytes,
      });
    }
  }

  private diskError(err: unknown, windows: number): void {
    const now = this.now();
    if (now - this.lastDiskErrorLogMs < DROP_LOG_INTERVAL_MS) return;
    this.lastDiskErrorLogMs = now;
    this.opts.logger.error(
      `Could not write windows to the buffer in ${this.dir}; they are kept in memory only and are lost if the agent stops before the collector acknowledges them. Check the disk.`,
      { windows, error: errorMessage(err) },
    );
  }
}
