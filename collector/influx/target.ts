/**
 * Where trueidle's history lives: an InfluxDB 1.x server and database, from
 * `--influx-url http://HOST:8086/DB`, with credentials from the environment
 * (`TRUEIDLE_INFLUX_USERNAME` / `TRUEIDLE_INFLUX_PASSWORD`) or a file whose first line is
 * `username:password` — never from the command line, and never logged.
 *
 * Shared by the collector (writes) and the demo's backfill; `trueidle report` reads the same
 * URL through the same parser.
 */
import { readFileSync, statSync } from "node:fs";
import { InfluxDB } from "influx";
import { TrueidleError, errorMessage } from "../../common/errors.js";
import { permissionProblem } from "../../common/secret-file.js";

export interface InfluxTarget {
  /** Scheme, host and port only, e.g. "http://127.0.0.1:8086" (no path, no credentials). */
  baseUrl: string;
  database: string;
  username?: string | undefined;
  password?: string | undefined;
}

/** `--influx-url`: one parser for every command, which never echoes credentials (common/influx-url.ts). */
export { parseInfluxUrl } from "../../common/influx-url.js";

export interface CredentialSources {
  /** `--influx-credentials-file`: first line `username:password`. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

export interface Credentials {
  username: string;
  password: string;
  /** Where they came from, for logs ("environment" or the file's path); never the values. */
  from: string;
  /** Set when the file is readable by group or others. */
  warning?: string | undefined;
}

/** Credentials from the file or the environment; undefined when neither gives any. */
export function readInfluxCredentials(src: CredentialSources): Credentials | undefined {
  const env = src.env ?? process.env;
  const user = env["TRUEIDLE_INFLUX_USERNAME"];
  const pass = env["TRUEIDLE_INFLUX_PASSWORD"];
  const inEnv = (user !== undefined && user !== "") || (pass !== undefined && pass !== "");
  if (src.file !== undefined) {
    if (inEnv) {
      throw new TrueidleError(
        "bad_config",
        "InfluxDB credentials are given both in the environment (TRUEIDLE_INFLUX_USERNAME/PASSWORD) and in --influx-credentials-file; give them once",
      );
    }
    let text: string;
    let mode: number;
    try {
      text = readFileSync(src.file, "utf8");
      mode = statSync(src.file).mode;
    } catch (err) {
      throw new TrueidleError(
        "bad_config",
        `--influx-credentials-file ${src.file} cannot be read: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    const first = text.split(/\r?\n/, 1)[0] ?? "";
    const colon = first.indexOf(":");
    if (colon <= 0) {
      throw new TrueidleError(
        "bad_config",
        `--influx-credentials-file ${src.file}: the first line must be username:password`,
      );
    }
    return {
      username: first.slice(0, colon),
      password: first.slice(colon + 1),
      from: src.file,
      warning: ((problem) => (problem ? `${src.file} ${problem}` : undefined))(permissionProblem(mode)),
    };
  }
  if (!inEnv) return undefined;
  if (!user)
    throw new TrueidleError("bad_config", "TRUEIDLE_INFLUX_PASSWORD is set but TRUEIDLE_INFLUX_USERNAME is not");
  return { username: user, password: pass ?? "", from: "environment" };
}

/** `Authorization` header value for the target, or undefined without credentials. */
export function authorizationHeader(target: InfluxTarget): string | undefined {
  if (target.username === undefined) return undefined;
  return `Basic ${Buffer.from(`${target.username}:${target.password ?? ""}`, "utf8").toString("base64")}`;
}

/** The target for logs: URL and database, never credentials. */
export function describeTarget(target: InfluxTarget): string {
  return `${target.baseUrl}, database "${target.database}"${target.username !== undefined ? " (with credentials)" : ""}`;
}

export interface ClientOptions {
  /** Per-request timeout (default 30 s). */
  requestTimeoutMs?: number;
}

/**
 * A node-influx client for admin statements and queries. Its pool retries nothing on its
 * own: callers own their retry policy. (Without credentials node-influx still sends its
 * default root:root, which an InfluxDB without auth ignores.)
 */
export function influxClient(target: InfluxTarget, opts: ClientOptions = {}): InfluxDB {
  const url = new URL(target.baseUrl);
  const https = url.protocol === "https:";
  return new InfluxDB({
    host: url.hostname,
    port: url.port === "" ? (https ? 443 : 80) : Number(url.port),
    protocol: https ? "https" : "http",
    database: target.database,
    ...(target.username !== undefined ? { username: target.username, password: target.password ?? "" } : {}),
    pool: { maxRetries: 0, requestTimeout: opts.requestTimeoutMs ?? 30_000 },
  });
}
