/**
 * The capacity report, end to end: read aggregated sums from InfluxDB, compute the figures,
 * render them. The CLI (`cli/report-command.ts`) is a thin layer over these two calls.
 */
import { computeReport, type CapacityReport, type Measurement } from "./capacity.js";
import { InfluxQueryClient } from "../common/influx/client.js";
import type { InfluxCredentials } from "../common/influx/credentials.js";
import { influxTarget } from "../common/influx/target.js";
import { parseInfluxUrl } from "../common/influx/url.js";
import { readReportData, type Progress } from "./influx-source.js";
import { renderHtml } from "./render-html.js";
import { renderCsv, renderJson, renderTable } from "./render-text.js";
import type { TimeRange } from "./time-range.js";
import { REPORT_SETTINGS } from "./settings.js";

export const REPORT_FORMATS = REPORT_SETTINGS.format.choices;
export type ReportFormat = (typeof REPORT_FORMATS)[number];

export interface BuildReportOptions {
  /** `http://HOST:8086/DB`. */
  influxUrl: string;
  credentials?: InfluxCredentials | undefined;
  range: TimeRange;
  /** Tag keys to group by, e.g. ["site", "model"]. */
  by: readonly string[];
  /** Default REPORT_SETTINGS.measurement, "auto" (see influx-source.ts for the rule). */
  measurement?: Measurement | "auto" | undefined;
  pricePerGpuHour?: number | undefined;
  onProgress?: ((p: Progress) => void) | undefined;
  signal?: AbortSignal | undefined;
  /** Per InfluxDB query; default 60 s (DEFAULT_QUERY_TIMEOUT_MS). */
  queryTimeoutMs?: number | undefined;
  /** Now, for which hours the roll-ups may not hold yet (default Date.now()). */
  nowMs?: number | undefined;
}

export async function buildReport(opts: BuildReportOptions): Promise<CapacityReport> {
  const client = new InfluxQueryClient({
    target: influxTarget(parseInfluxUrl(opts.influxUrl), opts.credentials),
    timeoutMs: opts.queryTimeoutMs,
    timeoutFix: "give a longer --timeout, or a shorter range (--since, --until)",
  });
  await client.ping(opts.signal);
  const data = await readReportData({
    client,
    range: opts.range,
    by: opts.by,
    measurement: opts.measurement ?? REPORT_SETTINGS.measurement.default,
    onProgress: opts.onProgress,
    signal: opts.signal,
    nowMs: opts.nowMs,
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
  const h = (x: number): string => String(Math.round(x * 10) / 10);
  return `report: ${pct}% (${h(p.doneHours)}/${h(p.totalHours)} hours)`;
}
