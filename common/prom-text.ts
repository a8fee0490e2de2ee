/**
 * Pieces of the Prometheus text exposition format, version 0.0.4: escaping and numbers.
 * https://prometheus.io/docs/instrumenting/exposition_formats/
 */

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const LABEL_VALUE_SPECIAL = /[\\"\n]/;
const HELP_SPECIAL = /[\\\n]/;

/** A label value: backslash, double quote and line feed are escaped. */
export function escapeLabelValue(value: string): string {
  if (!LABEL_VALUE_SPECIAL.test(value)) return value;
  return value.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

/** HELP text: backslash and line feed are escaped (double quotes are not). */
export function escapeHelp(text: string): string {
  if (!HELP_SPECIAL.test(text)) return text;
  return text.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

/**
 * `k1="v1",k2="v2"` from pairs whose keys are valid label names; no braces. One flat
 * string (joined, not a chain of concatenations), as callers cache it per series.
 */
export function labelPairs(pairs: Iterable<readonly [string, string]>): string {
  const parts: string[] = [];
  for (const [k, v] of pairs) parts.push(`${k}="${escapeLabelValue(v)}"`);
  return parts.join(",");
}

/** A sample value as Go's strconv.ParseFloat reads it, with Prometheus' spellings of the specials. */
export function formatValue(n: number): string {
  if (Number.isFinite(n)) return String(n);
  if (Number.isNaN(n)) return "NaN";
  return n > 0 ? "+Inf" : "-Inf";
}

/** Above this a value in seconds has no digits below a microsecond to round away (its micros exceed 2^53). */
const MAX_ROUNDED_SECONDS = Number.MAX_SAFE_INTEGER / 1e6;

/**
 * A value in seconds, rounded to the microsecond and written in its shortest form, so that a
 * counter summed from fractions reads `0.95216`, not `0.9521600000000001`. Microseconds are
 * far below what any sample measures; sums compared with InfluxDB's agree to 5e-7 s.
 */
export function formatSeconds(n: number): string {
  if (Number.isInteger(n) || !Number.isFinite(n) || Math.abs(n) >= MAX_ROUNDED_SECONDS) return formatValue(n);
  return String(Math.round(n * 1e6) / 1e6);
}

/** `# HELP` and `# TYPE` lines of one family. */
export function familyHeader(name: string, type: string, help: string): string {
  return `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
}
