/**
 * MIG instances end to end, as GPUs of their own: an agent (simulator source) on a host with
 * an H100 in MIG mode — a 3g.40gb instance running, a 2g.20gb one held and idle, a 1g.10gb one
 * free — beside a whole GPU, streaming to a collector subprocess over real gRPC, into a real
 * InfluxDB, then `trueidle report --by mig_profile` as a subprocess. Each instance must be in
 * its state on /metrics with its board's uuid and its profile as labels, its windows tagged
 * with both in InfluxDB, and the report must sum by profile. The board keeps a row of its
 * own (its power, whether it reads, its instance count) that counts as no GPU anywhere.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migUuid } from "../../agent/sim/evaluate.js";
import { fakeUuid } from "../../agent/sim/scenario.js";
import { eventually } from "../helpers/eventually.js";
import { Fleet, type CollectorNode } from "../helpers/fleet-harness.js";
import { influxQuery } from "../helpers/influxdb.js";
import { runTrueidle } from "../helpers/trueidle-process.js";

const HOST = "gpu-mig-e2e";
const BOARD = fakeUuid(HOST, 0);
const WHOLE = fakeUuid(HOST, 1);
const INSTANCES = [
  { profile: "3g.40gb", gi: 2, state: "active" },
  { profile: "2g.20gb", gi: 3, state: "held_idle" },
  { profile: "1g.10gb", gi: 9, state: "free_idle" },
].map((x) => ({ ...x, uuid: migUuid(BOARD, x.gi, 0, 0) }));

describe("MIG: instances → collector → InfluxDB → report", () => {
  let fleet: Fleet;
  let collector: CollectorNode;
  let dir: string;
  const startedMs = Date.now();

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "trueidle-mig-e2e-"));
    const scenario = path.join(dir, "mig.json");
    writeFileSync(
      scenario,
      JSON.stringify({
        host: HOST,
        gpus: [
          {
            model: "NVIDIA H100 80GB HBM3",
            phases: [{ for: "1h", powerW: 190 }],
            mig: INSTANCES.map((x) => ({ profile: x.profile, gi: x.gi, phases: [{ for: "1h", state: x.state }] })),
          },
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "held_idle" }] },
        ],
      }),
    );
    fleet = await Fleet.start("mig");
    collector = await fleet.startCollector();
    await fleet.startAgent({ scenario, collectors: [collector.address] });
  }, 120_000);

  afterAll(async () => {
    await fleet?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shows each instance in its state with its board and profile; the whole GPU without them", async () => {
    const states = await eventually(
      "every instance and the whole GPU in their states",
      async () => {
        const current = (await collector.metrics()).filter((s) => s.name === "trueidle_gpu_state" && s.value === 1);
        return current.length === 4 ? current : undefined;
      },
      60_000,
      500,
    );
    for (const x of INSTANCES) {
      const s = states.find((y) => y.labels["uuid"] === x.uuid);
      expect(s?.labels, x.profile).toMatchObject({
        host: HOST,
        gpu: "0",
        parent_uuid: BOARD,
        mig_profile: x.profile,
        state: x.state,
      });
    }
    const whole = states.find((y) => y.labels["uuid"] === WHOLE)!;
    expect(whole.labels).toMatchObject({ gpu: "1", state: "held_idle" });
    expect(whole.labels["parent_uuid"]).toBeUndefined();
    expect(whole.labels["mig_profile"]).toBeUndefined();
  });

  it("keeps the board's own row: its power, up and instance count, and no GPU's figures", async () => {
    const board = await eventually(
      "the board row's series",
      async () => {
        const m = await collector.metrics();
        const of = (name: string) => m.find((s) => s.name === name && s.labels["uuid"] === BOARD);
        const power = of("trueidle_mig_board_power_watts");
        const instances = of("trueidle_mig_board_instances");
        return power && instances?.value === 3 ? { m, power, instances, up: of("trueidle_mig_board_up") } : undefined;
      },
      60_000,
      500,
    );
    expect(board.power.value).toBe(190);
    expect(board.power.labels).toMatchObject({ host: HOST, gpu: "0", model: "NVIDIA H100 80GB HBM3" });
    expect(board.up?.value).toBe(1);
    // The board is in no GPU family and no fleet count: four GPUs, three instances and one whole.
    expect(board.m.filter((s) => s.name.startsWith("trueidle_gpu_") && s.labels["uuid"] === BOARD)).toEqual([]);
    const gpus = board.m.filter((s) => s.name === "trueidle_fleet_gpus").reduce((sum, s) => sum + s.value, 0);
    expect(gpus).toBe(4);
  });

  it("writes the instances' windows tagged with board and profile, and the report sums by profile", async () => {
    await fleet.stopAgents();
    await fleet.settle();
    const rows = await influxQuery(
      fleet.influxBase,
      'SELECT sum("observed_s") AS obs, sum("held_idle_s") AS hi, sum("active_s") AS act, sum("free_idle_s") AS fi, ' +
        'sum("reported_idle_s") AS ri FROM "gpu_window" GROUP BY "uuid", "parent_uuid", "mig_profile"',
      fleet.database,
    );
    const series = rows[0]?.series ?? [];
    const byUuid = new Map(series.map((s) => [s.tags?.["uuid"] ?? "", { tags: s.tags ?? {}, v: s.values?.[0] ?? [] }]));
    expect(byUuid.size).toBe(4);
    for (const x of INSTANCES) {
      const got = byUuid.get(x.uuid)!;
      expect(got.tags).toMatchObject({ parent_uuid: BOARD, mig_profile: x.profile });
      const [, obs, hi, act, fi, ri] = got.v as number[];
      expect(obs).toBeGreaterThan(0);
      const inState = { held_idle: hi, active: act, free_idle: fi }[x.state];
      expect(inState, `${x.profile} seconds in ${x.state}`).toBe(obs);
      // Reported idle follows whether the instance is taken: only the free one.
      expect(ri, `${x.profile} reported idle`).toBe(x.state === "free_idle" ? obs : 0);
    }
    expect(byUuid.get(WHOLE)!.tags).toMatchObject({ parent_uuid: "", mig_profile: "" });
    // The board's row in a measurement of its own: power, no GPU seconds.
    const boardRows = await influxQuery(
      fleet.influxBase,
      'SELECT sum("observed_s") AS obs, sum("unavailable_s") AS un, min("power_w") AS lo, max("power_w") AS hi ' +
        'FROM "mig_board_window" GROUP BY "uuid"',
      fleet.database,
    );
    const boardSeries = boardRows[0]?.series ?? [];
    expect(boardSeries.map((s) => s.tags?.["uuid"])).toEqual([BOARD]);
    const [, bObs, bUn, bLo, bHi] = boardSeries[0]!.values![0]! as number[];
    expect(bObs).toBeGreaterThan(0);
    expect([bUn, bLo, bHi]).toEqual([0, 190, 190]);

    const since = new Date(Math.floor(startedMs / 3_600_000) * 3_600_000).toISOString();
    const until = new Date((Math.floor(Date.now() / 3_600_000) + 1) * 3_600_000).toISOString();
    const out = path.join(dir, "by-profile.json");
    const r = await runTrueidle([
      "report",
      "--influx-url",
      `${fleet.influxBase}/${fleet.database}`,
      "--since",
      since,
      "--until",
      until,
      "--by",
      "mig_profile",
      "--measurement",
      "gpu_window",
      "--format",
      "json",
      "--out",
      out,
    ]);
    expect(r.code, r.output).toBe(0);
    const report = JSON.parse(readFileSync(out, "utf8")) as {
      groups: Array<Record<string, unknown> & { key: Record<string, string> }>;
    };
    const byProfile = new Map(report.groups.map((g) => [g.key["mig_profile"], g]));
    expect([...byProfile.keys()].sort()).toEqual(["", "1g.10gb", "2g.20gb", "3g.40gb"]);
    expect(byProfile.get("3g.40gb")!["gpus"]).toBe(1);
    expect(byProfile.get("1g.10gb")!["real_idle_pct"]).toBeCloseTo(100, 9);
    expect(byProfile.get("3g.40gb")!["real_idle_pct"]).toBeCloseTo(0, 9);
  }, 120_000);
});
