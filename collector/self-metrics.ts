/**
 * The collector's own counters and gauges. Plain fields that the parts of the collector
 * update in place; the renderer reads them. The InfluxDB writer (collector/influx/writer.ts)
 * counts `influxPointsWritten` (points InfluxDB took; a window written again counts again)
 * and `influxWriteErrors` (every failed write request, retried or not, and every batch
 * refused because the write queue was full); both stay 0 without --influx-url. The spool
 * stays 0 until a spool fills it.
 */
import { REJECTION_REASONS, type RejectionReason } from "./validate.js";

export class SelfMetrics {
  /** Streams that said Hello and are still open. */
  agentsConnected = 0;
  windowsReceived = 0;
  /** Every reason is present from the start, so each series exists at 0. */
  readonly windowsRejected: Record<RejectionReason, number> = Object.fromEntries(
    REJECTION_REASONS.map((r) => [r, 0]),
  ) as Record<RejectionReason, number>;
  /** Points InfluxDB acknowledged (HTTP 204, or the kept part of a partial write). */
  influxPointsWritten = 0;
  /** Failed InfluxDB write requests (each attempt) and batches refused by a full write queue. */
  influxWriteErrors = 0;
  spoolBytes = 0;

  reject(reason: RejectionReason, count = 1): void {
    this.windowsRejected[reason] += count;
  }
}
