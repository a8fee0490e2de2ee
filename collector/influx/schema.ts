/**
 * trueidle's InfluxDB schema: names, the statements that create it, `ensureSchema` (run
 * at every start, idempotent) and the hourly roll-up.
 *
 * - Retention policy `gpu_window` (DEFAULT, 30 days unless configured) holds measurement
 *   `gpu_window`, one point per GPU window (see line-protocol.ts).
 * - Retention policy `gpu_hour` (730 days unless configured) holds measurement `gpu_hour`:
 *   per GPU-hour, `sum()` of the nine `*_s` fields under the same names,
 *   `mean(power_w)`, `max()` of `power_max_w`, `mem_used_max_bytes`, `processes_max`,
 *   and `count(observed_s) AS windows`; every tag kept (`GROUP BY time(1h), *`).
 * - Owners (DESIGN "Owners"): measurement `gpu_owner_window` beside `gpu_window`, one point
 *   per window per owner of a held GPU (line-protocol.ts), rolled up the same way into
 *   `gpu_owner_hour` in the `gpu_hour` policy: the nine `*_s` fields summed and
 *   `count(observed_s) AS windows`, every tag kept.
 * - Boards in MIG mode (GpuWindow.mig_board; their instances are the GPUs): measurement
 *   `mig_board_window` beside `gpu_window`, one point per board row (line-protocol.ts) with
 *   the board's own figures: seconds sampled and unreadable, power, power limit, memory
 *   total. Written with every other line, into the `gpu_window` policy (the raw retention);
 *   no continuous query rolls it up, as the report and the roll-ups count GPUs, and a
 *   board's seconds are not GPU capacity.
 * - Fleet-hours (for the report and the Capacity dashboard at fleet scale): measurement
 *   `fleet_hour` in the `gpu_hour` policy, rolled up FROM `gpu_hour`: per hour and fleet
 *   group (`model`, `mig_profile` and every label key the GPUs carry — every tag but the
 *   per-GPU `host`, `gpu`, `uuid`, `parent_uuid`), the nine `*_s` fields summed,
 *   `real_idle_s` (free idle + held idle + phantom busy) and `count(observed_s) AS gpus` (the
 *   GPUs seen in that hour). A year of 10,000 GPUs is 87.6 M `gpu_hour` points but only
 *   8,760 × groups `fleet_hour` points; InfluxDB 1.x pays per series and time bucket, so
 *   that is what makes a year's report take seconds. Its group keys are found with `SHOW
 *   TAG KEYS`; when they change (a label key new to the fleet) `ensureSchema` replaces the
 *   query and drops `fleet_hour`, which is then rolled up again from `gpu_hour`, newest hour
 *   first, by the collector (fleet-backfill.ts); a report reads it only where it reaches.
 * - Continuous queries `cq_gpu_hour` and `cq_gpu_owner_hour` (`RESAMPLE EVERY 10m FOR 2h`)
 *   keep the last two hours rolled up; `cq_fleet_hour` (`RESAMPLE EVERY 10m FOR 3h`) rolls
 *   the last three hours of `gpu_hour` up again, so it sees the hourly query's last run. Windows older than that when they arrive (an agent
 *   catching up after a long outage, a backfill) are rolled up with `rollup(from, to)`,
 *   which runs the SAME SELECTs with an explicit time range: `hourRollupSelect` is the one
 *   place their text is written.
 */
import { TrueidleError } from "../../common/errors.js";
import { formatDuration } from "../../common/duration.js";
import { InfluxQueryClient, type StatementResult } from "../../common/influx/client.js";
import { fleetKeys } from "../../common/influx/fleet-keys.js";
import { quoteIdent } from "../../common/influx/quote.js";
import type { InfluxTarget } from "../../common/influx/target.js";
import { COLLECTOR_INFLUX_SETTINGS } from "../settings.js";

export const RP_WINDOW = "gpu_window";
export const RP_HOUR = "gpu_hour";
export const MEASUREMENT_WINDOW = "gpu_window";
export const MEASUREMENT_HOUR = "gpu_hour";
export const MEASUREMENT_OWNER_WINDOW = "gpu_owner_window";
export const MEASUREMENT_OWNER_HOUR = "gpu_owner_hour";
/** Board rows, in the raw policy only: no roll-up (see above). */
export const MEASUREMENT_BOARD_WINDOW = "mig_board_window";
export const CQ_NAME = "cq_gpu_hour";
export const CQ_OWNER_NAME = "cq_gpu_owner_hour";
export const CQ_RESAMPLE = "RESAMPLE EVERY 10m FOR 2h";
/** Fleet-hours, rolled up from `gpu_hour` in the same policy (see above). */
export const MEASUREMENT_FLEET_HOUR = "fleet_hour";
export const CQ_FLEET_NAME = "cq_fleet_hour";
/** An hour longer than the hourly query's look-back: its last run on an hour comes before this one's. */
export const CQ_FLEET_RESAMPLE = "RESAMPLE EVERY 10m FOR 3h";

export const DAY_MS = 86_400_000;
export const HOUR_MS = 3_600_000;
export const DEFAULT_RAW_RETENTION_MS: number = COLLECTOR_INFLUX_SETTINGS.rawRetentionMs.default;
export const DEFAULT_HOUR_RETENTION_MS: number = COLLECTOR_INFLUX_SETTINGS.hourRetentionMs.default;
/** The raw policy must outlive the continuous query's two-hour look-back. */
export const MIN_RAW_RETENTION_MS: number = COLLECTOR_INFLUX_SETTINGS.rawRetentionMs.min;
/** InfluxDB's own minimum for a retention policy. */
export const MIN_HOUR_RETENTION_MS: number = COLLECTOR_INFLUX_SETTINGS.hourRetentionMs.min;

/** Tags every point carries besides the host's configured labels. */
export const TAG_KEYS = ["host", "gpu", "uuid", "model"] as const;

/** The nine seconds fields; summed per hour. */
export const SECONDS_FIELDS = [
  "observed_s",
  "free_idle_s",
  "held_idle_s",
  "busy_phantom_s",
  "active_s",
  "unavailable_s",
  "reported_idle_s",
  "reported_busy_s",
  "real_busy_s",
] as const;

/** Every `gpu_window` field; `mem_used_max_bytes` and `processes_max` are integers. */
export const WINDOW_FIELDS = [
  ...SECONDS_FIELDS,
  "power_w",
  "power_max_w",
  "mem_used_max_bytes",
  "processes_max",
] as const;
export const INTEGER_FIELDS: ReadonlySet<string> = new Set([
  "mem_used_max_bytes",
  "processes_max",
  "windows",
  "mem_total_bytes",
]);

/** Every `mig_board_window` field; `mem_total_bytes` is an integer. A field the board did not report is omitted. */
export const BOARD_WINDOW_FIELDS = [
  "observed_s",
  "unavailable_s",
  "power_w",
  "power_max_w",
  "power_floor_w",
  "power_limit_w",
  "mem_total_bytes",
] as const;

/** One roll-up column: its name, the aggregate, and the field it aggregates (several: their aggregates added). */
export type RollupField = readonly [
  name: string,
  aggregate: "sum" | "mean" | "max" | "count",
  from: string | readonly string[],
];

/** `gpu_hour` fields: how each comes from `gpu_window` (aggregate, source field). */
export const HOUR_FIELDS: ReadonlyArray<
  readonly [name: string, aggregate: "sum" | "mean" | "max" | "count", from: string]
> = [
  ...SECONDS_FIELDS.map((f) => [f, "sum", f] as const),
  ["power_w", "mean", "power_w"],
  ["power_max_w", "max", "power_max_w"],
  ["mem_used_max_bytes", "max", "mem_used_max_bytes"],
  ["processes_max", "max", "processes_max"],
  ["windows", "count", "observed_s"],
];

/** `gpu_owner_hour` fields: the seconds summed, and the windows counted. */
export const OWNER_HOUR_FIELDS: typeof HOUR_FIELDS = [
  ...SECONDS_FIELDS.map((f) => [f, "sum", f] as const),
  ["windows", "count", "observed_s"],
];

/** The real-idle states: what `real_idle_s` adds up. */
export const REAL_IDLE_FIELDS = ["free_idle_s", "held_idle_s", "busy_phantom_s"] as const;

/** `fleet_hour` fields, from `gpu_hour`: the seconds summed, real idle, and the GPUs seen. */
export const FLEET_HOUR_FIELDS: readonly RollupField[] = [
  ...SECONDS_FIELDS.map((f) => [f, "sum", f] as const),
  ["real_idle_s", "sum", REAL_IDLE_FIELDS],
  ["gpus", "count", "observed_s"],
];

/** One hourly roll-up: its continuous query, what it reads and writes, and how. */
export interface Rollup {
  cq: string;
  /** The policy `from` is in; the roll-up is written to `gpu_hour`. */
  fromRp: string;
  from: string;
  into: string;
  fields: readonly RollupField[];
  /** `*` (every tag), or the tag keys to group by. */
  groupBy: "*" | readonly string[];
  resample: string;
}

/** GPU windows into GPU-hours. */
export const GPU_ROLLUP: Rollup = {
  cq: CQ_NAME,
  fromRp: RP_WINDOW,
  from: MEASUREMENT_WINDOW,
  into: MEASUREMENT_HOUR,
  fields: HOUR_FIELDS,
  groupBy: "*",
  resample: CQ_RESAMPLE,
};
/** Owner windows into owner-hours. */
export const OWNER_ROLLUP: Rollup = {
  cq: CQ_OWNER_NAME,
  fromRp: RP_WINDOW,
  from: MEASUREMENT_OWNER_WINDOW,
  into: MEASUREMENT_OWNER_HOUR,
  fields: OWNER_HOUR_FIELDS,
  groupBy: "*",
  resample: CQ_RESAMPLE,
};
export { BASE_FLEET_KEYS, PER_GPU_TAGS, fleetKeys } from "../../common/influx/fleet-keys.js";

/** The roll-ups every database has; the fleet's depends on its tag keys ({@link fleetRollup}). */
export const ROLLUPS: readonly Rollup[] = [GPU_ROLLUP, OWNER_ROLLUP];

/** GPU-hours into fleet-hours, grouped by `keys` (see {@link fleetKeys}). */
export function fleetRollup(keys: readonly string[]): Rollup {
  return {
    cq: CQ_FLEET_NAME,
    fromRp: RP_HOUR,
    from: MEASUREMENT_HOUR,
    into: MEASUREMENT_FLEET_HOUR,
    fields: FLEET_HOUR_FIELDS,
    groupBy: [...keys],
    resample: CQ_FLEET_RESAMPLE,
  };
}

/**
 * The group keys of the fleet roll-up a continuous query's text (as `SHOW CONTINUOUS
 * QUERIES` prints it) groups by; undefined when the text is not a fleet roll-up. Label keys
 * are plain identifiers (common/labels.ts), so the text's `GROUP BY` reads back exactly.
 */
export function fleetKeysOfQuery(text: string): string[] | undefined {
  const m = /GROUP BY time\(1h\)((?:\s*,\s*"?[A-Za-z_][A-Za-z0-9_]*"?)*)\s+END\s*$/i.exec(text.trim());
  if (!m || !/\bfleet_hour\b/.test(text)) return undefined;
  return (m[1] ?? "")
    .split(",")
    .map((k) => k.trim().replace(/"/g, ""))
    .filter((k) => k !== "");
}

/** `"db"."rp"."measurement"` */
export function qualified(db: string, rp: string, measurement: string): string {
  return `${quoteIdent(db)}.${quoteIdent(rp)}.${quoteIdent(measurement)}`;
}

/**
 * THE roll-up SELECT, shared by the continuous query and `rollup`. With a range, a
 * `WHERE time >= … AND time < …` (milliseconds) goes before the GROUP BY.
 */
export function hourRollupSelect(db: string, range?: { fromMs: number; toMs: number }, r: Rollup = GPU_ROLLUP): string {
  const column = ([name, agg, from]: RollupField): string =>
    `${(typeof from === "string" ? [from] : from).map((f) => `${agg}(${quoteIdent(f)})`).join(" + ")} AS ${quoteIdent(name)}`;
  const columns = r.fields.map(column).join(", ");
  const where = range ? ` WHERE time >= ${range.fromMs}ms AND time < ${range.toMs}ms` : "";
  const groupBy = r.groupBy === "*" ? ", *" : r.groupBy.map((k) => `, ${quoteIdent(k)}`).join("");
  return (
    `SELECT ${columns} INTO ${qualified(db, RP_HOUR, r.into)} ` +
    `FROM ${qualified(db, r.fromRp, r.from)}${where} GROUP BY time(1h)${groupBy}`
  );
}

export function continuousQueryStatement(db: string, r: Rollup = GPU_ROLLUP): string {
  return `CREATE CONTINUOUS QUERY ${quoteIdent(r.cq)} ON ${quoteIdent(db)} ${r.resample} BEGIN ${hourRollupSelect(db, undefined, r)} END`;
}

/**
 * The roll-up of `[fromMs, toMs)` as one statement. The range is widened to whole hours
 * (from down, to up): a partial hour would overwrite a complete hourly point with a
 * partial sum.
 */
export function rollupStatement(db: string, fromMs: number, toMs: number, r: Rollup = GPU_ROLLUP): string {
  const from = Math.floor(fromMs / HOUR_MS) * HOUR_MS;
  const to = Math.ceil(toMs / HOUR_MS) * HOUR_MS;
  return hourRollupSelect(db, { fromMs: from, toMs: to }, r);
}

/**
 * Whether two statements say the same, as InfluxDB prints them back: `SHOW CONTINUOUS
 * QUERIES` drops quotes it does not need and may change spacing and keyword case.
 */
export function sameStatement(a: string, b: string): boolean {
  const norm = (s: string): string => s.replace(/"/g, "").replace(/\s+/g, " ").trim().toLowerCase();
  return norm(a) === norm(b);
}

export interface RetentionConfig {
  /** Duration of `gpu_window` (default 30 days). */
  rawRetentionMs?: number | undefined;
  /** Duration of `gpu_hour` (default 730 days). */
  hourRetentionMs?: number | undefined;
}

export function retentionPolicyStatement(
  verb: "CREATE" | "ALTER",
  db: string,
  rp: string,
  durationMs: number,
  isDefault: boolean,
): string {
  const replication = verb === "CREATE" ? " REPLICATION 1" : "";
  return `${verb} RETENTION POLICY ${quoteIdent(rp)} ON ${quoteIdent(db)} DURATION ${formatDuration(durationMs)}${replication}${isDefault ? " DEFAULT" : ""}`;
}

/** Milliseconds of a Go duration as InfluxDB prints it ("720h0m0s", "1h30m0s", "0s"). */
export function parseGoDuration(text: string): number {
  const units: Record<string, number> = { h: HOUR_MS, m: 60_000, s: 1000, ms: 1, us: 1e-3, µs: 1e-3, ns: 1e-6 };
  let total = 0;
  let matched = "";
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/g)) {
    total += Number(m[1]) * (units[m[2] ?? "s"] ?? 0);
    matched += m[0];
  }
  if (matched !== text)
    throw new TrueidleError("internal", `InfluxDB printed a duration trueidle cannot read: "${text}"`);
  return Math.round(total);
}

export interface StatementOptions {
  signal?: AbortSignal | undefined;
}

/** How long one statement may take when the caller gives no client of its own. */
const STATEMENT_TIMEOUT_MS = 30_000;

/** One statement's result; any failure is the client's TrueidleError (common/influx/client.ts). */
async function runStatement(
  client: InfluxQueryClient,
  statement: string,
  opts: StatementOptions,
): Promise<StatementResult> {
  const [result] = await client.query([statement], opts.signal);
  return result ?? { series: [] };
}

function rowsOf(result: StatementResult): Array<{ series: string | undefined; row: Record<string, unknown> }> {
  const out: Array<{ series: string | undefined; row: Record<string, unknown> }> = [];
  for (const s of result.series) {
    for (const v of s.values) out.push({ series: s.name, row: Object.fromEntries(s.columns.map((c, i) => [c, v[i]])) });
  }
  return out;
}

export interface EnsureSchemaOptions extends RetentionConfig, StatementOptions {
  /** A client to use; by default one is made for the target, 30 s per statement. */
  client?: InfluxQueryClient | undefined;
}

/**
 * Creates what is missing and corrects what differs: the database, the two retention
 * policies (`gpu_window` the default; durations as configured) and the continuous queries
 * (dropped and created again when its text differs; the fleet query's text follows the
 * GPUs' tag keys, and `fleet_hour` is dropped with it, see above). Returns what it changed, one
 * sentence per change; running it again changes nothing and returns [].
 */
export async function ensureSchema(target: InfluxTarget, opts: EnsureSchemaOptions = {}): Promise<string[]> {
  const client = opts.client ?? new InfluxQueryClient({ target, timeoutMs: STATEMENT_TIMEOUT_MS });
  const db = target.database;
  const run = (s: string): Promise<StatementResult> => runStatement(client, s, opts);
  const changes: string[] = [];

  const dbs = rowsOf(await run("SHOW DATABASES")).map((r) => r.row["name"]);
  if (!dbs.includes(db)) {
    await run(`CREATE DATABASE ${quoteIdent(db)}`);
    changes.push(`created database ${db}`);
  }

  const policies = new Map(
    rowsOf(await run(`SHOW RETENTION POLICIES ON ${quoteIdent(db)}`)).map(({ row }) => [
      String(row["name"]),
      { durationMs: parseGoDuration(String(row["duration"])), isDefault: row["default"] === true },
    ]),
  );
  const wanted: Array<[string, number, boolean]> = [
    [RP_WINDOW, opts.rawRetentionMs ?? DEFAULT_RAW_RETENTION_MS, true],
    [RP_HOUR, opts.hourRetentionMs ?? DEFAULT_HOUR_RETENTION_MS, false],
  ];
  for (const [rp, durationMs, isDefault] of wanted) {
    const have = policies.get(rp);
    if (!have) {
      await run(retentionPolicyStatement("CREATE", db, rp, durationMs, isDefault));
      changes.push(`created retention policy ${rp} (${formatDuration(durationMs)}${isDefault ? ", default" : ""})`);
    } else if (have.durationMs !== durationMs || (isDefault && !have.isDefault)) {
      await run(retentionPolicyStatement("ALTER", db, rp, durationMs, isDefault && !have.isDefault));
      changes.push(
        `altered retention policy ${rp}: duration ${formatDuration(have.durationMs)} → ${formatDuration(durationMs)}` +
          (isDefault && !have.isDefault ? ", made default" : ""),
      );
    }
  }

  const cqs = rowsOf(await run("SHOW CONTINUOUS QUERIES"));
  for (const r of ROLLUPS) {
    const wantCq = continuousQueryStatement(db, r);
    const cq = cqs.find((c) => c.series === db && c.row["name"] === r.cq);
    if (!cq) {
      await run(wantCq);
      changes.push(`created continuous query ${r.cq}`);
    } else if (!sameStatement(String(cq.row["query"]), wantCq)) {
      await run(`DROP CONTINUOUS QUERY ${quoteIdent(r.cq)} ON ${quoteIdent(db)}`);
      await run(wantCq);
      changes.push(`replaced continuous query ${r.cq}, whose text differed`);
    }
  }

  const fleet = await ensureFleetRollup(client, db, opts.signal, cqs);
  if (fleet.change) changes.push(fleet.change);
  return changes;
}

/**
 * Makes the fleet roll-up's continuous query group by the keys the GPUs carry now, and
 * returns that roll-up, with a sentence when it changed something. Its points are keyed by
 * those tags, so a roll-up by other keys would not overwrite them but add to them: when the
 * query changes, `fleet_hour` is dropped first, to be rolled up again from `gpu_hour`
 * (fleet-backfill.ts); the report reads `gpu_hour` wherever `fleet_hour` does not reach yet.
 */
export async function ensureFleetRollup(
  client: InfluxQueryClient,
  db: string,
  signal?: AbortSignal,
  shown?: ReadonlyArray<{ series: string | undefined; row: Record<string, unknown> }>,
): Promise<{ rollup: Rollup; change?: string }> {
  const run = (s: string): Promise<StatementResult> => runStatement(client, s, { signal });
  const cqs = shown ?? rowsOf(await run("SHOW CONTINUOUS QUERIES"));
  const keys = fleetKeys(await tagKeysOf(client, db, signal));
  const r = fleetRollup(keys);
  const want = continuousQueryStatement(db, r);
  const have = cqs.find((c) => c.series === db && c.row["name"] === CQ_FLEET_NAME);
  if (have && sameStatement(String(have.row["query"]), want)) return { rollup: r };
  const was = have ? fleetKeysOfQuery(String(have.row["query"])) : undefined;
  if (have) await run(`DROP CONTINUOUS QUERY ${quoteIdent(CQ_FLEET_NAME)} ON ${quoteIdent(db)}`);
  await run(`DROP MEASUREMENT ${quoteIdent(MEASUREMENT_FLEET_HOUR)}`);
  await run(want);
  return {
    rollup: r,
    change: have
      ? `replaced continuous query ${CQ_FLEET_NAME}, ` +
        (was && was.join(",") !== keys.join(",")
          ? `whose group keys changed from ${was.join(", ")} to ${keys.join(", ")}`
          : "whose text differed") +
        `; dropped ${MEASUREMENT_FLEET_HOUR}, to be rolled up again from ${MEASUREMENT_HOUR}`
      : `created continuous query ${CQ_FLEET_NAME} (by ${keys.join(", ")})`,
  };
}

/** Every tag key of the GPU measurements (`gpu_window` and `gpu_hour`), from InfluxDB's index. */
export async function tagKeysOf(client: InfluxQueryClient, db: string, signal?: AbortSignal): Promise<Set<string>> {
  const results = await client.query(
    [
      `SHOW TAG KEYS ON ${quoteIdent(db)} FROM ${quoteIdent(RP_WINDOW)}.${quoteIdent(MEASUREMENT_WINDOW)}`,
      `SHOW TAG KEYS ON ${quoteIdent(db)} FROM ${quoteIdent(RP_HOUR)}.${quoteIdent(MEASUREMENT_HOUR)}`,
    ],
    signal,
  );
  const keys = new Set<string>();
  for (const r of results) for (const s of r.series) for (const v of s.values) keys.add(String(v[0]));
  return keys;
}

/** The points a `SELECT … INTO` says it wrote. */
function writtenBy(result: StatementResult): number {
  let n = 0;
  for (const { row } of rowsOf(result)) n += Number(row["written"] ?? 0);
  return n;
}

/**
 * Rolls `[fromMs, toMs)` of `gpu_hour` up into `fleet_hour` by `fleet`'s keys, and makes
 * sure no hour of it ends up holding points of two key sets (which would count twice):
 * when the fleet query's keys changed while the statement ran (a label key new to the
 * fleet, seen by this process or another collector), the range is cleared and rolled up
 * again by the keys in force. With `clearFirst` (the back-fill, whose range should hold
 * nothing yet) the range is cleared before the first try too, which also removes points a
 * continuous query run by the old keys may have written after the drop. Returns the
 * roll-up in force and the points written.
 */
export async function rollupFleetRange(
  client: InfluxQueryClient,
  db: string,
  fromMs: number,
  toMs: number,
  fleet: Rollup,
  opts: StatementOptions & { clearFirst?: boolean | undefined } = {},
): Promise<{ rollup: Rollup; written: number }> {
  let r = fleet;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0 || opts.clearFirst)
      await runStatement(
        client,
        `DELETE FROM ${quoteIdent(MEASUREMENT_FLEET_HOUR)} WHERE time >= ${fromMs}ms AND time < ${toMs}ms`,
        opts,
      );
    const n = writtenBy(await runStatement(client, rollupStatement(db, fromMs, toMs, r), opts));
    const now = (await ensureFleetRollup(client, db, opts.signal)).rollup;
    if (now.groupBy.toString() === r.groupBy.toString()) return { rollup: r, written: n };
    r = now;
  }
  throw new TrueidleError(
    "unavailable",
    `the fleet roll-up's group keys changed three times while ${MEASUREMENT_FLEET_HOUR} was rolled up from ${new Date(fromMs).toISOString()} to ${new Date(toMs).toISOString()}; it is tried again later`,
  );
}

/** Points a roll-up wrote: `gpu_hour`, `gpu_owner_hour` and `fleet_hour`. */
export interface RollupCounts {
  gpuHours: number;
  ownerHours: number;
  fleetHours: number;
}

export interface RollupOptions extends StatementOptions {
  /** A client to use; by default one is made for the target, 30 s per statement. */
  client?: InfluxQueryClient | undefined;
  /** Hours rolled up per statement, so no single query holds too much (default 24). */
  chunkHours?: number | undefined;
  /** Called after each statement with the range done so far. */
  onProgress?: ((doneToMs: number, fromMs: number, toMs: number) => void) | undefined;
}

/**
 * Rolls `gpu_window` up into `gpu_hour`, `gpu_owner_window` into `gpu_owner_hour`, and then
 * `gpu_hour` into `fleet_hour` (by the keys the GPUs carry, {@link ensureFleetRollup}), over `[fromMs, toMs)`, widened to whole hours, in chunks, with the continuous
 * queries' own SELECTs. Idempotent: an hour rolled up again is overwritten with the same
 * point. Returns the hourly points written to each measurement.
 */
export async function rollup(
  target: InfluxTarget,
  fromMs: number,
  toMs: number,
  opts: RollupOptions = {},
): Promise<RollupCounts> {
  const client = opts.client ?? new InfluxQueryClient({ target, timeoutMs: STATEMENT_TIMEOUT_MS });
  const from = Math.floor(fromMs / HOUR_MS) * HOUR_MS;
  const to = Math.ceil(toMs / HOUR_MS) * HOUR_MS;
  const chunk = Math.max(1, Math.floor(opts.chunkHours ?? 24)) * HOUR_MS;
  const written: RollupCounts = { gpuHours: 0, ownerHours: 0, fleetHours: 0 };
  // By the keys the GPUs carry now, the query made to match (a change drops fleet_hour).
  let fleet = (await ensureFleetRollup(client, target.database, opts.signal)).rollup;
  for (let start = from; start < to; start += chunk) {
    const end = Math.min(to, start + chunk);
    for (const r of ROLLUPS) {
      const n = writtenBy(await runStatement(client, rollupStatement(target.database, start, end, r), opts));
      if (r === GPU_ROLLUP) written.gpuHours += n;
      else written.ownerHours += n;
    }
    const f = await rollupFleetRange(client, target.database, start, end, fleet, { signal: opts.signal });
    fleet = f.rollup;
    written.fleetHours += f.written;
    opts.onProgress?.(end, from, to);
  }
  return written;
}
