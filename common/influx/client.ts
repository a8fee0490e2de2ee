/**
 * The one InfluxDB 1.x query client: the report's SELECTs, the collector's schema
 * statements and roll-ups, the demo's history set-up. It runs InfluxQL over `/query` and
 * turns every way a statement can fail into one TrueidleError whose message names the fix:
 * no answer (a per-query timeout), a server that is not InfluxDB, refused credentials or
 * rights, and errors InfluxDB reports inside a 200 answer (`results[i].error`).
 *
 * Every statement goes by POST: InfluxDB 1.x needs it for CREATE, ALTER, DROP and SELECT …
 * INTO and takes it for SELECT and SHOW, and a form body has no URL length limit for the
 * report's long SELECTs. The collector's line-protocol writes do not come here
 * (collector/influx/writer.ts has its own measured write path).
 */
import { TrueidleError, errorMessage } from "../errors.js";
import { quoteIdent } from "./quote.js";
import { authorizationHeader, type InfluxTarget } from "./target.js";

export interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

/** One statement's answer: its series, merged across the chunks InfluxDB streamed. */
export interface StatementResult {
  series: InfluxSeries[];
}

/** How long one query may take by default (`trueidle report --timeout`). */
export const DEFAULT_QUERY_TIMEOUT_MS = 60_000;
/** How long the first `/ping` may take: a server that accepts and never answers is named quickly. */
export const PING_TIMEOUT_MS = 5_000;

export interface InfluxQueryClientOptions {
  /** Where, and with which credentials (none: no Authorization header). */
  target: InfluxTarget;
  /** Per request; default {@link DEFAULT_QUERY_TIMEOUT_MS}. */
  timeoutMs?: number | undefined;
  /**
   * The fix a timeout names, e.g. the report's "give a longer --timeout, or a shorter
   * range"; default: look at the server's load.
   */
  timeoutFix?: string | undefined;
}

const CREDENTIALS_FIX = "set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD or --influx-credentials-file";
const DEFAULT_TIMEOUT_FIX = "check that influxd is not overloaded or stuck";
/** Statements are quoted in messages up to this length. */
const STATEMENT_SHOWN = 120;

interface Answer {
  results?: Array<{ statement_id?: number; series?: InfluxSeries[]; error?: string }>;
  error?: string;
}

/**
 * Runs InfluxQL over `/query` in chunked mode (so a server-side `max-row-limit` never
 * truncates an answer silently) and returns one StatementResult per statement. Holds no
 * connection state of its own: a server that was away is tried afresh by the next call.
 */
export class InfluxQueryClient {
  readonly target: InfluxTarget;
  private readonly auth: string | undefined;
  private readonly timeoutMs: number;
  private readonly timeoutFix: string;

  constructor(opts: InfluxQueryClientOptions) {
    this.target = opts.target;
    this.auth = authorizationHeader(opts.target);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
    this.timeoutFix = opts.timeoutFix ?? DEFAULT_TIMEOUT_FIX;
  }

  /**
   * `/ping`, answered at once by any running InfluxDB: run before the queries so that a
   * wrong address, or a server that accepts connections and never answers, is named within
   * seconds rather than after the query timeout.
   */
  async ping(signal?: AbortSignal, timeoutMs = Math.min(PING_TIMEOUT_MS, this.timeoutMs)): Promise<void> {
    const where = this.target.baseUrl;
    const timeout = AbortSignal.timeout(timeoutMs);
    const headers: Record<string, string> = {};
    if (this.auth) headers["authorization"] = this.auth;
    let res: Response;
    try {
      res = await fetch(`${where}/ping`, { headers, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
      await res.arrayBuffer();
    } catch (err) {
      if (signal?.aborted) throw abandoned(signal, err);
      if (timeout.aborted) {
        throw new TrueidleError(
          "unavailable",
          `${where} did not answer /ping within ${seconds(timeoutMs)}, which InfluxDB answers at once; check that --influx-url names ` +
            "InfluxDB's HTTP API (port 8086 by default), that no firewall drops the traffic, and that influxd is not stuck",
          { cause: err },
        );
      }
      throw this.unreachable(err);
    }
    if (res.status === 401 || res.status === 403) throw this.credentialsRefused(res.status);
    if (!res.ok) {
      throw new TrueidleError(
        "unavailable",
        `${where} answered /ping with HTTP ${res.status}, where InfluxDB answers 204; ` +
          "check that --influx-url names InfluxDB's HTTP API (port 8086 by default)",
      );
    }
  }

  /**
   * `statements` run in one request, in order, with the target's database as the default
   * and times in epoch milliseconds (`epoch=ms`). The first error of any statement throws:
   * InfluxDB runs the ones after it no more.
   */
  async query(statements: readonly string[], signal?: AbortSignal): Promise<StatementResult[]> {
    const where = this.target.baseUrl;
    const params = new URLSearchParams({
      q: statements.join(";\n"),
      db: this.target.database,
      epoch: "ms",
      chunked: "true",
      chunk_size: "10000",
    });
    const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
    if (this.auth) headers["authorization"] = this.auth;
    const timeout = AbortSignal.timeout(this.timeoutMs);
    let res: Response;
    let body: string;
    try {
      res = await fetch(`${where}/query`, {
        method: "POST",
        headers,
        body: params.toString(),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      body = await res.text();
    } catch (err) {
      if (signal?.aborted) throw abandoned(signal, err);
      if (timeout.aborted) {
        throw new TrueidleError(
          "unavailable",
          `InfluxDB at ${where} did not answer a query within ${seconds(this.timeoutMs)}; ${this.timeoutFix}`,
          { cause: err },
        );
      }
      throw this.unreachable(err);
    }
    if (res.status === 401) throw this.credentialsRefused(res.status);
    // Chunked answers are one JSON object per line; a series can continue across lines.
    const answers: Answer[] = [];
    for (const line of body.split("\n")) {
      if (line.trim() === "") continue;
      try {
        answers.push(JSON.parse(line) as Answer);
      } catch {
        throw new TrueidleError(
          "unavailable",
          `InfluxDB at ${where} answered HTTP ${res.status} with something that is not InfluxDB JSON: ${body.slice(0, 200)}`,
        );
      }
    }
    const out: StatementResult[] = statements.map(() => ({ series: [] }));
    for (const answer of answers) {
      if (answer.error)
        throw this.statementError(answer.error, res.status, statements.length === 1 ? statements[0] : undefined);
      for (const r of answer.results ?? []) {
        if (r.error) throw this.statementError(r.error, res.status, statements[r.statement_id ?? 0]);
        const target = out[r.statement_id ?? 0];
        if (!target) continue;
        // A series with no rows comes without `values` (SHOW CONTINUOUS QUERIES names every database).
        for (const s of r.series ?? []) {
          const last = target.series[target.series.length - 1];
          if (last && last.name === s.name && sameTags(last.tags, s.tags)) last.values.push(...(s.values ?? []));
          else target.series.push({ ...s, values: [...(s.values ?? [])] });
        }
      }
    }
    if (!res.ok) {
      throw new TrueidleError(
        res.status >= 500 ? "unavailable" : "bad_input",
        `InfluxDB at ${where} answered HTTP ${res.status}: ${body.slice(0, 200)}`,
      );
    }
    return out;
  }

  private unreachable(err: unknown): TrueidleError {
    return new TrueidleError(
      "unavailable",
      `cannot reach InfluxDB at ${this.target.baseUrl} (${causeText(err)}); check --influx-url and that influxd is running`,
      { cause: err },
    );
  }

  private credentialsRefused(status: number): TrueidleError {
    return new TrueidleError(
      "bad_config",
      `InfluxDB at ${this.target.baseUrl} refused the credentials (HTTP ${status}); ${CREDENTIALS_FIX}`,
    );
  }

  /** An error InfluxDB reported, in a 200 answer or with an HTTP error status, as the fix it asks for. */
  private statementError(message: string, status: number, statement: string | undefined): TrueidleError {
    const base = this.target.baseUrl;
    const db = this.target.database;
    if (/^database not found/.test(message)) {
      return new TrueidleError(
        "not_found",
        `database "${db}" does not exist on InfluxDB at ${base}; the collector creates it when started with ` +
          `--influx-url ${base}/${db} (or check the database name at the end of --influx-url)`,
      );
    }
    if (/^retention policy not found/.test(message)) {
      return new TrueidleError(
        "not_found",
        `database "${db}" lacks trueidle's retention policies (${message}); start the collector with --influx-url ${base}/${db} once to create them`,
      );
    }
    const shown = statement === undefined ? "" : `: ${short(statement)}`;
    if (status === 403 || /^error authorizing query/.test(message)) {
      return new TrueidleError(
        "bad_config",
        `InfluxDB at ${base} refused a statement for want of rights (${message}); grant the user the privilege ` +
          `InfluxDB names, or ${CREDENTIALS_FIX} for another user${shown}`,
      );
    }
    if (/authorization|authentication|unable to parse authentication credentials/i.test(message)) {
      return new TrueidleError("bad_config", `InfluxDB at ${base} refused the query (${message}); ${CREDENTIALS_FIX}`);
    }
    if (status >= 500) {
      return new TrueidleError("unavailable", `InfluxDB at ${base} failed (HTTP ${status}: ${message})${shown}`);
    }
    return new TrueidleError("bad_input", `InfluxDB at ${base} refused a statement (${message})${shown}`);
  }
}

/** The caller gave up on a request: its own reason, not a fault of InfluxDB's. */
function abandoned(signal: AbortSignal, err: unknown): TrueidleError {
  return new TrueidleError("aborted", `InfluxDB query abandoned: ${errorMessage(signal.reason)}`, { cause: err });
}

function sameTags(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ka = Object.keys(a ?? {});
  if (ka.length !== Object.keys(b ?? {}).length) return false;
  return ka.every((k) => a![k] === b?.[k]);
}

/** A statement for a message: its start, which names what it does. */
function short(statement: string): string {
  return statement.length > STATEMENT_SHOWN ? `${statement.slice(0, STATEMENT_SHOWN)}…` : statement;
}

/** `5 s`, `1.5 s`. */
function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/** The useful part of a fetch failure: undici hides the system error in `cause`. */
function causeText(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code) return cause.code;
  if (cause?.message) return cause.message;
  return errorMessage(err);
}

/**
 * The time (ms) of the first point of `field` in `from` (a quoted `"db"."rp"."measurement"`),
 * within `[range.fromMs, range.toMs)` when given; undefined when there is none. One point
 * by time order (`LIMIT 1`), so InfluxDB reads no more than the first block of each series.
 */
export async function firstPointMs(
  client: InfluxQueryClient,
  from: string,
  field: string,
  range?: { fromMs: number; toMs: number },
  signal?: AbortSignal,
): Promise<number | undefined> {
  const where = range ? ` WHERE time >= ${range.fromMs}ms AND time < ${range.toMs}ms` : "";
  const [r] = await client.query([`SELECT ${quoteIdent(field)} FROM ${from}${where} LIMIT 1`], signal);
  const t = r?.series[0]?.values[0]?.[0];
  return typeof t === "number" ? t : undefined;
}
