/**
 * Reads the report's input from InfluxDB, aggregated by InfluxDB (`GROUP BY time(…), <tags>`
 * with `sum()`), never raw rows: per-day sums, per-hour real-idle seconds and the GPUs seen,
 * per group. The same statements run against `fleet_hour`, `gpu_hour` or `gpu_window`; only
 * the FROM differs, so they agree wherever they hold the same whole hours.
 *
 * Which measurement ({@link chooseMeasurement}):
 * - `fleet_hour` (per hour and fleet group, collector/influx/schema.ts) when every `--by`
 *   key is one of its group keys and it reaches back to the range's start (its back-fill
 *   from `gpu_hour` may be under way after an upgrade), whatever the range's length. The
 *   GPUs per group, which no sum can give, are still counted from `gpu_hour`: one point per
 *   GPU and chunk. This is what makes a year of 10,000 GPUs a matter of seconds, as
 *   InfluxDB 1.x pays per series and time bucket: the year's sums read 8,760 points per
 *   group, not per GPU;
 * - else a range shorter than 2 days reads `gpu_window`, the raw windows;
 * - and a longer one `gpu_hour`, unless it has no point in the range (roll-ups not run, or
 *   the policy missing): then `gpu_window`.
 * Whatever auto reads for the body, the hours the roll-ups may not hold yet — the hour
 * before the current one and the hour in progress — are read from `gpu_window`, so the
 * report never lags the continuous queries (a `--measurement` given is read as asked, but
 * for the hour in progress). The hour in progress is its own chunk: its GPUs and
 * observed seconds per group give its idle GPU-equivalents (capacity.ts, hourlyIdleGpus).
 *
 * Long ranges are read in chunks of whole hours (28 days of `fleet_hour`, 7 days of
 * `gpu_hour`, 6 hours of `gpu_window`), one request per chunk, two in flight, with a
 * progress callback as each completes; the signal aborts the requests in flight.
 *
 * Owners (DESIGN "Owners"): `--by` with an owner field (namespace, pod, container, job,
 * user) reads the owner measurements instead, `gpu_owner_window` / `gpu_owner_hour` in
 * the same policies, whose points carry the GPU's tags too, so owner fields mix with any
 * label. Every report also reads who held idle GPUs (the "who holds idle GPUs" section)
 * from the owner measurement of the same resolution, grouped by the owner fields in
 * HOLDER_TAGS that the database has.
 */
import { TrueidleError } from "../common/errors.js";
import { isOwnerLabel } from "../common/owner-fields.js";
import {
  HOLDER_TAGS,
  SUM_FIELDS,
  emptySums,
  type DayGroupSums,
  type GroupGpu,
  type HolderGpuSums,
  type HourGroupIdle,
  type Measurement,
  type ReportInput,
  type Subject,
} from "./capacity.js";
import { firstPointMs, type InfluxQueryClient, type InfluxSeries } from "../common/influx/client.js";
import { PER_GPU_TAGS } from "../common/influx/fleet-keys.js";
import { quoteIdent } from "../common/influx/quote.js";
import { HOUR_MS, floorHour, iso, partialHourOf, rangeHours, type TimeRange } from "./time-range.js";

/** Ranges shorter than this read `gpu_window`. */
export const SHORT_RANGE_HOURS = 48;
/** Hours per query, by measurement: bounded answers and visible progress on long ranges. */
export const CHUNK_HOURS: Record<Measurement, number> = { fleet_hour: 28 * 24, gpu_hour: 7 * 24, gpu_window: 6 };
/** Chunk queries in flight at once. */
export const CONCURRENT_CHUNKS = 2;

export interface Progress {
  doneHours: number;
  totalHours: number;
}

export interface ReadOptions {
  client: InfluxQueryClient;
  range: TimeRange;
  /** Tag keys to group by, validated against the measurement's tag keys. */
  by: readonly string[];
  measurement: Measurement | "auto";
  onProgress?: ((p: Progress) => void) | undefined;
  signal?: AbortSignal | undefined;
  /** Now, for which hours the roll-ups may not hold yet (default Date.now()). */
  nowMs?: number | undefined;
}

export type ReportData = Omit<ReportInput, "pricePerGpuHour">;

/** The measurement holding `subject` at resolution `m`. */
export function measurementName(m: Measurement, subject: Subject): string {
  if (subject === "gpus") return m;
  return m === "gpu_window" ? "gpu_owner_window" : "gpu_owner_hour";
}

/** The retention policy of resolution `m`: the roll-ups are all in `gpu_hour` (DESIGN.md, InfluxDB schema). */
function policyOf(m: Measurement): string {
  return m === "gpu_window" ? "gpu_window" : "gpu_hour";
}

function from(db: string, m: Measurement, subject: Subject = "gpus"): string {
  return `${quoteIdent(db)}.${quoteIdent(policyOf(m))}.${quoteIdent(measurementName(m, subject))}`;
}

function timeWhere(startMs: number, endMs: number): string {
  return `time >= ${startMs}ms AND time < ${endMs}ms`;
}

/**
 * The three statements of one chunk: per UTC day and group every sum; per hour and group
 * the real-idle seconds; the GPUs (uuids) per group. Days
 * rather than hours for the sums because InfluxDB's cost grows with series × time buckets.
 * From `fleet_hour` the hours read its `real_idle_s`, and the GPUs come from `gpu_hour`.
 */
export function chunkStatements(
  db: string,
  m: Measurement,
  by: readonly string[],
  startMs: number,
  endMs: number,
  subject: Subject = "gpus",
): [string, string, string] {
  const groupTags = by.map((t) => `, ${quoteIdent(t)}`).join("");
  const gpuTags = [...new Set([...by, "uuid"])].map(quoteIdent);
  const where = timeWhere(startMs, endMs);
  const src = from(db, m, subject);
  const idle = m === "fleet_hour" ? sums(["real_idle_s"]) : sums(IDLE_FIELDS);
  // The GPUs: from the raw windows with their observed seconds (the hour in progress needs
  // them); from the roll-ups one point per GPU (LIMIT applies per series), which InfluxDB
  // answers without summing a GPU's every hour: 1.9 s instead of 3.5 s for a year of 1,000.
  const perGpu =
    m === "gpu_window"
      ? `SELECT sum("observed_s") AS "observed_s" FROM ${src} WHERE ${where} GROUP BY ${gpuTags.join(", ")}`
      : `SELECT "observed_s" FROM ${from(db, "gpu_hour", subject)} WHERE ${where} GROUP BY ${gpuTags.join(", ")} LIMIT 1`;
  return [
    `SELECT ${sums(SUM_FIELDS)} FROM ${src} WHERE ${where} GROUP BY time(1d)${groupTags} fill(none)`,
    `SELECT ${idle} FROM ${src} WHERE ${where} GROUP BY time(1h)${groupTags} fill(none)`,
    perGpu,
  ];
}

/** The "who holds idle GPUs" statement of one chunk: every sum per owner and GPU. */
export function holderStatement(
  db: string,
  m: Measurement,
  holderTags: readonly string[],
  startMs: number,
  endMs: number,
): string {
  const tags = [...holderTags, "uuid"].map(quoteIdent).join(", ");
  return `SELECT ${sums(SUM_FIELDS)} FROM ${from(db, m, "owners")} WHERE ${timeWhere(startMs, endMs)} GROUP BY ${tags}`;
}

function sums(fields: readonly string[]): string {
  return fields.map((f) => `sum(${quoteIdent(f)}) AS ${quoteIdent(f)}`).join(", ");
}

const IDLE_FIELDS = ["free_idle_s", "held_idle_s", "busy_phantom_s"] as const;

/** The time of the first point of `m` in [startMs, endMs), or undefined. */
function firstPoint(
  client: InfluxQueryClient,
  m: Measurement,
  field: string,
  startMs: number,
  endMs: number,
  signal: AbortSignal | undefined,
): Promise<number | undefined> {
  return firstPointMs(client, from(client.target.database, m), field, { fromMs: startMs, toMs: endMs }, signal);
}

/**
 * Whether `fleet_hour` can stand in for `gpu_hour` over [startMs, endMs) grouped by `by`:
 * null when it can, else why not, in words.
 */
export async function fleetHourGap(
  client: InfluxQueryClient,
  by: readonly string[],
  startMs: number,
  endMs: number,
  signal?: AbortSignal,
): Promise<string | null> {
  const perGpu = by.filter((t) => PER_GPU_TAGS.has(t));
  if (perGpu.length > 0) return `--by ${perGpu.join(",")} names single GPUs, which fleet_hour does not keep apart`;
  const keys = await tagKeys(client, "fleet_hour", "gpus", signal);
  const missing = by.filter((t) => !keys.has(t));
  if (keys.size === 0) return "fleet_hour holds nothing yet";
  if (missing.length > 0) return `fleet_hour is not grouped by ${missing.join(", ")} (yet)`;
  const first = await firstPoint(client, "fleet_hour", "gpus", startMs, endMs, signal);
  if (first === undefined) return "fleet_hour holds nothing in this range";
  if (first > startMs && (await firstPoint(client, "gpu_hour", "observed_s", startMs, first, signal)) !== undefined)
    return `fleet_hour reaches back only to ${iso(first)} (the collector rolls it up from gpu_hour, newest hours first)`;
  return null;
}

/** Why `fleet_hour` was read, when auto read it. */
export const FLEET_REASON = "fleet_hour, GPUs counted from gpu_hour: it holds the range, grouped by every --by key";

/** Which measurement to read for [range.startMs, bodyEndMs), and why (see the module comment for the rule). */
export async function chooseMeasurement(
  client: InfluxQueryClient,
  range: TimeRange,
  requested: Measurement | "auto",
  policies: ReadonlySet<string>,
  signal?: AbortSignal,
  subject: Subject = "gpus",
  by: readonly string[] = [],
  bodyEndMs: number = range.endMs,
): Promise<{ measurement: Measurement; reason: string }> {
  const name = (m: Measurement): string => measurementName(m, subject);
  if (requested === "fleet_hour") {
    if (subject === "owners")
      throw new TrueidleError("bad_input", "--measurement fleet_hour: owners are not in fleet_hour; read gpu_hour");
    const gap = await fleetHourGap(client, by, range.startMs, bodyEndMs, signal);
    if (gap !== null) throw new TrueidleError("bad_input", `--measurement fleet_hour: ${gap}; read gpu_hour or auto`);
    return { measurement: "fleet_hour", reason: "fleet_hour, GPUs counted from gpu_hour (--measurement)" };
  }
  if (requested !== "auto") return { measurement: requested, reason: `${name(requested)} (--measurement)` };
  let whyNotFleet = "";
  if (subject === "gpus" && policies.has("gpu_hour")) {
    const gap = await fleetHourGap(client, by, range.startMs, bodyEndMs, signal);
    if (gap === null) return { measurement: "fleet_hour", reason: FLEET_REASON };
    whyNotFleet = `; ${gap}`;
  }
  const hours = rangeHours(range);
  if (hours < SHORT_RANGE_HOURS)
    return {
      measurement: "gpu_window",
      reason: `${name("gpu_window")}: the range is shorter than ${SHORT_RANGE_HOURS} hours`,
    };
  if (!policies.has("gpu_hour"))
    return {
      measurement: "gpu_window",
      reason: `${name("gpu_window")}: the database has no gpu_hour retention policy`,
    };
  const probe = await firstPointMs(
    client,
    from(client.target.database, "gpu_hour", subject),
    "observed_s",
    { fromMs: range.startMs, toMs: range.endMs },
    signal,
  );
  if (probe === undefined)
    return {
      measurement: "gpu_window",
      reason: `${name("gpu_window")}: ${name("gpu_hour")} holds no roll-up for this range`,
    };
  return {
    measurement: "gpu_hour",
    reason: `${name("gpu_hour")}: the range is ${SHORT_RANGE_HOURS} hours or more${whyNotFleet}`,
  };
}

/** The tag keys of one measurement. */
async function tagKeys(
  client: InfluxQueryClient,
  m: Measurement,
  subject: Subject,
  signal: AbortSignal | undefined,
): Promise<Set<string>> {
  const db = client.target.database;
  const [keys] = await client.query(
    [`SHOW TAG KEYS ON ${quoteIdent(db)} FROM ${quoteIdent(policyOf(m))}.${quoteIdent(measurementName(m, subject))}`],
    signal,
  );
  const known = new Set<string>();
  for (const s of keys?.series ?? []) for (const v of s.values) known.add(String(v[0]));
  return known;
}

function num(x: unknown): number {
  return typeof x === "number" ? x : 0;
}

function column(s: InfluxSeries, name: string): number {
  const i = s.columns.indexOf(name);
  if (i < 0) throw new TrueidleError("internal", `InfluxDB answer lacks column ${name}`);
  return i;
}

export async function readReportData(opts: ReadOptions): Promise<ReportData> {
  const { client, range, by, signal } = opts;
  const db = client.target.database;
  const [rp] = await client.query([`SHOW RETENTION POLICIES ON ${quoteIdent(db)}`], signal);
  const policies = new Set<string>();
  for (const s of rp?.series ?? []) for (const v of s.values) policies.add(String(v[column(s, "name")]));
  if (!policies.has("gpu_window") && !policies.has("gpu_hour")) {
    throw new TrueidleError(
      "not_found",
      `database "${db}" has neither the gpu_window nor the gpu_hour retention policy; start the collector once with --influx-url ${client.target.baseUrl}/${db} to create trueidle's schema`,
    );
  }
  const subject: Subject = by.some(isOwnerLabel) ? "owners" : "gpus";
  // Read from the raw windows whatever the measurement: the hour in progress (its GPUs'
  // observed seconds are needed) and, with auto, the hour before it too, which the
  // continuous queries finish only minutes after its end. A --measurement given reads the
  // rest of the range from that measurement, as asked.
  const partialFrom = partialHourOf(range);
  const rawFromMs =
    opts.measurement === "auto" ? floorHour(opts.nowMs ?? Date.now()) - HOUR_MS : (partialFrom ?? range.endMs);
  const wantsRollup = opts.measurement !== "gpu_window" && policies.has("gpu_window");
  const bodyEndMs = wantsRollup && range.endMs > rawFromMs ? Math.max(range.startMs, rawFromMs) : range.endMs;
  let { measurement, reason } =
    bodyEndMs > range.startMs
      ? await chooseMeasurement(client, range, opts.measurement, policies, signal, subject, by, bodyEndMs)
      : {
          measurement: "gpu_window" as const,
          reason: `${measurementName("gpu_window", subject)}: the range lies in the last hours, which the roll-ups may not hold yet`,
        };
  if (measurement !== "gpu_window" && bodyEndMs < range.endMs)
    reason +=
      bodyEndMs === partialFrom
        ? `; ${measurementName("gpu_window", subject)} for the hour in progress`
        : `; ${measurementName("gpu_window", subject)} from ${iso(bodyEndMs)}, the hours the roll-ups may not hold yet`;
  if (!policies.has(policyOf(measurement))) {
    throw new TrueidleError(
      "not_found",
      `database "${db}" has no ${policyOf(measurement)} retention policy; start the collector once with --influx-url ${client.target.baseUrl}/${db} to create it`,
    );
  }
  const rawFrom = measurement === "gpu_window" ? range.startMs : bodyEndMs;

  // Tags to group by must exist where the GPUs are counted (gpu_hour for fleet_hour).
  const gpuMeasurement: Measurement = measurement === "fleet_hour" ? "gpu_hour" : measurement;
  const known = await tagKeys(client, gpuMeasurement, subject, signal);
  if (rawFrom < range.endMs && gpuMeasurement !== "gpu_window")
    for (const k of await tagKeys(client, "gpu_window", subject, signal)) known.add(k);
  if (known.size === 0) throw subject === "owners" ? noOwners(client, range, reason) : noData(client, range, reason);
  const unknown = by.filter((t) => !known.has(t));
  if (unknown.length > 0) {
    const what = subject === "owners" ? "owner record" : "GPU";
    throw new TrueidleError(
      "bad_input",
      `--by ${unknown.map((t) => `"${t}"`).join(", ")}: no ${what} in "${db}" has ${unknown.length > 1 ? "those tags" : "that tag"}; tags present: ${[...known].sort().join(", ")}`,
    );
  }
  const ownerKeys = subject === "owners" ? known : await tagKeys(client, gpuMeasurement, "owners", signal);
  const holderTags = HOLDER_TAGS.filter((t) => ownerKeys.has(t));

  interface ChunkRows {
    days: DayGroupSums[];
    hours: HourGroupIdle[];
    gpus: GroupGpu[];
    holders: HolderGpuSums[];
  }
  const readChunk = async (m: Measurement, s: number, e: number, sig: AbortSignal): Promise<ChunkRows> => {
    const out: ChunkRows = { days: [], hours: [], gpus: [], holders: [] };
    const statements: string[] = chunkStatements(db, m, by, s, e, subject);
    if (holderTags.length > 0) statements.push(holderStatement(db, m, holderTags, s, e));
    const [daily, hourly, perGpu, holders] = await client.query(statements, sig);
    for (const series of daily?.series ?? []) {
      const key = by.map((t) => series.tags?.[t] ?? "");
      const ti = column(series, "time");
      const idx = SUM_FIELDS.map((f) => column(series, f));
      for (const v of series.values) {
        const sums = emptySums();
        for (const [i, f] of SUM_FIELDS.entries()) sums[f] = num(v[idx[i]!]);
        out.days.push({ dayMs: Number(v[ti]), key, sums });
      }
    }
    const idleFields: readonly string[] = m === "fleet_hour" ? ["real_idle_s"] : IDLE_FIELDS;
    for (const series of hourly?.series ?? []) {
      const key = by.map((t) => series.tags?.[t] ?? "");
      const ti = column(series, "time");
      const idx = idleFields.map((f) => column(series, f));
      for (const v of series.values)
        out.hours.push({ hourMs: Number(v[ti]), key, realIdleS: idx.reduce((acc, i) => acc + num(v[i]), 0) });
    }
    // The hour in progress: its observed seconds and GPUs per group, for its idle GPU-equivalents.
    const partial =
      partialFrom !== null && s === partialFrom ? new Map<string, { observedS: number; gpus: number }>() : undefined;
    for (const series of perGpu?.series ?? []) {
      const key = by.map((t) => series.tags?.[t] ?? "");
      out.gpus.push({ key, uuid: series.tags?.["uuid"] ?? "" });
      if (partial) {
        const id = JSON.stringify(key);
        const cell = partial.get(id) ?? { observedS: 0, gpus: 0 };
        cell.observedS += num(series.values[0]?.[column(series, "observed_s")]);
        cell.gpus += 1;
        partial.set(id, cell);
      }
    }
    if (partial)
      for (const h of out.hours) Object.assign(h, partial.get(JSON.stringify(h.key)) ?? { observedS: 0, gpus: 0 });
    for (const series of holders?.series ?? []) {
      const idx = SUM_FIELDS.map((f) => column(series, f));
      for (const v of series.values) {
        const sums = emptySums();
        for (const [i, f] of SUM_FIELDS.entries()) sums[f] = num(v[idx[i]!]);
        out.holders.push({
          key: holderTags.map((t) => series.tags?.[t] ?? ""),
          uuid: series.tags?.["uuid"] ?? "",
          sums,
        });
      }
    }
    return out;
  };

  // The body in chunks of the measurement read, then the raw hours, the hour in progress
  // a chunk of its own.
  const chunks: Array<[Measurement, number, number]> = [];
  const cut = (m: Measurement, fromMs: number, toMs: number): void => {
    const step = CHUNK_HOURS[m] * HOUR_MS;
    for (let s = fromMs; s < toMs; s += step) chunks.push([m, s, Math.min(toMs, s + step)]);
  };
  cut(measurement, range.startMs, rawFrom);
  const wholeEnd = partialFrom ?? range.endMs;
  if (rawFrom < wholeEnd) cut("gpu_window", rawFrom, wholeEnd);
  if (partialFrom !== null) chunks.push(["gpu_window", Math.max(partialFrom, rawFrom), range.endMs]);

  const total = rangeHours(range);
  // Kept by chunk index and joined in time order, so sums are added in the same order
  // whichever chunk answers first, and the report is the same to the last bit every run.
  const results: ChunkRows[] = new Array<ChunkRows>(chunks.length);
  const stopOthers = new AbortController();
  const sig = signal ? AbortSignal.any([signal, stopOthers.signal]) : stopOthers.signal;
  let done = 0;
  let next = 0;
  // Two chunks in flight: InfluxDB runs each query on one core (more did not help on 2 cores).
  const worker = async (): Promise<void> => {
    while (next < chunks.length && !sig.aborted) {
      const i = next++;
      const [m, s, e] = chunks[i]!;
      try {
        results[i] = await readChunk(m, s, e, sig);
      } catch (err) {
        stopOthers.abort();
        throw err;
      }
      done += (e - s) / HOUR_MS;
      opts.onProgress?.({ doneHours: done, totalHours: total });
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT_CHUNKS, chunks.length) }, worker));
  signal?.throwIfAborted();
  const days = results.flatMap((r) => r.days);
  const hours = results.flatMap((r) => r.hours);
  const gpus = results.flatMap((r) => r.gpus);
  const holders = results.flatMap((r) => r.holders);
  if (hours.length === 0) throw subject === "owners" ? noOwners(client, range, reason) : noData(client, range, reason);
  return { range, by, subject, measurement, measurementReason: reason, days, hours, gpus, holderTags, holders };
}

function noOwners(client: InfluxQueryClient, range: TimeRange, reason: string): TrueidleError {
  const db = client.target.database;
  return new TrueidleError(
    "not_found",
    `no owners in "${db}" from ${iso(range.startMs)} to ${iso(range.endMs)} (read ${reason}): no held GPU had an owner the agents could tell. ` +
      "Owners come from the agents' --pod-resources-socket (Kubernetes), --job-mapping-dir (Slurm and other batch systems) or the host's /proc " +
      "(--host-root), and the collector writes the fields its --owner-labels names; widen --since/--until, or report --by a GPU tag such as model",
  );
}

function noData(client: InfluxQueryClient, range: TimeRange, reason: string): TrueidleError {
  const db = client.target.database;
  return new TrueidleError(
    "not_found",
    `no GPU data in "${db}" from ${iso(range.startMs)} to ${iso(range.endMs)} (read ${reason}); ` +
      `widen --since/--until, or check that a collector writes there (trueidle collector --influx-url ${client.target.baseUrl}/${db})`,
  );
}
