/**
 * `trueidle demo --backfill` against a real InfluxDB (Debian's influxd on loopback).
 *
 * A 2-day backfill of a 4-host fleet (32 GPUs) ending on a Thursday 00:00 UTC, so the
 * range holds two whole weekdays of office hours and nights in every site's time zone.
 * What it must leave: one point per GPU window with the collector's tags; gpu_hour sums
 * equal to gpu_window sums; office hours busier than nights; the idle site mostly idle;
 * the phantom model phantom-busy; the same points after running it again. Then the CLI
 * as a user runs it: `--backfill-only` into an existing server, a backfill that goes on
 * live with the same fleet, and `--keep-data` with the printed way to serve it again.
 */
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { influxQuery, rows, startInfluxd, type PrivateInfluxd } from "./helpers/influxdb.js";
import { REPO_ROOT, runTrueidle, startTrueidle } from "./helpers/trueidle-process.js";
import { runBackfill, type BackfillResult } from "../demo/backfill.js";
import { FleetHistoryModel, HISTORY_FLEET, IDLE_SITE, localTime, PHANTOM_MODEL } from "../demo/fleet-history.js";
import { SECONDS_FIELDS } from "../collector/influx/schema.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const WINDOW = 300_000;
const HOSTS = HISTORY_FLEET.filter((h) =>
  ["gpu-use-t01", "gpu-use-i01", "gpu-euw-t01", "gpu-aps-t01"].includes(h.hostname),
);
const GPUS = HOSTS.length * 8;

/** The latest Thursday 00:00 UTC at least a day ago. */
function lastThursday(now: number): number {
  let d = Math.floor(now / DAY) * DAY - DAY;
  while (new Date(d).getUTCDay() !== 4) d -= DAY;
  return d;
}

const END = lastThursday(Date.now());
const FROM = END - 2 * DAY;
const RANGE = `time >= ${FROM}ms AND time < ${END}ms`;

let influx: PrivateInfluxd;
beforeAll(async () => {
  influx = await startInfluxd();
});
afterAll(async () => {
  await influx?.stop();
});

const target = (database: string) => ({ baseUrl: influx.url, database });
const q = async (db: string, query: string) => rows(await influxQuery(influx.url, query, db));
const num = (v: unknown): number => {
  if (typeof v !== "number") throw new Error(`not a number: ${JSON.stringify(v)}`);
  return v;
};

/** Started as from a shell in the checkout, not through npm (which changes the printed commands). */
const NOT_THROUGH_NPM: NodeJS.ProcessEnv = { npm_command: undefined, npm_package_name: undefined, INIT_CWD: undefined };
const iso = (ms: number): string => new Date(ms).toISOString().replace(".000Z", "Z");

/** Runs a printed command line as a user would paste it, from the checkout. */
function runShell(command: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn("sh", ["-c", command], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...NOT_THROUGH_NPM },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (b: Buffer) => (output += b.toString("utf8")));
    child.stderr.on("data", (b: Buffer) => (output += b.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

function backfill(db: string, extra: Partial<Parameters<typeof runBackfill>[0]> = {}): Promise<BackfillResult> {
  return runBackfill({ target: target(db), durationMs: 2 * DAY, endMs: END, hosts: HOSTS, seed: 1, ...extra });
}

describe("a 2-day backfill of 32 GPUs", () => {
  const DB = "backfill";
  let result: BackfillResult;
  beforeAll(async () => {
    result = await backfill(DB);
  });

  it("writes one gpu_window point per GPU window, tagged as the collector tags them", async () => {
    const windowsPerGpu = (2 * DAY) / WINDOW;
    expect(result).toMatchObject({ hosts: 4, gpus: GPUS, fromMs: FROM, toMs: END, windows: GPUS * windowsPerGpu });
    expect(result.hourPoints).toBe(GPUS * 48);

    const series = await q(
      DB,
      `SELECT count(observed_s) AS n, sum(observed_s) AS observed FROM gpu_window WHERE ${RANGE} GROUP BY host, gpu, uuid, model, site, pool`,
    );
    expect(series).toHaveLength(GPUS);
    const model = new FleetHistoryModel(HOSTS, 1);
    const expected = HOSTS.flatMap((h, i) =>
      model.uuids(i).map((uuid, gpu) => ({
        host: h.hostname,
        gpu: String(gpu),
        uuid,
        model: h.model.name,
        site: h.labels.site,
        pool: h.labels.pool,
      })),
    );
    const got = series.map(({ host, gpu, uuid, model, site, pool }) => ({ host, gpu, uuid, model, site, pool }));
    const key = (x: Record<string, unknown>): string => JSON.stringify(x);
    expect(got.map(key).sort()).toEqual(expected.map(key).sort());
    for (const s of series) {
      expect(s["n"]).toBe(windowsPerGpu);
      // Every 60 s sample stands for 60 s: a window observes 300 s, a GPU 2 days.
      expect(s["observed"]).toBe(2 * 86_400);
    }
    const tagKeys = (await q(DB, "SHOW TAG KEYS FROM gpu_window")).map((r) => r["tagKey"]);
    expect(tagKeys.sort()).toEqual(["gpu", "host", "model", "pool", "site", "uuid"]);
  });

  it("omits power (never 0) in the windows of a lost GPU, and accounts every second to one state", async () => {
    const model = new FleetHistoryModel(HOSTS, 1);
    let lostGpuHours = 0;
    for (let h = 0; h < HOSTS.length; h++) {
      for (let g = 0; g < 8; g++)
        for (let t = FROM; t < END; t += HOUR) if (model.activity(h, g, t) === "lost") lostGpuHours++;
    }
    const [c] = await q(
      DB,
      `SELECT count(observed_s) AS windows, count(power_w) AS with_power, sum(unavailable_s) AS unavailable, min(power_w) AS min_power FROM gpu_window WHERE ${RANGE}`,
    );
    expect(c!["windows"]).toBe(GPUS * 576);
    expect(c!["with_power"]).toBe(GPUS * 576 - lostGpuHours * 12);
    expect(c!["unavailable"]).toBe(lostGpuHours * 3600);
    expect(num(c!["min_power"])).toBeGreaterThan(0);
    const [s] = await q(
      DB,
      `SELECT sum(observed_s) AS o, sum(free_idle_s) AS f, sum(held_idle_s) AS h, sum(busy_phantom_s) AS b, sum(active_s) AS a, sum(unavailable_s) AS u FROM gpu_window WHERE ${RANGE}`,
    );
    expect(num(s!["f"]) + num(s!["h"]) + num(s!["b"]) + num(s!["a"]) + num(s!["u"])).toBeCloseTo(num(s!["o"]), 6);
  });

  it("rolls up into gpu_hour with the same sums as gpu_window, per GPU", async () => {
    const sums = SECONDS_FIELDS.map((f) => `sum(${f}) AS ${f}`).join(", ");
    const raw = await q(
      DB,
      `SELECT ${sums}, count(observed_s) AS windows FROM gpu_window WHERE ${RANGE} GROUP BY uuid`,
    );
    const hour = await q(
      DB,
      `SELECT ${sums}, sum(windows) AS windows, count(observed_s) AS hours FROM gpu_hour.gpu_hour WHERE ${RANGE} GROUP BY uuid`,
    );
    expect(hour).toHaveLength(GPUS);
    const byUuid = new Map(raw.map((r) => [r["uuid"], r]));
    for (const h of hour) {
      const r = byUuid.get(h["uuid"])!;
      expect(h["hours"]).toBe(48);
      expect(h["windows"]).toBe(r["windows"]);
      for (const f of SECONDS_FIELDS) {
        expect(Math.abs(num(h[f]) - num(r[f])), `${f} of ${String(h["uuid"])}`).toBeLessThan(
          1e-6 * Math.max(1, num(r[f])),
        );
      }
    }
    // One hour, one GPU: mean power and max of the maxima, as the continuous query computes them.
    const uuid = String(hour[0]!["uuid"]);
    const at = `time >= ${FROM + 14 * HOUR}ms AND time < ${FROM + 15 * HOUR}ms AND uuid = '${uuid}'`;
    const [w] = await q(
      DB,
      `SELECT mean(power_w) AS p, max(power_max_w) AS pm, max(mem_used_max_bytes) AS m, max(processes_max) AS pr FROM gpu_window WHERE ${at}`,
    );
    const [hp] = await q(
      DB,
      `SELECT power_w AS p, power_max_w AS pm, mem_used_max_bytes AS m, processes_max AS pr, windows FROM gpu_hour.gpu_hour WHERE ${at}`,
    );
    expect(hp!["windows"]).toBe(12);
    if (w!["p"] === null) expect(hp!["p"]).toBeNull();
    else expect(num(hp!["p"])).toBeCloseTo(num(w!["p"]), 9);
    expect(hp!["pm"]).toBe(w!["pm"]);
    expect(hp!["m"]).toBe(w!["m"]);
    expect(hp!["pr"]).toBe(w!["pr"]);
  });

  it("says who held every held GPU-second: teams' namespaces on the Kubernetes sites, users' jobs on the Slurm site", async () => {
    const [gpu] = await q(
      DB,
      `SELECT sum(held_idle_s) AS h, sum(busy_phantom_s) AS b, sum(active_s) AS a FROM gpu_window WHERE ${RANGE}`,
    );
    const [own] = await q(
      DB,
      `SELECT sum(observed_s) AS o, sum(held_idle_s) AS h, sum(busy_phantom_s) AS b, sum(active_s) AS a, sum(free_idle_s) AS f FROM gpu_owner_window WHERE ${RANGE}`,
    );
    // Each process has one owner, so the owners' seconds are the held seconds, state by state.
    for (const f of ["h", "b", "a"]) expect(num(own![f]), f).toBeCloseTo(num(gpu![f]), 6);
    expect(num(own!["o"])).toBeCloseTo(num(gpu!["h"]) + num(gpu!["b"]) + num(gpu!["a"]), 6);
    expect(own!["f"]).toBe(0);
    const namespaces = (await q(DB, `SHOW TAG VALUES FROM gpu_owner_window WITH KEY = "namespace"`)).map(
      (r) => r["value"],
    );
    expect(namespaces.sort()).toEqual([
      "llm-pretrain",
      "notebooks",
      "recsys",
      "research",
      "serving",
      "speech",
      "vision",
    ]);
    const slurm = await q(
      DB,
      `SELECT sum(observed_s) AS o FROM gpu_owner_window WHERE ${RANGE} AND site = '${IDLE_SITE}' GROUP BY "user", "namespace"`,
    );
    expect(slurm.map((r) => [r["user"], r["namespace"]]).sort()).toEqual([
      ["asha", ""],
      ["meera", ""],
      ["ravi", ""],
    ]);
    // The hourly roll-up keeps them.
    const [hour] = await q(DB, `SELECT sum(held_idle_s) AS h FROM gpu_hour.gpu_owner_hour WHERE ${RANGE}`);
    expect(num(hour!["h"])).toBeCloseTo(num(own!["h"]), 6);
  });

  it("shows the rhythm, the idle site and the phantom model", async () => {
    const hours = await q(
      DB,
      `SELECT sum(active_s) AS active, sum(observed_s) AS observed FROM gpu_hour.gpu_hour WHERE ${RANGE} AND pool = 'training' GROUP BY time(1h), site`,
    );
    const offset = new Map(HOSTS.map((h) => [h.labels.site, h.utcOffsetH]));
    for (const site of ["us-east", "eu-west"]) {
      const office = { active: 0, observed: 0 };
      const night = { active: 0, observed: 0 };
      for (const r of hours.filter((x) => x["site"] === site && x["observed"] !== null)) {
        const { hour, weekday } = localTime(num(r["time"]), offset.get(site)!);
        if (weekday === 0 || weekday === 6) continue;
        const bucket = hour >= 9 && hour < 18 ? office : hour < 6 ? night : undefined;
        if (!bucket) continue;
        bucket.active += num(r["active"]);
        bucket.observed += num(r["observed"]);
      }
      const officeShare = office.active / office.observed;
      const nightShare = night.active / night.observed;
      expect(office.observed, site).toBeGreaterThan(0);
      expect(night.observed, site).toBeGreaterThan(0);
      expect(officeShare, `${site} office hours`).toBeGreaterThan(0.5);
      expect(nightShare, `${site} nights`).toBeLessThan(0.3);
      expect(officeShare, site).toBeGreaterThan(2 * nightShare);
    }

    const sites = await q(
      DB,
      `SELECT sum(free_idle_s) + sum(held_idle_s) + sum(busy_phantom_s) AS real_idle, sum(reported_idle_s) AS reported_idle, sum(observed_s) AS observed FROM gpu_hour.gpu_hour WHERE ${RANGE} GROUP BY site`,
    );
    const share = (site: string, f: string): number => {
      const r = sites.find((x) => x["site"] === site)!;
      return num(r[f]) / num(r["observed"]);
    };
    expect(share(IDLE_SITE, "real_idle")).toBeGreaterThan(0.85);
    expect(share(IDLE_SITE, "real_idle")).toBeGreaterThan(share("us-east", "real_idle") + 0.1);
    // Persistence mode off: free GPUs read 100 %, so utilization calls the idle site busy.
    expect(share(IDLE_SITE, "reported_idle")).toBeLessThan(0.2);

    const models = await q(
      DB,
      `SELECT sum(busy_phantom_s) AS phantom, sum(active_s) AS active, sum(observed_s) AS observed FROM gpu_hour.gpu_hour WHERE ${RANGE} GROUP BY model`,
    );
    for (const m of models) {
      const phantom = num(m["phantom"]) / num(m["observed"]);
      if (m["model"] === PHANTOM_MODEL) expect(phantom, PHANTOM_MODEL).toBeGreaterThan(0.3);
      else expect(phantom, String(m["model"])).toBe(0);
    }
    expect(models.map((m) => m["model"])).toContain(PHANTOM_MODEL);
  });

  it("leaves the same points when run again, and where an overlapping backfill overlaps", async () => {
    const snapshot = async (): Promise<unknown> => ({
      windows: await q(DB, `SELECT * FROM gpu_window WHERE ${RANGE} GROUP BY *`),
      hours: await q(DB, `SELECT * FROM gpu_hour.gpu_hour WHERE ${RANGE} GROUP BY *`),
    });
    const before = await snapshot();
    const again = await backfill(DB);
    expect(again.windows).toBe(result.windows);
    expect(await snapshot()).toEqual(before);
    // Another range, 12 hours earlier: new points before the first range, none changed inside it.
    await backfill(DB, { endMs: END - 12 * HOUR });
    expect(await snapshot()).toEqual(before);
    const [c] = await q(
      DB,
      `SELECT count(observed_s) AS n FROM gpu_window WHERE time >= ${FROM - 12 * HOUR}ms AND time < ${END}ms`,
    );
    expect(c!["n"]).toBe(GPUS * 60 * 12);
  });
});

describe("trueidle demo --backfill (the CLI)", () => {
  it("--backfill 1d --backfill-only into an existing InfluxDB: progress on stderr, a summary, the report command; then exits", {
    timeout: 120_000,
  }, async () => {
    const end = new Date(END).toISOString();
    const url = `${influx.url}/cli`;
    const { code, output } = await runTrueidle(
      ["demo", "--backfill", "1d", "--backfill-only", "--influx-url", url, "--backfill-end", end],
      NOT_THROUGH_NPM,
      110_000,
    );
    expect(code, output).toBe(0);
    expect(output).toContain(`History: InfluxDB ${influx.url}, database "cli".`);
    expect(output).toMatch(/^backfill: day 1\/1, 64 GPUs, 18,432 windows$/m);
    expect(output).toMatch(
      new RegExp(
        `^Backfilled 1 day of 64 GPUs on 8 hosts \\(${new Date(END - DAY).toISOString()} to ${end}\\): ` +
          "18,432 windows into gpu_window, 1,536 GPU-hours into gpu_hour, in \\d+\\.\\d s\\.$",
        "m",
      ),
    );
    // The report command covers the backfilled hours, and runs as printed from where the demo ran.
    const report = `node bin/trueidle.js report --influx-url ${url} --since ${iso(END - DAY)} --until ${iso(END)} --by site,model`;
    expect(output).toContain(`Report:    ${report}`);
    const reported = await runShell(report);
    expect(reported.code, reported.output).toBe(0);
    for (const site of new Set(HISTORY_FLEET.map((h) => h.labels["site"]!))) expect(reported.output).toContain(site);
    // No live demo after --backfill-only.
    expect(output).not.toContain("simulated hosts");
    const [w] = await q("cli", "SELECT count(observed_s) AS n FROM gpu_window");
    const [h] = await q("cli", "SELECT count(observed_s) AS n, sum(windows) AS windows FROM gpu_hour.gpu_hour");
    expect(w!["n"]).toBe(18_432);
    expect(h!["n"]).toBe(1_536);
    expect(h!["windows"]).toBe(18_432);
    const hosts = (await q("cli", "SHOW TAG VALUES FROM gpu_window WITH KEY = host")).map((r) => r["value"]);
    expect(hosts).toEqual(HISTORY_FLEET.map((x) => x.hostname).sort());
  });

  it("goes on live with the same fleet after the backfill, its windows written by the collector", {
    timeout: 120_000,
  }, async () => {
    const url = `${influx.url}/live`;
    const started = Date.now();
    const { code, output } = await runTrueidle(
      [
        "demo",
        "--backfill",
        "2h",
        "--influx-url",
        url,
        "--duration",
        "8s",
        "--window",
        "2s",
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
      ],
      {},
      110_000,
    );
    expect(code, output).toBe(0);
    expect(output).toContain("8 simulated hosts, 64 GPUs, window 2s.");
    expect(output).toMatch(/^Whole run: /m);
    // Live windows are 2 s long; backfilled ones 300 s.
    const live = await q(
      "live",
      `SELECT count(observed_s) AS n FROM gpu_window WHERE time >= ${started}ms AND observed_s <= 2 GROUP BY uuid`,
    );
    const backfilled = await q(
      "live",
      `SELECT count(observed_s) AS n FROM gpu_window WHERE observed_s = 300 GROUP BY uuid`,
    );
    expect(live).toHaveLength(64);
    expect(new Set(live.map((r) => r["uuid"]))).toEqual(new Set(backfilled.map((r) => r["uuid"])));
  });

  it("--keep-data keeps the private InfluxDB's data and prints the commands that serve it again and report on it", {
    timeout: 120_000,
  }, async () => {
    const { code, output } = await runTrueidle(
      ["demo", "--backfill", "1h", "--backfill-only", "--keep-data"],
      NOT_THROUGH_NPM,
      110_000,
    );
    expect(code, output).toBe(0);
    const m =
      /^InfluxDB data kept in (\S+)\. Serve it again \(on (\S+)\) with:\n {2}(\S+) -config (\S+)\nand, while it runs, report on it with:\n {2}(.+)$/m.exec(
        output,
      );
    expect(m, output).not.toBeNull();
    const [, dir, url, bin, conf, report] = m!;
    try {
      expect(conf).toBe(path.join(dir!, "influxdb.conf"));
      expect(output).toContain(`data in ${dir}, kept after the demo (--keep-data).`);
      // Serve it again as printed, and find the windows there.
      const child = spawn(bin!, ["-config", conf!], { stdio: "ignore" });
      try {
        let n: unknown;
        for (let i = 0; i < 200 && n === undefined; i++) {
          try {
            n = rows(await influxQuery(url!, "SELECT count(observed_s) AS n FROM gpu_window", "trueidle"))[0]?.["n"];
          } catch {
            await new Promise((r) => setTimeout(r, 100));
          }
        }
        expect(n).toBe(64 * 12);
        const reported = await runShell(report!);
        expect(reported.code, reported.output).toBe(0);
        expect(reported.output).toContain(HISTORY_FLEET[0]!.labels["site"]!);
      } finally {
        child.kill("SIGKILL");
      }
    } finally {
      rmSync(dir!, { recursive: true, force: true });
    }
  });

  it("stops a backfill on Ctrl-C, says so, and keeps what was written", { timeout: 120_000 }, async () => {
    const proc = startTrueidle(["demo", "--backfill", "30d", "--influx-url", `${influx.url}/interrupted`]);
    try {
      // By day 4 the first day is written: generation runs at most two days ahead of the writes.
      await proc.waitForOutput(/^backfill: day 4\/30, /m, 60_000);
      const code = await proc.stop("SIGINT", 30_000);
      const output = proc.output();
      expect(code, output).toBe(130);
      expect(output).toContain("Backfill stopped (Ctrl-C); what was written stays in InfluxDB.");
      expect(output).not.toMatch(/^Backfilled /m);
      expect(output).not.toContain("simulated hosts");
      const [w] = await q("interrupted", "SELECT count(observed_s) AS n FROM gpu_window");
      // The first day starts with the range and ends on the hour: more than 23 hours of 64 GPUs' 5-minute windows.
      expect(num(w!["n"])).toBeGreaterThanOrEqual(64 * 23 * 12);
      expect(num(w!["n"])).toBeLessThan(30 * 18_432);
    } finally {
      await proc.stop("SIGKILL");
    }
  });

  it("refuses flag combinations that cannot work, naming each", async () => {
    const { code, output } = await runTrueidle([
      "demo",
      "--backfill-only",
      "--no-influx",
      "--influx-url",
      "http://127.0.0.1:1/x",
    ]);
    expect(code, output).toBe(2);
    expect(output).toContain("--no-influx and --influx-url contradict each other");
    expect(output).toContain("--backfill-only needs --backfill DURATION");
    const r2 = await runTrueidle(["demo", "--backfill", "1d", "--backfill-only"]);
    expect(r2.code, r2.output).toBe(2);
    expect(r2.output).toContain("--backfill-only with the private InfluxDB would delete the history on exit");
    const r3 = await runTrueidle(["demo", "--backfill", "3y"]);
    expect(r3.code).toBe(2);
    const r4 = await runTrueidle(["demo", "--backfill", "731d"]);
    expect(r4.code).toBe(2);
    expect(r4.output).toContain("--backfill: must be at most");
  });
});
