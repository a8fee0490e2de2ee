/**
 * Structured logs on stderr, one line per record: a JSON object (`json`, for log collectors),
 * or logfmt-like text for a person at a terminal (`text`):
 *
 *   2024-05-01T12:00:00.000Z INFO  The agent stopped. component=agent windows_measured=360 windows_acked=360 windows_dropped=0
 *
 * the time, the level, the message, then each field as key=value, the value double-quoted
 * (with JSON's escapes) when it holds a space, a quote, an equals sign or a backslash, or is
 * empty; a list of plain values joined by commas, an object's fields as key.field=value. What a text line quotes cannot break it or reorder the terminal: control and bidi
 * characters are written as \uXXXX. Messages are whole sentences; `error` only where data was
 * lost or an operator must act.
 */
import { escapeUnsafeText, UNSAFE_TEXT_RE } from "./text-safety.js";

export type LogLevel = "debug" | "info" | "warn" | "error";
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; stderr by default. */
  write?: (line: string) => void;
  /** "json" (default) or "text" for a person at a terminal; defaultLogFormat() chooses as the CLI does. */
  format?: LogFormat;
  now?: () => Date;
}

export type LogFormat = "json" | "text";

/** text when the logs go to a terminal (stderr is a TTY), json otherwise (a pipe, a file, journald). */
export function defaultLogFormat(stream: { isTTY?: boolean } = process.stderr): LogFormat {
  return stream.isTTY === true ? "text" : "json";
}

export function parseLogLevel(value: string): LogLevel {
  if (value === "debug" || value === "info" || value === "warn" || value === "error") return value;
  throw new Error(`log level must be one of debug, info, warn, error (got "${value}")`);
}

export function createLogger(options: LoggerOptions = {}, base: LogFields = {}): Logger {
  const min = ORDER[options.level ?? "info"];
  const write = options.write ?? ((line: string) => void process.stderr.write(line));
  const now = options.now ?? (() => new Date());
  const format = options.format ?? "json";
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (ORDER[level] < min) return;
    const rec: LogFields = { ts: now().toISOString(), level, msg, ...base, ...fields };
    for (const [k, v] of Object.entries(rec)) {
      if (v instanceof Error) rec[k] = v.message;
    }
    if (format === "text") {
      let line = `${rec.ts as string} ${level.toUpperCase().padEnd(5)} ${escapeUnsafeText(msg)}`;
      for (const [k, v] of Object.entries(rec))
        if (k !== "ts" && k !== "level" && k !== "msg") line += logfmtFields(k, v);
      write(`${line}\n`);
    } else {
      write(`${JSON.stringify(rec)}\n`);
    }
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger(options, { ...base, ...fields }),
  };
}

/** ` key=value` for a field of a text line; nothing for undefined. */
function logfmtFields(key: string, v: unknown): string {
  if (v === undefined) return "";
  if (Array.isArray(v) && v.every((x) => x === null || typeof x !== "object"))
    return ` ${escapeUnsafeText(key)}=${logfmtValue(v.join(","))}`;
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    let out = "";
    for (const [k, x] of Object.entries(v)) out += logfmtFields(`${key}.${k}`, x);
    return out;
  }
  return ` ${escapeUnsafeText(key)}=${logfmtValue(v)}`;
}

/** A field's value in a text line: bare when it is one plain word, else double-quoted. */
function logfmtValue(v: unknown): string {
  const s = typeof v === "string" ? v : (JSON.stringify(v) ?? String(v));
  if (s !== "" && !/[\s"=\\]/.test(s) && !UNSAFE_TEXT_RE.test(s)) return s;
  return escapeUnsafeText(JSON.stringify(s));
}

/** A logger that drops everything, for tests and benchmarks. */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};

/** One line a `recordingLogger` kept. */
export interface LoggedLine {
  level: "debug" | "info" | "warn" | "error";
  msg: string;
  fields?: LogFields | undefined;
}

/** A logger that keeps every line (children share the list), for tests that assert on logs. */
export function recordingLogger(): Logger & { lines: LoggedLine[] } {
  const lines: LoggedLine[] = [];
  const make = (): Logger => ({
    debug: (msg, fields) => void lines.push({ level: "debug", msg, fields }),
    info: (msg, fields) => void lines.push({ level: "info", msg, fields }),
    warn: (msg, fields) => void lines.push({ level: "warn", msg, fields }),
    error: (msg, fields) => void lines.push({ level: "error", msg, fields }),
    child: () => make(),
  });
  return Object.assign(make(), { lines });
}
