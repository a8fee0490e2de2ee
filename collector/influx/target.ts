/**
 * Where trueidle's history lives: an InfluxDB 1.x server and database, from
 * `--influx-url http://HOST:8086/DB`, with credentials from the environment
 * (`TRUEIDLE_INFLUX_USERNAME` / `TRUEIDLE_INFLUX_PASSWORD`) or a file whose first line is
 * `username:password` — never from the command line, and never logged.
 *
 * Shared by the collector (writes), `trueidle report` (queries) and the backfill.
 */
import { readFileSync, statSync } from "node:fs";
import { InfluxDB } from "influx";
import { TrueidleError } from "../../common/errors.js";
import { permissionProblem } from "../../common/secret-file.js";

export const DEFAULT_DATABASE = "trueidle";

export interface InfluxTarget {
  /** Scheme, host and port only, e.g. "http://127.0.0.1:8086" (no path, no credentials). */
  baseUrl: string;
  database: string;
  username?: string | undefined;
  password?: string | undefined;
}

/** Database names trueidle accepts: plain enough to need no quoting surprises anywhere. */
const DATABASE_RE = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

/**
 * Parses `--influx-url`. The path names the database; an empty path means `trueidle`.
 * Throws a bad_config error that says what is wrong and shows the expected form.
 */
export function parseInfluxUrl(text: string): { baseUrl: string; database: string } {
  const form = "use the form http://HOST:8086/DATABASE, e.g. http://influxdb.example:8086/trueidle";
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    // Credentials typed into a URL must not reach a log, even from a URL that does not parse.
    throw new TrueidleError("bad_config", `--influx-url "${text.replace(/\/\/[^/]*@/, "//…@")}" is not a URL; ${form}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TrueidleError("bad_config", `--influx-url must use http or https (got "${url.protocol.replace(/:$/, "")}"); ${form}`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new TrueidleError(
      "bad_config",
      "--influx-url must not hold credentials; set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD or use --influx-credentials-file",
    );
  }
  if (url.search !== "" || url.hash !== "") {
    throw new TrueidleError("bad_config", `--influx-url must not have a query or fragment; ${form}`);
  }
  const segments = url.pathname.split("/").filter((s) => s !== "");
  if (segments.length > 1) {
    throw new TrueidleError("bad_config", `--influx-url path "${url.pathname}" must be a single database name; ${form}`);
  }
  const database = segments.length === 0 ? DEFAULT_DATABASE : decodeURIComponent(segments[0] ?? "");
  if (!DATABASE_RE.test(database)) {
    throw new TrueidleError(
      "bad_config",
      `--influx-url database name "${database}" must start with a letter or _ and hold only letters, digits, _ and - (at most 64)`,
    );
  }
  return { baseUrl: `${url.protocol}//${url.host}`, database };
}

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
      throw new TrueidleError("bad_config", `--influx-credentials-file ${src.file} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    const first = text.split(/\r?\n/, 1)[0] ?? "";
    const colon = first.indexOf(":");
    if (colon <= 0) {
      throw new TrueidleError("bad_config", `--influx-credentials-file ${src.file}: the first line must be username:password`);
    }
    return {
      username: first.slice(0, colon),
      password: first.slice(colon + 1),
      from: src.file,
      warning: ((problem) => (problem ? `${src.file} ${problem}` : undefined))(permissionProblem(mode)),
    };
  }
  if (!inEnv) return undefined;
  if (!user) throw new TrueidleError("bad_config", "TRUEIDLE_INFLUX_PASSWORD is set but TRUEIDLE_INFLUX_USERNAME is not");
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
