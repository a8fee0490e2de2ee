/**
 * A real InfluxDB 1.x (Debian's influxd) for tests, on loopback, free ports, a temp dir.
 * A missing influxd fails loudly with the fix; nothing is skipped.
 */
import {
  findInfluxd,
  INFLUXD_MISSING_HELP,
  startPrivateInfluxd,
  type PrivateInfluxd,
} from "../../demo/private-influxd.js";

export type { PrivateInfluxd };

export async function startInfluxd(): Promise<PrivateInfluxd> {
  if (!findInfluxd()) throw new Error(`${INFLUXD_MISSING_HELP} Run the tests with \`npm test\`, which installs it.`);
  return startPrivateInfluxd({ cqRunInterval: "1s" });
}

/** Runs an InfluxQL query over HTTP and returns the parsed JSON `results`. */
export async function influxQuery(url: string, q: string, db?: string): Promise<InfluxResult[]> {
  const params = new URLSearchParams({ q, epoch: "ms" });
  if (db) params.set("db", db);
  const res = await fetch(`${url}/query?${params}`, { method: "POST" });
  const body = (await res.json()) as { results?: InfluxResult[]; error?: string };
  if (!res.ok || body.error)
    throw new Error(`InfluxDB query failed (${res.status}): ${body.error ?? JSON.stringify(body)}; query: ${q}`);
  for (const r of body.results ?? []) if (r.error) throw new Error(`InfluxDB query failed: ${r.error}; query: ${q}`);
  return body.results ?? [];
}

export interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values?: unknown[][];
}

export interface InfluxResult {
  statement_id: number;
  series?: InfluxSeries[];
  error?: string;
}

/** Rows of every series of the first result, as objects with the series' tags merged in. */
export function rows(results: InfluxResult[]): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const s of results[0]?.series ?? []) {
    for (const v of s.values ?? []) {
      const row: Record<string, unknown> = { ...(s.tags ?? {}) };
      for (const [i, c] of s.columns.entries()) row[c] = v[i];
      out.push(row);
    }
  }
  return out;
}
