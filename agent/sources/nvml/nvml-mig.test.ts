/**
 * The NVML source on boards in MIG mode, against the stub libnvidia-ml.so.1 built by the
 * tests: every instance a GPU of its own, as the simulator shows it (migReadingsOf), the
 * board not at all; instances created, destroyed and re-created picked up within the scan
 * cadence, GPM samples never paired across two instances, and what it costs per tick.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import koffi from "koffi";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../../common/log.js";
import type { GpuReading } from "../../../common/types.js";
import { eventually } from "../../../test/helpers/eventually.js";
import { STUB_CALL_COST_US, type NvmlStub, prepareNvmlStub } from "../../../test/helpers/nvml-stub.js";
import { migBoardReadingOf, migReadingsOf, migUuid, readingOf } from "../../sim/evaluate.js";
import { NvmlSource, type NvmlSourceOptions } from "./nvml-source.js";
import { MIG_SCAN_MS, migGpmStride } from "./read-mig.js";

const H100 = "NVIDIA H100 80GB HBM3";
const INTERVAL_MS = 250;
let dirs: string[] = [];
let sources: NvmlSource[] = [];

afterEach(async () => {
  for (const s of sources) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  sources = [];
  dirs = [];
});

function stub(scenario: object): NvmlStub {
  const dir = mkdtempSync(path.join(tmpdir(), "trueidle-nvml-mig-"));
  dirs.push(dir);
  const s = prepareNvmlStub(dir, scenario);
  Object.assign(process.env, s.env);
  return s;
}

function source(s: NvmlStub, opts: Partial<NvmlSourceOptions> = {}) {
  const log = recordingLogger();
  const src = new NvmlSource({
    libPath: s.libPath,
    intervalMs: INTERVAL_MS,
    processIntervalMs: 500,
    logger: log,
    ...opts,
  });
  sources.push(src);
  return { src, log };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What the tests compare of a reading: everything the simulator gives an instance, SM activity apart. */
function comparable(r: GpuReading) {
  return {
    uuid: r.uuid,
    index: r.index,
    model: r.model,
    parentUuid: r.parentUuid,
    migProfile: r.migProfile,
    busId: r.busId,
    error: r.error === undefined ? undefined : "error",
    util: r.util,
    powerW: r.powerW,
    powerLimitW: r.powerLimitW,
    memUsedBytes: r.memUsedBytes,
    memTotalBytes: r.memTotalBytes,
    processes: r.processes?.map((p) => [p.pid, p.name, p.usedMemoryBytes]),
  };
}

describe("NVML source: MIG", () => {
  it("reads each MIG instance as a GPU of its own, as the simulator shows it, and the board as its board row; picks up instances created, destroyed and re-created, never mixing two", async () => {
    const originMs = Date.now();
    const s = stub({
      originMs,
      gpus: [
        {
          model: H100,
          phases: [{ for: "1h", powerW: 190 }],
          mig: [
            // slot 0: busy, two processes.
            { profile: "3g.40gb", gi: 2, phases: [{ for: "1h", state: "active" }] },
            // slot 1: held and idle by one process.
            {
              profile: "2g.20gb",
              gi: 3,
              ci: 1,
              phases: [
                {
                  for: "1h",
                  state: "held_idle",
                  processes: [{ pid: 4242, name: "python3 serve.py", usedMiB: 6000 }],
                },
              ],
            },
            // slot 2: free.
            { profile: "1g.10gb", gi: 9, phases: [{ for: "1h", state: "free_idle" }] },
            // slot 3: busy then idle, destroyed for less than a tick and re-created, busy again.
            {
              profile: "1g.10gb",
              gi: 10,
              phases: [
                { for: "3s", state: "held_idle", smActive: 0.9 },
                { for: "3s", state: "held_idle", smActive: 0.1 },
                { for: "150ms", absent: true },
              ],
            },
            // slot 4: created after the agent started.
            {
              profile: "1g.10gb",
              gi: 11,
              phases: [
                { for: "3s", absent: true },
                { for: "1h", state: "held_idle" },
              ],
            },
            // slot 5: lost.
            { profile: "1g.10gb+me", gi: 13, phases: [{ for: "1h", error: "GPU is lost" }] },
          ],
        },
        // A whole GPU beside it.
        { model: H100, gpm: true, phases: [{ for: "1h", state: "busy_phantom" }] },
      ],
    });
    const board = s.scenario.gpus[0]!;
    const whole = s.scenario.gpus[1]!;
    const { src, log } = source(s);
    await src.start();
    expect(src.describe()).toMatch(/GPM SM activity on GPU 0, 1; MIG mode on GPU 0: each instance a GPU of its own$/);
    expect(src.describeSampleBuffers()).toBe("GPU 0: none in MIG mode; GPU 1: every 166.7 ms, 120 kept (19.8 s)");

    // Before anything changes: the instances there are, each as the simulator has it.
    const now = Date.now();
    expect(now - originMs, "the source took too long to start for this test's timeline").toBeLessThan(2_700);
    const got = src.sample(now);
    const want = [
      migBoardReadingOf(s.scenario, board, now),
      ...migReadingsOf(s.scenario, board, now),
      readingOf(s.scenario, whole, now),
    ];
    expect(got.map((r) => r.uuid)).toEqual(want.map((r) => r.uuid));
    expect(got.map(comparable)).toEqual(want.map(comparable));
    // The board only as its board row: its power, nothing of a GPU's.
    expect(got.filter((r) => r.uuid === board.uuid)).toEqual([
      { ...migBoardReadingOf(s.scenario, board, now), driverVersion: got[0]!.driverVersion },
    ]);
    // SM activity per instance through GPM, within what the boards' tests allow.
    for (const [i, r] of got.entries()) {
      if (want[i]!.smActive === undefined || r.error !== undefined) continue;
      expect(r.smActive, r.migProfile).toBeCloseTo(want[i]!.smActive!, 2);
    }
    expect(got.map((r) => r.migProfile)).toEqual([
      undefined,
      "3g.40gb",
      "2g.20gb",
      "1g.10gb",
      "1g.10gb",
      "1g.10gb+me",
      undefined,
    ]);
    expect(got[5]!.error).toMatch(/^NVML: .*lost/i);
    expect(got[6]!.util).toBe(100);

    // Slot 4 is created 3 s after the origin (its first absence over: generation 1): seen
    // within the scan cadence.
    const created = migUuid(board.uuid, 11, 0, 1);
    const seenAt = await eventually(
      "the instance created after start",
      () => (src.sample(Date.now()).some((r) => r.uuid === created) ? Date.now() : undefined),
      10_000,
      20,
    );
    expect(seenAt - (originMs + 3_000)).toBeLessThan(MIG_SCAN_MS + INTERVAL_MS + 400);
    expect(log.lines.some((l) => l.msg.startsWith("A MIG instance appeared") && l.fields?.["uuid"] === created)).toBe(
      true,
    );

    // Slot 3 is destroyed 6 s after the origin for 150 ms, less than a tick, and re-created:
    // a new uuid, a new GPU; each uuid shows only its own instance's SM activity.
    const first = migUuid(board.uuid, 10, 0, 0);
    const second = migUuid(board.uuid, 10, 0, 1);
    const seen: Array<{ atMs: number; uuids: string[]; sm: Map<string, number | undefined> }> = [];
    while (Date.now() < originMs + 8_500) {
      const atMs = Date.now();
      const rs = src.sample(atMs).filter((r) => r.parentUuid === board.uuid && r.migProfile === "1g.10gb");
      seen.push({ atMs, uuids: rs.map((r) => r.uuid), sm: new Map(rs.map((r) => [r.uuid, r.smActive])) });
      await sleep(20);
    }
    const slot3 = seen.map((x) => x.uuids.filter((u) => u === first || u === second));
    // Never both at once; the first until it is destroyed, the second from soon after.
    expect(slot3.every((us) => us.length <= 1)).toBe(true);
    const lastFirst = Math.max(...seen.filter((x) => x.uuids.includes(first)).map((x) => x.atMs));
    const firstSecond = Math.min(...seen.filter((x) => x.uuids.includes(second)).map((x) => x.atMs));
    expect(lastFirst).toBeLessThan(firstSecond);
    expect(lastFirst - (originMs + 6_150)).toBeLessThan(2 * INTERVAL_MS + 200);
    expect(firstSecond - (originMs + 6_150)).toBeLessThan(MIG_SCAN_MS + INTERVAL_MS + 400);
    // The first instance, idling since 3 s: 0.1, never the second's 0.9 in a pair across both.
    for (const x of seen) {
      const sm = x.sm.get(first);
      if (x.uuids.includes(first) && x.atMs > originMs + 3_700 && sm !== undefined) expect(sm).toBeCloseTo(0.1, 2);
    }
    // The second: SM activity only from two samples of its own, its own 0.9.
    const secondSm = seen.filter((x) => x.uuids.includes(second)).map((x) => x.sm.get(second));
    expect(secondSm.filter((v) => v !== undefined).length).toBeGreaterThan(0);
    for (const v of secondSm) if (v !== undefined) expect(v).toBeCloseTo(0.9, 2);
    // The others go on through all of it.
    const last = src.sample(Date.now());
    expect(last.find((r) => r.migProfile === "3g.40gb")?.smActive).toBeCloseTo(0.72, 2);
    expect(last.filter((r) => r.error === undefined)).toHaveLength(7);
  });

  it("reads a board's instances at a cadence: the cheap calls per tick, the slots looked at every scan", async () => {
    const s = stub({
      gpus: [
        {
          model: H100,
          phases: [{ for: "1h", powerW: 190 }],
          mig: Array.from({ length: 7 }, (_, i) => ({
            profile: "1g.10gb",
            gi: 7 + i,
            phases: [{ for: "1h", state: i % 2 === 0 ? "active" : "held_idle" }],
          })),
        },
        { model: H100, gpm: true, phases: [{ for: "1h", state: "active", processes: 1 }] },
      ],
    });
    const count = koffi.load(s.libPath).func("int64_t trueidle_stub_calls(const char *fn)") as (
      fn: string,
    ) => number | bigint;
    const snapshot = (): Record<string, number> =>
      Object.fromEntries(Object.keys(STUB_CALL_COST_US).map((fn) => [fn, Number(count(fn))]));
    const { src } = source(s);
    await src.start();
    expect(src.sample(Date.now()).map((r) => r.migProfile)).toEqual([
      undefined,
      ...Array(7).fill("1g.10gb"),
      undefined,
    ]);
    const before = snapshot();
    const t0 = Date.now();
    await sleep(4_500);
    const after = snapshot();
    const seconds = (Date.now() - t0) / 1000;
    const made = Object.fromEntries(Object.entries(after).map(([fn, n]) => [fn, n - (before[fn] ?? 0)]));
    const ticks = made["nvmlDeviceGetUtilizationRates"]!; // the whole GPU's, one a tick
    expect(ticks).toBeGreaterThanOrEqual(Math.floor((seconds * 1000) / INTERVAL_MS) - 2);
    // Per tick and instance: memory; a GPM pair every second tick (7 instances at 4 ticks a
    // second are 28 samples a second, beyond MIG_GPM_SAMPLES_PER_S). No utilization, no
    // power: the board's, read once a tick for its board row.
    expect(made["nvmlDeviceGetMemoryInfo_v2"]).toBe(8 * ticks);
    expect(made["nvmlGpmMigSampleGet"]).toBeGreaterThanOrEqual((7 * (ticks - 1)) / 2);
    expect(made["nvmlGpmMigSampleGet"]).toBeLessThanOrEqual((7 * (ticks + 1)) / 2);
    expect(made["nvmlGpmSampleGet"]).toBe(ticks);
    expect(made["nvmlDeviceGetPowerUsage"]).toBe(2 * ticks);
    // The slots every MIG_SCAN_MS: 7 lookups and 7 uuids a scan, nothing else once the
    // instances are known; and each board's MIG mode as often.
    const scans = made["nvmlDeviceGetMigDeviceHandleByIndex"]! / 7;
    expect(Number.isInteger(scans)).toBe(true);
    expect(scans).toBeGreaterThanOrEqual(Math.floor((seconds * 1000) / MIG_SCAN_MS) - 1);
    expect(scans).toBeLessThanOrEqual(Math.ceil((seconds * 1000) / MIG_SCAN_MS) + 1);
    expect(made["nvmlDeviceGetUUID"]).toBe(7 * scans);
    expect(made["nvmlDeviceGetName"]).toBe(0);
    expect(made["nvmlDeviceGetGpuInstanceId"]).toBe(0);
    expect(made["nvmlDeviceGetMigMode"]).toBeLessThanOrEqual(2 * (scans + 1));
    expect(made["nvmlDeviceGetProcessUtilization"]).toBe(0);
    expect(made["nvmlDeviceGetSamples"]).toBe(0);
    // What that costs on an H200's figures: per tick, the board's 7 instances' memory 7 × 6 µs
    // and half their GPM samples and metrics, 3.5 × 52 µs, their process lists 7 × 7 µs
    // every process interval, the board row's power 4 µs, beside the whole GPU's 70 µs; the scans about 26 µs a second a board,
    // whatever the interval.
    const costUs = (fns: string[]): number => fns.reduce((sum, fn) => sum + made[fn]! * STUB_CALL_COST_US[fn]!, 0);
    const scanFns = ["nvmlDeviceGetMigDeviceHandleByIndex", "nvmlDeviceGetUUID", "nvmlDeviceGetMigMode"];
    const perTick = (costUs(Object.keys(made)) - costUs(scanFns)) / ticks;
    const scanPerSecond = costUs(scanFns) / seconds;
    expect(perTick).toBeGreaterThan(7 * 6 + 3 * 52);
    expect(perTick).toBeLessThan(7 * 6 + 4 * 52 + 7 * 7 + 4 + 80);
    expect(scanPerSecond).toBeLessThan(40);
  });

  it("samples GPM of at most MIG_GPM_SAMPLES_PER_S instances a second on a host of many, each in turn, none left without SM activity", async () => {
    expect([1, 20, 21, 56].map((n) => migGpmStride(n, 1000))).toEqual([1, 1, 2, 3]);
    expect(migGpmStride(7, 250)).toBe(2);
    expect(migGpmStride(0, 100)).toBe(1);
    // Eight H100s split seven ways: 56 instances, half of them running.
    const s = stub({
      gpus: Array.from({ length: 8 }, () => ({
        model: H100,
        phases: [{ for: "1h", powerW: 190 }],
        mig: Array.from({ length: 7 }, (_, i) => ({
          profile: "1g.10gb",
          gi: 7 + i,
          phases: [{ for: "1h", state: i % 2 === 0 ? "active" : "held_idle", smActive: i % 2 === 0 ? 0.6 : 0.02 }],
        })),
      })),
    });
    const count = koffi.load(s.libPath).func("int64_t trueidle_stub_calls(const char *fn)") as (
      fn: string,
    ) => number | bigint;
    const snapshot = (): Record<string, number> =>
      Object.fromEntries(Object.keys(STUB_CALL_COST_US).map((fn) => [fn, Number(count(fn))]));
    const { src } = source(s, { intervalMs: 1000 });
    await src.start();
    // Every instance gets SM activity of its own within a stride of ticks and a pair.
    const all = await eventually(
      "SM activity on all 56 instances",
      () => {
        const rs = src.sample(Date.now()).filter((r) => r.parentUuid !== undefined);
        return rs.length === 56 && rs.every((r) => r.smActive !== undefined) ? rs : undefined;
      },
      15_000,
      100,
    );
    expect(all.filter((r) => Math.abs(r.smActive! - 0.6) < 0.01)).toHaveLength(32);
    expect(all.filter((r) => Math.abs(r.smActive! - 0.02) < 0.01)).toHaveLength(24);
    const before = snapshot();
    const t0 = Date.now();
    await sleep(6_000);
    const made = Object.fromEntries(Object.entries(snapshot()).map(([fn, n]) => [fn, n - (before[fn] ?? 0)]));
    const seconds = (Date.now() - t0) / 1000;
    const ticks = made["nvmlDeviceGetPowerUsage"]! / 8; // the eight board rows', one a tick each
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(seconds) - 1);
    // Every tick each instance's memory; its GPM every third tick (56 / 20 a second).
    expect(made["nvmlDeviceGetMemoryInfo_v2"]).toBe(56 * ticks);
    expect(made["nvmlGpmMigSampleGet"]).toBeGreaterThanOrEqual((56 * (ticks - 1)) / 3);
    expect(made["nvmlGpmMigSampleGet"]).toBeLessThanOrEqual((56 * (ticks + 1)) / 3);
    // What the host's driver calls cost a second on an H200's figures: within 0.2 % of a
    // core (2 ms a second), where GPM every tick would be 56 × 52 µs = 2.9 ms alone.
    const costUs = Object.entries(made).reduce((sum, [fn, n]) => sum + n * STUB_CALL_COST_US[fn]!, 0);
    expect(costUs / seconds).toBeLessThan(2_000);
  }, 40_000);

  it("keeps the instances through a driver reload, and makes a hung board's instances unavailable while the other GPU goes on", async () => {
    const s = stub({
      gpus: [
        {
          model: H100,
          phases: [{ for: "1h", powerW: 190 }],
          mig: [
            { profile: "4g.40gb", gi: 1, phases: [{ for: "1h", state: "active" }] },
            { profile: "3g.40gb", gi: 2, phases: [{ for: "1h", state: "held_idle" }] },
          ],
        },
        { model: H100, phases: [{ for: "1h", state: "active" }] },
      ],
    });
    const { src } = source(s, { callTimeoutMs: 400 });
    await src.start();
    const uuids = src.sample(Date.now()).map((r) => r.uuid);
    expect(uuids).toEqual([
      s.scenario.gpus[0]!.uuid,
      ...migReadingsOf(s.scenario, s.scenario.gpus[0]!, Date.now()).map((r) => r.uuid),
      s.scenario.gpus[1]!.uuid,
    ]);

    s.control.unloadDriver();
    await eventually(
      "every GPU unavailable, each instance under its own uuid",
      () => {
        const rs = src.sample(Date.now());
        return rs.length === 4 && rs.every((r) => /driver/i.test(r.error ?? "")) ? rs : undefined;
      },
      20_000,
      100,
    );
    expect(src.sample(Date.now()).map((r) => r.uuid)).toEqual(uuids);
    s.control.reloadDriver();
    await eventually(
      "readings again",
      () => {
        const rs = src.sample(Date.now());
        return rs.every((r) => r.error === undefined) && rs.map((r) => r.uuid).join() === uuids.join() ? rs : undefined;
      },
      30_000,
      100,
    );

    s.control.hang(0, 4_000);
    const during = await eventually(
      "the MIG board's instances unavailable for a hung call",
      () => {
        const rs = src.sample(Date.now());
        return rs.filter((r) => r.parentUuid !== undefined).every((r) => /\(driver hung\)/.test(r.error ?? ""))
          ? rs
          : undefined;
      },
      20_000,
      50,
    );
    expect(during.map((r) => r.uuid)).toEqual(uuids);
    // The board row says the board is hung too; the other GPU reads.
    expect(during[0]!.error).toMatch(/\(driver hung\)/);
    expect(during[3]!.error).toBeUndefined();
    s.control.hang(0, 0);
    await eventually(
      "the instances back",
      () => {
        const rs = src.sample(Date.now());
        return rs.every((r) => r.error === undefined) && src.hungCalls() === 0 ? rs : undefined;
      },
      30_000,
      100,
    );
    expect(src.sample(Date.now()).map((r) => r.uuid)).toEqual(uuids);
  });
});
