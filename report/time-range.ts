/**
 * The report's time range. `--since` / `--until` take a duration ago (`90d`, `36h`), `now`,
 * or an RFC 3339 time (`2024-05-01T00:00:00Z`, `2024-05-01T02:00:00+02:00`, or a bare
 * date `2024-05-01` meaning 00:00 UTC).
 *
 * The report covers UTC hours: the start is rounded down to the hour and the range is
 * [start, end). An end given as a time or a duration ago is rounded down too, so the range
 * is whole hours, which is what the roll-ups hold: a report read from `gpu_window` covers
 * exactly the same windows as one read from `gpu_hour`. An end of `now` (the default) is
 * not: the range then ends with the hour in progress, read from the raw windows up to now,
 * and the report marks that hour partial (`partialFromMs`).
 */
import { parseDuration } from "../common/duration.js";
import { TrueidleError } from "../common/errors.js";

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

export interface TimeRange {
  /** Inclusive, a whole UTC hour, ms since the epoch. */
  startMs: number;
  /** Exclusive: a whole UTC hour, or now when the range ends with the hour in progress. */
  endMs: number;
}

/** The start of the hour in progress that ends the range, or null when the range is whole hours. */
export function partialHourOf(r: TimeRange): number | null {
  return r.endMs % HOUR_MS === 0 ? null : floorHour(r.endMs);
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

/**
 * The range of the two flags: whole hours, and the hour in progress up to now when the end
 * is `now` (the default); not empty, else a bad_input error.
 */
export function resolveRange(since: string, until: string | undefined, nowMs: number): TimeRange {
  const s = parseTimeArg(since, nowMs, "--since");
  const toNow = (until ?? "now").trim() === "now";
  const u = parseTimeArg(until ?? "now", nowMs, "--until");
  if (u < s) {
    throw new TrueidleError(
      "bad_input",
      `--until ${until ?? "now"} (${iso(u)}) is before --since ${since} (${iso(s)}); ` +
        "give the earlier time to --since and the later one to --until",
    );
  }
  const startMs = floorHour(s);
  const endMs = toNow ? Math.floor(u / 1000) * 1000 : floorHour(u);
  if (endMs <= startMs) {
    throw new TrueidleError(
      "bad_input",
      `--since ${since} and --until ${until} hold no whole hour (${iso(startMs)} to ${iso(endMs)}); ` +
        "the report covers UTC hours from the hour --since falls in, and an --until other than now is rounded down to the hour, " +
        "so end the range at least an hour after it starts, or at now",
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
