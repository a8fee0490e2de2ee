/** Flags shared by several commands, and turning them into typed settings. */
import type { FlagSpec, FlagValues } from "./args.js";
import { UsageError } from "./args.js";
import { createLogger, defaultLogFormat, type LogFormat, type Logger, type LogLevel } from "../common/log.js";
import { HELD_MEMORY_MIB, THRESHOLD_SETTINGS } from "../common/threshold-settings.js";
import type { Thresholds } from "../common/types.js";
import { settingFlag } from "./setting-flags.js";

const MiB = 1024 * 1024;

export const LOG_FLAGS: FlagSpec[] = [
  {
    name: "log-level",
    type: "string",
    choices: ["debug", "info", "warn", "error"],
    default: "info",
    help: "Least severe log level written.",
  },
  {
    name: "log-format",
    type: "string",
    choices: ["json", "text"],
    help: "Log line format on stderr: text (time, level, message, key=value fields) when stderr is a terminal, json otherwise (a pipe, a file, journald).",
  },
];

export const THRESHOLD_FLAGS: FlagSpec[] = [
  settingFlag(THRESHOLD_SETTINGS.utilBusyPercent, {
    name: "util-busy-percent",
    placeholder: "U",
    help: "U: utilization.gpu at or above this percentage is reported busy.",
  }),
  settingFlag(THRESHOLD_SETTINGS.realActiveRatio, {
    name: "real-active-ratio",
    placeholder: "R",
    help: "R: real utilization (0-1) at or above this is active.",
  }),
  settingFlag(HELD_MEMORY_MIB, {
    name: "held-memory-mib",
    placeholder: "MIB",
    help: "GPU memory above the idle baseline that makes a GPU held.",
  }),
];

export function loggerFrom(v: FlagValues, base: Record<string, unknown> = {}): Logger {
  return createLogger(
    { level: v["log-level"] as LogLevel, format: (v["log-format"] as LogFormat | undefined) ?? defaultLogFormat() },
    base,
  );
}

export function thresholdsFrom(v: FlagValues): Thresholds {
  return {
    utilBusyPercent: v["util-busy-percent"] as number,
    realActiveRatio: v["real-active-ratio"] as number,
    heldMemoryBytes: Math.round((v["held-memory-mib"] as number) * MiB),
  };
}

/** Checks that the window is a whole number of sampling intervals. */
export function checkWindow(intervalMs: number, windowMs: number): void {
  if (windowMs < intervalMs || windowMs % intervalMs !== 0) {
    throw new UsageError(`--window (${windowMs} ms) must be a whole multiple of --interval (${intervalMs} ms)`);
  }
}
