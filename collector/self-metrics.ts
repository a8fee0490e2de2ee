/**
 * The collector's own counters and gauges. Plain fields that the parts of the collector
 * update in place; the renderer reads them. The InfluxDB and spool values stay 0 until a
 * writer fills them.
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
  influxPointsWritten = 0;
  influxWriteErrors = 0;
  spoolBytes = 0;

  reject(reason: RejectionReason, count = 1): void {
    this.windowsRejected[reason] += count;
  }
}
