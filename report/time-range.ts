/**
 * The report's time range. `--since` / `--until` take a duration ago (`90d`, `36h`), `now`,
 * or an RFC 3339 time (`2024-05-01T00:00:00Z`, `2024-05-01T02:00:00+02:00`, or a bare
 * date `2024-05-01` meaning 00:00 UTC).
 *
 * The report covers whole UTC hours only: both ends are rounded down to the hour and the
 * range is [start, end). Whole hours are what `gpu_hour` holds, so a report read from
 * `gpu_window` covers exactly the same windows as one read from `gpu_hour`; rounding the
 * end down means a default `--until now` stops at the last complete hour.
 */
import { parseDuration } from "../common/duration.js";
import { TrueidleError } from "../common/errors.js";

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

export interface TimeRange {
  /** Inclusive, a whole UTC hour, ms since the epoch. */
  startMs: number;
  /** Exclusive, a whole UTC hour. */
  endMs: number;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}:\d{2})$/;
const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;

/** Milliseconds since the epoch of one `--since`/`--until` value; throws bad_input naming the forms. */
export function parseTimeArg(text: string, nowMs: number, flag = "--since"): number {
  const t = text.trim();
  if (t === "now") return nowMs;
  if (RFC3339.test(t) || DATE_ONLY.test(t)) {
    const ms = Date.parse(DATE_ONLY.test(t) ? `${t}T00:00:00Z` : t);
    if (Number.isFinite(ms)) return ms;
  }
  let d: number;
  try {
    d = parseDuration(t);
  } catch {
    throw new TrueidleError(
      "bad_input",
      `${flag} "${text}" is neither a duration ago (90d, 36h) nor an RFC 3339 time (2024-05-01T00:00:00Z)`,
    );
  }
  return nowMs - d;
}

export function floorHour(ms: number): number {
  return Math.floor(ms / HOUR_MS) * HOUR_MS;
}

export function floorDay(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** The whole-hour range of the two flags; at least one hour, else a bad_input error. */
export function resolveRange(since: string, until: string | undefined, nowMs: number): TimeRange {
  const s = parseTimeArg(since, nowMs, "--since");
  const u = parseTimeArg(until ?? "now", nowMs, "--until");
  if (u < s) {
    throw new TrueidleError(
      "bad_input",
      `--until ${until ?? "now"} (${iso(u)}) is before --since ${since} (${iso(s)}); ` +
        "give the earlier time to --since and the later one to --until",
    );
  }
  const startMs = floorHour(s);
  const endMs = floorHour(u);
  if (endMs <= startMs) {
    throw new TrueidleError(
      "bad_input",
      `--since ${since} and --until ${until ?? "now"} hold no whole hour (${iso(startMs)} to ${iso(endMs)}); ` +
        "the report covers whole UTC hours, so make the range at least one hour, ending at least an hour after it starts",
    );
  }
  return { startMs, endMs };
}

export function rangeHours(r: TimeRange): number {
  return (r.endMs - r.startMs) / HOUR_MS;
}

/** `2024-05-01T00:00:00Z`: RFC 3339 without milliseconds. */
export function iso(ms: number): string {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}
