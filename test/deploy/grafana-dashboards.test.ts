/**
 * deploy/grafana: both dashboards parse, are in Grafana's import format and are sane
 * (unique panel ids, every panel and target on the `${datasource}` variable, panels inside
 * the 24-column grid, never overlapping). Then EVERY query in them — panel targets and
 * template variables — is expanded the way Grafana expands it ($site multi-value → regex,
 * All → .*, $timeFilter, $__interval, $__rate_interval) and run against real servers:
 *
 * - trueidle-fleet.json against a real Prometheus, loaded with the recording rules,
 *   scraping two collector subprocesses fed by simulated agents whose GPUs pods and batch
 *   jobs hold, once per --gpu-series mode (full, states, off): every query returns data but
 *   the per-GPU panels the mode leaves out (their descriptions say which); the fleet's real
 *   idle ratio, the GPUs per state and the owners holding GPUs idle are what the scenario
 *   implies.
 * - trueidle-capacity.json against a real InfluxDB holding 3 days of `trueidle demo
 *   --backfill`: every query reads the fleet-hour roll-up (`gpu_hour`.`fleet_hour`), never
 *   the per-GPU `gpu_hour`, and returns data; fleet_hour holds the same seconds as gpu_hour;
 *   the idle ratios, GPU-hours, daily series and reclaimable GPUs equal what `trueidle report
 *   --format json` says for the same range.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { PrometheusHandle, PromSample } from "../helpers/prometheus.js";
import { GPU_SERIES_MODES, type GpuSeriesMode } from "../../collector/settings.js";
import { influxQuery, startInfluxd, type InfluxResult, type PrivateInfluxd } from "../helpers/influxdb.js";
import { REPO_ROOT, runTrueidle } from "../helpers/trueidle-process.js";
import {
  fleetGpuUuid,
  siteRatios,
  startTwoSiteFleet,
  twoSiteHosts,
  type TwoSiteFleet,
} from "../helpers/two-site-fleet.js";

const DIR = path.join(REPO_ROOT, "deploy", "grafana");
const RULES = path.join(REPO_ROOT, "deploy", "prometheus", "trueidle-rules.yml");
const DASHBOARDS = readdirSync(DIR)
  .filter((f) => f.endsWith(".json"))
  .sort();

// ------------------------------------------------------------------ the dashboards' shape

interface Datasource {
  type: string;
  uid: string;
}
interface Target {
  refId: string;
  datasource?: Datasource;
  expr?: string;
  query?: string;
  rawQuery?: boolean;
  instant?: boolean;
  format?: string;
  resultFormat?: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: Datasource;
  interval?: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string | { query: string };
  datasource?: Datasource;
  multi?: boolean;
  includeAll?: boolean;
  allValue?: string;
}
interface Dashboard {
  __inputs: Array<{ name: string; type: string; pluginId: string }>;
  uid: string;
  title: string;
  tags: string[];
  refresh: string;
  schemaVersion: number;
  id: null;
  time: { from: string; to: string };
  panels: Panel[];
  templating: { list: Variable[] };
}

const load = (file: string): Dashboard => JSON.parse(readFileSync(path.join(DIR, file), "utf8")) as Dashboard;
const FLEET = load("trueidle-fleet.json");
const CAPACITY = load("trueidle-capacity.json");
const PLUGIN: Record<string, string> = { "trueidle-fleet.json": "prometheus", "trueidle-capacity.json": "influxdb" };

const varQuery = (v: Variable): string => (typeof v.query === "string" ? v.query : v.query.query);
const queryOf = (t: Target): string => t.expr ?? t.query ?? "";
const panel = (d: Dashboard, title: string): Panel => {
  const p = d.panels.find((x) => x.title === title);
  if (!p) throw new Error(`no panel "${title}" in ${d.uid}`);
  return p;
};
const target = (d: Dashboard, title: string, refId = "A"): Target => {
  const t = panel(d, title).targets!.find((x) => x.refId === refId);
  if (!t) throw new Error(`no target ${refId} in panel "${title}"`);
  return t;
};

describe("deploy/grafana: dashboard structure", () => {
  it("has exactly the two dashboards", () => {
    expect(DASHBOARDS).toEqual(["trueidle-capacity.json", "trueidle-fleet.json"]);
  });

  it.each(DASHBOARDS)(
    "%s is in Grafana's import format, every panel on the datasource variable, the grid sane",
    (file) => {
      const d = load(file);
      const plugin = PLUGIN[file]!;
      expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
      expect(d.schemaVersion).toBeLessThanOrEqual(41);
      expect(d.id).toBeNull();
      expect(d.uid).toMatch(/^trueidle-[a-z]+$/);
      expect(d.uid.length).toBeLessThanOrEqual(40);
      expect(d.tags).toContain("trueidle");
      expect(d.refresh).toMatch(/^\d+[smhd]$/);
      expect(d.__inputs).toEqual([expect.objectContaining({ type: "datasource", pluginId: plugin })]);

      const vars = d.templating.list;
      expect(new Set(vars.map((v) => v.name)).size).toBe(vars.length);
      const ds = vars.find((v) => v.name === "datasource")!;
      expect(ds).toMatchObject({ type: "datasource", query: plugin });
      expect(JSON.stringify(ds)).toContain(`\${${d.__inputs[0]!.name}}`);
      for (const v of vars.filter((x) => x.type === "query")) {
        expect(v.datasource, `variable ${v.name}`).toEqual({ type: plugin, uid: "${datasource}" });
        expect(v).toMatchObject({ multi: true, includeAll: true, allValue: ".*" });
      }
      expect(vars.filter((v) => v.type === "query").map((v) => v.name)).toEqual(
        expect.arrayContaining(["site", "model"]),
      );

      const ids = d.panels.map((p) => p.id);
      expect(new Set(ids).size, "unique panel ids").toBe(ids.length);
      for (const p of d.panels) {
        expect(p.datasource, p.title).toEqual({ type: plugin, uid: "${datasource}" });
        expect(p.targets!.length, p.title).toBeGreaterThan(0);
        expect(new Set(p.targets!.map((t) => t.refId)).size, `${p.title}: unique refIds`).toBe(p.targets!.length);
        for (const t of p.targets!) {
          expect(t.datasource, `${p.title} ${t.refId}`).toEqual({ type: plugin, uid: "${datasource}" });
          expect(queryOf(t).trim(), `${p.title} ${t.refId}`).not.toBe("");
          if (plugin === "influxdb") expect(t.rawQuery, `${p.title} ${t.refId}`).toBe(true);
        }
        expect(p.description?.length ?? 0, `${p.title} has a description`).toBeGreaterThan(20);
        const g = p.gridPos;
        for (const k of ["x", "y", "w", "h"] as const)
          expect(Number.isInteger(g[k]) && g[k] >= 0, `${p.title} gridPos.${k}`).toBe(true);
        expect(g.w).toBeGreaterThan(0);
        expect(g.h).toBeGreaterThan(0);
        expect(g.x + g.w, `${p.title} fits 24 columns`).toBeLessThanOrEqual(24);
      }
      // No two panels overlap.
      for (const [i, a] of d.panels.entries()) {
        for (const b of d.panels.slice(i + 1)) {
          const apart =
            a.gridPos.x + a.gridPos.w <= b.gridPos.x ||
            b.gridPos.x + b.gridPos.w <= a.gridPos.x ||
            a.gridPos.y + a.gridPos.h <= b.gridPos.y ||
            b.gridPos.y + b.gridPos.h <= a.gridPos.y;
          expect(apart, `"${a.title}" and "${b.title}" overlap`).toBe(true);
        }
      }
    },
  );

  it("says which Prometheus panels need the recording rules, and only those use them", () => {
    for (const p of FLEET.panels) {
      const usesRules = p.targets!.some((t) => /\b[a-z_]+:trueidle_[a-z_]+:[a-z0-9_]+\b/.test(queryOf(t)));
      expect(p.description!.includes("NEEDS the recording rules"), p.title).toBe(usesRules);
    }
    const readme = readFileSync(path.join(DIR, "README.md"), "utf8");
    for (const p of FLEET.panels.filter((x) => x.description!.includes("NEEDS the recording rules")))
      expect(readme).toContain(p.title);
  });
});

describe("deploy/grafana: the fleet dashboard and --gpu-series", () => {
  // Series names, not the names of recording rules (site_model:trueidle_gpu_…:rate1h read fleet roll-ups).
  const FULL_ONLY =
    /(?<![:\w])trueidle_gpu_(real_utilization_ratio|reported_utilization_ratio|processes|power_watts|power_floor_watts|memory_used_bytes)\b(?!:)/;
  const PER_GPU = /(?<![:\w])trueidle_gpu_[a-z_]+\b(?!:)/;
  it("each panel that reads per-GPU series says which modes leave it empty, the README lists them, and no other panel does", () => {
    const readme = readFileSync(path.join(DIR, "README.md"), "utf8");
    for (const p of FLEET.panels) {
      const q = p.targets!.map(queryOf).join("\n");
      const d = p.description!;
      const says = d.includes("EMPTY with --gpu-series states or off")
        ? "states or off"
        : d.includes("EMPTY with --gpu-series off")
          ? "off"
          : "none";
      expect(says, p.title).toBe(FULL_ONLY.test(q) ? "states or off" : PER_GPU.test(q) ? "off" : "none");
      if (says !== "none") expect(readme, p.title).toContain(p.title);
    }
  });
});

// ------------------------------------------------------------------ Grafana's interpolation

/** Grafana's current value of a variable: "All", or the chosen values. */
type Selection = "All" | string[];

const PROM_REGEX_SPECIAL = /[$^*+?.()|\\{}[\]]/g;
const INFLUX_REGEX_SPECIAL = /[\\^$*+?.()|[\]{}/]/g;

/**
 * A variable's value as Grafana writes it into a query: All → the variable's allValue; a
 * multi-value or include-All variable → its values regex-escaped, as (a|b). In
 * PromQL a backslash sits in a double-quoted string, so it is doubled.
 */
function formatVariable(v: Variable, sel: Selection, plugin: "prometheus" | "influxdb"): string {
  if (sel === "All") return v.allValue ?? "";
  const escaped = sel.map((s) =>
    plugin === "prometheus" ? s.replace(PROM_REGEX_SPECIAL, "\\\\$&") : s.replace(INFLUX_REGEX_SPECIAL, "\\$&"),
  );
  // Grafana's Prometheus datasource writes one value bare; its InfluxDB datasource in parentheses.
  return escaped.length === 1 && plugin === "prometheus" ? escaped[0]! : `(${escaped.join("|")})`;
}

interface Expansion {
  selections?: Record<string, Selection>;
  /** Grafana's $timeFilter text. */
  timeFilter?: string;
  /** Grafana's $__interval for this panel: max(panel's min interval, range / max data points, rounded). */
  intervalMs: number;
  /** Prometheus datasource scrape interval; $__rate_interval = max($__interval + scrape, 4 × scrape). */
  scrapeMs?: number;
  rangeMs?: number;
}

const durationText = (ms: number): string =>
  ms % 86_400_000 === 0
    ? `${ms / 86_400_000}d`
    : ms % 3_600_000 === 0
      ? `${ms / 3_600_000}h`
      : ms % 60_000 === 0
        ? `${ms / 60_000}m`
        : ms % 1000 === 0
          ? `${ms / 1000}s`
          : `${ms}ms`;

function expand(query: string, d: Dashboard, plugin: "prometheus" | "influxdb", x: Expansion): string {
  let q = query;
  const scrape = x.scrapeMs ?? 15_000;
  q = q.replaceAll("$__rate_interval", durationText(Math.max(x.intervalMs + scrape, 4 * scrape)));
  q = q.replaceAll("$__interval_ms", String(x.intervalMs));
  q = q.replaceAll("$__interval", durationText(x.intervalMs));
  if (x.rangeMs !== undefined) q = q.replaceAll("$__range", durationText(x.rangeMs));
  if (x.timeFilter !== undefined) q = q.replaceAll("$timeFilter", x.timeFilter);
  for (const v of d.templating.list.filter((y) => y.type === "query")) {
    const value = formatVariable(v, x.selections?.[v.name] ?? "All", plugin);
    q = q.replaceAll(`\${${v.name}}`, value).replace(new RegExp(`\\$${v.name}\\b`, "g"), value);
  }
  // A `$` left is a regex anchor, never a variable or macro name.
  expect(q, `every variable and macro in ${query} is expanded`).not.toMatch(/\$[\w{]/);
  return q;
}

/** Grafana's $__interval: range / max data points, rounded up to a step, at least the panel's min interval. */
function grafanaInterval(rangeMs: number, minInterval: string | undefined, maxDataPoints = 1000): number {
  const steps = [
    1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
  ].map((s) => s * 1000);
  const raw = rangeMs / maxDataPoints;
  const rounded = steps.find((s) => s >= raw) ?? 86_400_000;
  const min = minInterval === undefined ? 0 : parseDuration(minInterval);
  return Math.max(rounded, min);
}

function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  if (!m) throw new Error(`not a duration: ${text}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms"];
}

/** Every query of a dashboard: [where, text, panel] for panel targets and query variables. */
function allQueries(
  d: Dashboard,
): Array<{ where: string; query: string; panel?: Panel; target?: Target; variable?: Variable }> {
  const out: Array<{ where: string; query: string; panel?: Panel; target?: Target; variable?: Variable }> = [];
  for (const v of d.templating.list.filter((x) => x.type === "query"))
    out.push({ where: `variable $${v.name}`, query: varQuery(v), variable: v });
  for (const p of d.panels)
    for (const t of p.targets ?? [])
      out.push({ where: `panel "${p.title}" ${t.refId}`, query: queryOf(t), panel: p, target: t });
  return out;
}

// ------------------------------------------------------------------ Prometheus

/** Each GPU sits in one state the whole run. */
const HOSTS = twoSiteHosts("graf");
const SITE_REAL = new Map<string, number>(siteRatios(HOSTS).map((r) => [r.site, r.real]));
const SITE_REPORTED = new Map<string, number>(siteRatios(HOSTS).map((r) => [r.site, r.reported]));
const STATE_COUNTS: Record<string, number> = {};
for (const h of HOSTS) for (const g of h.gpus) STATE_COUNTS[g.state] = (STATE_COUNTS[g.state] ?? 0) + 1;

const SCRAPE_MS = 1000;
/** The dashboard's range in the Prometheus checks: the last hour, 720 points wide. */
const PROM_RANGE_MS = 3_600_000;
const PROM_INTERVAL_MS = grafanaInterval(PROM_RANGE_MS, undefined, 720);

/**
 * The panels a --gpu-series mode leaves empty, as their descriptions say: "EMPTY with
 * --gpu-series states or off" (per-GPU gauges that `full` alone writes) or "EMPTY with
 * --gpu-series off" (per-GPU state series); the host variable lists the GPUs' hosts.
 */
function emptyIn(mode: GpuSeriesMode): string[] {
  const out: string[] = [];
  if (mode === "off") out.push("variable $host");
  for (const p of FLEET.panels) {
    const d = p.description ?? "";
    const empty =
      (mode !== "full" && d.includes("EMPTY with --gpu-series states or off")) ||
      (mode === "off" && d.includes("EMPTY with --gpu-series off"));
    if (empty) for (const t of p.targets ?? []) out.push(`panel "${p.title}" ${t.refId}`);
  }
  return out;
}

describe.each(GPU_SERIES_MODES)(
  "deploy/grafana: trueidle-fleet.json against a real Prometheus scraping two collectors with --gpu-series %s",
  (mode) => {
    let dir: string;
    let influx: PrivateInfluxd;
    let fleet: TwoSiteFleet | undefined;
    let prom: PrometheusHandle;

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), "trueidle-grafana-prom-"));
      // The first collector writes to InfluxDB with a disk spool, so it has trueidle_spool_bytes.
      influx = await startInfluxd();
      fleet = await startTwoSiteFleet({
        hosts: HOSTS,
        dir,
        ruleFiles: [RULES],
        scrapeIntervalMs: SCRAPE_MS,
        collectorArgs: (i) => [
          "--gpu-series",
          mode,
          ...(i === 0 ? ["--influx-url", `${influx.url}/live`, "--spool-dir", path.join(dir, "spool")] : []),
        ],
      });
      prom = fleet.prom;
      // Several windows behind every GPU (3 or 4 to a group), and the 1h recording rules evaluated on them.
      await prom.waitFor("min(trueidle_fleet_observed_seconds_total)", (r) => (r[0]?.value ?? 0) >= 40, 60_000);
      await prom.waitFor(
        "count(site_model:trueidle_gpu_observed_seconds:rate1h)",
        (r) => r[0]?.value === HOSTS.length,
        30_000,
      );
    }, 120_000);

    afterAll(async () => {
      await fleet?.stop();
      await influx?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const run = (q: string, sel: Record<string, Selection> = {}, at?: number): Promise<PromSample[]> =>
      prom.query(
        expand(q, FLEET, "prometheus", {
          selections: sel,
          intervalMs: PROM_INTERVAL_MS,
          scrapeMs: SCRAPE_MS,
          rangeMs: PROM_RANGE_MS,
        }),
        at,
      );

    /** label_values(metric{…}, label) as Grafana runs it: /api/v1/label/<label>/values?match[]=metric{…}. */
    async function labelValues(q: string, sel: Record<string, Selection> = {}): Promise<string[]> {
      const m = /^label_values\((.+),\s*([a-zA-Z_]\w*)\)$/.exec(
        expand(q, FLEET, "prometheus", { selections: sel, intervalMs: PROM_INTERVAL_MS, scrapeMs: SCRAPE_MS }),
      );
      expect(m, q).not.toBeNull();
      const res = await fetch(`${prom.url}/api/v1/label/${m![2]}/values?${new URLSearchParams({ "match[]": m![1]! })}`);
      const body = (await res.json()) as { status: string; data: string[]; error?: string };
      expect(body.status, body.error).toBe("success");
      return body.data.sort();
    }

    it("every query returns data, variables included (site, model, host = All), but the per-GPU panels the mode leaves out", async () => {
      const queries = allQueries(FLEET);
      expect(queries.length).toBeGreaterThanOrEqual(18);
      const empty: string[] = [];
      for (const { where, query, variable } of queries) {
        const n = variable ? (await labelValues(query)).length : (await run(query)).length;
        if (n === 0) empty.push(where);
      }
      expect(empty, prom.logs()).toEqual(emptyIn(mode));
    });

    it("the variables list the sites, models and hosts, each narrowed by the ones before it", async () => {
      const v = (name: string): string => varQuery(FLEET.templating.list.find((x) => x.name === name)!);
      expect(await labelValues(v("site"))).toEqual(["lab-a", "lab-b"]);
      expect(await labelValues(v("model"))).toEqual(HOSTS.map((h) => h.model).sort());
      expect(await labelValues(v("model"), { site: ["lab-b"] })).toEqual(["NVIDIA L40S"]);
      if (mode === "off") {
        expect(await labelValues(v("host"))).toEqual([]);
        return;
      }
      expect(await labelValues(v("host"))).toEqual(HOSTS.map((h) => h.host).sort());
      expect(await labelValues(v("host"), { site: ["lab-a"], model: "All" })).toEqual(["graf-h1"]);
      // A model name full of regex-special characters is escaped, as Grafana does.
      expect(await labelValues(v("host"), { model: ["NVIDIA H100 80GB HBM3", "NVIDIA L40S"] })).toEqual([
        "graf-h1",
        "graf-h2",
      ]);
    });

    it("real vs reported idle: the fleet's ratios are what the scenario implies, and the site filter narrows them", async () => {
      const title = "Real vs reported idle (selected GPUs)";
      // Every query reads one instant, far enough back that no scrape at or before it is still
      // being committed (a scrape ends within its 1 s timeout): they all see the same samples.
      const at = Date.now() - 3 * SCRAPE_MS;
      // The weights: each site's observed GPU-seconds per second at that instant, over the same range.
      const rateInterval = durationText(Math.max(PROM_INTERVAL_MS + SCRAPE_MS, 4 * SCRAPE_MS));
      const obs = await prom.query(`sum by (site) (rate(trueidle_fleet_observed_seconds_total[${rateInterval}]))`, at);
      expect(obs.map((s) => s.metric["site"]).sort()).toEqual(["lab-a", "lab-b"]);
      const weighted = (m: Map<string, number>): number =>
        obs.reduce((sum, s) => sum + m.get(s.metric["site"]!)! * s.value, 0) / obs.reduce((sum, s) => sum + s.value, 0);

      const [real] = await run(queryOf(target(FLEET, title, "A")), {}, at);
      const [reported] = await run(queryOf(target(FLEET, title, "B")), {}, at);
      const [hidden] = await run(queryOf(target(FLEET, title, "C")), {}, at);
      expect(real!.value).toBeCloseTo(weighted(SITE_REAL), 9);
      expect(reported!.value).toBeCloseTo(weighted(SITE_REPORTED), 9);
      expect(hidden!.value).toBeCloseTo(weighted(SITE_REAL) - weighted(SITE_REPORTED), 9);
      // Strictly between the sites: both collectors count.
      expect(real!.value).toBeGreaterThan(Math.min(...SITE_REAL.values()));
      expect(real!.value).toBeLessThan(Math.max(...SITE_REAL.values()));

      // One site, both sites as a multi-value regex, and All: the same sums, narrowed.
      for (const site of ["lab-a", "lab-b"]) {
        const [one] = await run(queryOf(target(FLEET, title, "A")), { site: [site] }, at);
        expect(one!.value, site).toBeCloseTo(SITE_REAL.get(site)!, 9);
      }
      const [both] = await run(queryOf(target(FLEET, title, "A")), { site: ["lab-a", "lab-b"] }, at);
      expect(both!.value).toBeCloseTo(real!.value, 12);

      const bySite = await run(queryOf(target(FLEET, "Real idle by site", "A")), {}, at);
      expect(Object.fromEntries(bySite.map((s) => [s.metric["site"], s.value]))).toEqual({
        "lab-a": expect.closeTo(SITE_REAL.get("lab-a")!, 9),
        "lab-b": expect.closeTo(SITE_REAL.get("lab-b")!, 9),
      });
      const hiddenBySiteModel = await run(queryOf(target(FLEET, "Hidden idle by site and model")), {}, at);
      expect(hiddenBySiteModel.map((s) => [s.metric["site"], s.metric["model"], s.value]).sort()).toEqual(
        HOSTS.map((h) => [h.site, h.model, expect.closeTo(SITE_REAL.get(h.site)! - SITE_REPORTED.get(h.site)!, 9)]),
      );
    });

    it("the recorded last-hour stats lie between the sites' ratios, and one site's equals that site's", async () => {
      // Read at one evaluation of the 1h group: half a second after the sample of its last rule,
      // every rule before it has a sample at that instant and the next evaluation is 1 s away.
      const [last] = await prom.query("max(timestamp(job:trueidle_fleet_real_idle:ratio_rate1h))");
      const at = last!.value * 1000 + 500;
      const [real] = await run(queryOf(target(FLEET, "Real idle, last hour")), {}, at);
      expect(real!.value).toBeGreaterThan(Math.min(...SITE_REAL.values()));
      expect(real!.value).toBeLessThan(Math.max(...SITE_REAL.values()));
      for (const site of ["lab-a", "lab-b"]) {
        const [r] = await run(queryOf(target(FLEET, "Real idle, last hour")), { site: [site] }, at);
        const [h] = await run(queryOf(target(FLEET, "Hidden idle, last hour")), { site: [site] }, at);
        expect(r!.value, site).toBeCloseTo(SITE_REAL.get(site)!, 9);
        expect(h!.value, site).toBeCloseTo(SITE_REAL.get(site)! - SITE_REPORTED.get(site)!, 9);
      }
    });

    it("GPUs per state, held-idle GPUs, agents connected: the scenario's counts", async () => {
      const states = await run(queryOf(target(FLEET, "GPUs per state")));
      const got = Object.fromEntries(states.filter((s) => s.value > 0).map((s) => [s.metric["state"], s.value]));
      expect(got).toEqual(STATE_COUNTS);
      expect(states.map((s) => s.metric["state"]).sort()).toEqual([
        "active",
        "busy_phantom",
        "free_idle",
        "held_idle",
        "unavailable",
      ]);
      const labB = await run(queryOf(target(FLEET, "GPUs per state")), { site: ["lab-b"] });
      expect(labB.reduce((n, s) => n + s.value, 0)).toBe(3);

      const [heldNow] = await run(queryOf(target(FLEET, "GPUs held idle now")));
      expect(heldNow!.value).toBe(STATE_COUNTS["held_idle"]);

      const held = await run(queryOf(target(FLEET, "Held-idle GPUs and their idle streak")));
      if (mode === "off") expect(held).toEqual([]);
      else {
        expect(held.map((s) => `${s.metric["host"]}/${s.metric["gpu"]}`)).toEqual(["graf-h1/2"]);
        expect(held[0]!.metric["__name__"]).toBe("trueidle_gpu_idle_streak_seconds");
        expect(held[0]!.value).toBeGreaterThan(0);
      }

      const [agentsNow] = await run(queryOf(target(FLEET, "Agents connected")));
      expect(agentsNow!.value).toBe(HOSTS.length);
    });

    it("idle GPU-hours by owner: only the pod and the job holding idle GPUs, each with its GPU's idle hours; the table names who holds each idle GPU", async () => {
      // The scenario's owners: pod research/notebook-b holds graf-h1/2 (held_idle) and job 4242
      // of alice graf-h1/1 (busy_phantom); pod ml/train-a and job 77 of bob hold active GPUs,
      // pod ml/lost-c a lost one, so none of them held a GPU idle.
      const title = "Idle GPU-hours held, by owner";
      const at = Date.now() - 3 * SCRAPE_MS;
      const pods = await run(queryOf(target(FLEET, title, "A")), {}, at);
      const jobs = await run(queryOf(target(FLEET, title, "B")), {}, at);
      expect(pods.map((s) => s.metric)).toEqual([{ namespace: "research", pod: "notebook-b" }]);
      expect(jobs.map((s) => s.metric)).toEqual([{ exported_job: "4242", user: "alice" }]);
      const table = "Owners of GPUs held idle now";
      if (mode === "off") {
        // The owner groups stay in every mode; who holds which GPU is per GPU.
        for (const s of [...pods, ...jobs]) expect(s.value).toBeGreaterThan(0);
        expect(await run(queryOf(target(FLEET, table)), {}, at)).toEqual([]);
        return;
      }
      // Each holds one GPU the whole run: its hours are that GPU's held_idle + busy_phantom
      // hours over the same range, give or take the seconds before the agent first heard of
      // the allocation (a scrape or two).
      const gpuHours = async (gpu: string): Promise<number> => {
        const [h] = await prom.query(
          `sum(increase(trueidle_gpu_state_seconds_total{host="graf-h1", gpu="${gpu}", state=~"held_idle|busy_phantom"}[${durationText(PROM_RANGE_MS)}])) / 3600`,
          at,
        );
        return h!.value;
      };
      for (const [owner, gpu] of [
        [pods[0]!, "2"],
        [jobs[0]!, "1"],
      ] as const) {
        const expected = await gpuHours(gpu);
        expect(expected, `graf-h1/${gpu} idle hours`).toBeGreaterThan(0);
        expect(
          Math.abs(owner.value - expected) * 3600,
          `${JSON.stringify(owner.metric)}: ${owner.value} h vs graf-h1/${gpu}: ${expected} h`,
        ).toBeLessThan(5);
      }

      const held = await run(queryOf(target(FLEET, table)), {}, at);
      const streaks = await prom.query("max without (instance) (trueidle_gpu_idle_streak_seconds)", at);
      const streak = (gpu: string): number =>
        streaks.find((s) => s.metric["host"] === "graf-h1" && s.metric["gpu"] === gpu)!.value;
      const gpuLabels = (gpu: number) => ({
        job: "test",
        host: "graf-h1",
        gpu: String(gpu),
        uuid: fleetGpuUuid("graf-h1", gpu),
        model: "NVIDIA H100 80GB HBM3",
        site: "lab-a",
      });
      expect(held.map((s) => s.metric).sort((a, b) => a["gpu"]!.localeCompare(b["gpu"]!))).toEqual([
        { ...gpuLabels(1), exported_job: "4242", user: "alice" },
        { ...gpuLabels(2), namespace: "research", pod: "notebook-b", container: "jupyter" },
      ]);
      for (const s of held) expect(s.value, `idle streak of graf-h1/${s.metric["gpu"]}`).toBe(streak(s.metric["gpu"]!));
      expect(held.every((s) => s.value > 0)).toBe(true);
      // The variables narrow it as they narrow the GPUs: none of these GPUs is at lab-b or on graf-h2.
      expect(await run(queryOf(target(FLEET, table)), { site: ["lab-b"] }, at)).toEqual([]);
      expect(await run(queryOf(target(FLEET, table)), { host: ["graf-h2"] }, at)).toEqual([]);
      expect(await run(queryOf(target(FLEET, table)), { host: ["graf-h1"], site: ["lab-a"] }, at)).toHaveLength(2);
    });

    it("power vs floor has both series for every GPU with a power reading; spool bytes and rejected windows per collector", async () => {
      const power = await run(queryOf(target(FLEET, "Power vs idle floor", "A")));
      const floor = await run(queryOf(target(FLEET, "Power vs idle floor", "B")));
      if (mode === "full") {
        // The lost GPU (graf-h2/1) reports no power.
        expect(power.map((s) => `${s.metric["host"]}/${s.metric["gpu"]}`).sort()).toEqual([
          "graf-h1/0",
          "graf-h1/1",
          "graf-h1/2",
          "graf-h1/3",
          "graf-h2/0",
          "graf-h2/2",
        ]);
        expect(floor.length).toBeGreaterThanOrEqual(power.length);
        for (const s of floor) expect(s.value).toBeGreaterThan(0);
        const host1 = await run(queryOf(target(FLEET, "Power vs idle floor", "A")), { host: ["graf-h1"] });
        expect(host1).toHaveLength(4);
      } else {
        expect([power, floor]).toEqual([[], []]);
      }

      // One series per collector; 0 without a spool.
      const spool = await run(queryOf(target(FLEET, "Spool bytes")));
      expect(spool).toHaveLength(HOSTS.length);
      for (const s of spool) expect(s.value).toBeGreaterThanOrEqual(0);
      const rejected = await run(queryOf(target(FLEET, "Windows rejected")));
      expect(rejected.length).toBeGreaterThan(0);
      for (const s of rejected) expect(s.value).toBe(0);
    });
  },
);

// ------------------------------------------------------------------ InfluxDB

const DAY = 86_400_000;
const BACKFILL_DAYS = 3;
/** Today 00:00 UTC: the backfill ends there, so every point is in the past and `now() - 90d` holds it. */
const END = Math.floor(Date.now() / DAY) * DAY;
const FROM = END - BACKFILL_DAYS * DAY;
const DB = "trueidle";
/** Grafana's $timeFilter for an absolute range [FROM, END]. */
const ABSOLUTE = `time >= ${FROM}ms and time <= ${END}ms`;
/** Grafana's $timeFilter for the dashboard's default range, now-90d to now. */
const RELATIVE = "time >= now() - 90d and time <= now()";

interface ReportGroupJson {
  key: Record<string, string>;
  gpus: number;
  gpu_hours_observed: number;
  real_idle_pct: number;
  reported_idle_pct: number;
  hidden_idle_pct: number;
  real_idle_gpu_hours: number;
  held_idle_gpu_hours: number;
  phantom_busy_gpu_hours: number;
  reclaimable_gpus: number;
  hours_with_data: number;
}
interface ReportJson {
  range: { hours: number };
  measurement: string;
  groups: ReportGroupJson[];
  total: ReportGroupJson;
  daily: {
    days: string[];
    groups: Array<{
      key: Record<string, string>;
      real_idle_pct: Array<number | null>;
      reported_idle_pct: Array<number | null>;
    }>;
  };
}

describe("deploy/grafana: trueidle-capacity.json against a real InfluxDB holding a 3-day backfill", () => {
  let influx: PrivateInfluxd;
  let dir: string;
  let bySiteModel: ReportJson;
  let bySite: ReportJson;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "trueidle-grafana-influx-"));
    influx = await startInfluxd();
    const url = `${influx.url}/${DB}`;
    const fill = await runTrueidle(
      [
        "demo",
        "--backfill",
        `${BACKFILL_DAYS}d`,
        "--backfill-only",
        "--influx-url",
        url,
        "--backfill-end",
        new Date(END).toISOString(),
      ],
      {},
      100_000,
    );
    expect(fill.code, fill.output).toBe(0);
    expect(fill.output).toMatch(/^Backfilled 3 days of 64 GPUs on 8 hosts/m);
    const report = async (by: string): Promise<ReportJson> => {
      const out = path.join(dir, `report-${by}.json`);
      const r = await runTrueidle([
        "report",
        "--influx-url",
        url,
        "--since",
        new Date(FROM).toISOString(),
        "--until",
        new Date(END).toISOString(),
        "--by",
        by,
        "--format",
        "json",
        "--out",
        out,
      ]);
      expect(r.code, r.output).toBe(0);
      return JSON.parse(readFileSync(out, "utf8")) as ReportJson;
    };
    bySiteModel = await report("site,model");
    bySite = await report("site");
    // An hourly roll-up (gpu_hour, or fleet_hour where it reaches), not the windows.
    expect(["gpu_hour", "fleet_hour"]).toContain(bySiteModel.measurement);
  }, 120_000);

  afterAll(async () => {
    await influx?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const expandInflux = (
    q: string,
    p: Panel | undefined,
    timeFilter: string,
    rangeMs: number,
    sel: Record<string, Selection> = {},
  ): string =>
    expand(q, CAPACITY, "influxdb", {
      selections: sel,
      timeFilter,
      intervalMs: grafanaInterval(rangeMs, p?.interval),
      rangeMs,
    });

  /** Rows of every series of every statement, each with its series' tags. */
  async function runInflux(q: string): Promise<Array<Record<string, unknown>>> {
    const results: InfluxResult[] = await influxQuery(influx.url, q, DB);
    const out: Array<Record<string, unknown>> = [];
    for (const r of results) {
      for (const s of r.series ?? []) {
        for (const v of s.values ?? []) {
          const row: Record<string, unknown> = { ...(s.tags ?? {}) };
          for (const [i, c] of s.columns.entries()) row[c] = v[i];
          out.push(row);
        }
      }
    }
    return out;
  }
  const panelRows = (title: string, refId = "A", sel: Record<string, Selection> = {}) =>
    runInflux(expandInflux(queryOf(target(CAPACITY, title, refId)), panel(CAPACITY, title), ABSOLUTE, END - FROM, sel));
  const num = (v: unknown): number => {
    if (typeof v !== "number") throw new Error(`not a number: ${JSON.stringify(v)}`);
    return v;
  };
  const close = (a: number, b: number, what: string): void => {
    expect(Math.abs(a - b), `${what}: ${a} vs ${b}`).toBeLessThan(1e-9 * Math.max(1, Math.abs(b)));
  };

  it("every query reads fleet_hour, never the per-GPU gpu_hour", () => {
    const queries = allQueries(CAPACITY);
    expect(queries.length).toBeGreaterThanOrEqual(11);
    // What each FROM names, subqueries aside.
    const measurements = (q: string): string[] => [...q.matchAll(/\bFROM\s+(?!\()(\S+)/gi)].map((m) => m[1]!);
    for (const { where, query } of queries) {
      expect(query, where).not.toMatch(/gpu_hour"?\s*\.\s*"?gpu_hour\b/);
      expect(measurements(query).length, where).toBeGreaterThan(0);
      for (const m of measurements(query)) expect(m, where).toBe('"gpu_hour"."fleet_hour"');
    }
  });

  it("fleet_hour carries site and model and holds the same seconds as gpu_hour over the range", async () => {
    const keys = (await runInflux(`SHOW TAG KEYS FROM "gpu_hour"."fleet_hour"`)).map((r) => String(r["tagKey"]));
    expect(keys).toEqual(expect.arrayContaining(["site", "model"]));
    for (const k of ["host", "gpu", "uuid"]) expect(keys).not.toContain(k);
    const where = `WHERE time >= ${FROM}ms AND time < ${END}ms`;
    const fields = ["observed_s", "free_idle_s", "held_idle_s", "busy_phantom_s", "reported_idle_s"];
    const sums = fields.map((f) => `sum("${f}") AS "${f}"`).join(", ");
    const [fleet] = await runInflux(
      `SELECT ${sums}, sum("real_idle_s") AS "real_idle_s" FROM "gpu_hour"."fleet_hour" ${where}`,
    );
    const [hour] = await runInflux(`SELECT ${sums} FROM "gpu_hour"."gpu_hour" ${where}`);
    expect(fleet, "fleet_hour has points in the range").toBeDefined();
    expect(hour, "gpu_hour has points in the range").toBeDefined();
    expect(num(hour!["observed_s"])).toBeGreaterThan(0);
    for (const f of fields) close(num(fleet![f]), num(hour![f]), `sum(${f}) of fleet_hour vs gpu_hour`);
    close(
      num(fleet!["real_idle_s"]),
      num(hour!["free_idle_s"]) + num(hour!["held_idle_s"]) + num(hour!["busy_phantom_s"]),
      "fleet_hour real_idle_s vs gpu_hour's real-idle states",
    );
    // Its `gpus` counts the GPU-hour points of each hour: the GPUs seen in that hour.
    const perHour = async (q: string): Promise<number[]> =>
      (await runInflux(`${q} ${where} GROUP BY time(1h) fill(none)`)).map((r) => num(r["n"]));
    const gpus = await perHour(`SELECT sum("gpus") AS "n" FROM "gpu_hour"."fleet_hour"`);
    expect(gpus).toHaveLength(BACKFILL_DAYS * 24);
    expect(gpus).toEqual(await perHour(`SELECT count("observed_s") AS "n" FROM "gpu_hour"."gpu_hour"`));
    for (const n of gpus) expect(n).toBeLessThanOrEqual(bySiteModel.total.gpus);
  });

  it("every query returns data over the default range (now-90d to now) and over the backfilled range", async () => {
    const queries = allQueries(CAPACITY);
    expect(queries.length).toBeGreaterThanOrEqual(11);
    const empty: string[] = [];
    for (const { where, query, panel: p } of queries) {
      for (const [tf, range] of [
        [RELATIVE, 90 * DAY],
        [ABSOLUTE, END - FROM],
      ] as const) {
        const rows = await runInflux(expandInflux(query, p, tf, range));
        if (rows.length === 0) empty.push(`${where} (${tf})`);
      }
    }
    expect(empty).toEqual([]);
  });

  it("the variables list the sites and models of the roll-up, the model narrowed by the site", async () => {
    const v = (name: string): string => varQuery(CAPACITY.templating.list.find((x) => x.name === name)!);
    const values = async (q: string, sel: Record<string, Selection> = {}): Promise<string[]> =>
      (await runInflux(expandInflux(q, undefined, ABSOLUTE, END - FROM, sel))).map((r) => String(r["value"])).sort();
    const sites = [...new Set(bySiteModel.groups.map((g) => g.key["site"]!))].sort();
    expect(await values(v("site"))).toEqual(sites);
    expect(await values(v("model"))).toEqual([...new Set(bySiteModel.groups.map((g) => g.key["model"]!))].sort());
    for (const site of sites) {
      expect(await values(v("model"), { site: [site] })).toEqual(
        bySiteModel.groups
          .filter((g) => g.key["site"] === site)
          .map((g) => g.key["model"]!)
          .sort(),
      );
    }
  });

  it("the table's idle ratios, GPU-hours and reclaimable GPUs per site and model equal `trueidle report --by site,model`", async () => {
    const a = await panelRows("Idle by site and model (range)", "A");
    const b = await panelRows("Idle by site and model (range)", "B");
    expect(a).toHaveLength(bySiteModel.groups.length);
    expect(b).toHaveLength(bySiteModel.groups.length);
    // 72 hours with data in every group: InfluxQL's percentile rank round(72 × 5 %) = 4 is the report's ceil(3.6) = 4.
    for (const g of bySiteModel.groups) expect(g.hours_with_data).toBe(72);
    for (const g of bySiteModel.groups) {
      const what = `${g.key["site"]} ${g.key["model"]}`;
      const row = a.find((r) => r["site"] === g.key["site"] && r["model"] === g.key["model"])!;
      expect(row, what).toBeDefined();
      close(num(row["gpu_hours"]), g.gpu_hours_observed, `${what} GPU-hours`);
      close(num(row["real_idle"]) * 100, g.real_idle_pct, `${what} real idle`);
      close(num(row["reported_idle"]) * 100, g.reported_idle_pct, `${what} reported idle`);
      close(num(row["hidden_idle"]) * 100, g.hidden_idle_pct, `${what} hidden idle`);
      close(num(row["held_idle_gpu_hours"]), g.held_idle_gpu_hours, `${what} held-idle GPU-hours`);
      close(num(row["phantom_busy_gpu_hours"]), g.phantom_busy_gpu_hours, `${what} phantom-busy GPU-hours`);
      const rec = b.find((r) => r["site"] === g.key["site"] && r["model"] === g.key["model"])!;
      close(num(rec["reclaimable_gpus"]), g.reclaimable_gpus, `${what} reclaimable GPUs`);
    }
  });

  it("the stats equal the report's fleet total, and a site selection the report's sums for those sites", async () => {
    const t = bySiteModel.total;
    close(num((await panelRows("Real idle (range)"))[0]!["real_idle"]) * 100, t.real_idle_pct, "real idle");
    close(
      num((await panelRows("Reported idle (range)"))[0]!["reported_idle"]) * 100,
      t.reported_idle_pct,
      "reported idle",
    );
    close(
      num((await panelRows("Real-idle GPU-hours (range)"))[0]!["real_idle_gpu_hours"]),
      t.real_idle_gpu_hours,
      "real-idle GPU-hours",
    );
    close(
      num((await panelRows("Reclaimable GPUs (fleet selection)"))[0]!["reclaimable_gpus"]),
      t.reclaimable_gpus,
      "reclaimable GPUs",
    );

    // Two sites as Grafana's multi-value regex (a|b): the report's groups of those sites, summed.
    const two = bySite.groups.slice(0, 2);
    const sel = { site: two.map((g) => g.key["site"]!) };
    const realH = two.reduce((s, g) => s + g.real_idle_gpu_hours, 0);
    const obsH = two.reduce((s, g) => s + g.gpu_hours_observed, 0);
    close(
      num((await panelRows("Real idle (range)", "A", sel))[0]!["real_idle"]),
      realH / obsH,
      `real idle of ${sel.site.join(", ")}`,
    );
    // One site: exactly the report's by-site figure, reclaimable GPUs included.
    for (const g of bySite.groups) {
      const one = { site: [g.key["site"]!] };
      close(
        num((await panelRows("Real idle (range)", "A", one))[0]!["real_idle"]) * 100,
        g.real_idle_pct,
        `real idle of ${g.key["site"]}`,
      );
      close(
        num((await panelRows("Reclaimable GPUs (fleet selection)", "A", one))[0]!["reclaimable_gpus"]),
        g.reclaimable_gpus,
        `reclaimable GPUs of ${g.key["site"]}`,
      );
    }
  });

  it("reclaimable GPUs over 48 hours: InfluxQL's percentile is one rank below the report's, as the panel says", async () => {
    // n = 48 hours: the report takes rank ceil(2.4) = 3 of the sorted hourly figures, InfluxQL round(2.4) = 2.
    const to = FROM + 2 * DAY;
    const out = path.join(dir, "report-48h.json");
    const r = await runTrueidle([
      "report",
      "--influx-url",
      `${influx.url}/${DB}`,
      "--since",
      new Date(FROM).toISOString(),
      "--until",
      new Date(to).toISOString(),
      "--format",
      "json",
      "--out",
      out,
    ]);
    expect(r.code, r.output).toBe(0);
    const report = JSON.parse(readFileSync(out, "utf8")) as ReportJson;
    expect(report.total.hours_with_data).toBe(48);
    const hourly = (
      await runInflux(
        `SELECT (sum("free_idle_s") + sum("held_idle_s") + sum("busy_phantom_s")) / 3600 AS "g" FROM "gpu_hour"."gpu_hour" WHERE time >= ${FROM}ms AND time < ${to}ms GROUP BY time(1h) fill(none)`,
      )
    )
      .map((x) => num(x["g"]))
      .sort((a, b) => a - b);
    expect(hourly).toHaveLength(48);
    close(report.total.reclaimable_gpus, hourly[2]!, "report: rank 3");
    const t = panel(CAPACITY, "Reclaimable GPUs (fleet selection)");
    const [row] = await runInflux(
      expandInflux(queryOf(t.targets![0]!), t, `time >= ${FROM}ms and time <= ${to - 1}ms`, to - FROM),
    );
    close(num(row!["reclaimable_gpus"]), hourly[1]!, "panel: rank 2");
    expect(num(row!["reclaimable_gpus"])).toBeLessThanOrEqual(report.total.reclaimable_gpus);
  });

  it("the daily panel equals the report's daily real and reported idle per site", async () => {
    const real = await panelRows("Daily real vs reported idle, by site", "A");
    const reported = await panelRows("Daily real vs reported idle, by site", "B");
    expect(bySite.daily.days).toHaveLength(BACKFILL_DAYS);
    for (const g of bySite.daily.groups) {
      const site = g.key["site"];
      const r = real.filter((x) => x["site"] === site).sort((x, y) => num(x["time"]) - num(y["time"]));
      const p = reported.filter((x) => x["site"] === site).sort((x, y) => num(x["time"]) - num(y["time"]));
      expect(
        r.map((x) => new Date(num(x["time"])).toISOString().slice(0, 10)),
        `${site} days`,
      ).toEqual(bySite.daily.days);
      g.real_idle_pct.forEach(
        (v, i) => void close(num(r[i]!["real_idle"]) * 100, v!, `${site} ${bySite.daily.days[i]} real`),
      );
      g.reported_idle_pct.forEach(
        (v, i) => void close(num(p[i]!["reported_idle"]) * 100, v!, `${site} ${bySite.daily.days[i]} reported`),
      );
    }
  });

  it("the $__interval panels bucket by at least an hour; their sums over the range agree with the report", async () => {
    const interval = grafanaInterval(END - FROM, panel(CAPACITY, "Really idle GPUs").interval);
    expect(interval).toBe(3_600_000);
    const idle = await panelRows("Really idle GPUs");
    expect(idle.length).toBe(bySite.groups.length * BACKFILL_DAYS * 24);
    // GPU-equivalents per hour × 1 h, summed: the real-idle GPU-hours of each site.
    for (const g of bySite.groups) {
      const sum = idle.filter((r) => r["site"] === g.key["site"]).reduce((s, r) => s + num(r["idle_gpus"]), 0);
      close(sum, g.real_idle_gpu_hours, `${g.key["site"]} real-idle GPU-hours`);
      for (const r of idle.filter((x) => x["site"] === g.key["site"]))
        expect(num(r["idle_gpus"])).toBeLessThanOrEqual(g.gpus + 1e-9);
    }
    const ratio = await panelRows("Real idle by site and model");
    expect(ratio.length).toBe(bySiteModel.groups.length * BACKFILL_DAYS * 24);
    for (const r of ratio) {
      expect(num(r["real_idle"])).toBeGreaterThanOrEqual(0);
      expect(num(r["real_idle"])).toBeLessThanOrEqual(1);
    }
  });
});
