/**
 * A spool record is one acknowledged batch: its InfluxDB lines joined by "\n", as UTF-8.
 * Lines never hold a newline (validation refuses control characters), so the split is exact.
 */
import type { AppendResult, LogPosition, LogRecord, SegmentLogStats } from "../../common/segment-log.js";

export function encodeRecord(lines: readonly string[]): Buffer {
  return Buffer.from(lines.join("\n"), "utf8");
}

export function decodeRecord(payload: Buffer): string[] {
  return payload.length === 0 ? [] : payload.toString("utf8").split("\n");
}

/** The part of SegmentLog the spool uses; tests may pass one that fails. */
export interface SpoolStore {
  append(payloads: Buffer[]): Promise<AppendResult>;
  read(from: LogPosition | undefined, maxRecords: number, maxBytes?: number): Promise<LogRecord[]>;
  consume(upTo: LogPosition): void;
  stats(): Pick<SegmentLogStats, "bytes">;
  close(): Promise<void>;
}
