/**
 * Configured host labels (`--label k=v`). Keys become Prometheus label names and InfluxDB
 * tag keys, so they are held to the stricter of both and may not take a name that trueidle,
 * Prometheus, Alertmanager, Grafana or InfluxDB already give a meaning to. Values may not hold
 * the characters common/text-safety.ts refuses.
 */
import { quoteText, unsafeTextProblem } from "./text-safety.js";

export const MAX_LABELS = 8;
export const MAX_LABEL_VALUE_LENGTH = 128;
const KEY_RE = /^[a-z_][a-z0-9_]{0,39}$/;

const TRUEIDLE = "trueidle's own label";
const TRUEIDLE_OWNER = "trueidle's owner label (DESIGN.md, Owners)";
const TRUEIDLE_MIG = "trueidle's MIG label (DESIGN.md, MIG)";
/** Every reserved key with the reason given when it is refused. */
const RESERVED_LABEL_REASONS: ReadonlyMap<string, string> = new Map([
  // Labels and tags of trueidle's series.
  ["host", TRUEIDLE],
  ["gpu", TRUEIDLE],
  ["uuid", TRUEIDLE],
  ["model", TRUEIDLE],
  ["driver", TRUEIDLE],
  ["state", TRUEIDLE],
  ["source", TRUEIDLE],
  ["reason", TRUEIDLE],
  // Owners of held GPUs and MIG instances: names trueidle's own labels take.
  ["namespace", TRUEIDLE_OWNER],
  ["pod", TRUEIDLE_OWNER],
  ["container", TRUEIDLE_OWNER],
  ["user", TRUEIDLE_OWNER],
  ["held_by", TRUEIDLE_OWNER],
  ["parent_uuid", TRUEIDLE_MIG],
  ["mig_profile", TRUEIDLE_MIG],
  // Prometheus and Alertmanager.
  ["job", "Prometheus sets it to the scrape job (and it is trueidle's owner label for batch jobs)"],
  ["instance", "Prometheus sets it to the scraped target"],
  ["le", "Prometheus histograms hold bucket bounds in it; promtool check metrics refuses it elsewhere"],
  ["quantile", "Prometheus summaries hold quantiles in it; promtool check metrics refuses it elsewhere"],
  ["alertname", "Prometheus and Alertmanager name alerts by it"],
  ["alertstate", "Prometheus' ALERTS series holds alert states in it"],
  // InfluxDB: InfluxQL's time column, and Flux's columns (which Grafana shows).
  ["time", "InfluxDB's time column; InfluxQL cannot query a tag named time"],
  ["_measurement", "a Flux column of InfluxDB"],
  ["_field", "a Flux column of InfluxDB"],
  ["_value", "a Flux column of InfluxDB"],
  ["_time", "a Flux column of InfluxDB"],
  ["_start", "a Flux column of InfluxDB"],
  ["_stop", "a Flux column of InfluxDB"],
]);
export const RESERVED_LABEL_KEYS: ReadonlySet<string> = new Set(RESERVED_LABEL_REASONS.keys());
/** Prefixes of reserved keys, with the reason. */
const RESERVED_LABEL_PREFIXES: ReadonlyArray<readonly [string, string]> = [
  ["__", "reserved by Prometheus"],
  ["exported_", "Prometheus renames a scraped label that clashes with a target label to exported_NAME"],
];

/** Why a label key is not accepted, or undefined when it is. */
export function labelKeyProblem(key: string): string | undefined {
  if (!KEY_RE.test(key))
    return `label key ${quoteText(key.slice(0, 64))} must match ${KEY_RE.source} (lower-case letters, digits, _)`;
  for (const [prefix, why] of RESERVED_LABEL_PREFIXES) {
    if (key.startsWith(prefix)) return `label key "${key}" may not start with ${prefix} (${why})`;
  }
  const why = RESERVED_LABEL_REASONS.get(key);
  if (why !== undefined) return `label key "${key}" is reserved: ${why}`;
  return undefined;
}

export function labelValueProblem(key: string, value: string): string | undefined {
  if (value.length === 0) return `label "${key}" has an empty value`;
  if (value.length > MAX_LABEL_VALUE_LENGTH)
    return `label "${key}" value is longer than ${MAX_LABEL_VALUE_LENGTH} characters`;
  const unsafe = unsafeTextProblem(value);
  if (unsafe !== undefined) return `label "${key}" value ${unsafe}`;
  return undefined;
}

/** Parses repeated `k=v` flags; throws one error listing every bad label. */
export function parseLabels(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const problems: string[] = [];
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      problems.push(`${quoteText(pair)} is not key=value`);
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
