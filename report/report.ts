/**
 * The capacity report, end to end: read aggregated sums from InfluxDB, compute the figures,
 * render them. The CLI (`cli/report-command.ts`) is a thin layer over these two calls.
 */
import { computeReport, type CapacityReport, type Measurement } from "./capacity.js";
import { InfluxQueryClient, parseInfluxUrl, type InfluxCredentials } from "./influx-connection.js";
import { readReportData, type Progress } from "./influx-source.js";
import { renderHtml } from "./render-html.js";
import { renderCsv, renderJson, renderTable } from "./render-text.js";
import type { TimeRange } from "./time-range.js";

export const REPORT_FORMATS = ["table", "csv", "json", "html"] as const;
export type ReportFormat = (typeof REPORT_FORMATS)[number];

export interface BuildReportOptions {
  /** `http://HOST:8086/DB`. */
  influxUrl: string;
  credentials?: InfluxCredentials | undefined;
  range: TimeRange;
  /** Tag keys to group by, e.g. ["site", "model"]. */
  by: readonly string[];
  /** Default "auto" (see influx-source.ts for the rule). */
  measurement?: Measurement | "auto" | undefined;
  pricePerGpuHour?: number | undefined;
  onProgress?: ((p: Progress) => void) | undefined;
  signal?: AbortSignal | undefined;
  /** Per InfluxDB query; default 60 s (DEFAULT_QUERY_TIMEOUT_MS). */
  queryTimeoutMs?: number | undefined;
}

export async function buildReport(opts: BuildReportOptions): Promise<CapacityReport> {
  const client = new InfluxQueryClient({
    target: parseInfluxUrl(opts.influxUrl),
    credentials: opts.credentials,
    timeoutMs: opts.queryTimeoutMs,
  });
  await client.ping(opts.signal);
  const data = await readReportData({
    client,
    range: opts.range,
    by: opts.by,
    measurement: opts.measurement ?? "auto",
    onProgress: opts.onProgress,
    signal: opts.signal,
  });
  return computeReport({ ...data, pricePerGpuHour: opts.pricePerGpuHour });
}

export async function renderReport(r: CapacityReport, format: ReportFormat): Promise<string> {
  switch (format) {
    case "table":
      return renderTable(r);
    case "csv":
      return renderCsv(r);
    case "json":
      return renderJson(r);
    case "html":
      return renderHtml(r);
  }
}

/** `report: 40% (36/90 days)`; in hours for ranges under two days. */
export function formatProgress(p: Progress): string {
  const pct = p.totalHours > 0 ? Math.floor((p.doneHours / p.totalHours) * 100) : 100;
  if (p.totalHours >= 48) {
    const days = Math.ceil(p.totalHours / 24);
    return `report: ${pct}% (${p.doneHours >= p.totalHours ? days : Math.floor(p.doneHours / 24)}/${days} days)`;
  }
  return `report: ${pct}% (${p.doneHours}/${p.totalHours} hours)`;
}
