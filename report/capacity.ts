/**
 * The capacity report's arithmetic: pure, fed the per-hour, per-group sums InfluxDB
 * computed, and the set of GPUs (uuids) seen per group. Nothing here knows whether the sums
 * came from `gpu_window` or `gpu_hour`; that is the point — both give the same input.
 *
 * Definitions (seconds summed over the range and the group's GPUs):
 * - GPUs: distinct `uuid`s with at least one point in the range.
 * - GPU-hours observed: Σ observed_s ÷ 3600 (observed includes `unavailable` time).
 * - coverage %: GPU-hours observed ÷ (GPUs × hours in the range).
 * - reported idle %: Σ reported_idle_s ÷ Σ observed_s.
 * - real idle %: Σ (free_idle_s + held_idle_s + busy_phantom_s) ÷ Σ observed_s.
 * - hidden idle %: real idle % − reported idle % (percentage points; negative when the
 *   usual tools call time idle that trueidle counts as unavailable or active).
 * - held-idle / phantom-busy GPU-hours: Σ held_idle_s ÷ 3600, Σ busy_phantom_s ÷ 3600.
 * - unused capacity %: 1 − Σ real_busy_s ÷ Σ observed_s (real_busy_s = Σ real·dt, so this
 *   counts the unused part of active time too).
 * - reclaimable GPUs: see {@link reclaimableGpus}.
 * - idle cost: real-idle GPU-hours × the price per GPU-hour, only when a price is given.
 */
import { OWNER_LABELS } from "../common/owner-fields.js";
import { DAY_MS, floorDay, partialHourOf, rangeHours, type TimeRange } from "./time-range.js";

/** The fields the report sums, as named in InfluxDB. */
export const SUM_FIELDS = [
  "observed_s",
  "free_idle_s",
  "held_idle_s",
  "busy_phantom_s",
  "active_s",
  "unavailable_s",
  "reported_idle_s",
  "real_busy_s",
] as const;
export type SumField = (typeof SUM_FIELDS)[number];
export type Sums = Record<SumField, number>;

/**
 * What the report read its sums from: the fleet-hours (`fleet_hour`, GPUs counted from
 * `gpu_hour`), the GPU-hours (`gpu_hour`) or the raw windows (`gpu_window`).
 */
export type Measurement = "fleet_hour" | "gpu_hour" | "gpu_window";
/** What the groups are: GPUs (by their tags) or owners (`--by` an owner field; only held time counts). */
export type Subject = "gpus" | "owners";

/** One owner's sums on one GPU over (part of) the range, for the "who holds idle GPUs" section. */
export interface HolderGpuSums {
  /** Values of the report's holder tags, in their order; "" where unset. */
  key: readonly string[];
  uuid: string;
  sums: Sums;
}

/** One (UTC day, group) cell: the sums over the group's GPUs of every point in that day. */
export interface DayGroupSums {
  dayMs: number;
  /** Tag values in `by` order; "" where a GPU lacks the tag. */
  key: readonly string[];
  sums: Sums;
}

/**
 * One (hour, group) cell with at least one point: the group's real-idle seconds in that
 * hour (free_idle + held_idle + busy_phantom). Hours are asked for this alone because the
 * per-hour figure is only needed for the percentile, and every extra field summed per hour
 * costs InfluxDB as much as the first.
 */
export interface HourGroupIdle {
  hourMs: number;
  key: readonly string[];
  realIdleS: number;
  /**
   * For the hour in progress only: the group's observed seconds in it so far and its GPUs
   * in it. Its idle GPU-equivalents are then real idle ÷ observed × GPUs, as if the hour
   * went on as it began ({@link hourlyIdleGpus}).
   */
  observedS?: number | undefined;
  gpus?: number | undefined;
}

/** One GPU seen in one group during the range. */
export interface GroupGpu {
  key: readonly string[];
  uuid: string;
}

export interface ReportInput {
  range: TimeRange;
  by: readonly string[];
  /** Default "gpus". */
  subject?: Subject | undefined;
  measurement: Measurement;
  /** Why that measurement was read, in words, for the report's notes. */
  measurementReason: string;
  /** Per day and group; a day may come in several parts (chunks), which are added. */
  days: readonly DayGroupSums[];
  /** Per hour and group; several parts of one cell are added too. */
  hours: readonly HourGroupIdle[];
  gpus: readonly GroupGpu[];
  /** The owner fields holders are named by ([] when no owner was recorded). */
  holderTags?: readonly string[] | undefined;
  holders?: readonly HolderGpuSums[] | undefined;
  pricePerGpuHour?: number | undefined;
}

export interface Figures {
  gpus: number;
  gpuHoursObserved: number;
  coveragePct: number;
  reportedIdlePct: number;
  realIdlePct: number;
  hiddenIdlePct: number;
  realIdleGpuHours: number;
  heldIdleGpuHours: number;
  phantomBusyGpuHours: number;
  unusedCapacityPct: number;
  reclaimableGpus: number;
  /** Hours of the range with at least one point for this group; the percentile runs over these. */
  hoursWithData: number;
  /** null when no price was given. */
  idleCost: number | null;
}

export interface ReportGroup extends Figures {
  /** Tag → value, in `by` order; "" where the GPUs lack the tag. */
  key: Record<string, string>;
}

export const CHART_STATES = ["active", "busy_phantom", "held_idle", "free_idle", "unavailable"] as const;
export type ChartState = (typeof CHART_STATES)[number];

export interface DailySeries {
  /** 00:00 UTC of every day the range touches (the first and last may be partial). */
  days: number[];
  /** Per group, per day: real and reported idle % (null on a day without data). */
  groups: Array<{
    key: Record<string, string>;
    realIdlePct: Array<number | null>;
    reportedIdlePct: Array<number | null>;
  }>;
  /** Fleet-wide seconds per state per day. */
  fleetStateSeconds: Record<ChartState, number[]>;
}

/** An owner in "who holds idle GPUs": seconds it held GPUs, from gpu_owner_window / gpu_owner_hour. */
export interface Holder {
  /** Holder tag → value ("" unset). */
  key: Record<string, string>;
  /** GPUs it held in the range. */
  gpus: number;
  heldGpuHours: number;
  /** Held idle + phantom busy (+ free idle, which a held GPU does not have): the idle GPU time it held. */
  realIdleGpuHours: number;
  heldIdleGpuHours: number;
  phantomBusyGpuHours: number;
  /** Of the time it held GPUs. */
  realIdlePct: number;
  reportedIdlePct: number;
  /** null when no price was given. */
  idleCost: number | null;
}

/** Who held idle GPUs, most idle GPU-hours first. */
export interface HoldersSection {
  /** The owner fields an owner is named by; [] when the range has no owner records. */
  tags: string[];
  holders: Holder[];
  /** Owners left out past MAX_HOLDERS (the least idle). */
  omitted: number;
}

/** The owner fields "who holds idle GPUs" names an owner by (a pod's containers are one owner). */
export const HOLDER_TAGS: readonly string[] = OWNER_LABELS.filter((l) => l !== "container");

/** Owners a report lists at most in "who holds idle GPUs". */
export const MAX_HOLDERS = 1000;

export interface CapacityReport {
  range: TimeRange;
  /** Hours in the range; not whole when it ends with the hour in progress. */
  hours: number;
  /** The start of the hour in progress the range ends with (its figures count up to range.endMs), or null. */
  partialFromMs: number | null;
  by: string[];
  subject: Subject;
  measurement: Measurement;
  measurementReason: string;
  pricePerGpuHour: number | null;
  groups: ReportGroup[];
  total: Figures;
  daily: DailySeries;
  holders: HoldersSection;
}

export function emptySums(): Sums {
  return {
    observed_s: 0,
    free_idle_s: 0,
    held_idle_s: 0,
    busy_phantom_s: 0,
    active_s: 0,
    unavailable_s: 0,
    reported_idle_s: 0,
    real_busy_s: 0,
  };
}

export function addSums(into: Sums, s: Sums): void {
  for (const f of SUM_FIELDS) into[f] += s[f];
}

export function realIdleS(s: Sums): number {
  return s.free_idle_s + s.held_idle_s + s.busy_phantom_s;
}

/**
 * Nearest-rank percentile: sort ascending, take the value at rank ⌈p/100 · n⌉ (1-based).
 * For p = 5 at least 95 % of the values are ≥ the result. 0 for no values.
 */
export function nearestRankPercentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

/**
 * Reclaimable GPUs: for every hour of the range in which the group has at least one point,
 * the number of GPU-equivalents really idle in that hour, Σ real-idle seconds ÷ 3600; then
 * the 5th percentile of those hourly numbers (nearest rank). It is capacity that was really
 * idle in at least 95 % of the hours with data — what could be sold or handed back without
 * the remaining GPUs running short in more than 1 hour in 20. Hours with no data at all
 * (no point from any GPU of the group) are left out rather than counted as 0 idle: a gap
 * in the history is not evidence that the capacity was used. The hour in progress counts
 * as real idle ÷ observed × its GPUs (see {@link HourGroupIdle}): its seconds so far ÷ 3600
 * would read as idle capacity lost.
 */
export function reclaimableGpus(hourlyIdleGpus: readonly number[]): number {
  return nearestRankPercentile(hourlyIdleGpus, 5);
}

/** One hour's GPU-equivalents really idle: whole hours Σ ÷ 3600, the hour in progress as said above. */
export function hourlyIdleGpus(h: {
  realIdleS: number;
  observedS?: number | undefined;
  gpus?: number | undefined;
}): number {
  if (h.observedS === undefined) return h.realIdleS / 3600;
  return h.observedS > 0 ? (h.realIdleS / h.observedS) * (h.gpus ?? 0) : 0;
}

function figures(
  sums: Sums,
  gpus: number,
  rangeH: number,
  hourlyIdle: readonly number[],
  price: number | undefined,
): Figures {
  // hourlyIdle: GPU-equivalents really idle, per hour with data.
  const obs = sums.observed_s;
  const pct = (x: number): number => (obs > 0 ? (x / obs) * 100 : 0);
  const realIdle = realIdleS(sums);
  const reportedIdlePct = pct(sums.reported_idle_s);
  const realIdlePct = pct(realIdle);
  const realIdleGpuHours = realIdle / 3600;
  return {
    gpus,
    gpuHoursObserved: obs / 3600,
    coveragePct: gpus > 0 ? (obs / 3600 / (gpus * rangeH)) * 100 : 0,
    reportedIdlePct,
    realIdlePct,
    hiddenIdlePct: realIdlePct - reportedIdlePct,
    realIdleGpuHours,
    heldIdleGpuHours: sums.held_idle_s / 3600,
    phantomBusyGpuHours: sums.busy_phantom_s / 3600,
    unusedCapacityPct: obs > 0 ? (1 - sums.real_busy_s / obs) * 100 : 0,
    reclaimableGpus: reclaimableGpus(hourlyIdle),
    hoursWithData: hourlyIdle.length,
    idleCost: price === undefined ? null : realIdleGpuHours * price,
  };
}

interface Acc {
  key: readonly string[];
  sums: Sums;
  /** hourMs → real idle seconds in that hour (and, for the hour in progress, observed seconds and GPUs). */
  hourly: Map<number, { realIdleS: number; observedS?: number | undefined; gpus?: number | undefined }>;
  uuids: Set<string>;
  daily: Map<number, Sums>;
}

function newAcc(key: readonly string[]): Acc {
  return { key, sums: emptySums(), hourly: new Map(), uuids: new Set(), daily: new Map() };
}

function addDay(acc: Acc, d: DayGroupSums): void {
  addSums(acc.sums, d.sums);
  let into = acc.daily.get(d.dayMs);
  if (!into) acc.daily.set(d.dayMs, (into = emptySums()));
  addSums(into, d.sums);
}

function addHour(acc: Acc, h: HourGroupIdle): void {
  const cell = acc.hourly.get(h.hourMs);
  if (!cell) {
    acc.hourly.set(h.hourMs, { realIdleS: h.realIdleS, observedS: h.observedS, gpus: h.gpus });
    return;
  }
  cell.realIdleS += h.realIdleS;
  if (h.observedS !== undefined) cell.observedS = (cell.observedS ?? 0) + h.observedS;
  if (h.gpus !== undefined) cell.gpus = (cell.gpus ?? 0) + h.gpus;
}

function idleGpusByHour(a: Acc): number[] {
  return [...a.hourly.values()].map(hourlyIdleGpus);
}

/** Compares group keys tag by tag, so the order of groups is stable and readable. */
function compareKeys(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const c = (a[i] ?? "").localeCompare(b[i] ?? "", "en");
    if (c !== 0) return c;
  }
  return 0;
}

export function computeReport(input: ReportInput): CapacityReport {
  const rangeH = rangeHours(input.range);
  const groups = new Map<string, Acc>();
  const fleet = newAcc([]);
  const accFor = (key: readonly string[]): Acc => {
    const id = JSON.stringify(key);
    let a = groups.get(id);
    if (!a) groups.set(id, (a = newAcc(key)));
    return a;
  };
  // The sums must already be limited to the range (InfluxDB's WHERE does it); day cells
  // start at 00:00 UTC, so they cannot be checked against the range here. Hour cells can.
  for (const d of input.days) {
    addDay(accFor(d.key), d);
    addDay(fleet, d);
  }
  for (const h of input.hours) {
    if (h.hourMs < input.range.startMs || h.hourMs >= input.range.endMs) continue;
    addHour(accFor(h.key), h);
    addHour(fleet, h);
  }
  for (const g of input.gpus) {
    accFor(g.key).uuids.add(g.uuid);
    fleet.uuids.add(g.uuid);
  }
  const price = input.pricePerGpuHour;
  const keyRecord = (key: readonly string[]): Record<string, string> =>
    Object.fromEntries(input.by.map((t, i) => [t, key[i] ?? ""]));
  const sorted = [...groups.values()].filter((a) => a.hourly.size > 0).sort((a, b) => compareKeys(a.key, b.key));

  const days: number[] = [];
  for (let d = floorDay(input.range.startMs); d < input.range.endMs; d += DAY_MS) days.push(d);
  const dayPct = (a: Acc, f: (s: Sums) => number): Array<number | null> =>
    days.map((d) => {
      const s = a.daily.get(d);
      return s && s.observed_s > 0 ? (f(s) / s.observed_s) * 100 : null;
    });
  const stateField: Record<ChartState, SumField> = {
    active: "active_s",
    busy_phantom: "busy_phantom_s",
    held_idle: "held_idle_s",
    free_idle: "free_idle_s",
    unavailable: "unavailable_s",
  };
  const fleetStateSeconds = Object.fromEntries(
    CHART_STATES.map((st) => [st, days.map((d) => fleet.daily.get(d)?.[stateField[st]] ?? 0)]),
  ) as Record<ChartState, number[]>;

  return {
    range: input.range,
    hours: rangeH,
    partialFromMs: partialHourOf(input.range),
    by: [...input.by],
    subject: input.subject ?? "gpus",
    measurement: input.measurement,
    measurementReason: input.measurementReason,
    pricePerGpuHour: price ?? null,
    groups: sorted.map((a) => ({
      key: keyRecord(a.key),
      ...figures(a.sums, a.uuids.size, rangeH, idleGpusByHour(a), price),
    })),
    total: figures(fleet.sums, fleet.uuids.size, rangeH, idleGpusByHour(fleet), price),
    daily: {
      days,
      groups: sorted.map((a) => ({
        key: keyRecord(a.key),
        realIdlePct: dayPct(a, realIdleS),
        reportedIdlePct: dayPct(a, (s) => s.reported_idle_s),
      })),
      fleetStateSeconds,
    },
    holders: holdersSection(input.holderTags ?? [], input.holders ?? [], price),
  };
}

/**
 * "Who holds idle GPUs": each owner's sums over the range and its GPUs, most idle
 * GPU-hours first (then by name), at most MAX_HOLDERS. An owner with no idle time is
 * listed too (it held GPUs and used them).
 */
export function holdersSection(
  tags: readonly string[],
  rows: readonly HolderGpuSums[],
  price: number | undefined,
): HoldersSection {
  const byOwner = new Map<string, { key: readonly string[]; sums: Sums; uuids: Set<string> }>();
  for (const r of rows) {
    const id = JSON.stringify(r.key);
    let a = byOwner.get(id);
    if (!a) byOwner.set(id, (a = { key: r.key, sums: emptySums(), uuids: new Set() }));
    addSums(a.sums, r.sums);
    a.uuids.add(r.uuid);
  }
  const holders: Holder[] = [...byOwner.values()]
    .filter((a) => a.sums.observed_s > 0)
    .map((a) => {
      const obs = a.sums.observed_s;
      const idle = realIdleS(a.sums);
      return {
        key: Object.fromEntries(tags.map((t, i) => [t, a.key[i] ?? ""])),
        gpus: a.uuids.size,
        heldGpuHours: obs / 3600,
        realIdleGpuHours: idle / 3600,
        heldIdleGpuHours: a.sums.held_idle_s / 3600,
        phantomBusyGpuHours: a.sums.busy_phantom_s / 3600,
        realIdlePct: (idle / obs) * 100,
        reportedIdlePct: (a.sums.reported_idle_s / obs) * 100,
        idleCost: price === undefined ? null : (idle / 3600) * price,
      };
    })
    .sort((a, b) => b.realIdleGpuHours - a.realIdleGpuHours || compareKeys(Object.values(a.key), Object.values(b.key)));
  return {
    tags: [...tags],
    holders: holders.slice(0, MAX_HOLDERS),
    omitted: Math.max(0, holders.length - MAX_HOLDERS),
  };
}

/**
 * An owner for people: `namespace/pod` (container after a colon), `job N`, `user U`, joined
 * by ", "; "(unknown)" when no field is set.
 */
export function ownerLabel(key: Readonly<Record<string, string>>): string {
  const parts: string[] = [];
  const ns = key["namespace"] ?? "";
  const pod = key["pod"] ?? "";
  const container = key["container"] ?? "";
  if (ns !== "" || pod !== "")
    parts.push([ns, pod].filter((v) => v !== "").join("/") + (container !== "" ? `:${container}` : ""));
  else if (container !== "") parts.push(`container ${container}`);
  if ((key["job"] ?? "") !== "") parts.push(`job ${key["job"]}`);
  if ((key["user"] ?? "") !== "") parts.push(`user ${key["user"]}`);
  return parts.length > 0 ? parts.join(", ") : "(unknown)";
}

/** A group's name for people: tag values joined by " / ", "(none)" for a missing tag. */
export function groupLabel(key: Record<string, string>): string {
  const vals = Object.values(key);
  if (vals.length === 0) return "fleet";
  return vals.map((v) => (v === "" ? "(none)" : v)).join(" / ");
}
