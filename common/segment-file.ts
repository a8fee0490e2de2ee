/**
 * The on-disk formats of the segment log (common/segment-log.ts): record headers, segment
 * file names, the verifying scan run at open, and the atomically replaced cursor file.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { errorMessage } from "./errors.js";
import type { Logger } from "./log.js";

/** A place in the log: a byte offset within a segment file. */
export interface LogPosition {
  segment: number;
  offset: number;
}

/** `[u32 LE payload length][u32 LE crc32(payload)]` before every payload. */
export const HEADER_BYTES = 8;
export const CURSOR_FILE = "cursor";
const SCAN_CHUNK_BYTES = 1024 * 1024;

export function comparePositions(a: LogPosition, b: LogPosition): number {
  return a.segment !== b.segment ? a.segment - b.segment : a.offset - b.offset;
}

export function segmentFileName(id: number): string {
  return `${String(id).padStart(16, "0")}.seg`;
}

export function encodeHeader(payload: Buffer): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(zlib.crc32(payload), 4);
  return header;
}

export interface SegmentScan {
  /** File size in bytes. */
  size: number;
  /** End of the last whole record with a good checksum, from `from` on. */
  validEnd: number;
}

/**
 * Reads a segment from `from` to its end in bounded chunks and finds where the good records
 * stop: a short header, a length past the end of the file or a checksum mismatch.
 */
export async function scanSegment(file: string, from: number): Promise<SegmentScan> {
  const fh = await fs.open(file, "r");
  try {
    const size = (await fh.stat()).size;
    let offset = Math.min(from, size);
    let chunk = Buffer.alloc(0);
    let chunkStart = offset;
    const load = async (n: number): Promise<Buffer | undefined> => {
      if (offset + n > size) return undefined;
      if (offset + n > chunkStart + chunk.length) {
        const want = Math.min(Math.max(n, SCAN_CHUNK_BYTES), size - offset);
        const buf = Buffer.allocUnsafe(want);
        const { bytesRead } = await fh.read(buf, 0, want, offset);
        chunk = buf.subarray(0, bytesRead);
        chunkStart = offset;
        if (bytesRead < n) return undefined;
      }
      return chunk.subarray(offset - chunkStart, offset - chunkStart + n);
    };
    while (offset < size) {
      const header = await load(HEADER_BYTES);
      if (!header) break;
      const len = header.readUInt32LE(0);
      const crc = header.readUInt32LE(4);
      const record = await load(HEADER_BYTES + len);
      if (!record || zlib.crc32(record.subarray(HEADER_BYTES)) !== crc) break;
      offset += HEADER_BYTES + len;
    }
    return { size, validEnd: offset };
  } finally {
    await fh.close();
  }
}

/**
 * `mkdir -p` with `mode` for the directories it creates. Not fs.mkdir's `recursive`, which
 * spins forever on paths such as /proc/x (ENOENT under an existing parent).
 */
export async function makeDir(dir: string, mode: number): Promise<void> {
  try {
    await fs.mkdir(dir, { mode });
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") {
      if ((await fs.stat(dir)).isDirectory()) return;
      throw err;
    }
    const parent = path.dirname(dir);
    if (code !== "ENOENT" || parent === dir) throw err;
  }
  await makeDir(path.dirname(dir), mode);
  try {
    await fs.mkdir(dir, { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST" || !(await fs.stat(dir)).isDirectory()) throw err;
  }
}

/** fsync of a directory, so that a created, renamed or deleted name in it is durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The saved head, or undefined when there is none (or it cannot be read: then all is replayed). */
export async function readCursor(dir: string, logger: Logger): Promise<LogPosition | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(dir, CURSOR_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    const v = JSON.parse(text) as Partial<LogPosition>;
    if (
      Number.isSafeInteger(v.segment) &&
      Number.isSafeInteger(v.offset) &&
      (v.segment as number) >= 0 &&
      (v.offset as number) >= 0
    ) {
      return { segment: v.segment as number, offset: v.offset as number };
    }
  } catch (err) {
    logger.warn(`The read position of the log in ${dir} is unreadable; the log is read from its first record.`, {
      error: errorMessage(err),
    });
    return undefined;
  }
  logger.warn(`The read position of the log in ${dir} is invalid; the log is read from its first record.`);
  return undefined;
}

/** Replaces the cursor atomically: write a temporary file, fsync it, rename it over, fsync the directory. */
export async function writeCursor(dir: string, head: LogPosition): Promise<void> {
  const tmp = path.join(dir, `${CURSOR_FILE}.tmp`);
  const fh = await fs.open(tmp, "w", 0o600);
  try {
    await fh.writeFile(`${JSON.stringify({ segment: head.segment, offset: head.offset })}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path.join(dir, CURSOR_FILE));
  await syncDir(dir);
}
