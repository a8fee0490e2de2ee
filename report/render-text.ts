/**
 * The machine-independent renderings of a CapacityReport: the aligned terminal table, CSV
 * (RFC 4180) and JSON (stable snake_case keys, numbers as numbers).
 */
import { groupLabel, type CapacityReport, type Figures } from "./capacity.js";
import { COLUMNS, columnsFor, formatHuman } from "./columns.js";
import { iso } from "./time-range.js";

/** The report's heading line, shared by the table and the HTML page. */
export function describeReport(r: CapacityReport): string {
  return `${iso(r.range.startMs)} to ${iso(r.range.endMs)} (${r.hours} hours), by ${r.by.join(", ")}; read ${r.measurementReason}`;
}

/** The definitions printed under the table and the HTML page. */
export function reportNotes(r: CapacityReport): string[] {
  const notes = [
    "Real idle = free_idle + held_idle + busy_phantom time; reported idle = time with utilization.gpu below the busy threshold; " +
      "hidden idle = real - reported (percentage points). Percentages are of observed GPU time.",
    "Coverage = GPU-hours observed / (GPUs x hours in the range). Unused capacity = 1 - real busy / observed (real busy = sum of real utilization x time).",
    "Reclaimable GPUs = the 5th percentile, over the hours with data, of the GPU-equivalents really idle in each hour " +
      "(real-idle seconds in the hour / 3600): capacity that was really idle in at least 95% of those hours. " +
      `Hours without any data are not counted (whole fleet: ${r.total.hoursWithData} of ${r.hours} hours had data).`,
  ];
  if (r.pricePerGpuHour !== null) notes.push(`Idle cost = real-idle GPU-hours x ${r.pricePerGpuHour} per GPU-hour.`);
  return notes;
}

export function renderTable(r: CapacityReport): string {
  const cols = columnsFor(r.pricePerGpuHour !== null).filter((c) => c.inTable);
  const tagHeaders = r.by.map((t) => t.toUpperCase());
  const header = [...tagHeaders, ...cols.map((c) => c.header)];
  const row = (key: string[], f: Figures): string[] => [...key, ...cols.map((c) => formatHuman(c.kind, c.value(f)))];
  const body = r.groups.map((g) => row(r.by.map((t) => (g.key[t] === "" ? "(none)" : g.key[t] ?? "")), g));
  const totalKey = r.by.map((_, i) => (i === 0 ? "fleet total" : ""));
  const total = row(totalKey, r.total);
  const all = [header, ...body, total];
  const widths = header.map((_, i) => Math.max(...all.map((cells) => cells[i]!.length)));
  const numeric = (i: number): boolean => i >= r.by.length;
  const line = (cells: string[]): string =>
    cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [
    `trueidle report: ${describeReport(r)}`,
    "",
    line(header),
    ...body.map(line),
    rule,
    line(total),
    "",
    ...reportNotes(r).flatMap((n) => wrap(n, 100)),
    "",
  ].join("\n");
}

/** Word-wraps a note for the terminal; continuation lines are indented. */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      out.push(line);
      line = "  " + word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") out.push(line);
  return out;
}

/** RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled; lines end CRLF. */
export function csvField(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/**
 * Header, one row per group (`scope` = `group`), then the fleet total (`scope` = `fleet`,
 * tag columns empty). Numbers at full precision. The columns are always the same; idle_cost
 * is empty when no price was given.
 */
export function renderCsv(r: CapacityReport): string {
  const cols = COLUMNS;
  const num = (v: number | null): string => (v === null ? "" : String(v));
  const lines = [["scope", ...r.by, ...cols.map((c) => c.id)]];
  for (const g of r.groups) lines.push(["group", ...r.by.map((t) => g.key[t] ?? ""), ...cols.map((c) => num(c.value(g)))]);
  lines.push(["fleet", ...r.by.map(() => ""), ...cols.map((c) => num(c.value(r.total)))]);
  return lines.map((l) => l.map(csvField).join(",")).join("\r\n") + "\r\n";
}

/** Every column, always: idle_cost is null when no price was given. */
function figuresJson(f: Figures): Record<string, number | null> {
  return Object.fromEntries(COLUMNS.map((c) => [c.id, c.value(f)]));
}

/** The JSON document; its keys are a stable interface (see README, "Capacity report"). */
export function reportJson(r: CapacityReport): unknown {
  return {
    range: { start: iso(r.range.startMs), end: iso(r.range.endMs), hours: r.hours },
    by: r.by,
    measurement: r.measurement,
    measurement_reason: r.measurementReason,
    price_per_gpu_hour: r.pricePerGpuHour,
    groups: r.groups.map((g) => ({ key: g.key, label: groupLabel(g.key), ...figuresJson(g) })),
    total: figuresJson(r.total),
    daily: {
      days: r.daily.days.map((d) => iso(d).slice(0, 10)),
      groups: r.daily.groups.map((g) => ({ key: g.key, real_idle_pct: g.realIdlePct, reported_idle_pct: g.reportedIdlePct })),
      fleet_state_seconds: r.daily.fleetStateSeconds,
    },
  };
}

export function renderJson(r: CapacityReport): string {
  return JSON.stringify(reportJson(r), null, 2) + "\n";
}
