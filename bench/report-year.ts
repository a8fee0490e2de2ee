/**
 * `trueidle report` over a year of 1,000 GPUs: how long `buildReport` takes on the history
 * a collector keeps for two years (DESIGN.md: the report over 1 year × 1,000 GPUs).
 *
 * The section starts its own private `influxd` (`demo/private-influxd.ts`), sets the schema
 * up with `ensureSchema`, and fills it fast: `gpu_hour` points written directly (one per
 * GPU-hour, 125 hosts × 8 GPUs of `historyFleet(125)` × 8,760 hours ≈ 8.8 M points), not
 * rolled up from windows, in 10,000-line POSTs with 2 in flight; beside them the `fleet_hour`
 * points the fleet roll-up would write from them (one per hour and fleet group — model, pool,
 * site: 6 groups — with the nine `*_s` sums, `real_idle_s` and the integer `gpus`), summed in
 * JS from the same values while filling, a week at a time; plus `gpu_window` points
 * (5-minute windows, as `trueidle demo --backfill` writes) for the last day only, so the
 * short-range path that reads raw windows has its data too. Tags are exactly what the
 * collector and its roll-up write (`host`, `gpu`, `uuid`, `model`, the labels `site` and
 * `pool`); field names and types are the roll-up's. Each GPU-hour's state comes from
 * `FleetHistoryModel.activity` (office-hour rhythm per site, the idle site, the spinning
 * inference model); the values within are a cheap deterministic function of the state and
 * a hash. What matters here is the series count and the point count, not the numbers.
 *
 * `ensureSchema` creates the fleet roll-up's continuous query by the tag keys present when
 * it runs, and replaces it (dropping `fleet_hour`) when they change: so it runs again once
 * the first GPU-hours are written and before any fleet point is, and once more after the
 * fill, when it must change nothing. (The private influxd runs continuous queries once a
 * day, so none runs during the bench.)
 *
 * Then the product's own roll-up of the last day, `rollupStatement` of the fleet roll-up
 * run as one statement: it rewrites that day's `fleet_hour` points with InfluxDB's sums
 * (the same values), and its time says what a year's back-fill of `fleet_hour` from
 * `gpu_hour` costs (about 365 times as much). Then `buildReport` for the year `--by
 * site,model` and `--by model`, the last 30 days and the last day (all four read
 * `fleet_hour`), and the last day read from `gpu_window` (`--measurement gpu_window`: the
 * raw path, as `--by host` takes it), the cases taking turns, `runs` times each; the median
 * is the figure. Each case has a baseline measured in the same turn: the same sums as one
 * bare InfluxQL statement over the raw roll-up (`gpu_hour`, whether the report read it or
 * `fleet_hour`; `gpu_window` for the raw case: `SELECT sum(…) × 8 … GROUP BY <the --by tags>`), so the
 * ratio says what the report costs beyond reading its sums once. Beside them, every InfluxQL
 * query of the Grafana Capacity dashboard (deploy/grafana/trueidle-capacity.json) over the
 * last 30 days, against the bare sums of the same 30 days over `gpu_hour`. The self-check:
 * each report must count every GPU and every GPU-hour that was written, and `fleet_hour`
 * must hold one point per hour and group, whose `observed_s` adds up to `gpu_hour`'s over
 * the year and whose `gpus` add up to the GPU-hours written; else it measured the wrong
 * thing.
 *
 * The fill is kept between runs: in `.bench/report-year/<GPUs>-gpus-<days>-days` unless
 * `--data DIR` names another place (`--temp`: a temporary one, removed after). A directory
 * that already holds a fill of the same size is reused (the year then ends where that fill
 * ended) instead of written again: 1,000 GPUs take about 2 minutes to fill and 0.5 GiB,
 * 10,000 GPUs (`--gpus 10000`) about 20 minutes and 5 GiB. A kept fill without `fleet_hour`
 * (one written before the fleet roll-up existed, or one whose `fleet_hour` a changed query
 * dropped) gets it added: the GPU-hours' values are generated again (they are deterministic)
 * and only the fleet points are written, `gpu_hour` left as it is.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as path from "node:path";
import { buildReport } from "../report/report.js";
import { SUM_FIELDS, type CapacityReport } from "../report/capacity.js";
import { resolveRange, type TimeRange } from "../report/time-range.js";
import { escapeTag } from "../collector/influx/line-protocol.js";
import { InfluxQueryClient } from "../common/influx/client.js";
import {
  DAY_MS,
  FLEET_HOUR_FIELDS,
  HOUR_MS,
  MEASUREMENT_FLEET_HOUR,
  MEASUREMENT_HOUR,
  MEASUREMENT_WINDOW,
  PER_GPU_TAGS,
  RP_HOUR,
  RP_WINDOW,
  SECONDS_FIELDS,
  ensureFleetRollup,
  ensureSchema,
  rollupStatement,
  type RetentionConfig,
} from "../collector/influx/schema.js";
import { findInfluxd, INFLUXD_MISSING_HELP, startPrivateInfluxd } from "../demo/private-influxd.js";
import { FleetHistoryModel, historyFleet, type Activity, type HistoryHost } from "../demo/fleet-history.js";
import { environment, spread, textTable, type Spread } from "./harness.js";

export interface ReportYearOptions {
  /** 8-GPU hosts (default 125: 1,000 GPUs). */
  hosts: number;
  /** Days of `gpu_hour` history (default 365). */
  days: number;
  /** Timed runs of each report (default 3). */
  runs: number;
  /** Keep the data dir (a temp dir otherwise removed). */
  keep: boolean;
  /** Use and keep this data dir; a matching earlier fill in it is reused. */
  dataDir?: string | undefined;
  /** Progress lines (stderr). */
  progress: (line: string) => void;
}

export interface ReportCaseResult {
  name: string;
  since: string;
  by: string[];
  measurement: string;
  /** Every run, in the order they ran. */
  runsMs: number[];
  ms: Spread;
  /** The bare statement of the same sums, each turn, and report ÷ bare per turn. */
  baselineMs: Spread;
  ratio: Spread;
  groups: number;
  gpus: number;
  gpuHoursObserved: number;
}

export type ReportYearResult =
  | {
      skipped: false;
      influxdVersion: string;
      hosts: number;
      gpus: number;
      days: number;
      /** The year's end (exclusive, a whole hour), ISO. */
      endsAt: string;
      hourPoints: number;
      windowPoints: number;
      /** `fleet_hour` points: one per hour and fleet group. */
      fleetHourPoints: number;
      /** Fleet groups (model, pool, site) of the GPUs. */
      fleetGroups: number;
      /** Wall time of the whole fill (every measurement), or null when an earlier fill was reused. */
      fillS: number | null;
      /** Wall time of adding `fleet_hour` to a kept fill that lacked it, or null when none was added. */
      fleetAddS: number | null;
      /** The product's fleet roll-up of the last day from `gpu_hour` (`rollupStatement`), one statement. */
      fleetRollupDayMs: number;
      /** Points that roll-up wrote (24 × the fleet groups). */
      fleetRollupPoints: number;
      fillPointsPerS: number | null;
      linesPerRequest: number;
      inFlight: number;
      /** Bytes on disk of influxd's data dir after the fill. */
      dataDirBytes: number;
      dataDir: string | null;
      reports: ReportCaseResult[];
      /** The Capacity dashboard's queries over the last 30 days. */
      dashboard: DashboardQueryResult[];
      /** The bare 8 sums over the same 30 days, no grouping: the dashboard's baseline. */
      dashboardBaselineMs: Spread;
      /** Problems the self-check found; empty when the reports counted what was written. */
      selfCheckProblems: string[];
    }
  | { skipped: true; reason: string };

export interface DashboardQueryResult {
  panel: string;
  ms: Spread;
  /** query ÷ the bare 30-day sums, per turn. */
  ratio: Spread;
  series: number;
}

export const REPORT_YEAR_DEFAULTS = { hosts: 125, days: 365, runs: 3 };

/** Where a fill of `hosts` × 8 GPUs over `days` is kept between runs, by default. */
export function defaultDataDir(hosts: number, days: number): string {
  return path.join(
    path.dirname(fileURLToPath(import.meta.url)),
    "..",
    ".bench",
    "report-year",
    `${hosts * 8}-gpus-${days}-days`,
  );
}

const LINES_PER_REQUEST = 10_000;
const IN_FLIGHT = 2;
const DB = "bench";
/** Raw windows of the last day: 5 minutes, as the demo's backfill writes them. */
const WINDOW_MS = 300_000;
const WINDOWS_PER_HOUR = HOUR_MS / WINDOW_MS;
const MARKER = "trueidle-report-year.json";

interface Gpu {
  host: HistoryHost;
  hostIndex: number;
  index: number;
  /** `,gpu=…,host=…,model=…,pool=…,site=…,uuid=…` sorted by key, escaped. */
  tags: string;
  key: number;
  /** Its fleet group: an index into the list of fleet tag sets. */
  group: number;
}

type SecondsField = (typeof SECONDS_FIELDS)[number];

/** One GPU-hour's (or window's) values: the nine seconds fields and the gauges (absent while the GPU is lost). */
interface SpanValues {
  seconds: Record<SecondsField, number>;
  power: number | undefined;
  powerMax: number | undefined;
  mem: number | undefined;
  procs: number;
}

/** One GPU-hour's (or window's) values, scaled to `seconds` of the span; `hour` picks the hash. */
function valuesFor(g: Gpu, a: Activity, hour: number, seconds: number): SpanValues {
  const m = g.host.model;
  const n = unit(hash(g.key, hour));
  let free = 0,
    held = 0,
    phantom = 0,
    active = 0,
    unavailable = 0,
    reportedIdle = 0,
    reportedBusy = 0,
    realBusy = 0;
  let power: number | undefined;
  let powerMax: number | undefined;
  let mem: number | undefined;
  let procs = 0;
  switch (a) {
    case "lost":
      unavailable = seconds;
      break;
    case "working":
      active = seconds;
      reportedBusy = seconds;
      realBusy = round1(seconds * (0.3 + 0.6 * n));
      power = round1(m.idlePowerW + (0.3 + 0.6 * n) * (m.powerLimitW - m.idlePowerW));
      powerMax = round1(Math.min(m.powerLimitW, power * 1.15));
      mem = Math.round(0.6 * m.memTotalMiB) * 1_048_576;
      procs = 1;
      break;
    case "holding":
      held = seconds;
      reportedIdle = seconds;
      realBusy = round1(seconds * 0.01 * n);
      power = round1(m.idlePowerW + 6 + 2 * n);
      powerMax = round1(power + 2);
      mem = 12_288 * 1_048_576;
      procs = 1;
      break;
    case "spinning":
      phantom = seconds;
      reportedBusy = seconds;
      realBusy = round1(seconds * 0.03 * n);
      power = round1(m.idlePowerW + 8 + 4 * n);
      powerMax = round1(power + 4);
      mem = Math.round(0.4 * m.memTotalMiB) * 1_048_576;
      procs = 1;
      break;
    case "free":
      free = seconds;
      if (g.host.persistenceOff) reportedBusy = seconds;
      else reportedIdle = seconds;
      power = round1(m.idlePowerW + n);
      powerMax = round1(power + 1);
      mem = 1_048_576;
      break;
  }
  return {
    seconds: {
      observed_s: seconds,
      free_idle_s: free,
      held_idle_s: held,
      busy_phantom_s: phantom,
      active_s: active,
      unavailable_s: unavailable,
      reported_idle_s: reportedIdle,
      reported_busy_s: reportedBusy,
      real_busy_s: realBusy,
    },
    power,
    powerMax,
    mem,
    procs,
  };
}

/** A GPU-hour's (or window's) values as line-protocol fields; `windows` > 0 adds the roll-up's window count. */
function formatFields(v: SpanValues, windows: number): string {
  const x = v.seconds;
  let s =
    `observed_s=${x.observed_s},free_idle_s=${x.free_idle_s},held_idle_s=${x.held_idle_s},busy_phantom_s=${x.busy_phantom_s}` +
    `,active_s=${x.active_s},unavailable_s=${x.unavailable_s},reported_idle_s=${x.reported_idle_s}` +
    `,reported_busy_s=${x.reported_busy_s},real_busy_s=${x.real_busy_s}`;
  if (v.power !== undefined) s += `,power_w=${v.power},power_max_w=${v.powerMax}`;
  if (v.mem !== undefined) s += `,mem_used_max_bytes=${v.mem}i`;
  s += `,processes_max=${v.procs}i`;
  if (windows > 0) s += `,windows=${windows}i`;
  return s;
}

/**
 * How each `fleet_hour` field comes from one GPU-hour's seconds, read from the schema's own
 * FLEET_HOUR_FIELDS: a sum of one or more seconds fields, or a count (an integer).
 */
const FLEET_COLUMNS: ReadonlyArray<{ name: string; count: boolean; sources: readonly SecondsField[] }> =
  FLEET_HOUR_FIELDS.map(([name, agg, from]) => {
    const sources = typeof from === "string" ? [from] : [...from];
    const seconds: readonly string[] = SECONDS_FIELDS;
    if ((agg !== "sum" && agg !== "count") || !sources.every((f) => seconds.includes(f)))
      throw new Error(`the bench cannot compute fleet_hour's ${name} (${agg} of ${sources.join(", ")})`);
    return { name, count: agg === "count", sources: sources as SecondsField[] };
  });

/**
 * The `fleet_hour` points of hours from `fromHour` on, summed from GPU-hours as they are
 * generated: keyed by hour and fleet group, as the roll-up groups them.
 */
class FleetHours {
  private readonly sums = new Map<number, Float64Array>();

  /** `groupTags`: each fleet group's tags (`,model=…,pool=…,site=…`), by group index. */
  constructor(
    private readonly groupTags: readonly string[],
    private readonly fromHour: number,
  ) {}

  add(group: number, hour: number, seconds: Record<SecondsField, number>): void {
    const key = (hour - this.fromHour) * this.groupTags.length + group;
    let acc = this.sums.get(key);
    if (acc === undefined) {
      acc = new Float64Array(FLEET_COLUMNS.length);
      this.sums.set(key, acc);
    }
    for (let i = 0; i < FLEET_COLUMNS.length; i++) {
      const c = FLEET_COLUMNS[i]!;
      let add = c.count ? 1 : 0;
      if (!c.count) for (const f of c.sources) add += seconds[f];
      acc[i] = (acc[i] ?? 0) + add;
    }
  }

  /** The points as line protocol, by hour and group; the sums start again empty. */
  take(): string[] {
    const n = this.groupTags.length;
    const lines = [...this.sums.entries()]
      .sort(([a], [b]) => a - b)
      .map(([key, acc]) => {
        const hour = this.fromHour + Math.floor(key / n);
        const fields = FLEET_COLUMNS.map((c, i) => `${c.name}=${acc[i] ?? 0}${c.count ? "i" : ""}`).join(",");
        return `${MEASUREMENT_FLEET_HOUR}${this.groupTags[key % n]} ${fields} ${hour * HOUR_MS}`;
      });
    this.sums.clear();
    return lines;
  }
}

/**
 * The GPU-hours of `gpus` over hours [fromHour, toHour), each GPU's hours together: each is
 * added to `fleet`, and its `gpu_hour` line pushed to `lines` when given. The one place a
 * GPU-hour's values are made, for the fill and for adding `fleet_hour` to a kept fill alike.
 */
function generateHours(
  model: FleetHistoryModel,
  gpus: readonly Gpu[],
  fromHour: number,
  toHour: number,
  fleet: FleetHours,
  lines?: string[],
): void {
  for (const g of gpus) {
    for (let hour = fromHour; hour < toHour; hour++) {
      const t = hour * HOUR_MS;
      const v = valuesFor(g, model.activity(g.hostIndex, g.index, t), hour, 3600);
      fleet.add(g.group, hour, v.seconds);
      lines?.push(`${MEASUREMENT_HOUR}${g.tags} ${formatFields(v, WINDOWS_PER_HOUR)} ${t}`);
    }
  }
}

/** POSTs line bodies, `IN_FLIGHT` at a time; `push` waits while that many are in flight. */
class Poster {
  private readonly inFlight = new Set<Promise<void>>();
  private readonly written = new Map<string, number>();
  private failure: unknown;

  constructor(private readonly baseUrl: string) {}

  /** Points written so far under `what` (the measurement a push named). */
  points(what: string): number {
    return this.written.get(what) ?? 0;
  }

  async push(rp: string, what: string, lines: string[]): Promise<void> {
    while (this.inFlight.size >= IN_FLIGHT) await Promise.race(this.inFlight);
    if (this.failure !== undefined) throw this.failure;
    const body = lines.join("\n");
    const n = lines.length;
    const p = (async () => {
      const res = await fetch(`${this.baseUrl}/write?db=${DB}&rp=${rp}&precision=ms`, { method: "POST", body });
      if (res.status !== 204)
        throw new Error(`InfluxDB refused a write (HTTP ${res.status}): ${(await res.text()).slice(0, 300)}`);
      await res.arrayBuffer().catch(() => undefined);
      this.written.set(what, this.points(what) + n);
    })()
      .catch((err: unknown) => {
        this.failure ??= err;
      })
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  async drain(): Promise<void> {
    await Promise.all(this.inFlight);
    if (this.failure !== undefined) throw this.failure;
  }
}

interface Marker {
  hosts: number;
  days: number;
  endMs: number;
  hourPoints: number;
  windowPoints: number;
  /** Absent in a fill kept from before the bench wrote `fleet_hour`. */
  fleetHourPoints?: number | undefined;
}

/**
 * Progress of `total` units of `what`: a line at 5 %, then every 10 s, and the last one
 * (`final`) with the time taken.
 */
function progressLine(
  progress: (line: string) => void,
  what: string,
  unitName: string,
  total: number,
): (done: number, final?: boolean) => void {
  const t0 = performance.now();
  let last = t0;
  let reported5 = false;
  return (done, final = false) => {
    const now = performance.now();
    if (!final) {
      if (!reported5 && done >= total * 0.05) reported5 = true;
      else if (now - last < 10_000) return;
    }
    last = now;
    const s = (now - t0) / 1000;
    const rate = done / Math.max(s, 1e-3);
    const eta = rate > 0 ? (total - done) / rate : 0;
    progress(
      `report-year: ${what} ${((done / total) * 100).toFixed(1)}% (${compact(done)}/${compact(total)} ${unitName}), ` +
        `${Math.round(rate).toLocaleString("en-US")} ${unitName}/s, ${final ? `${s.toFixed(0)} s` : `about ${fmtDuration(eta)} left`}`,
    );
  };
}

const WEEK_HOURS = 7 * 24;

async function fill(
  baseUrl: string,
  model: FleetHistoryModel,
  gpus: Gpu[],
  groupTags: readonly string[],
  fromMs: number,
  toMs: number,
  beforeFleet: () => Promise<void>,
  progress: (line: string) => void,
): Promise<{ hourPoints: number; windowPoints: number; fleetHourPoints: number }> {
  const poster = new Poster(baseUrl);
  const totalHours = (toMs - fromMs) / HOUR_MS;
  const say = progressLine(progress, "gpu_hour", "points", totalHours * gpus.length);
  let batch: string[] = [];
  let fleetLines: string[] = [];
  let fleetReady = false;
  // A week at a time (InfluxDB's shard of a long policy), and within it a block of GPUs at a
  // time, each GPU's hours together: a request then touches a few dozen series of one shard.
  // An hour of every GPU a request touched every series, which at 10,000 GPUs wrote at a
  // third of the rate. The week's fleet-hours are complete once all its GPUs are generated.
  const firstHour = fromMs / HOUR_MS;
  const lastHour = toMs / HOUR_MS;
  const perBlock = Math.max(1, Math.floor(LINES_PER_REQUEST / WEEK_HOURS));
  for (let week = firstHour; week < lastHour; week += WEEK_HOURS) {
    const weekEnd = Math.min(lastHour, week + WEEK_HOURS);
    const fleet = new FleetHours(groupTags, week);
    for (let b = 0; b < gpus.length; b += perBlock) {
      generateHours(model, gpus.slice(b, b + perBlock), week, weekEnd, fleet, batch);
      if (batch.length < LINES_PER_REQUEST) continue;
      await poster.push(RP_HOUR, MEASUREMENT_HOUR, batch);
      batch = [];
      say(poster.points(MEASUREMENT_HOUR));
    }
    if (!fleetReady) {
      // The fleet query's keys come from the tag keys written: GPU-hours first, then it.
      if (batch.length > 0) await poster.push(RP_HOUR, MEASUREMENT_HOUR, batch);
      batch = [];
      await poster.drain();
      await beforeFleet();
      fleetReady = true;
    }
    fleetLines.push(...fleet.take());
    if (fleetLines.length >= LINES_PER_REQUEST) {
      await poster.push(RP_HOUR, MEASUREMENT_FLEET_HOUR, fleetLines);
      fleetLines = [];
    }
  }
  if (batch.length > 0) await poster.push(RP_HOUR, MEASUREMENT_HOUR, batch);
  if (fleetLines.length > 0) await poster.push(RP_HOUR, MEASUREMENT_FLEET_HOUR, fleetLines);
  await poster.drain();
  const hourPoints = poster.points(MEASUREMENT_HOUR);
  const fleetHourPoints = poster.points(MEASUREMENT_FLEET_HOUR);
  say(hourPoints, true);
  progress(`report-year: fleet_hour ${compact(fleetHourPoints)} points`);

  // The last day as raw 5-minute windows: each hour's state split evenly over its windows.
  const winPoster = new Poster(baseUrl);
  const dayFrom = Math.max(fromMs, toMs - DAY_MS);
  batch = [];
  for (let t = dayFrom; t < toMs; t += WINDOW_MS) {
    const hour = Math.floor(t / HOUR_MS);
    for (const g of gpus) {
      const a = model.activity(g.hostIndex, g.index, t);
      batch.push(`${MEASUREMENT_WINDOW}${g.tags} ${formatFields(valuesFor(g, a, hour, WINDOW_MS / 1000), 0)} ${t}`);
    }
    if (batch.length >= LINES_PER_REQUEST) {
      await winPoster.push(RP_WINDOW, MEASUREMENT_WINDOW, batch);
      batch = [];
    }
  }
  if (batch.length > 0) await winPoster.push(RP_WINDOW, MEASUREMENT_WINDOW, batch);
  await winPoster.drain();
  const windowPoints = winPoster.points(MEASUREMENT_WINDOW);
  progress(`report-year: gpu_window ${compact(windowPoints)} points (the last day)`);
  return { hourPoints, windowPoints, fleetHourPoints };
}

/**
 * `fleet_hour` for a kept fill that lacks it: the GPU-hours of [fromMs, toMs) generated
 * again, a week at a time as the fill makes them, and only their fleet points written.
 * Returns the points written.
 */
async function addFleetHours(
  baseUrl: string,
  model: FleetHistoryModel,
  gpus: Gpu[],
  groupTags: readonly string[],
  fromMs: number,
  toMs: number,
  progress: (line: string) => void,
): Promise<number> {
  const poster = new Poster(baseUrl);
  const firstHour = fromMs / HOUR_MS;
  const lastHour = toMs / HOUR_MS;
  const say = progressLine(
    progress,
    "fleet_hour from the GPU-hours",
    "GPU-hours",
    (lastHour - firstHour) * gpus.length,
  );
  let lines: string[] = [];
  for (let week = firstHour; week < lastHour; week += WEEK_HOURS) {
    const weekEnd = Math.min(lastHour, week + WEEK_HOURS);
    const fleet = new FleetHours(groupTags, week);
    generateHours(model, gpus, week, weekEnd, fleet);
    lines.push(...fleet.take());
    if (lines.length >= LINES_PER_REQUEST) {
      await poster.push(RP_HOUR, MEASUREMENT_FLEET_HOUR, lines);
      lines = [];
    }
    say((weekEnd - firstHour) * gpus.length);
  }
  if (lines.length > 0) await poster.push(RP_HOUR, MEASUREMENT_FLEET_HOUR, lines);
  await poster.drain();
  say((lastHour - firstHour) * gpus.length, true);
  return poster.points(MEASUREMENT_FLEET_HOUR);
}

export async function runReportYearBench(o: ReportYearOptions): Promise<ReportYearResult> {
  if (!findInfluxd()) return { skipped: true, reason: INFLUXD_MISSING_HELP };
  const keep = o.keep || o.dataDir !== undefined;
  const dashboardQueries = capacityDashboardQueries();
  // No continuous query runs while the bench does: it would only roll the raw last day up again.
  const server = await startPrivateInfluxd({
    keepData: keep,
    dir: o.dataDir,
    cqRunInterval: "24h",
    startTimeoutMs: 60_000,
  });
  try {
    const target = { baseUrl: server.url, database: DB };
    const version = (await fetch(`${server.url}/ping`)).headers.get("x-influxdb-version") ?? "unknown";
    const hosts = historyFleet(o.hosts);
    const model = new FleetHistoryModel(hosts, 1);
    // Fleet groups as the roll-up makes them: the tags that do not name one GPU.
    const groupTags: string[] = [];
    const groupOf = new Map<string, number>();
    const line = (tags: ReadonlyArray<[string, string]>): string =>
      tags.map(([k, v]) => `,${k}=${escapeTag(v)}`).join("");
    const gpus: Gpu[] = hosts.flatMap((h, hostIndex) =>
      model.uuids(hostIndex).map((uuid, index): Gpu => {
        const tags: Array<[string, string]> = [
          ["gpu", String(index)],
          ["host", h.hostname],
          ["model", h.model.name],
          ["pool", h.labels.pool],
          ["site", h.labels.site],
          ["uuid", uuid],
        ];
        const fleetTags = line(tags.filter(([k]) => !PER_GPU_TAGS.has(k)));
        let group = groupOf.get(fleetTags);
        if (group === undefined) {
          group = groupTags.push(fleetTags) - 1;
          groupOf.set(fleetTags, group);
        }
        return {
          host: h,
          hostIndex,
          index,
          key: hash(hostIndex + 1, index + 1),
          tags: line(tags),
          group,
        };
      }),
    );

    const markerFile = path.join(server.dir, MARKER);
    const earlier = existsSync(markerFile) ? (JSON.parse(readFileSync(markerFile, "utf8")) as Marker) : undefined;
    // Retention covers the year (and the raw day) with room to spare.
    const retention: RetentionConfig = {
      rawRetentionMs: 30 * DAY_MS,
      hourRetentionMs: Math.max(730, o.days + 30) * DAY_MS,
    };
    const schema = async (): Promise<void> => {
      for (const change of await ensureSchema(target, retention)) o.progress(`report-year: schema: ${change}`);
    };
    const problems: string[] = [];
    const expectFleetPoints = o.days * 24 * groupTags.length;
    let endMs: number;
    let hourPoints: number;
    let windowPoints: number;
    let fleetHourPoints: number;
    let fillS: number | null = null;
    let fleetAddS: number | null = null;
    if (earlier && earlier.hosts === o.hosts && earlier.days === o.days) {
      ({ endMs, hourPoints, windowPoints } = earlier);
      o.progress(
        `report-year: reusing the fill in ${server.dir} (${compact(hourPoints)} gpu_hour points ending ${new Date(endMs).toISOString()})`,
      );
      // The fleet query by the keys the kept GPU-hours carry, before fleet_hour is trusted or
      // written: a query made by other keys is replaced, and fleet_hour dropped with it.
      await schema();
      const fromMs = endMs - o.days * DAY_MS;
      const kept =
        earlier.fleetHourPoints === undefined
          ? 0
          : ((
              await queryRows(server.url, `SELECT count("gpus") FROM ${FLEET_FROM} WHERE ${timeWhere(fromMs, endMs)}`)
            )[0]?.[1] ?? 0);
      if (earlier.fleetHourPoints !== undefined && kept === earlier.fleetHourPoints) {
        fleetHourPoints = earlier.fleetHourPoints;
      } else {
        o.progress(
          `report-year: adding fleet_hour to the kept fill (${earlier.fleetHourPoints === undefined ? "written before it existed" : `${compact(kept)} of ${compact(earlier.fleetHourPoints)} points left`}): ` +
            `${compact(expectFleetPoints)} points from ${compact(hourPoints)} GPU-hours generated again, gpu_hour left as it is`,
        );
        const t0 = performance.now();
        fleetHourPoints = await addFleetHours(server.url, model, gpus, groupTags, fromMs, endMs, o.progress);
        fleetAddS = (performance.now() - t0) / 1000;
        writeFileSync(markerFile, `${JSON.stringify({ ...earlier, fleetHourPoints } satisfies Marker)}\n`);
      }
    } else {
      endMs = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
      const fromMs = endMs - o.days * DAY_MS;
      await schema();
      o.progress(
        `report-year: filling ${o.days} days × ${gpus.length.toLocaleString("en-US")} GPUs (${compact(o.days * 24 * gpus.length)} gpu_hour points, ` +
          `${compact(expectFleetPoints)} fleet_hour points) into ${server.dir}`,
      );
      const t0 = performance.now();
      // Once the first GPU-hours are written, the fleet query by their tag keys, before any fleet point.
      ({ hourPoints, windowPoints, fleetHourPoints } = await fill(
        server.url,
        model,
        gpus,
        groupTags,
        fromMs,
        endMs,
        schema,
        o.progress,
      ));
      fillS = (performance.now() - t0) / 1000;
      if (keep)
        writeFileSync(
          markerFile,
          `${JSON.stringify({ hosts: o.hosts, days: o.days, endMs, hourPoints, windowPoints, fleetHourPoints } satisfies Marker)}\n`,
        );
    }
    // With every measurement written the schema must be as wanted: a change now would have
    // dropped the fleet_hour just written.
    const late = await ensureSchema(target, retention);
    if (late.length > 0) problems.push(`ensureSchema still changed the schema after the fill: ${late.join("; ")}`);
    if (fleetHourPoints !== expectFleetPoints)
      problems.push(
        `${fleetHourPoints} fleet_hour points were written, not ${expectFleetPoints} (${groupTags.length} groups × ${o.days * 24} hours)`,
      );

    // The product's fleet roll-up of the last day, before the reports read it: it rewrites that
    // day's fleet points with InfluxDB's own sums.
    const client = new InfluxQueryClient({ target, timeoutMs: 30_000 });
    const fleetRoll = await ensureFleetRollup(client, DB);
    if (fleetRoll.change !== undefined) problems.push(`the fleet roll-up changed before it ran: ${fleetRoll.change}`);
    const lastDay = Math.max(endMs - o.days * DAY_MS, endMs - DAY_MS);
    const rolled = await timeQuery(server.url, rollupStatement(DB, lastDay, endMs, fleetRoll.rollup), "POST");
    const fleetRollupPoints = Number(rolled.rows[0]?.[1] ?? 0);
    const expectRolled = ((endMs - lastDay) / HOUR_MS) * groupTags.length;
    if (fleetRollupPoints !== expectRolled)
      problems.push(`the fleet roll-up of the last day wrote ${fleetRollupPoints} points, not ${expectRolled}`);
    o.progress(
      `report-year: fleet_hour roll-up of the last day from gpu_hour: ${sec(rolled.ms)} s, ${fleetRollupPoints} points`,
    );

    // fleet_hour holds the year's GPU-hours exactly: its observed seconds those of gpu_hour, its GPUs the points.
    const yearWhere = timeWhere(endMs - o.days * DAY_MS, endMs);
    const [fleetSums] = await queryRows(
      server.url,
      `SELECT sum("observed_s"), sum("gpus"), count("gpus") FROM ${FLEET_FROM} WHERE ${yearWhere}`,
    );
    const [hourSums] = await queryRows(
      server.url,
      `SELECT sum("observed_s") FROM "${RP_HOUR}"."${MEASUREMENT_HOUR}" WHERE ${yearWhere}`,
    );
    const fleetObserved = fleetSums?.[1] ?? Number.NaN;
    const hourObserved = hourSums?.[1] ?? Number.NaN;
    if (fleetObserved !== hourObserved)
      problems.push(`fleet_hour's observed_s adds up to ${fleetObserved} over the year, gpu_hour's to ${hourObserved}`);
    if (fleetSums?.[2] !== hourPoints)
      problems.push(
        `fleet_hour's gpus add up to ${fleetSums?.[2]} over the year, ${hourPoints} GPU-hours were written`,
      );
    if (fleetSums?.[3] !== expectFleetPoints)
      problems.push(`fleet_hour holds ${fleetSums?.[3]} points over the year, not ${expectFleetPoints}`);
    const dataDirBytes = duBytes(server.dir);

    const year: TimeRange = resolveRange(`${o.days}d`, undefined, endMs);
    const month: TimeRange = resolveRange("30d", undefined, endMs);
    const day: TimeRange = resolveRange("24h", undefined, endMs);
    const cases: Array<{
      name: string;
      since: string;
      by: string[];
      range: TimeRange;
      measurement?: "gpu_window";
    }> = [
      { name: `--since ${o.days}d --by site,model`, since: `${o.days}d`, by: ["site", "model"], range: year },
      { name: `--since ${o.days}d --by model`, since: `${o.days}d`, by: ["model"], range: year },
      ...(o.days > 30
        ? [{ name: "--since 30d --by site,model", since: "30d", by: ["site", "model"], range: month }]
        : []),
      { name: "--since 24h --by site,model", since: "24h", by: ["site", "model"], range: day },
      // The raw path, as a report --by host or on a database without fleet_hour reads it.
      {
        name: "--since 24h … --measurement gpu_window",
        since: "24h",
        by: ["site", "model"],
        range: day,
        measurement: "gpu_window",
      },
    ];
    const runs: number[][] = cases.map(() => []);
    const bare: number[][] = cases.map(() => []);
    const last: Array<CapacityReport | undefined> = cases.map(() => undefined);
    const dash: number[][] = dashboardQueries.map(() => []);
    const dashSeries: number[] = dashboardQueries.map(() => 0);
    const dashBare: number[] = [];
    const monthWhere = `time >= ${month.startMs}ms AND time < ${month.endMs}ms`;
    for (let r = 0; r < o.runs; r++) {
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i]!;
        const t0 = performance.now();
        last[i] = await buildReport({
          influxUrl: `${server.url}/${DB}`,
          range: c.range,
          by: c.by,
          measurement: c.measurement,
        });
        const ms = performance.now() - t0;
        runs[i]!.push(ms);
        // The baseline reads the raw roll-up: the GPU-hours (gpu_hour) for a long range, whatever
        // the report read (fleet_hour is the report's own roll-up of them), the raw windows for a short one.
        const m: string = last[i]!.measurement === MEASUREMENT_WINDOW ? MEASUREMENT_WINDOW : MEASUREMENT_HOUR;
        const rp = m === MEASUREMENT_WINDOW ? RP_WINDOW : RP_HOUR;
        const b = await timeQuery(
          server.url,
          `SELECT ${BARE_SUMS} FROM "${rp}"."${m}" WHERE ${timeWhere(c.range.startMs, c.range.endMs)} GROUP BY ${c.by.map((t) => `"${t}"`).join(", ")}`,
        );
        bare[i]!.push(b.ms);
        o.progress(
          `report-year: run ${r + 1}/${o.runs} ${c.name}: ${(ms / 1000).toFixed(2)} s (${last[i]!.measurement}); bare sums over ${m} ${(b.ms / 1000).toFixed(2)} s`,
        );
      }
      dashBare.push(
        (await timeQuery(server.url, `SELECT ${BARE_SUMS} FROM "gpu_hour"."gpu_hour" WHERE ${monthWhere}`)).ms,
      );
      for (let i = 0; i < dashboardQueries.length; i++) {
        const q = dashboardQueries[i]!;
        const t = await timeQuery(server.url, q.query(month));
        dash[i]!.push(t.ms);
        dashSeries[i] = t.series;
      }
      o.progress(
        `report-year: run ${r + 1}/${o.runs} the Capacity dashboard's ${dashboardQueries.length} queries over 30 days: ${(dash.reduce((s, x) => s + x[r]!, 0) / 1000).toFixed(2)} s in all`,
      );
    }
    const ratios = (a: readonly number[], b: readonly number[]): Spread => spread(a.map((x, k) => x / b[k]!));
    const reports: ReportCaseResult[] = cases.map((c, i) => {
      const rep = last[i]!;
      return {
        name: c.name,
        since: c.since,
        by: c.by,
        measurement: rep.measurement,
        runsMs: runs[i]!,
        ms: spread(runs[i]!),
        baselineMs: spread(bare[i]!),
        ratio: ratios(runs[i]!, bare[i]!),
        groups: rep.groups.length,
        gpus: rep.total.gpus,
        gpuHoursObserved: rep.total.gpuHoursObserved,
      };
    });
    const dashboard: DashboardQueryResult[] = dashboardQueries.map((q, i) => ({
      panel: q.panel,
      ms: spread(dash[i]!),
      ratio: ratios(dash[i]!, dashBare),
      series: dashSeries[i]!,
    }));

    for (const r of reports) {
      const expectHours =
        r.since === "24h" ? windowPoints / WINDOWS_PER_HOUR : r.since === "30d" ? 30 * 24 * gpus.length : hourPoints;
      if (r.gpus !== gpus.length) problems.push(`${r.name} counted ${r.gpus} GPUs, ${gpus.length} were written`);
      if (Math.abs(r.gpuHoursObserved - expectHours) > 1e-6 * expectHours)
        problems.push(`${r.name} counted ${r.gpuHoursObserved} GPU-hours, ${expectHours} were written`);
      // Every range reads fleet_hour, which the fill holds; the raw case what it asks for.
      const wantM = r.name.includes("--measurement gpu_window") ? MEASUREMENT_WINDOW : MEASUREMENT_FLEET_HOUR;
      if (r.measurement !== wantM) problems.push(`${r.name} read ${r.measurement}, not ${wantM}`);
    }
    const fillPoints = hourPoints + windowPoints + fleetHourPoints;
    return {
      skipped: false,
      influxdVersion: version,
      hosts: o.hosts,
      gpus: gpus.length,
      days: o.days,
      endsAt: new Date(endMs).toISOString(),
      hourPoints,
      windowPoints,
      fleetHourPoints,
      fleetGroups: groupTags.length,
      fillS,
      fillPointsPerS: fillS === null ? null : fillPoints / fillS,
      fleetAddS,
      fleetRollupDayMs: rolled.ms,
      fleetRollupPoints,
      linesPerRequest: LINES_PER_REQUEST,
      inFlight: IN_FLIGHT,
      dataDirBytes,
      dataDir: keep ? server.dir : null,
      reports,
      dashboard,
      dashboardBaselineMs: spread(dashBare),
      selfCheckProblems: problems,
    };
  } finally {
    await server.stop();
  }
}

/** Every field the report sums, summed: the bare baseline's SELECT list. */
const BARE_SUMS = SUM_FIELDS.map((f) => `sum("${f}") AS "${f}"`).join(", ");

/**
 * One statement against the bench's database: its wall time, how many series it answered,
 * and the rows of the first. A statement that writes (`SELECT … INTO`) must be POSTed.
 */
async function timeQuery(
  baseUrl: string,
  statement: string,
  method: "GET" | "POST" = "GET",
): Promise<{ ms: number; series: number; rows: number[][] }> {
  const t0 = performance.now();
  const params = new URLSearchParams({ db: DB, epoch: "ms", q: statement });
  const res =
    method === "GET"
      ? await fetch(`${baseUrl}/query?${params}`)
      : await fetch(`${baseUrl}/query`, { method: "POST", body: params });
  const body = (await res.json()) as {
    results?: Array<{ series?: Array<{ values?: number[][] }>; error?: string }>;
  };
  const ms = performance.now() - t0;
  const first = body.results?.[0];
  if (!res.ok || first?.error !== undefined)
    throw new Error(`InfluxDB refused a bench statement (${first?.error ?? res.status}): ${statement}`);
  return { ms, series: first?.series?.length ?? 0, rows: first?.series?.[0]?.values ?? [] };
}

/** The rows of one statement's first series (time first, then its columns). */
async function queryRows(baseUrl: string, statement: string): Promise<number[][]> {
  return (await timeQuery(baseUrl, statement)).rows;
}

const FLEET_FROM = `"${RP_HOUR}"."${MEASUREMENT_FLEET_HOUR}"`;

function timeWhere(fromMs: number, toMs: number): string {
  return `time >= ${fromMs}ms AND time < ${toMs}ms`;
}

/**
 * The InfluxQL queries of the Grafana Capacity dashboard, with Grafana's variables as a
 * 30-day view of the whole fleet gives them: `$timeFilter` the range, `$site` and `$model`
 * any value, `$__interval` an hour (a 30-day graph some 700 pixels wide).
 */
function capacityDashboardQueries(): Array<{ panel: string; query: (r: TimeRange) => string }> {
  const file = path.join(
    path.dirname(fileURLToPath(import.meta.url)),
    "..",
    "deploy",
    "grafana",
    "trueidle-capacity.json",
  );
  const board = JSON.parse(readFileSync(file, "utf8")) as {
    panels?: Array<{ title?: string; targets?: Array<{ query?: string; rawQuery?: boolean }> }>;
  };
  const out: Array<{ panel: string; query: (r: TimeRange) => string }> = [];
  for (const p of board.panels ?? []) {
    for (const [k, t] of (p.targets ?? []).entries()) {
      const text = t.query;
      if (typeof text !== "string" || !/\bSELECT\b/i.test(text)) continue;
      out.push({
        panel: `${p.title ?? "?"}${(p.targets?.length ?? 0) > 1 ? ` (${k + 1})` : ""}`,
        query: (r) =>
          text
            .replaceAll("$timeFilter", `time >= ${r.startMs}ms AND time < ${r.endMs}ms`)
            .replaceAll("$__interval_ms", String(HOUR_MS))
            .replaceAll("$__interval", "1h")
            .replaceAll("/^$site$/", "/.*/")
            .replaceAll("/^$model$/", "/.*/"),
      });
    }
  }
  if (out.length === 0) throw new Error(`no InfluxQL query found in ${file}`);
  return out;
}

/** Bytes of regular files under `dir`. */
function duBytes(dir: string): number {
  let total = 0;
  const visit = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) visit(p);
      else if (e.isFile()) total += statSync(p).size;
    }
  };
  visit(dir);
  return total;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** A 32-bit mix of two integers (murmur3's finalizer). */
function hash(a: number, b: number): number {
  let h = (Math.imul(a >>> 0, 0x9e3779b1) ^ (b >>> 0)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function unit(h: number): number {
  return h / 4294967296;
}

/** 8760000 → "8.76M". */
function compact(n: number): string {
  if (n >= 1_000_000) return `${(n / 1_000_000).toFixed(2)}M`;
  return Math.round(n).toLocaleString("en-US");
}

function fmtDuration(s: number): string {
  if (s < 90) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// ---- run alone: node --import tsx bench/report-year.ts [--gpus N | --hosts N] [--days N] [--runs N] [--data DIR | --temp] [--keep]

/** Flags of this section, shared with run.ts. */
export function parseReportYearArgs(argv: readonly string[]): Omit<ReportYearOptions, "progress"> {
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith("--")) throw new Error(`${flag} needs a value`);
    return v;
  };
  const int = (flag: string, dflt: number): number => {
    const v = value(flag);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer (got ${v})`);
    return n;
  };
  const gpus = value("--gpus");
  if (gpus !== undefined && value("--hosts") !== undefined) throw new Error("give --gpus or --hosts, not both");
  let hosts = int("--hosts", REPORT_YEAR_DEFAULTS.hosts);
  if (gpus !== undefined) {
    const n = int("--gpus", 8);
    if (n % 8 !== 0) throw new Error(`--gpus must be a multiple of 8 (hosts of 8 GPUs; got ${gpus})`);
    hosts = n / 8;
  }
  const days = int("--days", REPORT_YEAR_DEFAULTS.days);
  const temp = argv.includes("--temp");
  const data = value("--data");
  if (temp && data !== undefined) throw new Error("give --data DIR or --temp, not both");
  return {
    hosts,
    days,
    runs: int("--runs", REPORT_YEAR_DEFAULTS.runs),
    keep: argv.includes("--keep"),
    // Kept between runs unless --temp: a fill takes minutes to write.
    dataDir: temp ? undefined : (data ?? defaultDataDir(hosts, days)),
  };
}

const fmtInt = (x: number): string => Math.round(x).toLocaleString("en-US");
const sec = (ms: number): string => (ms / 1000).toFixed(2);

/** The section's lines for the bench's output, table included. */
export function reportYearLines(r: ReportYearResult): string[] {
  if (r.skipped) return [`(d) Report over a year of history: skipped — ${r.reason}`];
  const fill =
    r.fillS === null
      ? `reused the fill kept in ${r.dataDir ?? "?"}`
      : `filled in ${r.fillS.toFixed(1)} s, ${fmtInt(r.fillPointsPerS ?? 0)} points/s (${fmtInt(r.linesPerRequest)} lines a request, ${r.inFlight} in flight)`;
  const fleetAdded = r.fleetAddS === null ? "" : `; fleet_hour added to it in ${r.fleetAddS.toFixed(1)} s`;
  return [
    `(d) trueidle report over ${r.days} days × ${fmtInt(r.gpus)} GPUs (${r.hosts} host${r.hosts === 1 ? "" : "s"}) in InfluxDB ${r.influxdVersion} (private influxd, loopback): ` +
      `${fmtInt(r.hourPoints)} gpu_hour points + ${fmtInt(r.fleetHourPoints)} fleet_hour points (${r.fleetGroups} groups) + ${fmtInt(r.windowPoints)} gpu_window points (last day), ` +
      `${(r.dataDirBytes / 2 ** 20).toFixed(0)} MiB on disk; ${fill}${fleetAdded}`,
    `  fleet_hour roll-up of one day from gpu_hour: ${sec(r.fleetRollupDayMs)} s, ${fmtInt(r.fleetRollupPoints)} points ` +
      `(a year's back-fill ≈ 365 × ${sec(r.fleetRollupDayMs)} s ≈ ${fmtDuration((365 * r.fleetRollupDayMs) / 1000)})`,
    textTable([
      ["buildReport", "reads", "median s", "range s", "bare sums s", "÷ bare", "runs", "groups", "GPU-hours"],
      ...r.reports.map((c) => [
        c.name,
        c.measurement,
        sec(c.ms.median),
        `[${sec(c.ms.min)}–${sec(c.ms.max)}]`,
        sec(c.baselineMs.median),
        `${c.ratio.median.toFixed(2)} [${c.ratio.min.toFixed(2)}–${c.ratio.max.toFixed(2)}]`,
        String(c.runsMs.length),
        String(c.groups),
        fmtInt(c.gpuHoursObserved),
      ]),
    ]),
    `  Capacity dashboard, each query over the last 30 days of the whole fleet, against the bare 8 sums of the same 30 days (${sec(r.dashboardBaselineMs.median)} s):`,
    textTable([
      ["panel", "median s", "range s", "÷ bare", "series"],
      ...r.dashboard.map((d) => [
        d.panel,
        sec(d.ms.median),
        `[${sec(d.ms.min)}–${sec(d.ms.max)}]`,
        d.ratio.median.toFixed(2),
        String(d.series),
      ]),
      ["all of them, one refresh", sec(r.dashboard.reduce((s, d) => s + d.ms.median, 0)), "", "", ""],
    ]),
    ...(r.selfCheckProblems.length > 0 ? [`  SELF-CHECK FAILED: ${r.selfCheckProblems.join("; ")}`] : []),
  ];
}

/** Writes `.bench/report-year.json`; returns its path. */
export function writeReportYearJson(r: ReportYearResult): string {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", ".bench", "report-year.json");
  mkdirSync(path.dirname(file), { recursive: true });
  const tidy = (_key: string, v: unknown): unknown =>
    typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(6)) : v;
  writeFileSync(
    file,
    `${JSON.stringify({ schema: "trueidle-bench-report-year/1", finishedAt: new Date().toISOString(), environment: environment(), ...r }, tidy, 2)}\n`,
  );
  return file;
}

const USAGE = `Usage: node --import tsx bench/report-year.ts [options]

  --gpus N | --hosts N  the fleet: N GPUs (a multiple of 8) or N hosts of 8 GPUs (default ${REPORT_YEAR_DEFAULTS.hosts} hosts)
  --days N              days of gpu_hour history (default ${REPORT_YEAR_DEFAULTS.days})
  --runs N              timed runs of each report case (default ${REPORT_YEAR_DEFAULTS.runs})
  --data DIR            keep the fill in DIR and reuse a fill of the same size there
                        (default .bench/report-year/<GPUs>-gpus-<days>-days)
  --temp                fill a temporary data dir, removed after
  --keep                keep the data dir (with --temp)
  --help                this text

Writes .bench/report-year.json.`;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(USAGE);
    return;
  }
  const opts = parseReportYearArgs(argv);
  const r = await runReportYearBench({ ...opts, progress: (line) => process.stderr.write(`${line}\n`) });
  for (const line of reportYearLines(r)) console.log(line);
  writeReportYearJson(r);
  console.log("Summary written to .bench/report-year.json.");
  if (!r.skipped && r.selfCheckProblems.length > 0) process.exitCode = 1;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
