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
 * - Continuous queries `cq_gpu_hour` and `cq_gpu_owner_hour` (`RESAMPLE EVERY 10m FOR 2h`)
 *   keep the last two hours rolled up. Windows older than that when they arrive (an agent
 *   catching up after a long outage, a backfill) are rolled up with `rollup(from, to)`,
 *   which runs the SAME SELECTs with an explicit time range: `hourRollupSelect` is the one
 *   place their text is written.
 */
import { TrueidleError } from "../../common/errors.js";
import { formatDuration } from "../../common/duration.js";
import { InfluxQueryClient, type StatementResult } from "../../common/influx/client.js";
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

/** One hourly roll-up: its continuous query, what it reads and writes, and how. */
export interface Rollup {
  cq: string;
  from: string;
  into: string;
  fields: typeof HOUR_FIELDS;
}

/** GPU windows into GPU-hours. */
export const GPU_ROLLUP: Rollup = {
  cq: CQ_NAME,
  from: MEASUREMENT_WINDOW,
  into: MEASUREMENT_HOUR,
  fields: HOUR_FIELDS,
};
/** Owner windows into owner-hours. */
export const OWNER_ROLLUP: Rollup = {
  cq: CQ_OWNER_NAME,
  from: MEASUREMENT_OWNER_WINDOW,
  into: MEASUREMENT_OWNER_HOUR,
  fields: OWNER_HOUR_FIELDS,
};
export const ROLLUPS: readonly Rollup[] = [GPU_ROLLUP, OWNER_ROLLUP];

/** `"db"."rp"."measurement"` */
export function qualified(db: string, rp: string, measurement: string): string {
  return `${quoteIdent(db)}.${quoteIdent(rp)}.${quoteIdent(measurement)}`;
}

/**
 * THE roll-up SELECT, shared by the continuous query and `rollup`. With a range, a
 * `WHERE time >= … AND time < …` (milliseconds) goes before the GROUP BY.
 */
export function hourRollupSelect(db: string, range?: { fromMs: number; toMs: number }, r: Rollup = GPU_ROLLUP): string {
  const columns = r.fields.map(([name, agg, from]) => `${agg}(${quoteIdent(from)}) AS ${quoteIdent(name)}`).join(", ");
  const where = range ? ` WHERE time >= ${range.fromMs}ms AND time < ${range.toMs}ms` : "";
  return (
    `SELECT ${columns} INTO ${qualified(db, RP_HOUR, r.into)} ` +
    `FROM ${qualified(db, RP_WINDOW, r.from)}${where} GROUP BY time(1h), *`
  );
}

export function continuousQueryStatement(db: string, r: Rollup = GPU_ROLLUP): string {
  return `CREATE CONTINUOUS QUERY ${quoteIdent(r.cq)} ON ${quoteIdent(db)} ${CQ_RESAMPLE} BEGIN ${hourRollupSelect(db, undefined, r)} END`;
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
 * (dropped and created again when its text differs). Returns what it changed, one
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
  return changes;
}

/** Points a roll-up wrote: `gpu_hour` and `gpu_owner_hour`. */
export interface RollupCounts {
  gpuHours: number;
  ownerHours: number;
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
 * Rolls `gpu_window` up into `gpu_hour`, and `gpu_owner_window` into `gpu_owner_hour`,
 * over `[fromMs, toMs)`, widened to whole hours, in chunks, with the continuous queries'
 * own SELECTs. Idempotent: an hour rolled up again is overwritten with the same point.
 * Returns the hourly points written to each measurement.
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
  const written: RollupCounts = { gpuHours: 0, ownerHours: 0 };
  for (let start = from; start < to; start += chunk) {
    const end = Math.min(to, start + chunk);
    for (const r of ROLLUPS) {
      const result = await runStatement(client, rollupStatement(target.database, start, end, r), opts);
      let n = 0;
      for (const { row } of rowsOf(result)) n += Number(row["written"] ?? 0);
      if (r === GPU_ROLLUP) written.gpuHours += n;
      else written.ownerHours += n;
    }
    opts.onProgress?.(end, from, to);
  }
  return written;
}
