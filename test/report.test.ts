/**
 * `trueidle report` against a real InfluxDB (Debian influxd on loopback). The data is a
 * hand-built scenario written straight in line protocol with the schema of DESIGN.md —
 * raw windows in `gpu_window` and their hourly sums in `gpu_hour` — so this test depends on
 * nothing but the schema. Every expected figure below is worked out by hand in comments.
 *
 * Scenario: 48 whole hours from T0 (00:00 UTC three days ago, inside the 30-day raw
 * retention). Six GPUs, two sites × two models; every hour of every GPU is written as six
 * 600-second windows, so the hourly sums are exact in floating point.
 *
 *  GPU  site     model  per hour (seconds)                                            reported idle  real busy
 *  E1   eu-west  H100   active 1800, busy_phantom 1200, held_idle 600                 600            1200
 *  E2   eu-west  H100   hours 0-11 of each day: active 3600; hours 12-23: free_idle    0              3000 / 0
 *                       3600 (persistence mode off: reads busy)
 *  E3   eu-west  L40S   free_idle 3600; NO DATA in hours 4-11 (40 hours of 48)          3600           0
 *  U1   HOSTILE  H100   held_idle 2400, active 1200                                   2400           900
 *  U2   HOSTILE  H100   unavailable 600, active 3000                                  0              2700
 *  U3   HOSTILE  L40S   busy_phantom 3600                                             0              180
 *
 * HOSTILE is a site name with a space, a comma, quotes, `=`, `<b>`, `&` and non-ASCII, to
 * prove line-protocol tags, CSV quoting and HTML escaping on the way out.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { influxQuery, startInfluxd, type PrivateInfluxd } from "./helpers/influxdb.js";
import { freePort } from "./helpers/ports.js";
import { runTrueidle } from "./helpers/trueidle-process.js";
import { buildReport, type BuildReportOptions } from "../report/report.js";
import { rollup } from "../collector/influx/schema.js";
import { resolveRange } from "../report/time-range.js";
import type { CapacityReport, Figures } from "../report/capacity.js";

const HOUR = 3_600_000;
const DAY = 86_400_000;
const T0 = Math.floor(Date.now() / DAY) * DAY - 3 * DAY;
const T1 = T0 + 48 * HOUR;
const iso = (ms: number): string => new Date(ms).toISOString().replace(".000Z", "Z");
const HOSTILE = 'us east, "δ" <b>&x=1';

type Field =
  | "observed_s"
  | "free_idle_s"
  | "held_idle_s"
  | "busy_phantom_s"
  | "active_s"
  | "unavailable_s"
  | "reported_idle_s"
  | "reported_busy_s"
  | "real_busy_s";
type Hour = Partial<Record<Field, number>>;
interface Gpu {
  uuid: string;
  host: string;
  gpu: number;
  model: string;
  site: string;
  hour: (i: number) => Hour | undefined;
}

const GPUS: Gpu[] = [
  {
    uuid: "GPU-e1",
    host: "eu-a",
    gpu: 0,
    model: "H100",
    site: "eu-west",
    hour: () => ({ active_s: 1800, busy_phantom_s: 1200, held_idle_s: 600, reported_idle_s: 600, real_busy_s: 1200 }),
  },
  {
    uuid: "GPU-e2",
    host: "eu-a",
    gpu: 1,
    model: "H100",
    site: "eu-west",
    hour: (i) => (i % 24 < 12 ? { active_s: 3600, real_busy_s: 3000 } : { free_idle_s: 3600 }),
  },
  {
    uuid: "GPU-e3",
    host: "eu-b",
    gpu: 0,
    model: "L40S",
    site: "eu-west",
    hour: (i) => (i >= 4 && i <= 11 ? undefined : { free_idle_s: 3600, reported_idle_s: 3600 }),
  },
  {
    uuid: "GPU-u1",
    host: "us-a",
    gpu: 0,
    model: "H100",
    site: HOSTILE,
    hour: () => ({ held_idle_s: 2400, active_s: 1200, reported_idle_s: 2400, real_busy_s: 900 }),
  },
  {
    uuid: "GPU-u2",
    host: "us-a",
    gpu: 1,
    model: "H100",
    site: HOSTILE,
    hour: () => ({ unavailable_s: 600, active_s: 3000, real_busy_s: 2700 }),
  },
  {
    uuid: "GPU-u3",
    host: "us-a",
    gpu: 2,
    model: "L40S",
    site: HOSTILE,
    hour: () => ({ busy_phantom_s: 3600, real_busy_s: 180 }),
  },
];

const FIELDS: Field[] = [
  "observed_s",
  "free_idle_s",
  "held_idle_s",
  "busy_phantom_s",
  "active_s",
  "unavailable_s",
  "reported_idle_s",
  "reported_busy_s",
  "real_busy_s",
];
const STATES: Field[] = ["free_idle_s", "held_idle_s", "busy_phantom_s", "active_s", "unavailable_s"];

/** Line-protocol tag escaping: comma, space and = get a backslash. */
const tag = (v: string): string => v.replace(/[, =]/g, (c) => `\\${c}`);

function point(measurement: string, g: Gpu, h: Hour, scale: number, ms: number, extra = ""): string {
  const full: Record<Field, number> = Object.fromEntries(FIELDS.map((f) => [f, (h[f] ?? 0) / scale])) as Record<
    Field,
    number
  >;
  full.observed_s = STATES.reduce((s, f) => s + (h[f] ?? 0), 0) / scale;
  full.reported_busy_s = (full.observed_s - full.reported_idle_s) * 0.9;
  const fields = FIELDS.map((f) => `${f}=${full[f]}`).join(",") + extra;
  return `${measurement},host=${tag(g.host)},gpu=${g.gpu},uuid=${tag(g.uuid)},model=${tag(g.model)},site=${tag(g.site)} ${fields} ${ms}`;
}

/** Every hour as six 600-s windows in gpu_window, and (unless windowsOnly) its sum in gpu_hour. */
function scenarioLines(windowsOnly: boolean): { windows: string[]; hours: string[] } {
  const windows: string[] = [];
  const hours: string[] = [];
  for (const g of GPUS) {
    for (let i = 0; i < 48; i++) {
      const h = g.hour(i);
      if (!h) continue;
      const t = T0 + i * HOUR;
      for (let w = 0; w < 6; w++)
        windows.push(point("gpu_window", g, h, 6, t + w * 600_000, ",power_w=100,processes_max=1i"));
      if (!windowsOnly) hours.push(point("gpu_hour", g, h, 1, t, ",windows=6i"));
    }
  }
  return { windows, hours };
}

async function write(url: string, db: string, rp: string, lines: string[]): Promise<void> {
  const res = await fetch(`${url}/write?db=${encodeURIComponent(db)}&rp=${rp}&precision=ms`, {
    method: "POST",
    body: lines.join("\n"),
  });
  if (res.status !== 204) throw new Error(`write to ${db}.${rp} failed: ${res.status} ${await res.text()}`);
}

async function createSchema(url: string, db: string): Promise<void> {
  await influxQuery(url, `CREATE DATABASE "${db}" WITH DURATION 30d REPLICATION 1 NAME "gpu_window"`);
  await influxQuery(url, `CREATE RETENTION POLICY "gpu_hour" ON "${db}" DURATION 730d REPLICATION 1`);
}

let influx: PrivateInfluxd;
let dir: string;

beforeAll(async () => {
  influx = await startInfluxd();
  dir = mkdtempSync(path.join(tmpdir(), "trueidle-report-test-"));
  await createSchema(influx.url, "trueidle");
  const full = scenarioLines(false);
  await write(influx.url, "trueidle", "gpu_window", full.windows);
  await write(influx.url, "trueidle", "gpu_hour", full.hours);
  // A database whose roll-ups never ran: auto must fall back to the raw windows.
  await createSchema(influx.url, "windows_only");
  await write(influx.url, "windows_only", "gpu_window", scenarioLines(true).windows);
});

afterAll(async () => {
  await influx?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function opts(extra: Partial<BuildReportOptions> = {}): BuildReportOptions {
  return {
    influxUrl: `${influx.url}/trueidle`,
    range: { startMs: T0, endMs: T1 },
    by: ["site", "model"],
    pricePerGpuHour: 2.5,
    ...extra,
  };
}

type Expected = Omit<Figures, never>;

/** The hand computation (see the scenario table). */
const EXPECTED: Array<{ key: Record<string, string>; f: Expected }> = [
  {
    key: { site: "eu-west", model: "H100" },
    // E1+E2: 96 GPU-hours of 96. Reported idle: E1 600 s/h of 7200 = 1/12. Real idle: E1 1800×48 + E2 3600×24
    // = 172800 of 345600 s = 50 %. Real busy: E1 1200×48 + E2 3000×24 = 129600 → unused 1 − 0.375.
    // Hourly idle GPU-eq: 0.5 (day hours), 1.5 (night hours); 5th percentile (rank ⌈2.4⌉ = 3 of 48) = 0.5.
    f: {
      gpus: 2,
      gpuHoursObserved: 96,
      coveragePct: 100,
      reportedIdlePct: 100 / 12,
      realIdlePct: 50,
      hiddenIdlePct: 50 - 100 / 12,
      realIdleGpuHours: 48,
      heldIdleGpuHours: 8,
      phantomBusyGpuHours: 16,
      unusedCapacityPct: 62.5,
      reclaimableGpus: 0.5,
      hoursWithData: 48,
      idleCost: 120,
    },
  },
  {
    key: { site: "eu-west", model: "L40S" },
    // E3 alone, 40 of 48 hours: coverage 40/48. The 8 hours without data are not counted, so every
    // counted hour has 1 idle GPU and the 5th percentile is 1.
    f: {
      gpus: 1,
      gpuHoursObserved: 40,
      coveragePct: (100 * 40) / 48,
      reportedIdlePct: 100,
      realIdlePct: 100,
      hiddenIdlePct: 0,
      realIdleGpuHours: 40,
      heldIdleGpuHours: 0,
      phantomBusyGpuHours: 0,
      unusedCapacityPct: 100,
      reclaimableGpus: 1,
      hoursWithData: 40,
      idleCost: 100,
    },
  },
  {
    key: { site: HOSTILE, model: "H100" },
    // U1+U2: real idle = U1 held 2400 of 7200 s/h = 1/3, reported the same; real busy 900+2700 = 3600 of 7200.
    // Every hour 2400/3600 = 2/3 GPU idle.
    f: {
      gpus: 2,
      gpuHoursObserved: 96,
      coveragePct: 100,
      reportedIdlePct: 100 / 3,
      realIdlePct: 100 / 3,
      hiddenIdlePct: 0,
      realIdleGpuHours: 32,
      heldIdleGpuHours: 32,
      phantomBusyGpuHours: 0,
      unusedCapacityPct: 50,
      reclaimableGpus: 2 / 3,
      hoursWithData: 48,
      idleCost: 80,
    },
  },
  {
    key: { site: HOSTILE, model: "L40S" },
    // U3: phantom busy all the time: reported idle 0, real idle 100, real busy 180 of 3600 → unused 95 %.
    f: {
      gpus: 1,
      gpuHoursObserved: 48,
      coveragePct: 100,
      reportedIdlePct: 0,
      realIdlePct: 100,
      hiddenIdlePct: 100,
      realIdleGpuHours: 48,
      heldIdleGpuHours: 0,
      phantomBusyGpuHours: 48,
      unusedCapacityPct: 95,
      reclaimableGpus: 1,
      hoursWithData: 48,
      idleCost: 120,
    },
  },
];
// Fleet: 6 GPUs, 96+40+96+48 = 280 GPU-hours of 6×48 = 288. Reported idle 28800+144000+115200+0 = 288000 s of
// 1008000 = 2/7; real idle 172800+144000+115200+172800 = 604800 s = 60 %. Real busy 129600+0+172800+8640 = 311040
// → unused 1 − 311040/1008000. Hourly idle GPU-eq: E1 0.5 + E2 (0 day / 1 night) + E3 (1, or 0 in hours 4-11)
// + U1 2/3 + U3 1: hours 4-11 → 13/6 (8 hours), other day hours → 19/6 (16), night hours → 25/6 (24);
// the 3rd lowest of 48 is 13/6.
const EXPECTED_TOTAL: Expected = {
  gpus: 6,
  gpuHoursObserved: 280,
  coveragePct: (100 * 280) / 288,
  reportedIdlePct: (100 * 2) / 7,
  realIdlePct: 60,
  hiddenIdlePct: 60 - (100 * 2) / 7,
  realIdleGpuHours: 168,
  heldIdleGpuHours: 40,
  phantomBusyGpuHours: 64,
  unusedCapacityPct: 100 * (1 - 311040 / 1008000),
  reclaimableGpus: 13 / 6,
  hoursWithData: 48,
  idleCost: 420,
};

function expectFigures(actual: Figures, expected: Expected, what: string): void {
  for (const [k, v] of Object.entries(expected) as Array<[keyof Figures, number | null]>) {
    if (v === null) expect(actual[k], `${what} ${k}`).toBeNull();
    else expect(actual[k], `${what} ${k}`).toBeCloseTo(v, 9);
  }
}

/** Two reports agree to 9 decimal places in every number, and exactly in everything else. */
function expectSameReport(a: unknown, b: unknown, where = "report"): void {
  if (typeof a === "number" && typeof b === "number") {
    expect(a, where).toBeCloseTo(b, 9);
  } else if (Array.isArray(a) && Array.isArray(b)) {
    expect(a.length, `${where}.length`).toBe(b.length);
    for (const [i, x] of a.entries()) expectSameReport(x, b[i], `${where}[${i}]`);
  } else if (a !== null && b !== null && typeof a === "object" && typeof b === "object") {
    expect(Object.keys(a).sort(), where).toEqual(Object.keys(b).sort());
    for (const k of Object.keys(a))
      expectSameReport((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${where}.${k}`);
  } else {
    expect(a, where).toEqual(b);
  }
}

function withoutSource(r: CapacityReport): Omit<CapacityReport, "measurement" | "measurementReason"> {
  const { measurement: _m, measurementReason: _r, ...rest } = r;
  return rest;
}

describe("trueidle report on a hand-computed scenario in a real InfluxDB", () => {
  it("gives every figure of the hand computation, per group and for the fleet (gpu_hour)", async () => {
    const r = await buildReport(opts({ measurement: "gpu_hour" }));
    expect(r.measurement).toBe("gpu_hour");
    expect(r.hours).toBe(48);
    expect(r.groups.map((g) => g.key)).toEqual(EXPECTED.map((e) => e.key));
    for (const [i, e] of EXPECTED.entries()) expectFigures(r.groups[i]!, e.f, JSON.stringify(e.key));
    expectFigures(r.total, EXPECTED_TOTAL, "fleet");

    // Daily series: day 1 holds hours 0-23, day 2 hours 24-47.
    expect(r.daily.days).toEqual([T0, T0 + DAY]);
    expect(r.daily.groups[0]!.realIdlePct).toEqual([50, 50]);
    expect(r.daily.groups[0]!.reportedIdlePct.map((x) => x!.toFixed(9))).toEqual([
      (100 / 12).toFixed(9),
      (100 / 12).toFixed(9),
    ]);
    // Fleet active seconds on day 1: E1 1800×24 + E2 3600×12 + U1 1200×24 + U2 3000×24.
    expect(r.daily.fleetStateSeconds.active[0]).toBe(187_200);
    // free_idle on day 1: E2 3600×12 + E3 3600×16 (hours 4-11 missing).
    expect(r.daily.fleetStateSeconds.free_idle[0]).toBe(43_200 + 57_600);
    expect(r.daily.fleetStateSeconds.unavailable).toEqual([600 * 24, 600 * 24]);
  });

  it("gives the same report from the raw gpu_window points as from the gpu_hour roll-ups", async () => {
    const hour = await buildReport(opts({ measurement: "gpu_hour" }));
    const win = await buildReport(opts({ measurement: "gpu_window" }));
    expect(win.measurement).toBe("gpu_window");
    expectSameReport(withoutSource(win), withoutSource(hour));
    // The same on a 24-hour range, which auto reads from gpu_window, and grouped by host.
    const day = { startMs: T0 + 6 * HOUR, endMs: T0 + 30 * HOUR };
    const autoDay = await buildReport(opts({ range: day, by: ["host"] }));
    expect(autoDay.measurement).toBe("gpu_window");
    expect(autoDay.groups.map((g) => g.key["host"])).toEqual(["eu-a", "eu-b", "us-a"]);
    expectSameReport(
      withoutSource(autoDay),
      withoutSource(await buildReport(opts({ range: day, by: ["host"], measurement: "gpu_hour" }))),
    );
  });

  it("reads gpu_hour for 48 hours or more, and falls back to gpu_window where no roll-up exists", async () => {
    expect((await buildReport(opts())).measurement).toBe("gpu_hour");
    const fallback = await buildReport(opts({ influxUrl: `${influx.url}/windows_only` }));
    expect(fallback.measurement).toBe("gpu_window");
    expect(fallback.measurementReason).toMatch(/gpu_hour holds no roll-up/);
    expectSameReport(withoutSource(fallback), withoutSource(await buildReport(opts({ measurement: "gpu_hour" }))));
  });

  it("reads fleet_hour, rolled up from gpu_hour, for 48 hours or more by fleet keys: the same report, every figure of the hand computation", async () => {
    // The same scenario in a database of its own, rolled up by the product's own roll-up
    // (gpu_window → gpu_hour → fleet_hour, by the tag keys the GPUs carry: model, site).
    const db = "fleet";
    await createSchema(influx.url, db);
    await write(influx.url, db, "gpu_window", scenarioLines(true).windows);
    const written = await rollup({ baseUrl: influx.url, database: db }, T0, T1);
    expect(written.gpuHours).toBe(6 * 48 - 8);
    expect(written.fleetHours).toBe(4 * 48 - 8); // (site, model) pairs × hours; eu-west L40S (E3) lacks 8 hours
    const url = `${influx.url}/${db}`;
    const fleet = await buildReport(opts({ influxUrl: url }));
    expect(fleet.measurement).toBe("fleet_hour");
    expect(fleet.measurementReason).toBe(
      "fleet_hour, GPUs counted from gpu_hour: it holds the range, grouped by every --by key",
    );
    for (const [i, e] of EXPECTED.entries()) expectFigures(fleet.groups[i]!, e.f, JSON.stringify(e.key));
    expectFigures(fleet.total, EXPECTED_TOTAL, "fleet");
    expectSameReport(withoutSource(fleet), withoutSource(await buildReport(opts())));
    expectSameReport(
      withoutSource(fleet),
      withoutSource(await buildReport(opts({ influxUrl: url, measurement: "gpu_window" }))),
    );
    const byModel = await buildReport(opts({ influxUrl: url, by: ["model"] }));
    expect(byModel.measurement).toBe("fleet_hour");
    expectSameReport(withoutSource(byModel), withoutSource(await buildReport(opts({ by: ["model"] }))));

    // --by a key that names single GPUs: gpu_hour, saying why.
    const byHost = await buildReport(opts({ influxUrl: url, by: ["host"] }));
    expect(byHost.measurement).toBe("gpu_hour");
    expect(byHost.measurementReason).toMatch(/--by host names single GPUs, which fleet_hour does not keep apart/);
    expectSameReport(withoutSource(byHost), withoutSource(await buildReport(opts({ by: ["host"] }))));
    await expect(buildReport(opts({ influxUrl: url, by: ["host"], measurement: "fleet_hour" }))).rejects.toThrow(
      /--measurement fleet_hour: --by host names single GPUs/,
    );

    // A fleet_hour that does not reach back to the range's start yet (its back-fill under
    // way): gpu_hour, with the same figures.
    await influxQuery(influx.url, `DELETE FROM "fleet_hour" WHERE time < ${T0 + 24 * HOUR}ms`, db);
    const partial = await buildReport(opts({ influxUrl: url }));
    expect(partial.measurement).toBe("gpu_hour");
    expect(partial.measurementReason).toMatch(
      new RegExp(`fleet_hour reaches back only to ${iso(T0 + 24 * HOUR)} \\(the collector rolls it up from gpu_hour`),
    );
    expectSameReport(withoutSource(partial), withoutSource(fleet));
    // …but a range within its reach reads it.
    const within = { startMs: T0 + 24 * HOUR, endMs: T1 };
    const second = await buildReport(opts({ influxUrl: url, range: within, measurement: "fleet_hour" }));
    expect(second.measurement).toBe("fleet_hour");
    expectSameReport(
      withoutSource(second),
      withoutSource(await buildReport(opts({ range: within, measurement: "gpu_hour" }))),
    );
  });

  it("ends a default --until now with the hour in progress, from the raw windows, marked partial; the last hours too come from gpu_window", async () => {
    // Fifty hours of two GPUs up to a minute ago. The roll-ups hold all but the last two
    // hours, as a collector's continuous queries would leave them at worst.
    const db = "now";
    await createSchema(influx.url, db);
    const now = Date.now();
    const thisHour = Math.floor(now / HOUR) * HOUR;
    const lines: string[] = [];
    for (let t = thisHour - 49 * HOUR; t + 600_000 <= now - 60_000; t += 600_000) {
      const i = Math.floor((t - (thisHour - 49 * HOUR)) / HOUR);
      for (const g of [GPUS[0]!, GPUS[1]!])
        lines.push(point("gpu_window", g, g.hour(i)!, 6, t, ",power_w=100,processes_max=1i"));
    }
    await write(influx.url, db, "gpu_window", lines);
    await rollup({ baseUrl: influx.url, database: db }, thisHour - 49 * HOUR, thisHour - HOUR);
    const url = `${influx.url}/${db}`;
    const range = resolveRange("49h", undefined, now);
    expect(range).toEqual({ startMs: thisHour - 49 * HOUR, endMs: Math.floor(now / 1000) * 1000 });

    const r = await buildReport(opts({ influxUrl: url, range, by: ["model"], nowMs: now }));
    expect(r.measurement).toBe("fleet_hour");
    expect(r.measurementReason).toBe(
      `fleet_hour, GPUs counted from gpu_hour: it holds the range, grouped by every --by key; gpu_window from ${iso(thisHour - HOUR)}, the hours the roll-ups may not hold yet`,
    );
    expect(r.partialFromMs).toBe(thisHour);
    // A day reads fleet_hour too, with the same figures as the raw windows.
    const day = resolveRange("24h", undefined, now);
    const dayReport = await buildReport(opts({ influxUrl: url, range: day, by: ["model"], nowMs: now }));
    expect(dayReport.measurement).toBe("fleet_hour");
    expectSameReport(
      withoutSource(dayReport),
      withoutSource(
        await buildReport(opts({ influxUrl: url, range: day, by: ["model"], nowMs: now, measurement: "gpu_window" })),
      ),
    );
    // Every window written counts, the last two hours' too: 600 s each.
    expect(r.total.gpuHoursObserved).toBeCloseTo((lines.length * 600) / 3600, 9);
    expect(r.total.gpus).toBe(2);
    expect(r.total.hoursWithData).toBe(thisHour + 600_000 + 60_000 <= now ? 50 : 49);
    // The same from the raw windows alone.
    expectSameReport(
      withoutSource(r),
      withoutSource(
        await buildReport(opts({ influxUrl: url, range, by: ["model"], nowMs: now, measurement: "gpu_window" })),
      ),
    );

    // Right after an install, `--since 1h` shows what the collector wrote, the hour in progress marked partial.
    const jsonFile = path.join(dir, "now.json");
    const cli = await runTrueidle([
      "report",
      "--influx-url",
      url,
      "--since",
      "1h",
      "--by",
      "model",
      "--format",
      "json",
      "--out",
      jsonFile,
    ]);
    expect(cli.code, cli.output).toBe(0);
    const doc = JSON.parse(readFileSync(jsonFile, "utf8")) as {
      range: { partial_from: string | null };
      measurement: string;
      total: { gpus: number };
    };
    expect(doc.measurement).toBe("gpu_window");
    expect(doc.total.gpus).toBe(2);
    expect(doc.range.partial_from).toBe(iso(Math.floor(Date.now() / HOUR) * HOUR));
    const table = await runTrueidle(["report", "--influx-url", url, "--since", "1h", "--by", "model"]);
    expect(table.code, table.output).toBe(0);
    expect(table.output).toMatch(/\(1 hours \+ the hour in progress, PARTIAL\)/);
    expect(table.output).toContain("PARTIAL: the range ends with the hour in progress");
  });

  it("runs as `trueidle report`: JSON and CSV parse back to the same figures, the table names every group, progress stays on stderr", async () => {
    const common = [
      "report",
      "--influx-url",
      `${influx.url}/trueidle`,
      "--since",
      iso(T0),
      "--until",
      iso(T1),
      "--by",
      "site,model",
      "--price-per-gpu-hour",
      "2.5",
    ];
    const jsonFile = path.join(dir, "r.json");
    const j = await runTrueidle([...common, "--format", "json", "--out", jsonFile, "--progress"]);
    expect(j.code, j.output).toBe(0);
    expect(j.output).toContain("report: 100% (2/2 days)");
    const doc = JSON.parse(readFileSync(jsonFile, "utf8")) as {
      range: { start: string; end: string; hours: number };
      measurement: string;
      price_per_gpu_hour: number;
      groups: Array<Record<string, unknown> & { key: Record<string, string> }>;
      total: Record<string, number>;
    };
    expect(doc.range).toEqual({ start: iso(T0), end: iso(T1), hours: 48, partial_from: null });
    expect(doc.measurement).toBe("gpu_hour");
    expect(doc.price_per_gpu_hour).toBe(2.5);
    expect(doc.groups.map((g) => g.key)).toEqual(EXPECTED.map((e) => e.key));
    expect(doc.total["reclaimable_gpus"]).toBeCloseTo(13 / 6, 9);
    expect(doc.total["coverage_pct"]).toBeCloseTo((100 * 280) / 288, 9);
    expect(doc.groups[1]!["hours_with_data"]).toBe(40);
    expect(doc.groups[3]!["hidden_idle_pct"]).toBeCloseTo(100, 9);

    const csvFile = path.join(dir, "r.csv");
    const c = await runTrueidle([...common, "--format", "csv", "--out", csvFile]);
    expect(c.code, c.output).toBe(0);
    expect(c.output).not.toContain("report: 100%"); // stderr is not a terminal and --progress was not given
    const csv = parseCsv(readFileSync(csvFile, "utf8"));
    const header = csv[0]!;
    expect(header.slice(0, 4)).toEqual(["scope", "site", "model", "gpus"]);
    expect(csv.length).toBe(1 + 4 + 1);
    const figures = header.slice(3).filter((h) => !h.startsWith("owner_") && h !== "partial");
    expect(header.slice(3 + figures.length)).toEqual([
      "owner_namespace",
      "owner_pod",
      "owner_job",
      "owner_user",
      "partial",
    ]);
    for (let i = 0; i < 4; i++) {
      const row = Object.fromEntries(header.map((h, k) => [h, csv[i + 1]![k]!]));
      expect(row["scope"]).toBe("group");
      expect({ site: row["site"], model: row["model"] }).toEqual(doc.groups[i]!.key);
      for (const h of figures) expect(Number(row[h]), `${h} of row ${i}`).toBe(doc.groups[i]![h]);
    }
    const fleet = Object.fromEntries(header.map((h, k) => [h, csv[5]![k]!]));
    expect(fleet["scope"]).toBe("fleet");
    for (const h of figures) expect(Number(fleet[h]), h).toBe(doc.total[h]);

    const t = await runTrueidle([...common, "--format", "table"]);
    expect(t.code, t.output).toBe(0);
    const lines = t.output.split("\n");
    const head = lines.findIndex((l) => l.startsWith("SITE"));
    expect(lines[head - 1]).toMatch(/^\s+REPORTED\s+REAL\s+HIDDEN\s+RECLAIMABLE\s+IDLE$/);
    expect(lines[head]).toMatch(/^SITE\s+MODEL\s+GPUS\s+GPU-HOURS\s+COVERAGE\s+IDLE\s+IDLE\s+IDLE\s+GPUS\s+COST$/);
    expect(lines.find((l) => l.startsWith("eu-west") && l.includes("L40S"))).toMatch(
      /\s1\s+40\.0\s+83\.3%\s+100\.0%\s+100\.0%\s+0\.0%/,
    );
    expect(lines.find((l) => l.startsWith(HOSTILE) && l.includes("L40S"))).toMatch(/\+100\.0%/);
    expect(lines.find((l) => l.startsWith("fleet total"))).toMatch(
      /\s6\s+280\.0\s+97\.2%\s+28\.6%\s+60\.0%\s+\+31\.4%.*\s2\.2\s+420\.00$/,
    );
    expect(t.output).toMatch(/Hours without any data are not counted \(whole fleet: 48 of 48 hours had data\)/);
  });

  it("writes one self-contained HTML file with two ECharts SVG charts, the table and escaped group names", async () => {
    const file = path.join(dir, "r.html");
    const h = await runTrueidle([
      "report",
      "--influx-url",
      `${influx.url}/trueidle`,
      "--since",
      iso(T0),
      "--until",
      iso(T1),
      "--by",
      "site,model",
      "--format",
      "html",
      "--out",
      file,
    ]);
    expect(h.code, h.output).toBe(0);
    const html = readFileSync(file, "utf8");
    expect(html.startsWith("<!doctype html>")).toBe(true);
    expect(html.match(/<svg[\s>]/g)?.length).toBe(2);
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?\s*(https?:)?\/\//i);
    expect(html).not.toMatch(/<link\b/i);
    expect(html).not.toMatch(/url\(\s*["']?https?:/i);
    // Chart 1 legend, chart 2 states, the table.
    expect(html).toContain(">eu-west / H100</text>");
    expect(html).toContain(">eu-west / L40S</text>");
    for (const st of ["active", "busy_phantom", "held_idle", "free_idle", "unavailable"])
      expect(html).toContain(`>${st}</text>`);
    expect(html).toContain("<td>eu-west</td>");
    // The hostile site name never appears raw, only escaped (table: &quot;, chart text: ECharts' own escaping).
    expect(html).not.toContain("<b>&x");
    expect(html).toContain("<td>us east, &quot;δ&quot; &lt;b&gt;&amp;x=1</td>");
    expect(html).toContain(">us east, &quot;δ&quot; &lt;b&gt;&amp;x=1 / H100</text>");
  });

  it("fails clearly, with a non-zero exit, when InfluxDB is unreachable, the database is missing, the range is empty or a tag is unknown", async () => {
    const base = ["report", "--since", iso(T0), "--until", iso(T1)];
    const port = await freePort(); // free a moment ago: nothing listens there
    const closed = await runTrueidle([...base, "--influx-url", `http://127.0.0.1:${port}/trueidle`]);
    expect(closed.code).toBe(1);
    expect(closed.output).toContain(
      `cannot reach InfluxDB at http://127.0.0.1:${port} (ECONNREFUSED); check --influx-url and that influxd is running`,
    );

    const missing = await runTrueidle([...base, "--influx-url", `${influx.url}/nosuchdb`]);
    expect(missing.code).toBe(1);
    expect(missing.output).toMatch(
      /database "nosuchdb" does not exist on InfluxDB at .*; the collector creates it when started with --influx-url/,
    );

    const empty = await runTrueidle([
      "report",
      "--influx-url",
      `${influx.url}/trueidle`,
      "--since",
      iso(T0 - 10 * DAY),
      "--until",
      iso(T0 - 9 * DAY),
    ]);
    expect(empty.code).toBe(1);
    expect(empty.output).toMatch(
      /no GPU data in "trueidle" from .* \(read gpu_window: the range is shorter than 48 hours\); widen --since\/--until/,
    );

    const badTag = await runTrueidle([...base, "--influx-url", `${influx.url}/trueidle`, "--by", "site,rack"]);
    expect(badTag.code).toBe(1);
    expect(badTag.output).toMatch(
      /--by "rack": no GPU in "trueidle" has that tag; tags present: gpu, host, model, site, uuid/,
    );

    const noHour = await runTrueidle(["report", "--since", iso(T0), "--until", iso(T0 + 30 * 60_000)]);
    expect(noHour.code).toBe(2);
    expect(noHour.output).toMatch(/hold no whole hour/);

    const badBy = await runTrueidle(["report", "--by", "site,si te,site"]);
    expect(badBy.code).toBe(2);
    expect(badBy.output).toContain(`--by: "si te" is not a tag key (letters, digits, _); site given twice`);
  });

  it("reads credentials as every command does: a file or the environment, not both, and a too-open file is named", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-report-creds-"));
    try {
      const file = path.join(dir, "influx.cred");
      writeFileSync(file, "reader:s3cret-pw\n", { mode: 0o644 });
      chmodSync(file, 0o644);
      const base = ["report", "--influx-url", `${influx.url}/trueidle`, "--since", iso(T0), "--until", iso(T1)];
      const twice = await runTrueidle([...base, "--influx-credentials-file", file], {
        TRUEIDLE_INFLUX_USERNAME: "reader",
        TRUEIDLE_INFLUX_PASSWORD: "other",
      });
      expect(twice.code, twice.output).toBe(1);
      expect(twice.output).toContain(
        `trueidle report: InfluxDB credentials are given both in the environment (TRUEIDLE_INFLUX_USERNAME/PASSWORD) and in --influx-credentials-file ${file}; ` +
          "unset TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD, or drop --influx-credentials-file",
      );
      // This InfluxDB has no auth, so it ignores the credentials: the report runs, the warning comes first.
      const open = await runTrueidle([...base, "--influx-credentials-file", file, "--format", "csv"]);
      expect(open.code, open.output).toBe(0);
      expect(open.output).toContain(
        `report: the InfluxDB credentials file is too open: ${file} (--influx-credentials-file) is readable by every user; chmod 640 or 600 it.`,
      );
      expect(twice.output + open.output).not.toContain("s3cret-pw");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** RFC 4180 parser: quoted fields, doubled quotes, CRLF records. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        field += ch;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === ",") {
      row.push(field);
      field = "";
    } else if (ch === "\r" && text[i + 1] === "\n") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      i++;
    } else {
      field += ch;
    }
  }
  if (field !== "" || row.length > 0) rows.push([...row, field]);
  return rows;
}
