/**
 * InfluxDB credentials, read the same way by every command (the collector, `trueidle
 * report`, the demo): from the environment (`TRUEIDLE_INFLUX_USERNAME` /
 * `TRUEIDLE_INFLUX_PASSWORD`) or from `--influx-credentials-file`, whose first line is
 * `username:password` — never both, never from the command line, and never in a message
 * (the file's path is named, its content never).
 */
import { TrueidleError } from "../errors.js";
import { readSecretFile } from "../secret-file.js";

const CREDENTIALS_FILE_FLAG = "influx-credentials-file";

export interface InfluxCredentials {
  username: string;
  password: string;
}

export interface InfluxCredentialsRead extends InfluxCredentials {
  /** Where they came from, for logs ("environment" or the file's path); never the values. */
  from: string;
  /** Set when the file is readable by every user or writable by others: a sentence for the caller to log once. */
  warning?: string | undefined;
}

export interface CredentialSources {
  /** `--influx-credentials-file`: first line `username:password`. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

/**
 * Credentials from the file or the environment; undefined when neither gives any (an
 * InfluxDB without auth). Both at once are refused rather than one silently preferred: the
 * operator who set the other one would never learn it is ignored. A username without a
 * password is a user with an empty password; a password without a username is refused.
 */
export function readInfluxCredentials(src: CredentialSources): InfluxCredentialsRead | undefined {
  const env = src.env ?? process.env;
  const user = env["TRUEIDLE_INFLUX_USERNAME"];
  const pass = env["TRUEIDLE_INFLUX_PASSWORD"];
  const inEnv = (user !== undefined && user !== "") || (pass !== undefined && pass !== "");
  if (src.file !== undefined) {
    if (inEnv) {
      throw new TrueidleError(
        "bad_config",
        `InfluxDB credentials are given both in the environment (TRUEIDLE_INFLUX_USERNAME/PASSWORD) and in --${CREDENTIALS_FILE_FLAG} ${src.file}; ` +
          `unset TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD, or drop --${CREDENTIALS_FILE_FLAG}`,
      );
    }
    const { text, warning } = readSecretFile(CREDENTIALS_FILE_FLAG, src.file);
    const first = text.split(/\r?\n/, 1)[0] ?? "";
    const colon = first.indexOf(":");
    if (colon <= 0) {
      throw new TrueidleError(
        "bad_config",
        `--${CREDENTIALS_FILE_FLAG} ${src.file}: the first line must be username:password`,
      );
    }
    return { username: first.slice(0, colon), password: first.slice(colon + 1), from: src.file, warning };
  }
  if (!inEnv) return undefined;
  if (!user) {
    throw new TrueidleError(
      "bad_config",
      "TRUEIDLE_INFLUX_PASSWORD is set but TRUEIDLE_INFLUX_USERNAME is not; set both, or neither for an InfluxDB without auth",
    );
  }
  return { username: user, password: pass ?? "", from: "environment" };
}
