/**
 * The report's columns in one table, so the terminal table, CSV, JSON and HTML agree on
 * names, order and meaning. `id` is the CSV header and JSON key (stable: programs read it);
 * `header` is for people (the terminal table writes a two-word header on two lines);
 * `inTable` keeps the terminal table within 120 columns (render-text.ts, TABLE_WIDTH): the
 * idle figures, coverage, reclaimable GPUs and cost; CSV, JSON and HTML have every column.
 */
import type { Figures, Holder } from "./capacity.js";

export type ColumnKind = "count" | "hours" | "pct" | "signed_pct" | "gpus" | "money";

export interface Column {
  id: string;
  header: string;
  kind: ColumnKind;
  value: (f: Figures) => number | null;
  inTable: boolean;
  /** Only when a price per GPU-hour is given. */
  priced?: boolean;
}

export const COLUMNS: readonly Column[] = [
  { id: "gpus", header: "GPUS", kind: "count", value: (f) => f.gpus, inTable: true },
  { id: "gpu_hours_observed", header: "GPU-HOURS", kind: "hours", value: (f) => f.gpuHoursObserved, inTable: true },
  { id: "coverage_pct", header: "COVERAGE", kind: "pct", value: (f) => f.coveragePct, inTable: true },
  { id: "reported_idle_pct", header: "REPORTED IDLE", kind: "pct", value: (f) => f.reportedIdlePct, inTable: true },
  { id: "real_idle_pct", header: "REAL IDLE", kind: "pct", value: (f) => f.realIdlePct, inTable: true },
  { id: "hidden_idle_pct", header: "HIDDEN IDLE", kind: "signed_pct", value: (f) => f.hiddenIdlePct, inTable: true },
  {
    id: "real_idle_gpu_hours",
    header: "REAL-IDLE GPU-H",
    kind: "hours",
    value: (f) => f.realIdleGpuHours,
    inTable: false,
  },
  {
    id: "held_idle_gpu_hours",
    header: "HELD-IDLE GPU-H",
    kind: "hours",
    value: (f) => f.heldIdleGpuHours,
    inTable: false,
  },
  {
    id: "phantom_busy_gpu_hours",
    header: "PHANTOM-BUSY GPU-H",
    kind: "hours",
    value: (f) => f.phantomBusyGpuHours,
    inTable: false,
  },
  {
    id: "unused_capacity_pct",
    header: "UNUSED CAPACITY",
    kind: "pct",
    value: (f) => f.unusedCapacityPct,
    inTable: false,
  },
  { id: "reclaimable_gpus", header: "RECLAIMABLE GPUS", kind: "gpus", value: (f) => f.reclaimableGpus, inTable: true },
  { id: "hours_with_data", header: "HOURS WITH DATA", kind: "count", value: (f) => f.hoursWithData, inTable: false },
  { id: "idle_cost", header: "IDLE COST", kind: "money", value: (f) => f.idleCost, inTable: true, priced: true },
];

/** The columns of a report, with the cost column only when a price was given. */
export function columnsFor(priced: boolean): Column[] {
  return COLUMNS.filter((c) => !c.priced || priced);
}

/** The columns of "who holds idle GPUs"; ids shared with COLUMNS mean the same over the time an owner held its GPUs. */
export interface HolderColumn {
  id: string;
  header: string;
  kind: ColumnKind;
  value: (h: Holder) => number | null;
  /** In the terminal table (which fits 120 columns); CSV, JSON and HTML have every column. */
  inTable: boolean;
  priced?: boolean;
}

export const HOLDER_COLUMNS: readonly HolderColumn[] = [
  { id: "gpus", header: "GPUS", kind: "count", value: (h) => h.gpus, inTable: true },
  { id: "gpu_hours_observed", header: "HELD GPU-H", kind: "hours", value: (h) => h.heldGpuHours, inTable: true },
  { id: "real_idle_gpu_hours", header: "IDLE GPU-H", kind: "hours", value: (h) => h.realIdleGpuHours, inTable: true },
  {
    id: "held_idle_gpu_hours",
    header: "HELD-IDLE GPU-H",
    kind: "hours",
    value: (h) => h.heldIdleGpuHours,
    inTable: false,
  },
  {
    id: "phantom_busy_gpu_hours",
    header: "PHANTOM-BUSY GPU-H",
    kind: "hours",
    value: (h) => h.phantomBusyGpuHours,
    inTable: false,
  },
  { id: "real_idle_pct", header: "REAL IDLE", kind: "pct", value: (h) => h.realIdlePct, inTable: true },
  { id: "reported_idle_pct", header: "REPORTED IDLE", kind: "pct", value: (h) => h.reportedIdlePct, inTable: true },
  {
    id: "hidden_idle_pct",
    header: "HIDDEN IDLE",
    kind: "signed_pct",
    value: (h) => h.realIdlePct - h.reportedIdlePct,
    inTable: false,
  },
  { id: "idle_cost", header: "IDLE COST", kind: "money", value: (h) => h.idleCost, inTable: true, priced: true },
];

export function holderColumnsFor(priced: boolean): HolderColumn[] {
  return HOLDER_COLUMNS.filter((c) => !c.priced || priced);
}

const grouped = (digits: number): Intl.NumberFormat =>
  new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ONE = grouped(1);
const TWO = grouped(2);
const ZERO = grouped(0);

/** A value as people read it: 1 decimal for hours and percentages, 2 for money. */
export function formatHuman(kind: ColumnKind, v: number | null): string {
  if (v === null) return "-";
  // Rounded first, so a float residue such as -1e-15 prints as 0.0, never -0.0.
  const digits = kind === "count" ? 0 : kind === "money" ? 2 : 1;
  v = Math.round(v * 10 ** digits) / 10 ** digits || 0;
  switch (kind) {
    case "count":
      return ZERO.format(v);
    case "hours":
    case "gpus":
      return ONE.format(v);
    case "pct":
      return `${ONE.format(v)}%`;
    case "signed_pct":
      return `${v > 0 ? "+" : ""}${ONE.format(v)}%`;
    case "money":
      return TWO.format(v);
  }
}
