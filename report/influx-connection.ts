/**
 * Where the report reads from: `--influx-url http://HOST:8086/DB` plus credentials, and a
 * small InfluxDB 1.x query client that turns every way a query can fail into one
 * TrueidleError whose message names the fix.
 *
 * Credentials never come from the command line: env `TRUEIDLE_INFLUX_USERNAME` /
 * `TRUEIDLE_INFLUX_PASSWORD`, or `--influx-credentials-file FILE` (first line
 * `username:password`), the file winning when both are given. A URL with `user:pass@` is
 * refused rather than silently used, and its credentials are never echoed.
 */
import { readFileSync } from "node:fs";
import { TrueidleError, errorMessage } from "../common/errors.js";
import type { InfluxUrl } from "../common/influx-url.js";

/** Scheme, host and port, no trailing slash (`http://127.0.0.1:8086`), and the database. */
export type InfluxTarget = InfluxUrl;

export interface InfluxCredentials {
  username: string;
  password: string;
}

/** `--influx-url`: the parser every command uses, which never echoes credentials (common/influx-url.ts). */
export { parseInfluxUrl } from "../common/influx-url.js";

/**
 * Credentials from the file when given, else from the environment, else none (an InfluxDB
 * without auth). One of username/password alone is a configuration error.
 */
export function readInfluxCredentials(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): InfluxCredentials | undefined {
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new TrueidleError("bad_config", `cannot read --influx-credentials-file ${file}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const line = text.split(/\r?\n/)[0] ?? "";
    const colon = line.indexOf(":");
    if (colon <= 0)
      throw new TrueidleError(
        "bad_config",
        `--influx-credentials-file ${file}: the first line must be username:password`,
      );
    return { username: line.slice(0, colon), password: line.slice(colon + 1) };
  }
  const username = env["TRUEIDLE_INFLUX_USERNAME"];
  const password = env["TRUEIDLE_INFLUX_PASSWORD"];
  if (!username && !password) return undefined;
  if (!username || password === undefined) {
    throw new TrueidleError("bad_config", "set both TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD, or neither");
  }
  return { username, password };
}

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

export interface InfluxQueryClientOptions {
  target: InfluxTarget;
  credentials?: InfluxCredentials | undefined;
  /** Per request; default {@link DEFAULT_QUERY_TIMEOUT_MS}. */
  timeoutMs?: number | undefined;
}

/** How long one query may take by default (`trueidle report --timeout`). */
export const DEFAULT_QUERY_TIMEOUT_MS = 60_000;
/** How long the first `/ping` may take: a server that accepts and never answers is named quickly. */
export const PING_TIMEOUT_MS = 5_000;

/**
 * Runs InfluxQL over `/query` in chunked mode (so a server-side `max-row-limit` never
 * truncates an answer silently) and returns one StatementResult per statement.
 */
export class InfluxQueryClient {
  readonly target: InfluxTarget;
  private readonly auth: string | undefined;
  private readonly timeoutMs: number;

  constructor(opts: InfluxQueryClientOptions) {
    this.target = opts.target;
    this.auth = opts.credentials
      ? `Basic ${Buffer.from(`${opts.credentials.username}:${opts.credentials.password}`, "utf8").toString("base64")}`
      : undefined;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
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
      if (signal?.aborted) throw err;
      if (timeout.aborted) {
        throw new TrueidleError(
          "unavailable",
          `${where} did not answer /ping within ${seconds(timeoutMs)}, which InfluxDB answers at once; check that --influx-url names ` +
            "InfluxDB's HTTP API (port 8086 by default), that no firewall drops the traffic, and that influxd is not stuck",
          { cause: err },
        );
      }
      throw new TrueidleError(
        "unavailable",
        `cannot reach InfluxDB at ${where} (${causeText(err)}); check --influx-url and that influxd is running`,
        { cause: err },
      );
    }
    if (res.status === 401 || res.status === 403) {
      throw new TrueidleError(
        "bad_config",
        `InfluxDB at ${where} refused the credentials (HTTP ${res.status}); set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD or --influx-credentials-file`,
      );
    }
    if (!res.ok) {
      throw new TrueidleError(
        "unavailable",
        `${where} answered /ping with HTTP ${res.status}, where InfluxDB answers 204; ` +
          "check that --influx-url names InfluxDB's HTTP API (port 8086 by default)",
      );
    }
  }

  /** `statements` run in one request, in order; every statement names its database itself. */
  async query(statements: readonly string[], signal?: AbortSignal): Promise<StatementResult[]> {
    const where = this.target.baseUrl;
    const params = new URLSearchParams({
      q: statements.join(";\n"),
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
      if (signal?.aborted) throw err;
      if (timeout.aborted) {
        throw new TrueidleError(
          "unavailable",
          `InfluxDB at ${where} did not answer a query within ${seconds(this.timeoutMs)}; give a longer --timeout, or a shorter range (--since, --until)`,
          { cause: err },
        );
      }
      throw new TrueidleError(
        "unavailable",
        `cannot reach InfluxDB at ${where} (${causeText(err)}); check --influx-url and that influxd is running`,
        { cause: err },
      );
    }
    if (res.status === 401 || res.status === 403) {
      throw new TrueidleError(
        "bad_config",
        `InfluxDB at ${where} refused the credentials (HTTP ${res.status}); set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD or --influx-credentials-file`,
      );
    }
    const out: StatementResult[] = statements.map(() => ({ series: [] }));
    // Chunked answers are one JSON object per line; a series can continue across lines.
    const lines = body.split("\n").filter((l) => l.trim() !== "");
    for (const line of lines) {
      let obj: { results?: Array<{ statement_id?: number; series?: InfluxSeries[]; error?: string }>; error?: string };
      try {
        obj = JSON.parse(line) as typeof obj;
      } catch {
        throw new TrueidleError(
          "unavailable",
          `InfluxDB at ${where} answered HTTP ${res.status} with something that is not InfluxDB JSON: ${body.slice(0, 200)}`,
        );
      }
      if (obj.error) throw this.queryError(obj.error);
      for (const r of obj.results ?? []) {
        if (r.error) throw this.queryError(r.error);
        const target = out[r.statement_id ?? 0];
        if (!target) continue;
        for (const s of r.series ?? []) {
          const last = target.series[target.series.length - 1];
          if (last && last.name === s.name && sameTags(last.tags, s.tags)) last.values.push(...s.values);
          else target.series.push({ ...s, values: [...s.values] });
        }
      }
    }
    if (!res.ok && lines.length === 0)
      throw new TrueidleError("unavailable", `InfluxDB at ${where} answered HTTP ${res.status}: ${body.slice(0, 200)}`);
    return out;
  }

  private queryError(message: string): TrueidleError {
    const db = this.target.database;
    if (/^database not found/.test(message)) {
      return new TrueidleError(
        "not_found",
        `database "${db}" does not exist on InfluxDB at ${this.target.baseUrl}; the collector creates it when started with ` +
          `--influx-url ${this.target.baseUrl}/${db} (or check the database name at the end of --influx-url)`,
      );
    }
    if (/^retention policy not found/.test(message)) {
      return new TrueidleError(
        "not_found",
        `database "${db}" lacks trueidle's retention policies (${message}); start the collector with --influx-url ${this.target.baseUrl}/${db} once to create them`,
      );
    }
    if (/authorization|authentication|unable to parse authentication credentials/i.test(message)) {
      return new TrueidleError(
        "bad_config",
        `InfluxDB at ${this.target.baseUrl} refused the query (${message}); set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD or --influx-credentials-file`,
      );
    }
    return new TrueidleError("unavailable", `InfluxDB at ${this.target.baseUrl} failed a query: ${message}`);
  }
}

function sameTags(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ka = Object.keys(a ?? {});
  if (ka.length !== Object.keys(b ?? {}).length) return false;
  return ka.every((k) => a![k] === b?.[k]);
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

/** InfluxQL identifier quoting: `"name"` with `"` and `\` escaped. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** InfluxQL string literal quoting. */
export function quoteString(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}
