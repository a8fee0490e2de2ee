/**
 * Reads the report's input from InfluxDB, aggregated by InfluxDB (`GROUP BY time(…), <tags>`
 * with `sum()`), never raw rows: per-day sums, per-hour real-idle seconds and the GPUs seen,
 * per group. The same statements run against `gpu_window` or `gpu_hour`; only the FROM
 * differs, so the two agree wherever both hold the same whole hours.
 *
 * Which measurement ({@link chooseMeasurement}): a range shorter than 2 days reads
 * `gpu_window` (the raw windows; `gpu_hour` may not yet hold the latest hour). A longer
 * range reads `gpu_hour`, unless `gpu_hour` has no point at all in the range (roll-ups not
 * run, or the retention policy missing), in which case it reads `gpu_window`.
 *
 * Long ranges are read in chunks of whole hours (7 days of `gpu_hour`, 6 hours of
 * `gpu_window`), one request per chunk, two in flight, with a progress callback as each
 * completes.
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
import type { InfluxQueryClient, InfluxSeries } from "../common/influx/client.js";
import { quoteIdent } from "../common/influx/quote.js";
import { HOUR_MS, iso, rangeHours, type TimeRange } from "./time-range.js";

/** Ranges shorter than this read `gpu_window`. */
export const SHORT_RANGE_HOURS = 48;
/** Hours per query, by measurement: bounded answers and visible progress on long ranges. */
export const CHUNK_HOURS: Record<Measurement, number> = { gpu_hour: 7 * 24, gpu_window: 6 };
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
}

export type ReportData = Omit<ReportInput, "pricePerGpuHour">;

/** The measurement holding `subject` at resolution `m` (in the policy named `m`). */
export function measurementName(m: Measurement, subject: Subject): string {
  if (subject === "gpus") return m;
  return m === "gpu_hour" ? "gpu_owner_hour" : "gpu_owner_window";
}

function from(db: string, m: Measurement, subject: Subject = "gpus"): string {
  // The retention policy is named after the resolution (DESIGN.md, InfluxDB schema).
  return `${quoteIdent(db)}.${quoteIdent(m)}.${quoteIdent(measurementName(m, subject))}`;
}

function timeWhere(startMs: number, endMs: number): string {
  return `time >= ${startMs}ms AND time < ${endMs}ms`;
}

/**
 * The three statements of one chunk: per UTC day and group every sum; per hour and group
 * the real-idle seconds (as three sums, added here); the GPUs (uuids) per group. Days
 * rather than hours for the sums because InfluxDB's cost grows with series × time buckets:
 * 1,000 GPUs × 168 hours of `gpu_hour` take about as long per summed field as the whole
 * week grouped by day takes for all eight.
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
  return [
    `SELECT ${sums(SUM_FIELDS)} FROM ${src} WHERE ${where} GROUP BY time(1d)${groupTags} fill(none)`,
    `SELECT ${sums(IDLE_FIELDS)} FROM ${src} WHERE ${where} GROUP BY time(1h)${groupTags} fill(none)`,
    `SELECT sum("observed_s") AS "observed_s" FROM ${src} WHERE ${where} GROUP BY ${gpuTags.join(", ")}`,
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

/** Which measurement to read, and why (see the module comment for the rule). */
export async function chooseMeasurement(
  client: InfluxQueryClient,
  range: TimeRange,
  requested: Measurement | "auto",
  policies: ReadonlySet<string>,
  signal?: AbortSignal,
  subject: Subject = "gpus",
): Promise<{ measurement: Measurement; reason: string }> {
  const name = (m: Measurement): string => measurementName(m, subject);
  if (requested !== "auto") return { measurement: requested, reason: `${name(requested)} (--measurement)` };
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
  const [probe] = await client.query(
    [
      `SELECT "observed_s" FROM ${from(client.target.database, "gpu_hour", subject)} WHERE ${timeWhere(range.startMs, range.endMs)} LIMIT 1`,
    ],
    signal,
  );
  if ((probe?.series.length ?? 0) === 0)
    return {
      measurement: "gpu_window",
      reason: `${name("gpu_window")}: ${name("gpu_hour")} holds no roll-up for this range`,
    };
  return { measurement: "gpu_hour", reason: `${name("gpu_hour")}: the range is ${SHORT_RANGE_HOURS} hours or longer` };
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
    [`SHOW TAG KEYS ON ${quoteIdent(db)} FROM ${quoteIdent(m)}.${quoteIdent(measurementName(m, subject))}`],
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
  const { measurement, reason } = await chooseMeasurement(client, range, opts.measurement, policies, signal, subject);
  if (!policies.has(measurement)) {
    throw new TrueidleError(
      "not_found",
      `database "${db}" has no ${measurement} retention policy; start the collector once with --influx-url ${client.target.baseUrl}/${db} to create it`,
    );
  }

  const known = await tagKeys(client, measurement, subject, signal);
  if (known.size === 0) throw subject === "owners" ? noOwners(client, range, reason) : noData(client, range, reason);
  const unknown = by.filter((t) => !known.has(t));
  if (unknown.length > 0) {
    const what = subject === "owners" ? "owner record" : "GPU";
    throw new TrueidleError(
      "bad_input",
      `--by ${unknown.map((t) => `"${t}"`).join(", ")}: no ${what} in "${db}" has ${unknown.length > 1 ? "those tags" : "that tag"}; tags present: ${[...known].sort().join(", ")}`,
    );
  }
  const ownerKeys = subject === "owners" ? known : await tagKeys(client, measurement, "owners", signal);
  const holderTags = HOLDER_TAGS.filter((t) => ownerKeys.has(t));

  interface ChunkRows {
    days: DayGroupSums[];
    hours: HourGroupIdle[];
    gpus: GroupGpu[];
    holders: HolderGpuSums[];
  }
  const readChunk = async (s: number, e: number, sig: AbortSignal): Promise<ChunkRows> => {
    const out: ChunkRows = { days: [], hours: [], gpus: [], holders: [] };
    const statements: string[] = chunkStatements(db, measurement, by, s, e, subject);
    if (holderTags.length > 0) statements.push(holderStatement(db, measurement, holderTags, s, e));
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
    for (const series of hourly?.series ?? []) {
      const key = by.map((t) => series.tags?.[t] ?? "");
      const ti = column(series, "time");
      const idx = IDLE_FIELDS.map((f) => column(series, f));
      for (const v of series.values)
        out.hours.push({ hourMs: Number(v[ti]), key, realIdleS: idx.reduce((acc, i) => acc + num(v[i]), 0) });
    }
    for (const series of perGpu?.series ?? []) {
      out.gpus.push({ key: by.map((t) => series.tags?.[t] ?? ""), uuid: series.tags?.["uuid"] ?? "" });
    }
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

  const total = rangeHours(range);
  const step = CHUNK_HOURS[measurement] * HOUR_MS;
  const chunks: Array<[number, number]> = [];
  for (let s = range.startMs; s < range.endMs; s += step) chunks.push([s, Math.min(range.endMs, s + step)]);
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
      const [s, e] = chunks[i]!;
      try {
        results[i] = await readChunk(s, e, sig);
      } catch (err) {
        stopOthers.abort();
        throw err;
      }
      done += (e - s) / HOUR_MS;
      opts.onProgress?.({ doneHours: done, totalHours: total });
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT_CHUNKS, chunks.length) }, worker));
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
