/**
 * An append-only log of opaque records on disk, consumed from the front: the agent's
 * buffer of unacknowledged windows and the collector's spool share it.
 *
 * Layout: a directory of segment files `0000000000000001.seg`, … each a run of records
 * `[u32 LE length][u32 LE crc32(payload)][payload]`, and a `cursor` file (replaced
 * atomically) holding the head: the position before which everything is consumed.
 *
 * Contracts:
 * - `append` resolves once the records are written and fdatasynced. Appends arriving while a
 *   write is running are written together by the next one (group commit), so a burst of
 *   appends costs one fsync, not one each.
 * - `read` sees only durable records and reads files in bounded chunks (the spool may hold
 *   gigabytes; it is never loaded whole).
 * - `consume` is in memory at once; the cursor reaches disk with the next write (or close).
 *   A stale cursor after a crash only replays consumed records, which readers must tolerate
 *   (the collector dedups by (uuid, start); the agent's collector does the same).
 * - `open` verifies every record from the head: a torn or corrupt tail of the last segment is
 *   cut off, a corrupt record in an older segment ends that segment; both are logged and
 *   counted in `stats()`.
 * - Bytes on disk: the unconsumed bytes plus the consumed front of the head segment, which is
 *   at most one segment (`segmentBytes`, or one record when a record is larger), plus the
 *   cursor file (under 100 bytes). With `maxBytes` the unconsumed bytes stay within it, so the
 *   directory holds at most `maxBytes` + one segment + the cursor; the segment size follows the
 *   bound (`segmentBytesFor`: a sixteenth of it, 64 KiB to 8 MiB). Consumed segments are deleted
 *   before the next write, and a head segment that is also the one appended to is rolled over
 *   once half of it is consumed, so that its consumed front goes with it.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import * as zlib from "node:zlib";
import type { FileHandle } from "node:fs/promises";
import { TrueidleError, errorMessage } from "./errors.js";
import type { Logger } from "./log.js";
import {
  HEADER_BYTES,
  comparePositions,
  encodeHeader,
  makeDir,
  readCursor,
  scanSegment,
  segmentFileName,
  syncDir,
  writeCursor,
  type LogPosition,
} from "./segment-file.js";

export { comparePositions, type LogPosition } from "./segment-file.js";

export interface SegmentLogOptions {
  /** Created (mode 0700) if missing. */
  dir: string;
  /** Roll to a new segment file at about this size (default `segmentBytesFor(maxBytes)`). */
  segmentBytes?: number;
  /** An append that would take unconsumed bytes past this fails with {full:true} (default Infinity). */
  maxBytes?: number;
  logger: Logger;
}

export type AppendResult = { full: false; ends: LogPosition[] } | { full: true };

export interface LogRecord {
  payload: Buffer;
  /** Position just after this record: pass it to `consume` once the record is done. */
  end: LogPosition;
}

export interface SegmentLogStats {
  /** Unconsumed bytes on disk (headers included) plus appends waiting to be written. */
  bytes: number;
  segments: number;
  corruptRecords: number;
  truncatedBytes: number;
  /** fdatasync calls on segment files: with group commit, fewer than appends. */
  syncs: number;
}

export const DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024;
const MIN_SEGMENT_BYTES = 64 * 1024;

/**
 * The segment size for a log bounded to `maxBytes` (Infinity: unbounded): a sixteenth of the
 * bound, so that the consumed front of one segment adds at most a sixteenth to what is on disk,
 * but at least 64 KiB (fewer files and rolls for small bounds) and at most 8 MiB.
 */
export function segmentBytesFor(maxBytes: number): number {
  if (!Number.isFinite(maxBytes)) return DEFAULT_SEGMENT_BYTES;
  return Math.min(DEFAULT_SEGMENT_BYTES, Math.max(MIN_SEGMENT_BYTES, Math.floor(maxBytes / 16)));
}

const READ_CHUNK_BYTES = 256 * 1024;
/** writev takes at most IOV_MAX (1024 on Linux) buffers per call. */
const MAX_IOVECS = 1000;

interface Segment {
  id: number;
  /** Bytes of durable records in the file. */
  end: number;
}

interface PendingAppend {
  payloads: Buffer[];
  size: number;
  resolve: (r: AppendResult) => void;
  reject: (err: unknown) => void;
}

export class SegmentLog {
  private readonly dir: string;
  private readonly segmentBytes: number;
  private readonly maxBytes: number;
  private readonly logger: Logger;
  /** From the head segment to the active (last) one; never empty. */
  private readonly segments: Segment[];
  private headPos: LogPosition;
  private persistedHead: LogPosition;
  private fh: FileHandle;
  private queue: PendingAppend[] = [];
  private reserved = 0;
  private toDelete: number[] = [];
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private closed = false;
  private closing: Promise<void> | undefined;
  private counters = { corruptRecords: 0, truncatedBytes: 0, syncs: 0 };

  private constructor(opts: SegmentLogOptions, segments: Segment[], head: LogPosition, fh: FileHandle) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes ?? Infinity;
    this.segmentBytes = opts.segmentBytes ?? segmentBytesFor(this.maxBytes);
    this.logger = opts.logger;
    this.segments = segments;
    this.headPos = head;
    this.persistedHead = head;
    this.fh = fh;
  }

  static async open(opts: SegmentLogOptions): Promise<SegmentLog> {
    const dir = opts.dir;
    try {
      await makeDir(dir, 0o700);
    } catch (err) {
      throw new TrueidleError("bad_config", `Cannot create the log directory ${dir}: ${errorMessage(err)}.`, {
        cause: err,
      });
    }
    const ids = (await fs.readdir(dir))
      .map((name) => /^(\d{16})\.seg$/.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    const cursor = await readCursor(dir, opts.logger);
    let head: LogPosition = cursor ?? { segment: ids[0] ?? 1, offset: 0 };
    // Segments wholly before the head were consumed; a crash may have left them behind.
    for (const id of ids.filter((id) => id < head.segment))
      await fs.rm(path.join(dir, segmentFileName(id)), { force: true });
    const live = ids.filter((id) => id >= head.segment);
    if (live[0] !== head.segment) head = { segment: live[0] ?? head.segment, offset: 0 };

    const counts = { corruptRecords: 0, truncatedBytes: 0 };
    const segments: Segment[] = [];
    for (const [i, id] of live.entries()) {
      const file = path.join(dir, segmentFileName(id));
      const from = id === head.segment ? head.offset : 0;
      const scan = await scanSegment(file, from);
      if (scan.validEnd < scan.size) {
        // Cut the bad bytes off so that the next open agrees with this one; in the last segment
        // appends continue from the cut, in an older one the segment simply ends there.
        await truncateFile(file, scan.validEnd);
        counts.corruptRecords += 1;
        counts.truncatedBytes += scan.size - scan.validEnd;
        opts.logger.warn(
          i === live.length - 1
            ? `The log in ${dir} ended with a torn or corrupt record; ${scan.size - scan.validEnd} bytes were cut off the last segment.`
            : `A corrupt record in ${dir} ended segment ${id} early; ${scan.size - scan.validEnd} bytes after it were dropped.`,
          { segment: id, offset: scan.validEnd, droppedBytes: scan.size - scan.validEnd },
        );
      }
      if (id === head.segment && head.offset > scan.validEnd) head = { segment: id, offset: scan.validEnd };
      segments.push({ id, end: scan.validEnd });
    }
    if (segments.length === 0) {
      segments.push({ id: head.segment, end: 0 });
      await (await createSegment(dir, head.segment)).close();
    }
    const active = segments[segments.length - 1] as Segment;
    const fh = await fs.open(path.join(dir, segmentFileName(active.id)), "r+");
    const log = new SegmentLog(opts, segments, head, fh);
    log.counters.corruptRecords = counts.corruptRecords;
    log.counters.truncatedBytes = counts.truncatedBytes;
    log.dropConsumedSegments();
    if (log.toDelete.length > 0) log.kick();
    return log;
  }

  /** Resolves once written and fdatasynced; `{full:true}` (nothing written) past `maxBytes`. */
  append(payloads: Buffer[]): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new TrueidleError("unavailable", `The log in ${this.dir} is closed.`));
    if (payloads.length === 0) return Promise.resolve({ full: false, ends: [] });
    let size = 0;
    for (const p of payloads) size += HEADER_BYTES + p.length;
    if (this.durableBytes() + this.reserved + size > this.maxBytes) return Promise.resolve({ full: true });
    this.reserved += size;
    return new Promise((resolve, reject) => {
      this.queue.push({ payloads, size, resolve, reject });
      this.kick();
    });
  }

  /**
   * Up to `maxRecords` durable records (and about `maxBytes` of payload; at least one) from `from`, or the head:
   * consecutive, so that consuming up to the last one's `end` consumes only records read.
   */
  async read(from: LogPosition | undefined, maxRecords: number, maxBytes = Infinity): Promise<LogRecord[]> {
    let pos = from === undefined || comparePositions(from, this.headPos) < 0 ? this.headPos : from;
    const out: LogRecord[] = [];
    let bytes = 0;
    const snapshot = this.segments.map((s) => ({ ...s }));
    for (const seg of snapshot) {
      if (out.length >= maxRecords || (out.length > 0 && bytes >= maxBytes)) break;
      if (seg.id < pos.segment) continue;
      const start = seg.id === pos.segment ? pos.offset : 0;
      if (start >= seg.end) continue;
      let fh: FileHandle;
      try {
        fh = await fs.open(path.join(this.dir, segmentFileName(seg.id)), "r");
      } catch (err) {
        // Consumed and deleted while this read waited: nothing in it is wanted any more.
        if ((err as NodeJS.ErrnoException).code === "ENOENT" && !this.segments.some((s) => s.id === seg.id)) continue;
        throw err;
      }
      let stoppedAt: number;
      try {
        ({ bytes, stoppedAt } = await this.readSegment(fh, seg, start, out, maxRecords, maxBytes, bytes));
      } finally {
        await fh.close();
      }
      // A bound stopped the read inside this segment: the records after must come from the
      // rest of it, never from the next segment, or a reader that consumes up to the last
      // record it got would consume the rest of this one unread.
      if (stoppedAt < seg.end) break;
      pos = { segment: seg.id + 1, offset: 0 };
    }
    return out;
  }

  /** Everything before `upTo` is done. Fully consumed segments are deleted. */
  consume(upTo: LogPosition): void {
    if (this.closed || comparePositions(upTo, this.headPos) <= 0) return;
    if (comparePositions(upTo, this.tail()) > 0) {
      throw new TrueidleError("internal", `Cannot consume the log in ${this.dir} past its tail.`);
    }
    this.headPos = { segment: upTo.segment, offset: upTo.offset };
    this.dropConsumedSegments();
    this.kick();
  }

  head(): LogPosition {
    return { ...this.headPos };
  }

  /** Position after the last durable record. */
  tail(): LogPosition {
    const active = this.active();
    return { segment: active.id, offset: active.end };
  }

  stats(): SegmentLogStats {
    return {
      bytes: this.durableBytes() + this.reserved,
      segments: this.segments.length,
      ...this.counters,
    };
  }

  /** Writes what is queued, persists the cursor, closes the file. Safe twice. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      while (this.running) await this.loop;
      if (comparePositions(this.persistedHead, this.headPos) !== 0) await this.persistCursor();
      await this.fh.close();
    })();
    return this.closing;
  }

  private active(): Segment {
    return this.segments[this.segments.length - 1] as Segment;
  }

  private durableBytes(): number {
    let total = 0;
    for (const s of this.segments) total += s.end;
    return total - this.headPos.offset;
  }

  private dropConsumedSegments(): void {
    while (this.segments.length > 1) {
      const first = this.segments[0] as Segment;
      if (first.id > this.headPos.segment || (first.id === this.headPos.segment && this.headPos.offset < first.end))
        break;
      this.segments.shift();
      this.toDelete.push(first.id);
    }
    const first = this.segments[0] as Segment;
    if (first.id !== this.headPos.segment) this.headPos = { segment: first.id, offset: 0 };
  }

  /** One writer at a time; whatever queued up while it ran is taken by its next round. */
  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run().catch((err: unknown) => {
      this.logger.error(`The writer of the log in ${this.dir} failed; records may be lost.`, {
        error: errorMessage(err),
      });
    });
  }

  private async run(): Promise<void> {
    // One event-loop turn first: appends made by the same burst of messages (many agents'
    // batches decoded in one I/O round) then share the first write and fsync, rather than the
    // first of them paying for a write of its own.
    await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      while (
        this.queue.length > 0 ||
        this.toDelete.length > 0 ||
        comparePositions(this.persistedHead, this.headPos) !== 0
      ) {
        // Consumed segments go before anything new is written, so the bytes on disk never hold
        // both. Deleting ahead of the cursor is safe: `open` starts at the first segment left.
        await this.deleteConsumed();
        const batch = this.queue.splice(0);
        if (batch.length > 0) await this.writeBatch(batch);
        if (comparePositions(this.persistedHead, this.headPos) !== 0) await this.persistCursor();
      }
    } finally {
      // Runs in the same turn as the loop's last check, so no append can slip in between.
      this.running = false;
    }
  }

  private async deleteConsumed(): Promise<void> {
    for (const id of this.toDelete.splice(0)) {
      await fs.rm(path.join(this.dir, segmentFileName(id)), { force: true }).catch((err: unknown) => {
        this.logger.warn(
          `Could not delete a consumed segment of the log in ${this.dir}; it will be retried at the next start.`,
          { segment: id, error: errorMessage(err) },
        );
      });
    }
  }

  private async persistCursor(): Promise<void> {
    const head = { ...this.headPos };
    try {
      await writeCursor(this.dir, head);
      this.persistedHead = head;
    } catch (err) {
      // Not fatal: an old cursor only replays consumed records after a restart.
      this.persistedHead = head;
      this.logger.warn(
        `Could not save the read position of the log in ${this.dir}; after a restart some records may be read twice.`,
        { error: errorMessage(err) },
      );
    }
  }

  private async writeBatch(batch: PendingAppend[]): Promise<void> {
    const ends: LogPosition[][] = batch.map(() => []);
    let bufs: Buffer[] = [];
    let runBytes = 0;
    let written = this.active().end;
    const flush = async (): Promise<void> => {
      if (bufs.length === 0) return;
      await writeAll(this.fh, bufs, this.active().end);
      await this.fh.datasync();
      this.counters.syncs += 1;
      this.active().end = written;
      this.reserved -= runBytes;
      bufs = [];
      runBytes = 0;
    };
    try {
      if (this.headPos.segment === this.active().id && this.headPos.offset >= this.segmentBytes / 2) {
        // Half of the segment being appended to is consumed: the new records start a segment of
        // their own, and the old one is deleted once the rest of it is consumed (now, if it is).
        await this.roll();
        written = 0;
        this.dropConsumedSegments();
        await this.deleteConsumed();
      }
      for (const [i, p] of batch.entries()) {
        for (const payload of p.payloads) {
          const rec = HEADER_BYTES + payload.length;
          if (written > 0 && written + rec > this.segmentBytes) {
            await flush();
            await this.roll();
            written = 0;
          }
          bufs.push(encodeHeader(payload), payload);
          runBytes += rec;
          written += rec;
          (ends[i] as LogPosition[]).push({ segment: this.active().id, offset: written });
        }
      }
      await flush();
    } catch (err) {
      // Cut back to the last durable byte so later appends do not follow a half-written run.
      await this.fh.truncate(this.active().end).catch(() => undefined);
      this.reserved = this.queue.reduce((sum, p) => sum + p.size, 0);
      const wrapped = new TrueidleError(
        "unavailable",
        `Could not write to the log in ${this.dir}: ${errorMessage(err)}.`,
        { cause: err },
      );
      for (const p of batch) p.reject(wrapped);
      return;
    }
    this.reserved = this.queue.reduce((sum, p) => sum + p.size, 0);
    for (const [i, p] of batch.entries()) p.resolve({ full: false, ends: ends[i] as LogPosition[] });
  }

  private async roll(): Promise<void> {
    const id = this.active().id + 1;
    const fh = await createSegment(this.dir, id);
    await this.fh.close();
    this.fh = fh;
    this.segments.push({ id, end: 0 });
  }

  private async readSegment(
    fh: FileHandle,
    seg: Segment,
    start: number,
    out: LogRecord[],
    maxRecords: number,
    maxBytes: number,
    bytesSoFar: number,
  ): Promise<{ bytes: number; stoppedAt: number }> {
    let bytes = bytesSoFar;
    let chunk = Buffer.alloc(0);
    let chunkStart = start;
    let offset = start;
    const ensure = async (n: number): Promise<boolean> => {
      if (offset + n > seg.end) return false;
      if (offset + n <= chunkStart + chunk.length) return true;
      const want = Math.min(Math.max(n, READ_CHUNK_BYTES), seg.end - offset);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await fh.read(buf, 0, want, offset);
      chunk = buf.subarray(0, bytesRead);
      chunkStart = offset;
      return bytesRead >= n;
    };
    while (offset < seg.end && out.length < maxRecords) {
      if (!(await ensure(HEADER_BYTES))) return { bytes: this.corruptAt(seg, offset, bytes), stoppedAt: seg.end };
      const at = offset - chunkStart;
      const len = chunk.readUInt32LE(at);
      const crc = chunk.readUInt32LE(at + 4);
      if (out.length > 0 && bytes + len > maxBytes) break;
      if (!(await ensure(HEADER_BYTES + len))) return { bytes: this.corruptAt(seg, offset, bytes), stoppedAt: seg.end };
      const body = chunk.subarray(offset - chunkStart + HEADER_BYTES, offset - chunkStart + HEADER_BYTES + len);
      if (zlib.crc32(body) !== crc) return { bytes: this.corruptAt(seg, offset, bytes), stoppedAt: seg.end };
      offset += HEADER_BYTES + len;
      bytes += len;
      // A copy, so that a small payload does not pin the whole read chunk.
      out.push({ payload: Buffer.from(body), end: { segment: seg.id, offset } });
    }
    return { bytes, stoppedAt: offset };
  }

  /**
   * A record that was good when written reads back bad: the disk changed under the log. An
   * older segment ends there (the rest of it is lost, counted and logged); the segment being
   * appended to cannot be cut while in use, so the read fails until a restart verifies the log.
   */
  private corruptAt(seg: Segment, offset: number, bytes: number): number {
    this.counters.corruptRecords += 1;
    const live = this.segments.find((s) => s.id === seg.id);
    if (live && live !== this.active()) {
      this.counters.truncatedBytes += live.end - offset;
      this.logger.error(
        `The log in ${this.dir} has a corrupt record in segment ${seg.id}; the ${live.end - offset} bytes from it to the end of that segment are lost.`,
        {
          segment: seg.id,
          offset,
        },
      );
      live.end = offset;
      seg.end = offset;
      this.dropConsumedSegments();
      this.kick();
      return bytes;
    }
    throw new TrueidleError(
      "internal",
      `The log in ${this.dir} has a corrupt record in segment ${seg.id} at byte ${offset}; restart to verify the log and cut it at the bad record.`,
    );
  }
}

async function createSegment(dir: string, id: number): Promise<FileHandle> {
  const fh = await fs.open(path.join(dir, segmentFileName(id)), "wx", 0o600);
  await syncDir(dir);
  return fh;
}

async function truncateFile(file: string, size: number): Promise<void> {
  const fh = await fs.open(file, "r+");
  try {
    await fh.truncate(size);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** writev, resumed after short writes, at most MAX_IOVECS buffers a call. */
async function writeAll(fh: FileHandle, bufs: Buffer[], position: number): Promise<void> {
  let pos = position;
  for (let i = 0; i < bufs.length; i += MAX_IOVECS) {
    let part = bufs.slice(i, i + MAX_IOVECS);
    let total = part.reduce((s, b) => s + b.length, 0);
    while (total > 0) {
      const { bytesWritten } = await fh.writev(part, pos);
      pos += bytesWritten;
      total -= bytesWritten;
      if (total > 0) part = [Buffer.concat(part).subarray(bytesWritten)];
    }
  }
}
