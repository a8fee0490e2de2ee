/**
 * Windows into a real InfluxDB 1.x (Debian's influxd on loopback): through the collector's
 * gRPC path (acks wait for the writes), replays, hostile label values, the hourly roll-up
 * (continuous query and explicit `rollup`), InfluxDB errors and outages, and end to end
 * from agent subprocesses through a collector subprocess.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startCollector, type Collector, type CollectorInfluxOptions } from "../collector/collector.js";
import { HostLineEncoder } from "../collector/influx/line-protocol.js";
import {
  continuousQueryStatement,
  ensureSchema,
  HOUR_MS,
  retentionPolicyStatement,
  rollup,
  RP_HOUR,
  RP_WINDOW,
  sameStatement,
  SECONDS_FIELDS,
} from "../collector/influx/schema.js";
import type { InfluxTarget } from "../common/influx/target.js";
import { InfluxWriter } from "../collector/influx/writer.js";
import { BOARD_UUID, batchRequest, boardWindow, helloRequest, makeWindow } from "../collector/testdata/windows.js";
import { createLogger, silentLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import type { GpuWindow } from "../gen/trueidle/v1/ingest_pb.js";
import { eventually as poll } from "./helpers/eventually.js";
import { Probe, ProbeFactory } from "./helpers/ingest-probe.js";
import { freePort } from "./helpers/ports.js";
import { influxQuery, rows, startInfluxd, type PrivateInfluxd } from "./helpers/influxdb.js";
import { runTrueidle, startTrueidle, type TrueidleProcess } from "./helpers/trueidle-process.js";

let influx: PrivateInfluxd;
beforeAll(async () => {
  influx = await startInfluxd();
});
afterAll(async () => {
  await influx?.stop();
});

const running: Collector[] = [];
const probes = new ProbeFactory();
/** This file's waits: 30 s, polled every 100 ms. */
const eventually = <T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> =>
  poll(what, check, timeoutMs, 100);
afterEach(async () => {
  probes.close();
  await Promise.all(running.splice(0).map((c) => c.stop()));
});

async function startWithInflux(
  io: Partial<CollectorInfluxOptions> & { target: InfluxTarget },
  logs?: string[],
): Promise<Collector> {
  const collector = await startCollector({
    grpcListen: "127.0.0.1:0",
    httpListen: "127.0.0.1:0",
    thresholds: DEFAULT_THRESHOLDS,
    logger: logs ? createLogger({ level: "debug", write: (l) => void logs.push(l) }) : silentLogger,
    influx: { flushIntervalMs: 20, ...io },
  });
  running.push(collector);
  return collector;
}

/** One agent stream to the collector: replies in order and the final status. */
class Stream extends Probe {
  constructor(port: number) {
    super(probes.openCall(port));
  }

  async hello(host: string, labels: Record<string, string>): Promise<void> {
    this.call.write(helloRequest(host, labels));
    const r = await this.next();
    expect(r.msg.case).toBe("welcome");
  }

  async batch(seq: number, windows: GpuWindow[]): Promise<number> {
    this.call.write(batchRequest(seq, windows));
    const r = await this.next();
    if (r.msg.case !== "ack") throw new Error(`expected an ack, got ${r.msg.case}`);
    expect(r.msg.value.seq).toBe(BigInt(seq));
    return r.msg.value.accepted;
  }
}

const uuidOf = (g: number): string => `GPU-00000000-0000-0000-0000-${String(g).padStart(12, "0")}`;

/** A valid 10 s window of GPU `g` starting at `startMs`, with values that vary by `k`; every third has no power reading. */
function windowAt(g: number, startMs: number, k: number): GpuWindow {
  const active = k % 11;
  return makeWindow({
    uuid: uuidOf(g),
    index: g,
    startMs: BigInt(startMs),
    observedS: 10,
    freeIdleS: 0,
    activeS: active,
    heldIdleS: 10 - active,
    reportedIdleS: 10 - active,
    reportedBusyS: active * 0.9,
    realBusyS: active * 0.5 + 0.125,
    powerMeanW: k % 3 === 0 ? undefined : 70 + k * 1.5,
    powerMaxW: k % 3 === 0 ? undefined : 80 + k * 1.5,
    memUsedMaxBytes: BigInt(k * 1_048_576),
    processesMax: k % 3,
  });
}

/** Window starts: every `stepMs` from `fromMs` (aligned to 10 s) up to, not including, `toMs`. */
function starts(fromMs: number, toMs: number, stepMs: number): number[] {
  const out: number[] = [];
  for (let t = Math.ceil(fromMs / 10_000) * 10_000; t < toMs; t += stepMs) out.push(t);
  return out;
}

async function metric(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`${name} is not in /metrics`);
  return Number(m[1]);
}

async function windowRows(db: string, where = ""): Promise<Array<Record<string, unknown>>> {
  return rows(
    await influxQuery(influx.url, `SELECT * FROM "${db}"."${RP_WINDOW}"."gpu_window" ${where} GROUP BY *`, db),
  );
}

describe("the collector writes windows to InfluxDB", () => {
  it("acknowledges a batch once its points are in InfluxDB, and a replayed batch leaves the same points", async () => {
    const target: InfluxTarget = { baseUrl: influx.url, database: "replay" };
    const collector = await startWithInflux({ target });
    const base = Math.floor(Date.now() / 10_000) * 10_000 - 3_600_000;
    const windows = [0, 1, 2].flatMap((g) => starts(base, base + 600_000, 60_000).map((t, k) => windowAt(g, t, k + g)));

    const s = new Stream(collector.grpcPort);
    await s.hello("node-1", { site: "dc1" });
    expect(await s.batch(1, windows)).toBe(windows.length);
    // The ack came: every point is already there.
    const first = await windowRows("replay");
    expect(first).toHaveLength(windows.length);

    // The same windows again on the same stream, then on a new stream (as after a reconnect).
    expect(await s.batch(2, windows)).toBe(windows.length);
    const again = new Stream(collector.grpcPort);
    await again.hello("node-1", { site: "dc1" });
    expect(await again.batch(1, windows.slice(0, 5))).toBe(5);
    expect(await windowRows("replay")).toEqual(first);
    expect(await metric(collector.httpPort, "trueidle_influx_points_written_total")).toBe(2 * windows.length + 5);
    expect(await metric(collector.httpPort, "trueidle_influx_write_errors_total")).toBe(0);

    // Tags and fields as DESIGN.md names them; a missing power reading is a missing field, not 0.
    const w0 = windows[0]!;
    const row = first.find((r) => r["time"] === Number(w0.startMs) && r["uuid"] === w0.uuid)!;
    expect(row).toMatchObject({
      host: "node-1",
      gpu: "0",
      uuid: w0.uuid,
      model: "NVIDIA H100 80GB HBM3",
      site: "dc1",
      observed_s: 10,
      active_s: 0,
      held_idle_s: 10,
      free_idle_s: 0,
      busy_phantom_s: 0,
      unavailable_s: 0,
      reported_idle_s: 10,
      reported_busy_s: 0,
      real_busy_s: 0.125,
      power_w: null,
      power_max_w: null,
      mem_used_max_bytes: 0,
      processes_max: 0,
    });
    const w1 = windows[1]!;
    expect(first.find((r) => r["time"] === Number(w1.startMs) && r["uuid"] === w1.uuid)).toMatchObject({
      active_s: 1,
      power_w: 71.5,
      power_max_w: 81.5,
      mem_used_max_bytes: 1_048_576,
      processes_max: 1,
    });
  });

  it("sets the schema up again when InfluxDB loses the database, and writes the batch that found it missing", async () => {
    const logs: string[] = [];
    const collector = await startWithInflux({ target: { baseUrl: influx.url, database: "reset" } }, logs);
    const s = new Stream(collector.grpcPort);
    await s.hello("node-1", {});
    const t = Math.floor(Date.now() / 10_000) * 10_000 - 600_000;
    expect(await s.batch(1, [windowAt(0, t, 1)])).toBe(1);
    await influxQuery(influx.url, 'DROP DATABASE "reset"');
    expect(await s.batch(2, [windowAt(0, t + 10_000, 2)])).toBe(1);
    expect(await windowRows("reset")).toHaveLength(1);
    expect(logs.some((l) => /InfluxDB lost trueidle's schema \(database not found/.test(l))).toBe(true);
    expect(
      logs.some((l) =>
        /The InfluxDB schema is ready: created database reset; created retention policy gpu_window/.test(l),
      ),
    ).toBe(true);
    const cqs = (await influxQuery(influx.url, "SHOW CONTINUOUS QUERIES"))[0]?.series?.find((x) => x.name === "reset");
    expect(cqs?.values?.map((v) => v[0])).toEqual(["cq_gpu_hour", "cq_gpu_owner_hour", "cq_fleet_hour"]);
  });

  it("stores hostile label values, host names and models exactly as the agent sent them", async () => {
    const target: InfluxTarget = { baseUrl: influx.url, database: "hostile" };
    const collector = await startWithInflux({ target });
    const labels = {
      site: "eu west, rack=7",
      pool: "say \"hi\" and 'bye'",
      team: "back\\slash, \\,comma \\ space \\=eq \\\\double",
      owner: "Zoë Ångström – 東京 – नमस्ते",
      emoji: "🚀🔥 gpu ✅",
      hash: "#not a comment",
      eq: "==",
    };
    const host = "host with space,comma=eq\\x";
    const model = 'NVIDIA "H100", 80 GB = big';
    const s = new Stream(collector.grpcPort);
    await s.hello(host, labels);
    const now = Math.floor(Date.now() / 10_000) * 10_000 - 60_000;
    expect(await s.batch(1, [makeWindow({ startMs: BigInt(now), model })])).toBe(1);

    for (const [key, value] of Object.entries({ ...labels, host, model })) {
      const r = rows(await influxQuery(influx.url, `SHOW TAG VALUES FROM "gpu_window" WITH KEY = "${key}"`, "hostile"));
      expect(r.map((x) => x["value"])).toEqual([value]);
    }
    const [row] = await windowRows("hostile");
    expect(row).toMatchObject({ ...labels, host, model, gpu: "0" });
  });

  it("refuses a Hello whose values InfluxDB cannot store exactly, naming the field", async () => {
    const collector = await startWithInflux({ target: { baseUrl: influx.url, database: "refused" } });
    const s = new Stream(collector.grpcPort);
    s.call.write(helloRequest("node-1", { site: "ends with a backslash\\" }));
    const st = await s.status;
    expect(st.code).toBe(status.INVALID_ARGUMENT);
    expect(st.details).toMatch(/tag site .* ends with a backslash/);

    const ok = new Stream(collector.grpcPort);
    await ok.hello("node-2", {});
    ok.call.write(
      batchRequest(1, [makeWindow({ startMs: BigInt(Math.floor(Date.now() / 10_000) * 10_000), model: "odd\\" })]),
    );
    const r = await ok.next();
    expect(r.msg.case === "ack" && r.msg.value.rejections.map((x) => `${x.reason} ${x.field}`)).toEqual([
      "bad_string windows[0].model",
    ]);
  });

  it("counts and logs a field type conflict (HTTP 400), and still acknowledges the batch", async () => {
    const target: InfluxTarget = { baseUrl: influx.url, database: "conflict" };
    await ensureSchema(target);
    const t = Math.floor(Date.now() / 10_000) * 10_000 - 120_000;
    // Someone wrote observed_s as an integer into this shard first.
    const pre = await fetch(`${influx.url}/write?db=conflict&precision=ms`, {
      method: "POST",
      body: `gpu_window,host=other observed_s=1i ${t}`,
    });
    expect(pre.status).toBe(204);

    const logs: string[] = [];
    const collector = await startWithInflux({ target }, logs);
    const s = new Stream(collector.grpcPort);
    await s.hello("node-1", {});
    expect(await s.batch(1, [windowAt(0, t, 1), windowAt(1, t, 2)])).toBe(2);
    expect(await metric(collector.httpPort, "trueidle_influx_write_errors_total")).toBe(1);
    expect(await metric(collector.httpPort, "trueidle_influx_points_written_total")).toBe(0);
    const error = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l["level"] === "error");
    expect(error?.["msg"]).toMatch(
      /HTTP 400: partial write: field type conflict: input field "observed_s" .* dropped=2/,
    );
  });

  it("writes a board's row to mig_board_window in the raw policy, nothing of it to gpu_window, and no roll-up of it", async () => {
    const db = "boards";
    const target: InfluxTarget = { baseUrl: influx.url, database: db };
    const collector = await startWithInflux({ target });
    const t = Math.floor(Date.now() / 10_000) * 10_000 - 600_000;
    const instance = (startMs: number) =>
      makeWindow({
        uuid: "MIG-8b5a9a5e-0000-0000-0000-000000000001",
        index: 0,
        parentUuid: BOARD_UUID,
        migProfile: "3g.40gb",
        startMs: BigInt(startMs),
      });
    const batch = [
      instance(t),
      boardWindow({ startMs: BigInt(t), unavailableS: 2.5 }),
      boardWindow({ uuid: uuidOf(9), index: 1, startMs: BigInt(t), powerMeanW: undefined, memTotalBytes: undefined }),
    ];
    const s = new Stream(collector.grpcPort);
    await s.hello("node-1", { site: "dc1" });
    expect(await s.batch(1, batch)).toBe(3);
    // The same batch again (a lost ack): the same points.
    expect(await s.batch(2, batch)).toBe(3);

    const gpuRows = await windowRows(db);
    expect(gpuRows.map((r) => r["uuid"])).toEqual(["MIG-8b5a9a5e-0000-0000-0000-000000000001"]);
    const boardRows = rows(
      await influxQuery(influx.url, `SELECT * FROM "${db}"."${RP_WINDOW}"."mig_board_window" GROUP BY *`, db),
    );
    expect(boardRows).toHaveLength(2);
    expect(boardRows.find((r) => r["uuid"] === BOARD_UUID)).toEqual({
      time: t,
      host: "node-1",
      gpu: "0",
      uuid: BOARD_UUID,
      model: "NVIDIA H100 80GB HBM3",
      site: "dc1",
      observed_s: 10,
      unavailable_s: 2.5,
      power_w: 180,
      power_max_w: 195,
      power_floor_w: 90,
      power_limit_w: 700,
      mem_total_bytes: 85_520_809_984,
    });
    // A field the board did not report is missing, not 0.
    expect(boardRows.find((r) => r["uuid"] === uuidOf(9))).toMatchObject({ power_w: null, mem_total_bytes: null });
    // Every line written is a point counted: the instance's and the boards', twice.
    expect(await metric(collector.httpPort, "trueidle_influx_points_written_total")).toBe(6);
    expect(await metric(collector.httpPort, "trueidle_influx_write_errors_total")).toBe(0);
    // The board is no GPU in the fleet roll-ups either: the instance's 10 s only.
    const page = await (await fetch(`http://127.0.0.1:${collector.httpPort}/metrics`)).text();
    expect(page).toMatch(/^trueidle_fleet_observed_seconds_total\{[^}]*\} 10$/m);
    expect(page).toMatch(/^trueidle_mig_board_observed_seconds_total\{[^}]*uuid="GPU-b0a4d000[^}]*\} 10$/m);

    // Rolled up: GPU-hours for the instance only, and no hourly measurement of boards.
    expect(await rollup(target, t, t + 10_000)).toEqual({ gpuHours: 1, ownerHours: 0, fleetHours: 1 });
    const hours = rows(await influxQuery(influx.url, `SELECT * FROM "${db}"."${RP_HOUR}"."gpu_hour" GROUP BY *`, db));
    expect(hours.map((r) => r["uuid"])).toEqual(["MIG-8b5a9a5e-0000-0000-0000-000000000001"]);
    const measurements = rows(await influxQuery(influx.url, "SHOW MEASUREMENTS", db)).map((r) => r["name"]);
    expect(measurements).toEqual(["fleet_hour", "gpu_hour", "gpu_window", "mig_board_window"]);
  });

  it("waits while InfluxDB is unreachable — at start and later — and writes everything once it is back", async () => {
    await ensureSchema({ baseUrl: influx.url, database: "outage" });
    const proxy = new TcpProxy(influx.port);
    const port = await freePort();
    const logs: string[] = [];
    // InfluxDB away at start: the collector starts anyway and sets the schema up in the background.
    const collector = await startWithInflux(
      { target: { baseUrl: `http://127.0.0.1:${port}`, database: "outage" } },
      logs,
    );
    await eventually("the schema set-up failure log", async () =>
      logs.some((l) => /Could not set up the InfluxDB schema/.test(l)) ? true : undefined,
    );

    const base = Math.floor(Date.now() / 10_000) * 10_000 - 600_000;
    const s = new Stream(collector.grpcPort);
    await s.hello("node-1", {});
    s.call.write(batchRequest(1, [windowAt(0, base, 1)]));
    await proxy.listen(port);
    const ack1 = await s.next();
    expect(ack1.msg.case).toBe("ack");
    expect(await windowRows("outage")).toHaveLength(1);

    // InfluxDB goes away while the collector runs: writes are retried, the ack waits.
    await proxy.close();
    s.call.write(batchRequest(2, [windowAt(0, base + 10_000, 2), windowAt(1, base + 10_000, 3)]));
    await eventually("two failed write attempts", async () =>
      (await metric(collector.httpPort, "trueidle_influx_write_errors_total")) >= 2 ? true : undefined,
    );
    expect(s.pending).toBe(0);
    await proxy.listen(port);
    const ack2 = await s.next();
    expect(ack2.msg.case === "ack" && ack2.msg.value.seq).toBe(2n);
    expect(await windowRows("outage")).toHaveLength(3);
    expect(await metric(collector.httpPort, "trueidle_influx_points_written_total")).toBe(3);
    expect(logs.some((l) => /InfluxDB writes succeed again/.test(l))).toBe(true);

    // Stopped while InfluxDB is away with a batch unwritten: the batch is never acknowledged.
    await proxy.close();
    s.call.write(batchRequest(3, [windowAt(0, base + 20_000, 4)]));
    const before = await metric(collector.httpPort, "trueidle_influx_write_errors_total");
    await eventually("another failed write attempt", async () =>
      (await metric(collector.httpPort, "trueidle_influx_write_errors_total")) > before ? true : undefined,
    );
    await collector.stop();
    expect((await s.status).code).toBe(status.UNAVAILABLE);
    expect(s.pending).toBe(0);
    expect(await windowRows("outage")).toHaveLength(3);
  });
});

describe("the hourly roll-up", () => {
  /** What gpu_hour must hold for these windows, per (uuid, hour). */
  function expected(windows: GpuWindow[]): Map<string, Record<string, number>> {
    const out = new Map<string, Record<string, number> & { _power: number[] }>();
    for (const w of windows) {
      const hour = Math.floor(Number(w.startMs) / HOUR_MS) * HOUR_MS;
      const key = `${w.uuid} ${hour}`;
      const e =
        out.get(key) ??
        Object.assign(Object.fromEntries(SECONDS_FIELDS.map((f) => [f, 0])), {
          windows: 0,
          power_max_w: -Infinity,
          mem_used_max_bytes: 0,
          processes_max: 0,
          _power: [] as number[],
        });
      e["observed_s"]! += w.observedS;
      e["free_idle_s"]! += w.freeIdleS;
      e["held_idle_s"]! += w.heldIdleS;
      e["busy_phantom_s"]! += w.busyPhantomS;
      e["active_s"]! += w.activeS;
      e["unavailable_s"]! += w.unavailableS;
      e["reported_idle_s"]! += w.reportedIdleS;
      e["reported_busy_s"]! += w.reportedBusyS;
      e["real_busy_s"]! += w.realBusyS;
      e["windows"]! += 1;
      if (w.powerMeanW !== undefined) e._power.push(w.powerMeanW);
      if (w.powerMaxW !== undefined) e["power_max_w"] = Math.max(e["power_max_w"]!, w.powerMaxW);
      e["mem_used_max_bytes"] = Math.max(e["mem_used_max_bytes"]!, Number(w.memUsedMaxBytes ?? 0n));
      e["processes_max"] = Math.max(e["processes_max"]!, w.processesMax);
      out.set(key, e);
    }
    const result = new Map<string, Record<string, number>>();
    for (const [key, { _power, ...e }] of out)
      result.set(key, { ...e, power_w: _power.reduce((a, b) => a + b, 0) / _power.length });
    return result;
  }

  function expectHourRows(got: Array<Record<string, unknown>>, want: Map<string, Record<string, number>>): void {
    expect(got).toHaveLength(want.size);
    for (const row of got) {
      const e = want.get(`${String(row["uuid"])} ${String(row["time"])}`);
      expect(e, `gpu_hour point for ${String(row["uuid"])} at ${String(row["time"])}`).toBeDefined();
      for (const [field, value] of Object.entries(e!))
        expect(row[field] as number, `${field} of ${JSON.stringify(row)}`).toBeCloseTo(value, 9);
      expect(row).toMatchObject({ host: "roll-host", site: "dc-r", model: "NVIDIA H100 80GB HBM3" });
    }
  }

  it("the collector rolls up the hours of windows that arrive too late for the continuous query", async () => {
    const db = "late";
    const collector = await startWithInflux({
      target: { baseUrl: influx.url, database: db },
      lateRollupIntervalMs: 100,
    });
    const thisHour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    // An agent catching up: windows from five and four hours ago.
    const old = [0, 1].flatMap((g) =>
      starts(thisHour - 5 * HOUR_MS, thisHour - 3 * HOUR_MS, 13 * 60_000).map((t, k) => windowAt(g, t, k + g)),
    );
    const s = new Stream(collector.grpcPort);
    await s.hello("roll-host", { site: "dc-r" });
    expect(await s.batch(1, old)).toBe(old.length);
    const want = expected(old);
    await eventually("the late hours in gpu_hour", async () => {
      expectHourRows(
        rows(await influxQuery(influx.url, `SELECT * FROM "${db}"."${RP_HOUR}"."gpu_hour" GROUP BY *`, db)),
        want,
      );
      return true;
    });
    // …and in fleet_hour, rolled up from them by the same turn: one fleet group, its sums the GPUs'.
    await eventually("the late hours in fleet_hour", async () => {
      const fleet = rows(
        await influxQuery(influx.url, `SELECT * FROM "${db}"."${RP_HOUR}"."fleet_hour" GROUP BY *`, db),
      );
      const hours = new Set([...want.keys()].map((k) => Number(k.split(" ")[1])));
      expect(fleet.map((r) => r["time"]).sort()).toEqual([...hours].sort());
      for (const r of fleet) {
        const gpus = [...want.entries()].filter(([k]) => Number(k.split(" ")[1]) === r["time"]).map(([, e]) => e);
        expect(r).toMatchObject({ site: "dc-r", model: "NVIDIA H100 80GB HBM3", gpus: gpus.length });
        expect(r["held_idle_s"] as number).toBeCloseTo(
          gpus.reduce((sum, e) => sum + e["held_idle_s"]!, 0),
          9,
        );
      }
      return true;
    });
  });

  it("the continuous query rolls recent windows up, and rollup() gives the same points for any range", async () => {
    const db = "rollup";
    const target: InfluxTarget = { baseUrl: influx.url, database: db };
    // Database and policies first, the continuous query last. InfluxDB 1.x runs a new
    // continuous query at its first check (every second here); a run at `now` covers
    // [trunc(nextRun + 1h − FOR − 1ns), trunc(now + 1h − EVERY)) in whole hours
    // (services/continuous_querier/service.go), i.e. [previous hour, current hour + 1h)
    // from minute 10 on and only the previous hour before that. So the recent windows fill
    // the previous hour; a test that would start in the last seconds of an hour first waits
    // for the next one, so the query's first run sees the same "previous hour".
    if (Date.now() % HOUR_MS > HOUR_MS - 20_000)
      await new Promise((r) => setTimeout(r, HOUR_MS - (Date.now() % HOUR_MS) + 1_000));
    await influxQuery(influx.url, `CREATE DATABASE "${db}"`);
    await influxQuery(influx.url, retentionPolicyStatement("CREATE", db, RP_WINDOW, 30 * 24 * HOUR_MS, true));
    await influxQuery(influx.url, retentionPolicyStatement("CREATE", db, RP_HOUR, 730 * 24 * HOUR_MS, false));

    const thisHour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    const lastHour = thisHour - HOUR_MS;
    const recent = [0, 1].flatMap((g) =>
      starts(lastHour, thisHour, 7 * 60_000).map((t, k) => windowAt(g, t, k + 3 * g)),
    );
    const old = [0, 1].flatMap((g) =>
      starts(thisHour - 8 * HOUR_MS, thisHour - 5 * HOUR_MS, 9 * 60_000).map((t, k) => windowAt(g, t, k + g)),
    );
    const enc = new HostLineEncoder("roll-host", { site: "dc-r" });
    const writer = new InfluxWriter({ target, logger: silentLogger, flushIntervalMs: 10 });
    const outcome = await writer.submit([...recent, ...old].map((w) => enc.line(w)));
    expect(outcome).toEqual({ status: "done", written: recent.length + old.length, rejected: 0 });
    await writer.stop();

    expect(await ensureSchema(target)).toEqual([
      "created continuous query cq_gpu_hour",
      "created continuous query cq_gpu_owner_hour",
      "created continuous query cq_fleet_hour (by mig_profile, model, site)",
    ]);
    // One series per database; databases without continuous queries come without values.
    const shown = (await influxQuery(influx.url, "SHOW CONTINUOUS QUERIES"))[0]?.series?.find((x) => x.name === db);
    expect(shown?.values).toHaveLength(3);
    expect(shown?.values?.[0]?.[0]).toBe("cq_gpu_hour");
    expect(sameStatement(String(shown?.values?.[0]?.[1]), continuousQueryStatement(db))).toBe(true);

    const hourQuery = `SELECT * FROM "${db}"."${RP_HOUR}"."gpu_hour" GROUP BY *`;
    const wantRecent = expected(recent);
    // The query's run may land its points in more than one write: wait until they all agree.
    await eventually("the continuous query's gpu_hour points", async () => {
      expectHourRows(rows(await influxQuery(influx.url, hourQuery, db)), wantRecent);
      return true;
    });

    // The old hours are beyond the continuous query's reach: rollup() covers them.
    expect(await rollup(target, thisHour - 8 * HOUR_MS, thisHour - 5 * HOUR_MS, { chunkHours: 2 })).toEqual({
      gpuHours: expected(old).size,
      ownerHours: 0,
      fleetHours: 3, // one fleet group (roll-host's GPUs share model and site), three hours
    });
    const all = rows(await influxQuery(influx.url, hourQuery, db));
    expectHourRows(all, new Map([...wantRecent, ...expected(old)]));

    // Rolling the previous hour up again by hand (the range widened to the whole hour)
    // overwrites the query's points with equal ones.
    const progress: number[] = [];
    await rollup(target, lastHour + 60_000, thisHour - 60_000, { onProgress: (done) => progress.push(done) });
    expect(progress).toEqual([thisHour]);
    expect(rows(await influxQuery(influx.url, hourQuery, db))).toEqual(all);

    // And the raw sums InfluxDB computes per GPU-hour agree with gpu_hour.
    const raw = rows(
      await influxQuery(
        influx.url,
        `SELECT sum("held_idle_s") AS "held", count("observed_s") AS "n" FROM "${db}"."${RP_WINDOW}"."gpu_window" WHERE time >= ${thisHour - 8 * HOUR_MS}ms AND time < ${thisHour}ms GROUP BY time(1h), "uuid" fill(none)`,
        db,
      ),
    );
    expect(raw).toHaveLength(all.length);
    for (const r of raw) {
      const h = all.find((x) => x["uuid"] === r["uuid"] && x["time"] === r["time"]);
      expect(h?.["held_idle_s"]).toBeCloseTo(r["held"] as number, 9);
      expect(h?.["windows"]).toBe(r["n"]);
    }
  }, 90_000);
});

describe("trueidle collector --influx-* flags", () => {
  it.each([
    [["--influx-url", "influx:8086/trueidle"], /--influx-url must start with http:\/\/ or https:\/\//],
    [
      ["--influx-url", "http://admin:hunter2@influx:8086/trueidle"],
      /must not hold credentials; set TRUEIDLE_INFLUX_USERNAME/,
    ],
    [["--influx-url", "http://influx:8086/a/b"], /must be a single database name/],
    [["--influx-credentials-file", "/nonexistent"], /--influx-credentials-file needs --influx-url/],
    [
      ["--influx-url", "http://influx:8086/t", "--influx-raw-retention", "1h"],
      /--influx-raw-retention: must be at least 7200000 ms/,
    ],
  ])("refuses %j with a clear message", async (args, message) => {
    const { code, output } = await runTrueidle([
      "collector",
      "--plaintext",
      "--grpc-listen",
      "127.0.0.1:0",
      "--http-listen",
      "127.0.0.1:0",
      ...args,
    ]);
    expect(code).toBe(2);
    expect(output).toMatch(message);
    expect(output).not.toContain("hunter2");
  });
});

describe("end to end: agent subprocesses → collector subprocess → InfluxDB", () => {
  const procs: TrueidleProcess[] = [];
  let dir: string;
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("writes every GPU's windows with the host's tags and the idle model's seconds", async () => {
    dir = mkdtempSync(path.join(tmpdir(), "trueidle-influx-e2e-"));
    const grpcPort = await freePort();
    const httpPort = await freePort();
    const password = "s3cr3t-never-logged";
    const collector = startTrueidle(
      [
        "collector",
        "--plaintext",
        "--grpc-listen",
        `127.0.0.1:${grpcPort}`,
        "--http-listen",
        `127.0.0.1:${httpPort}`,
        "--influx-url",
        `${influx.url}/e2e`,
        "--influx-flush-interval",
        "100ms",
        "--log-level",
        "info",
      ],
      { TRUEIDLE_INFLUX_USERNAME: "trueidle", TRUEIDLE_INFLUX_PASSWORD: password },
    );
    procs.push(collector);
    await collector.waitForOutput(/writes every window to InfluxDB at http:\/\/127\.0\.0\.1:\d+, database \\"e2e\\"/);
    await collector.waitForOutput(/The InfluxDB schema is ready/);

    const scenario = path.join(dir, "sim-e2e.json");
    writeFileSync(
      scenario,
      JSON.stringify({
        host: "sim-e2e",
        gpus: [
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "held_idle" }] },
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "busy_phantom" }] },
          { model: "NVIDIA L40S", phases: [{ for: "1h", state: "active" }] },
        ],
      }),
    );
    const agent = startTrueidle([
      "agent",
      "--plaintext",
      "--source",
      "sim",
      "--scenario",
      scenario,
      "--collector",
      `127.0.0.1:${grpcPort}`,
      "--hostname",
      "sim-e2e",
      "--label",
      "site=lab west",
      "--interval",
      "1s",
      "--window",
      "2s",
      "--log-level",
      "warn",
    ]);
    procs.push(agent);

    // Two full windows per GPU (the first may be partial: the agent started mid-window).
    const points = await eventually(
      "two full windows per GPU in InfluxDB",
      async () => {
        const r = await windowRows("e2e");
        const full = r.filter((x) => x["observed_s"] === 2);
        return new Set(full.map((x) => x["gpu"])).size === 3 && full.length >= 6 ? r : undefined;
      },
      60_000,
    );
    const states: Record<string, string> = { "0": "held_idle_s", "1": "busy_phantom_s", "2": "active_s" };
    for (const p of points) {
      expect(p).toMatchObject({ host: "sim-e2e", site: "lab west" });
      expect(String(p["uuid"])).toMatch(/^GPU-/);
      expect(p["model"]).toBe(p["gpu"] === "2" ? "NVIDIA L40S" : "NVIDIA H100 80GB HBM3");
      expect(p[states[String(p["gpu"])]!]).toBe(p["observed_s"]);
      expect(typeof p["power_w"]).toBe("number");
      expect(Number.isInteger(p["processes_max"])).toBe(true);
      expect(Number(p["time"]) % 2_000).toBe(0);
    }
    expect(await metric(httpPort, "trueidle_influx_points_written_total")).toBeGreaterThanOrEqual(points.length);
    expect(collector.output()).not.toContain(password);
  });
});

/** A TCP proxy to a real InfluxDB that can go away (connections refused) and come back on the same port. */
class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  constructor(private readonly targetPort: number) {}

  listen(port: number): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.targetPort, "127.0.0.1");
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
  }

  close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }
}
