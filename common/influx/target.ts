/**
 * Where trueidle's history lives, as every command reaches it: an InfluxDB 1.x server and
 * database from `--influx-url` (url.ts), with credentials from the environment or a file
 * (credentials.ts), never from the command line and never in a message.
 */
import type { InfluxCredentials } from "./credentials.js";
import type { InfluxUrl } from "./url.js";

export interface InfluxTarget {
  /** Scheme, host and port only, e.g. "http://127.0.0.1:8086" (no path, no credentials). */
  baseUrl: string;
  database: string;
  username?: string | undefined;
  password?: string | undefined;
}

/** The target at `url`, with `credentials` when there are any (an InfluxDB without auth takes none). */
export function influxTarget(url: InfluxUrl, credentials?: InfluxCredentials): InfluxTarget {
  if (credentials === undefined) return { baseUrl: url.baseUrl, database: url.database };
  return {
    baseUrl: url.baseUrl,
    database: url.database,
    username: credentials.username,
    password: credentials.password,
  };
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
