/**
 * The one place that turns nvidia-smi values into numbers, booleans and strings.
 *
 * Contract: a value nvidia-smi could not read (`[N/A]`, `N/A`, `[Not Supported]`,
 * `[Unknown Error]`, `ERR!`, `[GPU is lost]`, any other `[...]`, empty) is `undefined`,
 * never 0. A value with a unit suffix ("80211 MiB", "123.45 W", "45 %") is accepted
 * whether or not `nounits` was honoured; a suffix of the wrong kind (watts where percent
 * was asked) makes the value `undefined` rather than a wrong number.
 */

/** Words nvidia-smi prints, with or without brackets, in place of a value it cannot read. */
const MISSING_WORDS = new Set([
  "",
  "n/a",
  "na",
  "not supported",
  "unknown error",
  "err!",
  "gpu is lost",
  "requested functionality has been deprecated",
  "function not found",
  "insufficient permissions",
  "not found",
  "unknown",
]);

/** True when nvidia-smi printed a placeholder instead of a value. */
export function isMissing(raw: string | undefined): boolean {
  if (raw === undefined) return true;
  const v = raw.trim();
  if (v.startsWith("[") && v.endsWith("]")) return true;
  return MISSING_WORDS.has(v.toLowerCase());
}

/** The trimmed text, or undefined when missing. */
export function parseText(raw: string | undefined): string | undefined {
  if (raw === undefined || isMissing(raw)) return undefined;
  return raw.trim();
}

const NUMBER_WITH_UNIT = /^([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z%]+)?$/;

/** Number and unit of a value such as "627.40 W" or "45"; undefined when missing or malformed. */
export function splitQuantity(raw: string | undefined): { value: number; unit: string | undefined } | undefined {
  if (raw === undefined || isMissing(raw)) return undefined;
  const m = NUMBER_WITH_UNIT.exec(raw.trim());
  if (!m) return undefined;
  const value = Number(m[1]);
  if (!Number.isFinite(value)) return undefined;
  return { value, unit: m[2] };
}

/** A plain number; any unit suffix is ignored. */
export function parseNumber(raw: string | undefined): number | undefined {
  return splitQuantity(raw)?.value;
}

/** A non-negative integer (index, pid); undefined when missing, fractional or negative. */
export function parseInteger(raw: string | undefined): number | undefined {
  const q = splitQuantity(raw);
  if (!q || q.unit !== undefined || !Number.isInteger(q.value) || q.value < 0) return undefined;
  return q.value;
}

/** A percentage 0–100 ("45 %" or "45"); out of range is malformed, so undefined. */
export function parsePercent(raw: string | undefined): number | undefined {
  const q = splitQuantity(raw);
  if (!q || (q.unit !== undefined && q.unit !== "%")) return undefined;
  if (q.value < 0 || q.value > 100) return undefined;
  return q.value;
}

/** Watts ("123.45 W" or "123.45"); negative is malformed. */
export function parseWatts(raw: string | undefined): number | undefined {
  const q = splitQuantity(raw);
  if (!q || (q.unit !== undefined && q.unit !== "W")) return undefined;
  if (q.value < 0) return undefined;
  return q.value;
}

const BYTE_UNITS: Record<string, number> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  TB: 1000 ** 4,
};

/**
 * Bytes of a memory value. `defaultUnit` applies when the value carries no suffix
 * (`nounits`, or the unit given once in a CSV header such as `memory.used [MiB]`).
 */
export function parseBytes(raw: string | undefined, defaultUnit = "MiB"): number | undefined {
  const q = splitQuantity(raw);
  if (!q || q.value < 0) return undefined;
  const factor = BYTE_UNITS[q.unit ?? defaultUnit];
  if (factor === undefined) return undefined;
  return Math.round(q.value * factor);
}

/** Clock event reasons: "Active" → true, "Not Active" → false, anything else undefined. */
export function parseActive(raw: string | undefined): boolean | undefined {
  if (raw === undefined || isMissing(raw)) return undefined;
  const v = raw.trim().toLowerCase();
  if (v === "active") return true;
  if (v === "not active") return false;
  return undefined;
}
