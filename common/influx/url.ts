/**
 * `--influx-url http://HOST:8086/DB`, as every command that reaches InfluxDB reads it (the
 * collector's writes, `trueidle report`, the demo's history), and the one redaction every
 * message quoting such a URL goes through.
 *
 * Credentials never travel in the URL: they come from the environment or a file (see
 * credentials.ts). A URL that holds an `@` is refused before any part of it is parsed or
 * quoted, so no error can echo a password typed into it, whatever characters the password
 * holds.
 */
import { TrueidleError } from "../errors.js";

export const DEFAULT_INFLUX_DATABASE = "trueidle";

/** Scheme, host and port (`http://127.0.0.1:8086`, no trailing slash, no credentials) and the database. */
export interface InfluxUrl {
  baseUrl: string;
  database: string;
}

/** Database names trueidle accepts: plain enough to need no quoting surprises anywhere. */
const DATABASE_RE = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
/**
 * What may be shown before redacted userinfo: `http://` or `https://` at the very start. Not
 * any scheme: in `admin://pw@host` the "scheme" is a user name.
 */
const SCHEME_PREFIX_RE = /^https?:\/\//i;
const FORM = "use the form http://HOST:8086/DATABASE, e.g. http://influxdb.example:8086/trueidle";
const CREDENTIALS_FIX = "set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD or use --influx-credentials-file";

/**
 * `text` safe to show: when it holds an `@`, everything from after `http://` or `https://`
 * (from the start when it does not begin with one) up to the last `@` becomes `…`. The
 * userinfo of a URL ends at its last `@`, so nothing of it is left whatever it holds (`/`,
 * `@`, `:`, `#`, `?`, `%`, spaces, quotes, newlines); text without an `@` carries no userinfo
 * and is returned as it is.
 */
export function redactUrlCredentials(text: string): string {
  const at = text.lastIndexOf("@");
  if (at < 0) return text;
  const scheme = SCHEME_PREFIX_RE.exec(text);
  const keep = scheme !== null && scheme[0].length <= at ? scheme[0].length : 0;
  return `${text.slice(0, keep)}…${text.slice(at)}`;
}

/** A URL for a message: redacted, and in JSON quotes so a newline in it cannot start a new log line. */
export function quoteUrl(text: string): string {
  return JSON.stringify(redactUrlCredentials(text));
}

/**
 * Parses `--influx-url`. The path names the database; an empty path means `trueidle`.
 * Throws a bad_config error that says what is wrong and shows the expected form.
 */
export function parseInfluxUrl(text: string): InfluxUrl {
  const trimmed = text.trim();
  // No part of an accepted URL (host, port, database name) can hold an `@`; in a URL it
  // starts the host after credentials.
  if (trimmed.includes("@")) {
    throw new TrueidleError(
      "bad_config",
      `--influx-url ${quoteUrl(trimmed)} must not hold credentials; ${CREDENTIALS_FIX}`,
    );
  }
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    // Not quoted: text that is no URL may be anything, a password pasted in the wrong place too.
    throw new TrueidleError(
      "bad_config",
      `--influx-url is not a URL (${trimmed.length} characters, not shown); ${FORM}`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    // What stands before the first colon is not shown: in USER:PASSWORD it is a user name.
    throw new TrueidleError("bad_config", `--influx-url must start with http:// or https://; ${FORM}`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new TrueidleError(
      "bad_config",
      `--influx-url ${quoteUrl(trimmed)} must not hold credentials; ${CREDENTIALS_FIX}`,
    );
  }
  if (url.search !== "" || url.hash !== "") {
    // The query is not shown: InfluxDB takes credentials as ?u=USER&p=PASSWORD.
    throw new TrueidleError(
      "bad_config",
      `--influx-url ${quoteUrl(`${url.protocol}//${url.host}${url.pathname}${url.search ? "?…" : ""}${url.hash ? "#…" : ""}`)} must not have a query ` +
        `or fragment (credentials as ?u=&p= included: ${CREDENTIALS_FIX}); ${FORM}`,
    );
  }
  const segments = url.pathname.split("/").filter((s) => s !== "");
  if (segments.length > 1) {
    throw new TrueidleError(
      "bad_config",
      `--influx-url path ${JSON.stringify(url.pathname)} must be a single database name; ${FORM}`,
    );
  }
  let database = DEFAULT_INFLUX_DATABASE;
  if (segments[0] !== undefined) {
    try {
      database = decodeURIComponent(segments[0]);
    } catch {
      database = segments[0];
    }
  }
  if (!DATABASE_RE.test(database)) {
    throw new TrueidleError(
      "bad_config",
      `--influx-url database name ${JSON.stringify(database)} must start with a letter or _ and hold only letters, digits, _ and - (at most 64)`,
    );
  }
  return { baseUrl: `${url.protocol}//${url.host}`, database };
}
