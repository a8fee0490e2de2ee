/**
 * deploy/prometheus: the scrape config and rule files pass `promtool check`, every
 * recording rule and alert has `promtool test rules` cases that pass (and a wrong
 * expectation fails), and, end to end, a real Prometheus loading the rule files and
 * scraping two collector subprocesses fed by simulated agents records the idle ratios the
 * scenario implies, and TrueidleOwnerHoldsGpuIdle's expression picks the pod and the job
 * that hold GPUs idle there — once per --gpu-series mode of the collectors (full, states,
 * off): the recording rules read fleet roll-ups only, so they record the same values in
 * every mode; the per-GPU alerts need `full` or `states`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promtool, type PrometheusHandle, type PromtoolResult } from "../helpers/prometheus.js";
import { REPO_ROOT } from "../helpers/trueidle-process.js";
import YAML from "yaml";
import { METRIC_TABLE } from "../../collector/metrics-table.js";
import { GPU_SERIES_MODES, type GpuSeriesMode } from "../../collector/settings.js";
import { declaredFamilies, expectValidExposition } from "../helpers/exposition-check.js";
import {
  fleetGpuUuid,
  siteRatios,
  startTwoSiteFleet,
  twoSiteHosts,
  type TwoSiteFleet,
} from "../helpers/two-site-fleet.js";

const DIR = path.join(REPO_ROOT, "deploy", "prometheus");
const CONFIG = path.join(DIR, "prometheus.yml");
const RULES = path.join(DIR, "trueidle-rules.yml");
const ALERTS = path.join(DIR, "trueidle-alerts.yml");
const TESTS_DIR = path.join(DIR, "tests");
const TEST_FILES = readdirSync(TESTS_DIR)
  .filter((f) => f.endsWith(".yml"))
  .sort()
  .map((f) => path.join(TESTS_DIR, f));

const show = (r: PromtoolResult): string => `promtool exited ${r.code}; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

/** Names after `- record:` / `- alert:` in a rule file (one rule per such line). */
function ruleNames(file: string, kind: "record" | "alert"): string[] {
  const re = new RegExp(`^\\s*- ${kind}: (\\S+)\\s*$`, "gm");
  return [...readFileSync(file, "utf8").matchAll(re)].map((m) => m[1]!);
}

describe("deploy/prometheus: promtool", () => {
  it("promtool check config accepts prometheus.yml and the rule files it loads", async () => {
    const r = await promtool(["check", "config", CONFIG]);
    expect(r.code, show(r)).toBe(0);
    const out = r.stdout + r.stderr;
    expect(out, show(r)).toMatch(/SUCCESS: 2 rule files found/);
    expect(out, show(r)).toMatch(/SUCCESS: .*prometheus\.yml is valid prometheus config file syntax/);
    expect(out, show(r)).toMatch(/Checking .*trueidle-rules\.yml\s+SUCCESS: \d+ rules found/);
    expect(out, show(r)).toMatch(/Checking .*trueidle-alerts\.yml\s+SUCCESS: \d+ rules found/);
  });

  it("promtool check rules accepts both rule files", async () => {
    for (const [file, count] of [
      [RULES, ruleNames(RULES, "record").length],
      [ALERTS, ruleNames(ALERTS, "alert").length],
    ] as const) {
      expect(count, `rules in ${file}`).toBeGreaterThan(0);
      const r = await promtool(["check", "rules", file]);
      expect(r.code, show(r)).toBe(0);
      expect(r.stdout + r.stderr, show(r)).toContain(`SUCCESS: ${count} rules found`);
    }
  });

  it.each(TEST_FILES.map((f) => [path.basename(f), f]))("promtool test rules %s passes", async (_name, file) => {
    const r = await promtool(["test", "rules", file]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout + r.stderr, show(r)).toMatch(/Unit Testing:\s+\S+\n\s+SUCCESS/);
    expect(r.stdout + r.stderr, show(r)).not.toMatch(/FAILED/);
  });

  it("has a promtool test for every recording rule, and a firing and a quiet case for every alert", () => {
    const tests = TEST_FILES.map((f) => readFileSync(f, "utf8")).join("\n");
    const tested = new Set([...tests.matchAll(/^\s*- expr: (\S+)\s*$/gm)].map((m) => m[1]!));
    const records = ruleNames(RULES, "record");
    expect(
      records.filter((r) => !tested.has(r)),
      "recording rules without a promql_expr_test",
    ).toEqual([]);

    const firing = new Set<string>();
    const quiet = new Set<string>();
    for (const m of tests.matchAll(/^\s*alertname: (\S+)\s*\n\s*exp_alerts:(.*)$/gm)) {
      (m[2]!.trim() === "[]" ? quiet : firing).add(m[1]!);
    }
    const alerts = ruleNames(ALERTS, "alert");
    expect(
      alerts.filter((a) => !firing.has(a)),
      "alerts never tested firing",
    ).toEqual([]);
    expect(
      alerts.filter((a) => !quiet.has(a)),
      "alerts never tested quiet",
    ).toEqual([]);
  });

  it("promtool test rules fails on a wrong expectation", async () => {
    // The same tests against the same rules, with one expected ratio changed.
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-promtool-"));
    try {
      cpSync(RULES, path.join(dir, "trueidle-rules.yml"));
      mkdirSync(path.join(dir, "tests"));
      const original = readFileSync(path.join(TESTS_DIR, "trueidle-rules.test.yml"), "utf8");
      const wrong = original.replace(/(expr: job:trueidle_real_idle:ratio_rate5m\n[\s\S]*?value: )0\.5625/, "$10.5624");
      expect(wrong).not.toBe(original);
      const file = path.join(dir, "tests", "trueidle-rules.test.yml");
      writeFileSync(file, wrong);
      const r = await promtool(["test", "rules", file]);
      expect(r.code, show(r)).not.toBe(0);
      expect(r.stdout + r.stderr, show(r)).toMatch(
        /FAILED[\s\S]*job:trueidle_real_idle:ratio_rate5m[\s\S]*got:.*5\.625E-01/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Each GPU sits in one state the whole run; the first host also carries pool=training. */
const HOSTS = twoSiteHosts("prom", ["pool=training"]);
const expected = siteRatios(HOSTS);

interface RulesApi {
  data: {
    groups: Array<{
      name: string;
      file: string;
      rules: Array<{ type: string; name: string; health: string; lastError?: string }>;
    }>;
  };
}

/** The per-GPU families each --gpu-series mode exposes (docs/metrics.md). */
const GPU_FAMILIES: Record<GpuSeriesMode, string[]> = {
  full: METRIC_TABLE.filter((m) => m.scope === "gpu").map((m) => m.name),
  states: [
    "trueidle_gpu_info",
    "trueidle_gpu_up",
    "trueidle_gpu_observed_seconds_total",
    "trueidle_gpu_state_seconds_total",
    "trueidle_gpu_reported_idle_seconds_total",
    "trueidle_gpu_reported_busy_seconds_total",
    "trueidle_gpu_real_busy_seconds_total",
    "trueidle_gpu_state",
    "trueidle_gpu_idle_streak_seconds",
  ],
  off: [],
};

describe.each(GPU_SERIES_MODES)(
  "deploy/prometheus: the rules in a real Prometheus, scraping two collectors with --gpu-series %s",
  (mode) => {
    let dir: string;
    let fleet: TwoSiteFleet | undefined;
    let prom: PrometheusHandle;
    /** Per-GPU alerts and the owner alert read per-GPU series: none in `off`. */
    const perGpu = mode !== "off";

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), "trueidle-prom-rules-"));
      // Each host streams to its own collector: the rules must sum over both.
      fleet = await startTwoSiteFleet({
        hosts: HOSTS,
        dir,
        ruleFiles: [RULES, ALERTS],
        scrapeIntervalMs: 1000,
        collectorArgs: () => ["--gpu-series", mode],
      });
      prom = fleet.prom;
    }, 120_000);

    it("each collector's exposition passes promtool's lint and carries the mode's per-GPU families, owners included", async () => {
      const up = await prom.waitFor("up == 1", (r) => r.length === HOSTS.length, 30_000);
      // Both collectors hold windows (and owners) before their pages are read.
      await prom.waitFor(
        "count(trueidle_fleet_observed_seconds_total > 0)",
        (r) => r[0]?.value === HOSTS.length,
        30_000,
      );
      for (const { metric } of up) {
        const text = await (await fetch(`http://${metric["instance"]}/metrics`)).text();
        await expectValidExposition(text);
        const families = declaredFamilies(text);
        expect(
          families.filter((f) => f.startsWith("trueidle_gpu_") && f !== "trueidle_gpu_owner_info"),
          metric["instance"],
        ).toEqual(GPU_FAMILIES[mode]);
        expect(families.includes("trueidle_gpu_owner_info"), metric["instance"]).toBe(mode !== "off");
        expect(families).toContain("trueidle_owner_state_seconds_total");
        for (const f of [
          "trueidle_fleet_gpus",
          "trueidle_fleet_state_seconds_total",
          "trueidle_fleet_observed_seconds_total",
          "trueidle_fleet_reported_idle_seconds_total",
          "trueidle_fleet_reported_busy_seconds_total",
          "trueidle_fleet_real_busy_seconds_total",
        ])
          expect(families, f).toContain(f);
      }
    });

    afterAll(async () => {
      await fleet?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("loads every rule healthy, and every recording rule records the ratios the scenario implies", async () => {
      const records = ruleNames(RULES, "record");
      // Several windows behind every GPU, and every ratio rule evaluated on them.
      // Each group holds 3 or 4 GPUs: at least 6 s of each behind it.
      await prom.waitFor("min(trueidle_fleet_observed_seconds_total)", (r) => (r[0]?.value ?? 0) >= 24, 60_000);
      const fleetRatios = records.filter((r) => r.startsWith("job:"));
      await prom.waitFor(
        fleetRatios.map((r) => `count(${r})`).join(" + "),
        (r) => r[0]?.value === fleetRatios.length,
        30_000,
      );

      const res = await fetch(`${prom.url}/api/v1/rules`);
      const groups = ((await res.json()) as RulesApi).data.groups;
      const loaded = groups.flatMap((g) => g.rules);
      expect(
        loaded.filter((r) => r.health !== "ok").map((r) => `${r.name}: ${r.health} ${r.lastError ?? ""}`),
        prom.logs(),
      ).toEqual([]);
      expect(
        loaded
          .filter((r) => r.type === "recording")
          .map((r) => r.name)
          .sort(),
      ).toEqual([...records].sort());
      expect(
        loaded
          .filter((r) => r.type === "alerting")
          .map((r) => r.name)
          .sort(),
      ).toEqual(ruleNames(ALERTS, "alert").sort());

      // Read each group's series at one of its evaluations: half a second after the sample of
      // the group's last rule, every rule before it has a sample at that same instant and the
      // group's next evaluation (1 s later) has not happened yet. Groups run on their own.
      const series = new Map<string, Array<{ labels: Record<string, string>; value: number }>>();
      for (const g of groups.filter((g) => g.rules.every((r) => r.type === "recording"))) {
        // On a loaded machine an evaluation can run late or take long: take an instant at which
        // every rule of the group carries the same evaluation's sample, retrying until one does.
        let at = 0;
        for (let attempt = 0; ; attempt++) {
          const [last] = await prom.query(`timestamp(${g.rules[g.rules.length - 1]!.name})`);
          at = last!.value * 1000 + 500;
          const stamps = new Set<number>();
          // Early on a site's rate can still be 0 over the range (no sample then): wait until
          // every rule has a series for each site (site_model:) or for the fleet (job:).
          let complete = true;
          for (const { name } of g.rules) {
            const got = await prom.query(`timestamp(${name})`, at);
            for (const x of got) stamps.add(x.value);
            if (name.startsWith("job:") ? got.length !== 1 : got.length < expected.length) complete = false;
          }
          if (complete && stamps.size === 1 && stamps.has(last!.value)) break;
          if (attempt >= 20)
            throw new Error(
              `group ${g.name}: no instant where every rule has all its series from one evaluation; timestamps ${[...stamps].join(", ")}`,
            );
          await new Promise((r) => setTimeout(r, 300));
        }
        for (const { name } of g.rules) {
          const got = await prom.query(name, at);
          expect(got.length, `${name} has data`).toBeGreaterThan(0);
          series.set(
            name,
            got.map((s) => ({ labels: s.metric, value: s.value })),
          );
        }
      }
      expect([...series.keys()].sort()).toEqual([...records].sort());
      const one = (name: string, site?: string): number => {
        const got = series.get(name)!.filter((s) => site === undefined || s.labels["site"] === site);
        expect(got, `${name}${site ? ` for site ${site}` : ""}`).toHaveLength(1);
        return got[0]!.value;
      };

      for (const w of ["5m", "1h"]) {
        for (const e of expected) {
          const bySite = series
            .get(`site_model:trueidle_real_idle:ratio_rate${w}`)!
            .find((s) => s.labels["site"] === e.site)!;
          expect(bySite.labels, `labels of site ${e.site}`).toEqual({
            __name__: `site_model:trueidle_real_idle:ratio_rate${w}`,
            job: "test",
            site: e.site,
            model: e.model,
          });
          expect(one(`site_model:trueidle_real_idle:ratio_rate${w}`, e.site), `real idle ${w} ${e.site}`).toBeCloseTo(
            e.real,
            9,
          );
          expect(
            one(`site_model:trueidle_reported_idle:ratio_rate${w}`, e.site),
            `reported idle ${w} ${e.site}`,
          ).toBeCloseTo(e.reported, 9);
          expect(
            one(`site_model:trueidle_hidden_idle:ratio_rate${w}`, e.site),
            `hidden idle ${w} ${e.site}`,
          ).toBeCloseTo(e.hidden, 9);
          expect(
            one(`site_model:trueidle_fleet_real_idle:ratio_rate${w}`, e.site),
            `roll-up real idle ${w} ${e.site}`,
          ).toBeCloseTo(e.real, 9);
          expect(
            one(`site_model:trueidle_gpu_real_idle_seconds:rate${w}`, e.site) /
              one(`site_model:trueidle_gpu_observed_seconds:rate${w}`, e.site),
          ).toBeCloseTo(e.real, 9);
        }
        // The fleet: both collectors' GPUs, each site weighted by its observed seconds.
        const obs = expected.map((e) => one(`site_model:trueidle_gpu_observed_seconds:rate${w}`, e.site));
        const weighted = (k: "real" | "reported", weights: readonly number[] = obs): number =>
          expected.reduce((sum, e, i) => sum + e[k] * weights[i]!, 0) / weights.reduce((a, b) => a + b, 0);
        // The fleet roll-up's ratio weighs each site by its state seconds, as its rule does:
        // rate() extrapolates each state's series on its own (a state's series starts when a
        // GPU first enters it), so early on they need not add up to the observed seconds' rate.
        const stateObs = expected.map((e) => one(`site_model:trueidle_fleet_state_seconds:rate${w}`, e.site));
        const real = one(`job:trueidle_real_idle:ratio_rate${w}`);
        const reported = one(`job:trueidle_reported_idle:ratio_rate${w}`);
        expect(real, `fleet real idle ${w}`).toBeCloseTo(weighted("real"), 9);
        expect(reported, `fleet reported idle ${w}`).toBeCloseTo(weighted("reported"), 9);
        expect(one(`job:trueidle_hidden_idle:ratio_rate${w}`), `fleet hidden idle ${w}`).toBeCloseTo(
          real - reported,
          12,
        );
        expect(one(`job:trueidle_fleet_real_idle:ratio_rate${w}`), `fleet roll-up real idle ${w}`).toBeCloseTo(
          weighted("real", stateObs),
          9,
        );
        for (const v of [real, reported]) {
          expect(v).toBeGreaterThanOrEqual(0);
          expect(v).toBeLessThanOrEqual(1);
        }
        // Strictly between the sites: both collectors count.
        expect(real).toBeGreaterThan(Math.min(...expected.map((e) => e.real)));
        expect(real).toBeLessThan(Math.max(...expected.map((e) => e.real)));
      }
    });

    it("answers the README's PromQL example in this mode, between the sites' real idle ratios", async () => {
      const readme = readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
      const block = /```promql\n([\s\S]*?)```/.exec(readme);
      expect(block, "a promql block in README.md").not.toBeNull();
      const expr = block![1]!.trim();
      await prom.waitFor("min(trueidle_fleet_observed_seconds_total)", (r) => (r[0]?.value ?? 0) >= 24, 60_000);
      const got = await prom.query(expr);
      expect(got, expr).toHaveLength(1);
      const v = got[0]!.value;
      // Both collectors' GPUs count: the fleet lies between its sites.
      expect(v).toBeGreaterThan(Math.min(...expected.map((e) => e.real)) - 1e-9);
      expect(v).toBeLessThan(Math.max(...expected.map((e) => e.real)) + 1e-9);
    });

    it("puts the GPU alerts pending for the GPUs the scenario implies", async () => {
      const want = [
        "TrueidleGpuHeldIdle prom-h1/2",
        "TrueidleGpuPhantomBusy prom-h1/1",
        "TrueidleGpuUnavailable prom-h2/1",
      ];
      const key = (m: Record<string, string>): string => `${m["alertname"]} ${m["host"]}/${m["gpu"]}`;
      if (!perGpu) {
        // Without per-GPU series there is nothing for them to read; the rules above still work.
        await prom.waitFor("count(trueidle_fleet_gpus)", (r) => (r[0]?.value ?? 0) > 0, 30_000);
        expect(await prom.query('{__name__=~"trueidle_gpu_.*"}')).toEqual([]);
        expect(await prom.query("ALERTS")).toEqual([]);
        return;
      }
      const got = await prom.waitFor('ALERTS{alertstate="pending"}', (r) => r.length === want.length, 30_000);
      expect(got.map((s) => key(s.metric)).sort()).toEqual(want);
      const firing = await prom.query('ALERTS{alertstate="firing"}');
      expect(firing.map((s) => key(s.metric))).toEqual([]);
    });

    it("TrueidleOwnerHoldsGpuIdle, its 4 hours made 5 seconds, names the pod and the job holding idle GPUs, not the owners of busy or lost GPUs", async () => {
      // The scenario's owners: pod research/notebook-b holds prom-h1/2 (held_idle), job 4242 of
      // alice prom-h1/1 (busy_phantom); pod ml/train-a and job 77 of bob hold active GPUs and
      // pod ml/lost-c an unavailable one. The collectors export owners as the alert reads them.
      const rules = (
        YAML.parse(readFileSync(ALERTS, "utf8")) as {
          groups: Array<{ rules: Array<{ alert?: string; expr: string }> }>;
        }
      ).groups.flatMap((g) => g.rules);
      const expr = rules.find((r) => r.alert === "TrueidleOwnerHoldsGpuIdle")!.expr;
      expect(expr.match(/>= 4 \* 3600/g)).toHaveLength(1);
      expect(expr.match(/offset 4h\b/g)).toHaveLength(1);
      const short = expr.replace(">= 4 * 3600", ">= 5").replace(/offset 4h\b/, "offset 5s");
      const key = (m: Record<string, string>): string => `${m["host"]}/${m["gpu"]}`;
      if (!perGpu) {
        expect(await prom.query(short)).toEqual([]);
        return;
      }
      const got = await prom.waitFor(short, (r) => r.length >= 2, 30_000);
      const gpu = (index: number) => ({
        job: "test",
        host: "prom-h1",
        gpu: String(index),
        uuid: fleetGpuUuid("prom-h1", index),
        model: "NVIDIA H100 80GB HBM3",
        site: "lab-a",
        pool: "training",
      });
      expect(got.map((s) => s.metric).sort((a, b) => key(a).localeCompare(key(b)))).toEqual([
        { ...gpu(1), exported_job: "4242", user: "alice" },
        { ...gpu(2), namespace: "research", pod: "notebook-b", container: "jupyter" },
      ]);
      // The value is the GPU's idle streak.
      for (const s of got) expect(s.value).toBeGreaterThanOrEqual(5);
      // As shipped (4 hours), nothing here is old enough.
      expect(await prom.query(expr)).toEqual([]);
    });
  },
);
