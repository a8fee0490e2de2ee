/**
 * Structured logs: one JSON object per line on stderr. Messages are whole sentences;
 * `error` only where data was lost or an operator must act.
 */
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
  /** "json" (default) or "text" for a person at a terminal. */
  format?: "json" | "text";
  now?: () => Date;
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
      const extra = Object.entries(rec)
        .filter(([k]) => k !== "ts" && k !== "level" && k !== "msg")
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ");
      write(`${rec.ts as string} ${level.toUpperCase()} ${msg}${extra ? " " + extra : ""}\n`);
    } else {
      write(JSON.stringify(rec) + "\n");
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
