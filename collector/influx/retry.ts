/**
 * What to do after one InfluxDB `/write` request, decided in ONE table-driven function,
 * and the delay before a retry (exponential backoff with jitter, honouring Retry-After).
 *
 * The table, first match wins:
 *
 * | response                                         | action  | why |
 * |--------------------------------------------------|---------|-----|
 * | 2xx                                              | ok      | written |
 * | 413                                              | split   | too large: halves are sent on their own (one line alone is dropped) |
 * | 429                                              | retry   | throttled |
 * | 401, 403                                         | retry   | credentials or rights: an operator must act; dropping would lose windows the agents still hold |
 * | 404 "database not found", "retention policy not found" | schema | the schema is missing (InfluxDB was reset): set it up again, then retry |
 * | 400 "partial write"                              | partial | InfluxDB wrote the rest; the points it names (dropped=N) are lost and counted |
 * | other 4xx                                        | drop    | the request itself is bad; sending it again cannot help |
 * | 5xx                                              | retry   | the server is failing |
 * | no response (network error, timeout)             | retry   | the server is away |
 * | anything else (1xx, 3xx)                         | drop    | not a write endpoint answering; counted and logged |
 */

/** What came back from one write request: a response, or a failure to get one. */
export type WriteResponse =
  | { kind: "response"; status: number; body: string; retryAfter?: string | null | undefined }
  | { kind: "network"; error: string };

export type WriteAction = "ok" | "split" | "retry" | "schema" | "partial" | "drop";

export interface WriteDecision {
  action: WriteAction;
  /** A short machine-readable reason, for logs and tests. */
  reason: string;
}

interface Rule {
  when: (r: WriteResponse) => boolean;
  action: WriteAction;
  reason: string;
}

const status = (r: WriteResponse): number => (r.kind === "response" ? r.status : 0);
const body = (r: WriteResponse): string => (r.kind === "response" ? r.body : "");

const RULES: readonly Rule[] = [
  { when: (r) => status(r) >= 200 && status(r) < 300, action: "ok", reason: "written" },
  { when: (r) => status(r) === 413, action: "split", reason: "too_large" },
  { when: (r) => status(r) === 429, action: "retry", reason: "throttled" },
  { when: (r) => status(r) === 401 || status(r) === 403, action: "retry", reason: "unauthorized" },
  {
    when: (r) => r.kind === "response" && /database not found|retention policy not found/i.test(r.body),
    action: "schema",
    reason: "schema_missing",
  },
  { when: (r) => status(r) === 400 && /partial write/i.test(body(r)), action: "partial", reason: "partial_write" },
  { when: (r) => status(r) >= 400 && status(r) < 500, action: "drop", reason: "bad_request" },
  { when: (r) => status(r) >= 500, action: "retry", reason: "server_error" },
  { when: (r) => r.kind === "network", action: "retry", reason: "unreachable" },
  { when: () => true, action: "drop", reason: "unexpected_status" },
];

export function classifyWrite(r: WriteResponse): WriteDecision {
  for (const rule of RULES) if (rule.when(r)) return { action: rule.action, reason: rule.reason };
  return { action: "drop", reason: "unexpected_status" };
}

/** InfluxDB's error text from a response body (`{"error":"..."}`), or the body itself. */
export function influxErrorText(text: string): string {
  try {
    const parsed = JSON.parse(text) as { error?: unknown };
    if (typeof parsed.error === "string") return parsed.error;
  } catch {
    // Not JSON: a proxy's page, say.
  }
  return text.trim().slice(0, 500);
}

/** Points InfluxDB says it dropped in a partial write (`... dropped=3`), or undefined. */
export function droppedPoints(errorText: string): number | undefined {
  const m = /dropped=(\d+)/.exec(errorText);
  return m ? Number(m[1]) : undefined;
}

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({ initialMs: 500, maxMs: 30_000 });

/** A Retry-After longer than this is taken as this: a collector must not sleep for hours. */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;

/**
 * Delay before retry number `attempt` (0 for the first retry): `initial · 2^attempt`,
 * capped at `max`, with "equal jitter" (half fixed, half random) so that many collectors
 * do not retry in step. A Retry-After the server sent wins when it asks for longer.
 */
export function retryDelayMs(
  attempt: number,
  opts: Readonly<BackoffOptions> = DEFAULT_BACKOFF,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number {
  const exp = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(attempt, 30));
  const jittered = exp / 2 + (exp / 2) * random();
  if (retryAfterMs !== undefined && retryAfterMs > jittered) return Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  return Math.round(jittered);
}

/** Retry-After as milliseconds from now: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}
