/**
 * Configured host labels (`--label k=v`). Keys become Prometheus label names and InfluxDB
 * tag keys, so they are held to the stricter of both and may not shadow built-in labels.
 */
export const MAX_LABELS = 8;
export const MAX_LABEL_VALUE_LENGTH = 128;
const KEY_RE = /^[a-z_][a-z0-9_]{0,39}$/;
export const RESERVED_LABEL_KEYS: ReadonlySet<string> = new Set([
  "host", "gpu", "uuid", "model", "driver", "state", "source", "reason", "job", "instance",
]);

/** Why a label key is not accepted, or undefined when it is. */
export function labelKeyProblem(key: string): string | undefined {
  if (!KEY_RE.test(key)) return `label key "${key}" must match ${KEY_RE.source} (lower-case letters, digits, _)`;
  if (key.startsWith("__")) return `label key "${key}" may not start with __ (reserved by Prometheus)`;
  if (RESERVED_LABEL_KEYS.has(key)) return `label key "${key}" is reserved by trueidle`;
  return undefined;
}

export function labelValueProblem(key: string, value: string): string | undefined {
  if (value.length === 0) return `label "${key}" has an empty value`;
  if (value.length > MAX_LABEL_VALUE_LENGTH) return `label "${key}" value is longer than ${MAX_LABEL_VALUE_LENGTH} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) return `label "${key}" value holds control characters`;
  return undefined;
}

/** Parses repeated `k=v` flags; throws one error listing every bad label. */
export function parseLabels(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const problems: string[] = [];
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      problems.push(`"${pair}" is not key=value`);
      continue;
    }
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    const p = labelKeyProblem(key) ?? labelValueProblem(key, value);
    if (p) problems.push(p);
    else if (key in out) problems.push(`label "${key}" is given twice`);
    else out[key] = value;
  }
  if (Object.keys(out).length > MAX_LABELS) problems.push(`at most ${MAX_LABELS} labels are allowed`);
  if (problems.length > 0) throw new Error(`bad --label: ${problems.join("; ")}`);
  return out;
}
