/**
 * The machine-independent renderings of a CapacityReport: the aligned terminal table, CSV
 * (RFC 4180) and JSON (stable snake_case keys, numbers as numbers).
 */
import { groupLabel, HOLDER_TAGS, ownerLabel, type CapacityReport, type Figures, type Holder } from "./capacity.js";
import { COLUMNS, columnsFor, formatHuman, HOLDER_COLUMNS, holderColumnsFor, type Column } from "./columns.js";
import { iso } from "./time-range.js";

/** The report's heading line, shared by the table and the HTML page. */
export function describeReport(r: CapacityReport): string {
  return `${describeRange(r)}; ${describeSource(r)}`;
}

/** The range and the grouping. */
function describeRange(r: CapacityReport): string {
  const of = r.subject === "owners" ? " (owners' held time)" : "";
  const hours =
    r.partialFromMs === null ? `${r.hours} hours` : `${Math.floor(r.hours)} hours + the hour in progress, PARTIAL`;
  return `${iso(r.range.startMs)} to ${iso(r.range.endMs)} (${hours}), by ${r.by.join(", ")}${of}`;
}

/** Which measurement was read, and why. */
function describeSource(r: CapacityReport): string {
  return `read ${r.measurementReason}`;
}

/** Columns the terminal rendering stays within (with the usual tags, such as --by site,model). */
export const TABLE_WIDTH = 120;

/** The total row's name. */
export function totalLabel(r: CapacityReport): string {
  return r.subject === "owners" ? "all owners" : "fleet total";
}

/** Owners the table and the HTML page show in "who holds idle GPUs" (JSON and CSV list them all). */
export const HOLDERS_SHOWN = { table: 10, html: 100 } as const;

/** The "who holds idle GPUs" heading, with how many owners it shows of how many. */
export function holdersHeading(r: CapacityReport, shown: number): string {
  const all = r.holders.holders.length + r.holders.omitted;
  const of = all > shown ? `; the ${shown} holding most of ${all}` : "";
  return `Who holds idle GPUs (owners by idle GPU-hours held${of})`;
}

/** What the section says when the range has no owner records. */
export const NO_HOLDERS =
  "No owner was recorded in this range: agents learn owners from the kubelet (--pod-resources-socket), a batch job mapping " +
  "(--job-mapping-dir) or the host's /proc (--host-root), and the collector writes the owner fields its --owner-labels names.";

/** The definitions printed under the table and the HTML page. */
export function reportNotes(r: CapacityReport): string[] {
  const notes = [
    "Real idle = free_idle + held_idle + busy_phantom time; reported idle = time with utilization.gpu below the busy threshold; " +
      "hidden idle = real - reported (percentage points). Percentages are of observed GPU time.",
    "Coverage = GPU-hours observed / (GPUs x hours in the range). Unused capacity = 1 - real busy / observed (real busy = sum of real utilization x time).",
    "Reclaimable GPUs = the 5th percentile, over the hours with data, of the GPU-equivalents really idle in each hour " +
      "(real-idle seconds in the hour / 3600): capacity that was really idle in at least 95% of those hours. " +
      `Hours without any data are not counted (whole fleet: ${r.total.hoursWithData} of ${Math.ceil(r.hours)} hours had data).`,
  ];
  if (r.partialFromMs !== null) {
    notes.push(
      `PARTIAL: the range ends with the hour in progress (from ${iso(r.partialFromMs)}), read from the raw windows up to ${iso(r.range.endMs)}. ` +
        "Windows still on their way are not in it yet, so its coverage reads low; its reclaimable GPUs are its real-idle share of the time observed so far x its GPUs. " +
        "Give --until a time to report whole hours only.",
    );
  }
  if (r.pricePerGpuHour !== null) notes.push(`Idle cost = real-idle GPU-hours x ${r.pricePerGpuHour} per GPU-hour.`);
  if (r.subject === "owners") {
    notes.push(
      "By owner: only the time an owner held a GPU counts (a free GPU has no owner), so GPUs here are the GPUs each owner held. " +
        "A GPU held by two owners at once (a time-sliced GPU, a pod's allocation beside a job) counts for each, so the owners' sum can exceed the fleet's GPU time.",
    );
  }
  if (r.holders.tags.length > 0) {
    notes.push(
      "Who holds idle GPUs: idle GPU-hours held = held_idle + busy_phantom time of the GPUs an owner held; idle % is of the time it held them. " +
        `Owners are named by ${r.holders.tags.join(", ")}.`,
    );
  }
  return notes;
}

/**
 * The terminal table: the columns marked inTable (columns.ts), each header of two words on
 * two lines ("REPORTED" over "IDLE"), so that a report by site and model, with a price, fits
 * TABLE_WIDTH columns.
 */
export function renderTable(r: CapacityReport): string {
  const inTable =
    r.subject === "owners" ? (c: Column): boolean => OWNER_TABLE.has(c.id) : (c: Column): boolean => c.inTable;
  const cols = columnsFor(r.pricePerGpuHour !== null).filter(inTable);
  const headers = [...r.by.map((t) => t.toUpperCase()), ...cols.map((c) => c.header)].map(twoLines);
  const row = (key: string[], f: Figures): string[] => [...key, ...cols.map((c) => formatHuman(c.kind, c.value(f)))];
  const body = r.groups.map((g) =>
    row(
      r.by.map((t) => (g.key[t] === "" ? "(none)" : (g.key[t] ?? ""))),
      g,
    ),
  );
  const totalKey = r.by.map((_, i) => (i === 0 ? totalLabel(r) : ""));
  const total = row(totalKey, r.total);
  const top = headers.map(([first]) => first);
  const bottom = headers.map(([, second]) => second);
  const all = [top, bottom, ...body, total];
  const widths = bottom.map((_, i) => Math.max(...all.map((cells) => cells[i]!.length)));
  const numeric = (i: number): boolean => i >= r.by.length;
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  const left = COLUMNS.filter((c) => !inTable(c) && !(c.priced === true && r.pricePerGpuHour === null)).map((c) =>
    c.header
      .toLowerCase()
      .replace(/gpu-h$/, "GPU-hours")
      .replace(/\bgpus\b/, "GPUs"),
  );
  return [
    ...wrap(`trueidle report: ${describeRange(r)};`, TABLE_WIDTH),
    ...wrap(describeSource(r), TABLE_WIDTH - 2).map((l) => `  ${l.trimStart()}`),
    "",
    line(top),
    line(bottom),
    ...body.map(line),
    rule,
    line(total),
    ...wrap(`Not in this table: ${left.join(", ")}; --format csv, json or html has every column.`, 100),
    "",
    ...holdersTable(r),
    "",
    ...reportNotes(r).flatMap((n) => wrap(n, 100)),
    "",
  ].join("\n");
}

/**
 * By owner the table shows the GPU-hours each owner held idle (held idle, phantom busy)
 * instead of coverage and reclaimable GPUs, which say less of an owner's held time.
 */
const OWNER_TABLE: ReadonlySet<string> = new Set([
  "gpus",
  "gpu_hours_observed",
  "reported_idle_pct",
  "real_idle_pct",
  "hidden_idle_pct",
  "held_idle_gpu_hours",
  "phantom_busy_gpu_hours",
  "idle_cost",
]);

/** A header as two lines: its last word below, the words before it above. */
function twoLines(header: string): [string, string] {
  const cut = header.lastIndexOf(" ");
  return cut < 0 ? ["", header] : [header.slice(0, cut), header.slice(cut + 1)];
}

/** Longest owner name the terminal table prints; longer ones end in an ellipsis. */
const OWNER_WIDTH = 48;

function holdersTable(r: CapacityReport): string[] {
  if (r.holders.holders.length === 0)
    return wrap(
      `Who holds idle GPUs: ${r.holders.tags.length === 0 ? NO_HOLDERS : "no owner held a GPU in this range."}`,
      100,
    );
  const shown = r.holders.holders.slice(0, HOLDERS_SHOWN.table);
  const cols = holderColumnsFor(r.pricePerGpuHour !== null).filter((c) => c.inTable);
  const cut = (s: string): string => (s.length > OWNER_WIDTH ? `${s.slice(0, OWNER_WIDTH - 1)}…` : s);
  const all = [
    ["OWNER", ...cols.map((c) => c.header)],
    ...shown.map((h) => [cut(ownerLabel(h.key)), ...cols.map((c) => formatHuman(c.kind, c.value(h)))]),
  ];
  const widths = all[0]!.map((_, i) => Math.max(...all.map((cells) => cells[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i > 0 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  const more = r.holders.holders.length + r.holders.omitted - shown.length;
  return [
    `${holdersHeading(r, shown.length)}:`,
    ...all.map(line),
    ...(more > 0 ? [`... and ${more} more (--format csv or json lists every owner)`] : []),
  ];
}

/** Word-wraps a note for the terminal; continuation lines are indented. */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      out.push(line);
      line = `  ${word}`;
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
 * tag columns empty), then one row per owner of "who holds idle GPUs" (`scope` = `holder`,
 * tag columns empty, the owner in the `owner_*` columns at the end, the figures that apply
 * to the time it held GPUs, the others empty). Numbers at full precision. The columns are
 * always the same; idle_cost is empty when no price was given. The last column, `partial`,
 * is the start of the hour in progress the range ends with (RFC 3339) on every row, empty
 * when the range is whole hours.
 */
export function renderCsv(r: CapacityReport): string {
  const cols = COLUMNS;
  const num = (v: number | null | undefined): string => (v === null || v === undefined ? "" : String(v));
  // Always the same columns, whichever owner fields the database has.
  const ownerCols = HOLDER_TAGS;
  const none = ownerCols.map(() => "");
  const partial = r.partialFromMs === null ? "" : iso(r.partialFromMs);
  const lines = [["scope", ...r.by, ...cols.map((c) => c.id), ...ownerCols.map((t) => `owner_${t}`), "partial"]];
  for (const g of r.groups)
    lines.push(["group", ...r.by.map((t) => g.key[t] ?? ""), ...cols.map((c) => num(c.value(g))), ...none, partial]);
  lines.push(["fleet", ...r.by.map(() => ""), ...cols.map((c) => num(c.value(r.total))), ...none, partial]);
  const holderValue = new Map(HOLDER_COLUMNS.map((c) => [c.id, c.value]));
  for (const h of r.holders.holders) {
    lines.push([
      "holder",
      ...r.by.map(() => ""),
      ...cols.map((c) => num(holderValue.get(c.id)?.(h))),
      ...ownerCols.map((t) => h.key[t] ?? ""),
      partial,
    ]);
  }
  return `${lines.map((l) => l.map(csvField).join(",")).join("\r\n")}\r\n`;
}

/** Every column, always: idle_cost is null when no price was given. */
function figuresJson(f: Figures): Record<string, number | null> {
  return Object.fromEntries(COLUMNS.map((c) => [c.id, c.value(f)]));
}

/** The JSON document; its keys are a stable interface (see README, "Capacity report"). */
export function reportJson(r: CapacityReport): unknown {
  return {
    range: {
      start: iso(r.range.startMs),
      end: iso(r.range.endMs),
      hours: r.hours,
      // The start of the hour in progress the range ends with, or null: whole hours.
      partial_from: r.partialFromMs === null ? null : iso(r.partialFromMs),
    },
    by: r.by,
    measurement: r.measurement,
    measurement_reason: r.measurementReason,
    subject: r.subject,
    price_per_gpu_hour: r.pricePerGpuHour,
    groups: r.groups.map((g) => ({ key: g.key, label: groupLabel(g.key), ...figuresJson(g) })),
    total: figuresJson(r.total),
    holders: {
      tags: r.holders.tags,
      owners: r.holders.holders.map((h) => ({ key: h.key, label: ownerLabel(h.key), ...holderJson(h) })),
      omitted: r.holders.omitted,
    },
    daily: {
      days: r.daily.days.map((d) => iso(d).slice(0, 10)),
      groups: r.daily.groups.map((g) => ({
        key: g.key,
        real_idle_pct: g.realIdlePct,
        reported_idle_pct: g.reportedIdlePct,
      })),
      fleet_state_seconds: r.daily.fleetStateSeconds,
    },
  };
}

function holderJson(h: Holder): Record<string, number | null> {
  return Object.fromEntries(HOLDER_COLUMNS.map((c) => [c.id, c.value(h)]));
}

export function renderJson(r: CapacityReport): string {
  return `${JSON.stringify(reportJson(r), null, 2)}\n`;
}
