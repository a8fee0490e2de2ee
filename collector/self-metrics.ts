/**
 * The collector's own counters and gauges. Plain fields that the parts of the collector
 * update in place; the renderer reads them. The InfluxDB writer (collector/influx/writer.ts)
 * counts `influxPointsWritten` (points InfluxDB took; a window written again counts again)
 * and `influxWriteErrors` (every failed write request, retried or not, and every batch
 * refused because the write queue was full); both stay 0 without --influx-url. The spool
 * stays 0 until a spool fills it.
 */
import { zeroConnectionCounters, type ConnectionCounters } from "../common/connection-guard.js";
import { REJECTION_REASONS, type RejectionReason } from "./validate.js";

/** Why an HTTP request was refused before it was served; the label values of trueidle_http_requests_refused_total. */
export const HTTP_REFUSAL_REASONS = ["auth_throttled", "scrapes_in_flight", "bad_request", "header_timeout"] as const;
export type HttpRefusalReason = (typeof HTTP_REFUSAL_REASONS)[number];

/**
 * Every reason the collector refuses or ends a whole stream for; the label values of
 * trueidle_streams_refused_total. Each comes with its gRPC status:
 * `invalid` INVALID_ARGUMENT, `unauthenticated` UNAUTHENTICATED, `too_many_agents`,
 * `rate_limited`, `spool_full` and `influx_backlog` RESOURCE_EXHAUSTED (with a retry delay),
 * `shutting_down` UNAVAILABLE, `replaced` UNAVAILABLE (an older stream of a host that
 * connected again), `internal` INTERNAL, `hello_timeout` DEADLINE_EXCEEDED (no Hello in
 * time, or too many streams waiting for theirs), `auth_throttled` RESOURCE_EXHAUSTED (too
 * many failed token checks from the address).
 */
export const STREAM_REFUSAL_REASONS = [
  "invalid",
  "unauthenticated",
  "too_many_agents",
  "rate_limited",
  "spool_full",
  "influx_backlog",
  "shutting_down",
  "replaced",
  "internal",
  "hello_timeout",
  "auth_throttled",
] as const;
export type StreamRefusalReason = (typeof STREAM_REFUSAL_REASONS)[number];

export class SelfMetrics {
  /** Streams that said Hello and are still open. */
  agentsConnected = 0;
  windowsReceived = 0;
  /** Every reason is present from the start, so each series exists at 0. */
  readonly windowsRejected: Record<RejectionReason, number> = Object.fromEntries(
    REJECTION_REASONS.map((r) => [r, 0]),
  ) as Record<RejectionReason, number>;
  /** Windows acknowledged again without being counted again: their time was covered already. */
  windowsReplayed = 0;
  /** Points InfluxDB acknowledged (HTTP 204, or the kept part of a partial write). */
  influxPointsWritten = 0;
  /** Failed InfluxDB write requests (each attempt) and batches refused by a full write queue. */
  influxWriteErrors = 0;
  spoolBytes = 0;
  /** Windows appended to the spool (acknowledged while InfluxDB was away or slow). */
  spooledWindows = 0;
  /** Streams refused or ended by the collector, by reason; every reason present from the start. */
  readonly streamsRefused: Record<StreamRefusalReason, number> = Object.fromEntries(
    STREAM_REFUSAL_REASONS.map((r) => [r, 0]),
  ) as Record<StreamRefusalReason, number>;

  /** HTTP requests answered 401: missing or wrong basic-auth credentials. */
  httpAuthFailures = 0;
  /** HTTP requests refused before being served, by reason. */
  readonly httpRefused: Record<HttpRefusalReason, number> = Object.fromEntries(
    HTTP_REFUSAL_REASONS.map((r) => [r, 0]),
  ) as Record<HttpRefusalReason, number>;
  /** Connections of each listener: open now, and closed by the connection limits by reason. */
  readonly connections: { grpc: ConnectionCounters; http: ConnectionCounters } = {
    grpc: zeroConnectionCounters(),
    http: zeroConnectionCounters(),
  };
  /** /metrics responses cut short: the scraper stopped reading or went away mid-body. */
  scrapesAborted = 0;
  /** /metrics expositions rendered (cache misses), and scrapes served one rendered before (hits). */
  metricsRenders = 0;
  metricsCacheHits = 0;
  /** Wall time of the last complete render, compression included, in seconds. */
  metricsRenderSeconds = 0;
  /** Size of the last complete exposition as text and gzip-compressed. */
  metricsExpositionBytes = { identity: 0, gzip: 0 };

  /**
   * What the exposition shows of these, as one string: equal strings, nothing changed. The
   * /metrics cache's own figures and the HTTP connections open are left out, as every scrape
   * moves them.
   */
  changeStamp(): string {
    return JSON.stringify([
      this.agentsConnected,
      this.windowsReceived,
      this.windowsRejected,
      this.windowsReplayed,
      this.influxPointsWritten,
      this.influxWriteErrors,
      this.spoolBytes,
      this.spooledWindows,
      this.streamsRefused,
      this.httpAuthFailures,
      this.httpRefused,
      this.connections.grpc,
      this.connections.http.refused,
      this.scrapesAborted,
    ]);
  }

  reject(reason: RejectionReason, count = 1): void {
    this.windowsRejected[reason] += count;
  }

  refuse(reason: StreamRefusalReason): void {
    this.streamsRefused[reason]++;
  }
}
