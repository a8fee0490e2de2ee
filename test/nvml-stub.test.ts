/**
 * The stub libnvidia-ml.so, built with gcc and called through koffi as the NVML source
 * calls it: at any instant it shows what readingOf shows for the same scenario, follows
 * the NVML calling conventions (sizes, versions, return codes) and plays the driver's
 * faults its control file asks for.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import koffi from "koffi";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readingOf } from "../agent/sim/evaluate.js";
import { parseScenario, type Scenario } from "../agent/sim/scenario.js";
import type { GpuReading } from "../common/types.js";
import { eventually } from "./helpers/eventually.js";
import { hasGpm, nvmlErrorOf, prepareNvmlStub, type NvmlStub } from "./helpers/nvml-stub.js";
import { H200_CALL_COST_US, H200_MEASURED_US } from "./helpers/nvml-call-cost.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

const SUCCESS = 0,
  UNINITIALIZED = 1,
  INVALID_ARGUMENT = 2,
  NOT_SUPPORTED = 3,
  NOT_FOUND = 6;
const INSUFFICIENT_SIZE = 7,
  DRIVER_NOT_LOADED = 9,
  GPU_IS_LOST = 15,
  RESET_REQUIRED = 16;
const ARGUMENT_VERSION_MISMATCH = 25,
  UNKNOWN = 999;
const MiB = 1024 * 1024;
const NOT_AVAILABLE = 0xffffffffffffffffn;
const SAMPLE_PERIOD_US = 166_667;
const MEMORY_V2 = 40 | (2 << 24);

const SCENARIO = {
  host: "stub-test",
  driverVersion: "550.54.15",
  gpus: [
    // 0: changes every few seconds, with noise on util and power.
    {
      model: "NVIDIA H100 80GB HBM3",
      gpm: true,
      phases: [
        { for: "3s", state: "active", noise: 0.3 },
        { for: "2s", util: 40, noise: 0.5, processes: 1 },
        { for: "2s", state: "held_idle" },
      ],
    },
    // 1: no GPM (gpm absent, no smActive).
    { model: "NVIDIA L40S", phases: [{ for: "1h", state: "held_idle" }] },
    // 2: GPM by flag, the active preset's SM activity.
    { model: "NVIDIA H100 80GB HBM3", gpm: true, phases: [{ for: "1h", state: "active" }] },
    // 3: GPM because a phase sets smActive; explicit processes; media.
    {
      model: "NVIDIA H200",
      phases: [
        {
          for: "1h",
          util: 20,
          smActive: 0.3,
          media: 40,
          processes: [
            { pid: 4242, name: "python3 train.py", usedMiB: 1000, smUtil: 15 },
            { pid: 4343, name: "idle-holder" },
          ],
        },
      ],
    },
    // 4: signals the driver does not give.
    {
      model: "NVIDIA A100-SXM4-80GB",
      phases: [{ for: "1h", util: null, powerW: null, memUsedMiB: null, processes: 0 }],
    },
    { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", error: "GPU is lost" }] },
    { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", error: "GPU requires reset" }] },
    // 7: smActive set but GPM switched off.
    { model: "NVIDIA T4", gpm: false, phases: [{ for: "1h", state: "active", smActive: 0.5 }] },
  ],
};

/** The few NVML functions the tests call, declared here (not the agent's bindings). */
function bind(libPath: string) {
  const lib = koffi.load(libPath);
  return {
    init: lib.func("int nvmlInit_v2()"),
    shutdown: lib.func("int nvmlShutdown()"),
    errorString: lib.func("const char *nvmlErrorString(int result)"),
    driverVersion: lib.func("int nvmlSystemGetDriverVersion(void *buf, uint32_t len)"),
    processName: lib.func("int nvmlSystemGetProcessName(uint32_t pid, void *buf, uint32_t len)"),
    count: lib.func("int nvmlDeviceGetCount_v2(_Out_ uint32_t *n)"),
    handle: lib.func("int nvmlDeviceGetHandleByIndex_v2(uint32_t index, _Out_ void **dev)"),
    index: lib.func("int nvmlDeviceGetIndex(void *dev, _Out_ uint32_t *index)"),
    uuid: lib.func("int nvmlDeviceGetUUID(void *dev, void *buf, uint32_t len)"),
    name: lib.func("int nvmlDeviceGetName(void *dev, void *buf, uint32_t len)"),
    serial: lib.func("int nvmlDeviceGetSerial(void *dev, void *buf, uint32_t len)"),
    pci: lib.func("int nvmlDeviceGetPciInfo_v3(void *dev, void *pci)"),
    memory: lib.func("int nvmlDeviceGetMemoryInfo_v2(void *dev, void *memory)"),
    utilization: lib.func("int nvmlDeviceGetUtilizationRates(void *dev, void *util)"),
    samples: lib.func(
      "int nvmlDeviceGetSamples(void *dev, int type, uint64_t lastSeen, _Out_ int *valType, _Inout_ uint32_t *count, void *samples)",
    ),
    power: lib.func("int nvmlDeviceGetPowerUsage(void *dev, _Out_ uint32_t *mw)"),
    powerLimit: lib.func("int nvmlDeviceGetEnforcedPowerLimit(void *dev, _Out_ uint32_t *mw)"),
    clock: lib.func("int nvmlDeviceGetClockInfo(void *dev, int type, _Out_ uint32_t *mhz)"),
    eventReasons: lib.func("int nvmlDeviceGetCurrentClocksEventReasons(void *dev, _Out_ uint64_t *reasons)"),
    throttleReasons: lib.func("int nvmlDeviceGetCurrentClocksThrottleReasons(void *dev, _Out_ uint64_t *reasons)"),
    encoder: lib.func("int nvmlDeviceGetEncoderUtilization(void *dev, _Out_ uint32_t *util, _Out_ uint32_t *periodUs)"),
    decoder: lib.func("int nvmlDeviceGetDecoderUtilization(void *dev, _Out_ uint32_t *util, _Out_ uint32_t *periodUs)"),
    processes: lib.func("int nvmlDeviceGetComputeRunningProcesses_v3(void *dev, _Inout_ uint32_t *count, void *infos)"),
    processUtil: lib.func(
      "int nvmlDeviceGetProcessUtilization(void *dev, void *samples, _Inout_ uint32_t *count, uint64_t lastSeen)",
    ),
    gpmSupport: lib.func("int nvmlGpmQueryDeviceSupport(void *dev, void *support)"),
    gpmAlloc: lib.func("int nvmlGpmSampleAlloc(_Out_ void **sample)"),
    gpmFree: lib.func("int nvmlGpmSampleFree(void *sample)"),
    gpmGet: lib.func("int nvmlGpmSampleGet(void *dev, void *sample)"),
    gpmMetrics: lib.func("int nvmlGpmMetricsGet(void *metricsGet)"),
  };
}
type Nvml = ReturnType<typeof bind>;
type Fn = Nvml["init"];

const cString = (buf: Buffer): string => buf.toString("utf8", 0, buf.indexOf(0) < 0 ? buf.length : buf.indexOf(0));
function str(fn: Fn, dev: unknown, len: number): [number, string] {
  const buf = Buffer.alloc(len);
  const rc = fn(dev, buf, len) as number;
  return [rc, cString(buf)];
}
function u32(fn: Fn, ...args: unknown[]): [number, number] {
  const out = [0];
  const rc = fn(...args, out) as number;
  return [rc, out[0]!];
}
function callAsync(fn: Fn, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, rc: number) => (err ? reject(err) : resolve(rc)));
  });
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every reading readingOf gives for `gpu` from t0 to t1 (ms), so a value read between the two can be checked exactly. */
function readingsBetween(scenario: Scenario, gpu: number, t0: number, t1: number): GpuReading[] {
  const out: GpuReading[] = [];
  for (let t = t0; t <= t1; t++) out.push(readingOf(scenario, scenario.gpus[gpu]!, t));
  return out;
}

describe("stub libnvidia-ml.so", () => {
  let dir: string;
  let stub: NvmlStub;
  let nvml: Nvml;
  const devs: unknown[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "trueidle-nvml-test-"));
    stub = prepareNvmlStub(dir, SCENARIO);
    Object.assign(process.env, stub.env);
    nvml = bind(stub.libPath);
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const dev = (i: number): unknown => devs[i];

  it("answers UNINITIALIZED before nvmlInit_v2 and counts inits and shutdowns like NVML", () => {
    expect(u32(nvml.count)[0]).toBe(UNINITIALIZED);
    expect(nvml.shutdown()).toBe(UNINITIALIZED);
    const inits = stub.control.initCount();
    expect(nvml.init()).toBe(SUCCESS);
    expect(nvml.init()).toBe(SUCCESS);
    expect(nvml.shutdown()).toBe(SUCCESS);
    expect(u32(nvml.count)).toEqual([SUCCESS, SCENARIO.gpus.length]);
    expect(nvml.shutdown()).toBe(SUCCESS);
    expect(u32(nvml.count)[0]).toBe(UNINITIALIZED);
    expect(nvml.init()).toBe(SUCCESS);
    expect(stub.control.initCount()).toBe(inits + 3);
    for (let i = 0; i < SCENARIO.gpus.length; i++) {
      const out: unknown[] = [null];
      expect(nvml.handle(i, out)).toBe(SUCCESS);
      devs.push(out[0]);
      expect(u32(nvml.index, out[0])).toEqual([SUCCESS, i]);
    }
    expect(nvml.handle(SCENARIO.gpus.length, [null])).toBe(INVALID_ARGUMENT);
    const version = Buffer.alloc(80);
    expect(nvml.driverVersion(version, 80)).toBe(SUCCESS);
    expect(cString(version)).toBe("550.54.15");
    expect(nvml.driverVersion(version, 5)).toBe(INSUFFICIENT_SIZE);
    expect(nvml.errorString(GPU_IS_LOST)).toBe("GPU is lost");
  });

  it("shows at each instant what readingOf shows for the same scenario", async () => {
    const s = stub.scenario;
    const seconds = new Set<number>();
    // Several seconds, so the per-second noise on GPU 0 changes between rounds.
    while (seconds.size < 3) {
      for (const i of [0, 1, 2, 3, 7]) {
        const t0 = Date.now();
        const [, uuid] = str(nvml.uuid, dev(i), 96);
        const [, name] = str(nvml.name, dev(i), 96);
        const [, serial] = str(nvml.serial, dev(i), 30);
        const pci = Buffer.alloc(68);
        expect(nvml.pci(dev(i), pci)).toBe(SUCCESS);
        const mem = Buffer.alloc(40);
        mem.writeUInt32LE(MEMORY_V2, 0);
        expect(nvml.memory(dev(i), mem)).toBe(SUCCESS);
        const util = Buffer.alloc(8);
        expect(nvml.utilization(dev(i), util)).toBe(SUCCESS);
        const [powerRc, mw] = u32(nvml.power, dev(i));
        const [, limit] = u32(nvml.powerLimit, dev(i));
        const [, smClock] = u32(nvml.clock, dev(i), 1);
        const reasons = [0n];
        expect(nvml.eventReasons(dev(i), reasons)).toBe(SUCCESS);
        const count = [8];
        const infos = Buffer.alloc(24 * 8);
        expect(nvml.processes(dev(i), count, infos)).toBe(SUCCESS);
        const t1 = Date.now();
        seconds.add(Math.floor(t0 / 1000));

        const candidates = readingsBetween(s, i, t0, t1);
        const r = candidates[0]!;
        expect(uuid).toBe(r.uuid);
        expect(name).toBe(r.model);
        expect(serial).toBe(String(1320000000000 + i * 7919));
        expect(cString(pci.subarray(36, 68))).toBe(r.busId);
        expect(cString(pci.subarray(0, 16))).toBe(r.busId!.slice(4));
        expect(pci.readUInt32LE(20)).toBe(Number.parseInt(r.busId!.slice(9, 11), 16));
        const total = Number(mem.readBigUInt64LE(8)),
          reserved = Number(mem.readBigUInt64LE(16));
        const free = Number(mem.readBigUInt64LE(24)),
          used = Number(mem.readBigUInt64LE(32));
        expect(total).toBe(r.memTotalBytes);
        expect(reserved).toBe(512 * MiB);
        expect(candidates.map((c) => c.memUsedBytes)).toContain(used);
        expect(free).toBe(total - reserved - used);
        const gpuUtil = util.readUInt32LE(0);
        expect(candidates.map((c) => c.util)).toContain(gpuUtil);
        expect(util.readUInt32LE(4)).toBe(Math.round(gpuUtil * 0.6));
        expect(powerRc).toBe(SUCCESS);
        expect(candidates.map((c) => c.powerW)).toContain(mw / 1000);
        expect(limit).toBe(r.powerLimitW! * 1000);
        expect(candidates.map((c) => (c.util! > 0 ? 1980 : 345))).toContain(smClock);
        // gpu_idle exactly when the fake nvidia-smi says "Active": util 0.
        expect(candidates.map((c) => (c.util === 0 ? 1 : 0))).toContain(Number(reasons[0]));
        const procs = Array.from({ length: count[0]! }, (_, k) => ({
          pid: infos.readUInt32LE(24 * k),
          used: infos.readBigUInt64LE(24 * k + 8),
          instances: [infos.readUInt32LE(24 * k + 16), infos.readUInt32LE(24 * k + 20)],
        }));
        const expected = candidates.map((c) =>
          JSON.stringify(
            c.processes!.map((p) => ({
              pid: p.pid,
              used: String(p.usedMemoryBytes === undefined ? NOT_AVAILABLE : BigInt(p.usedMemoryBytes)),
              instances: [0xffffffff, 0xffffffff],
            })),
          ),
        );
        expect(expected).toContain(JSON.stringify(procs.map((p) => ({ ...p, used: String(p.used) }))));
      }
      await sleep(400);
    }
    // Names of the processes any GPU shows now.
    expect(str(nvml.processName, 4242, 64)).toEqual([SUCCESS, "python3 train.py"]);
    expect(str(nvml.processName, 10200, 64)).toEqual([SUCCESS, "python3"]);
    expect(str(nvml.processName, 10201, 64)).toEqual([SUCCESS, "torchrun"]);
    expect(str(nvml.processName, 4242, 8)[0]).toBe(INSUFFICIENT_SIZE);
    expect(str(nvml.processName, 99999, 64)[0]).toBe(NOT_FOUND);
  });

  it("keeps a utilization sample every 166,667 µs since the epoch and returns only those newer than lastSeenTimeStamp", async () => {
    const s = stub.scenario;
    const read = (lastSeen: number, room: number): { rc: number; ts: number[]; values: number[]; valType: number } => {
      const valType = [0],
        count = [room];
      const buf = Buffer.alloc(16 * Math.max(room, 1));
      const rc = nvml.samples(dev(0), 1, lastSeen, valType, count, buf) as number;
      const n = rc === SUCCESS ? count[0]! : 0;
      const ts = Array.from({ length: n }, (_, k) => Number(buf.readBigUInt64LE(16 * k)));
      const values = Array.from({ length: n }, (_, k) => buf.readUInt32LE(16 * k + 8));
      return { rc, ts, values, valType: valType[0]! };
    };
    // Without a buffer: how many it could return, at most the driver's 120.
    const count = [0];
    expect(nvml.samples(dev(0), 1, 0, [0], count, null)).toBe(SUCCESS);
    expect(count[0]).toBe(120);

    const all = read(0, 120);
    expect(all.rc).toBe(SUCCESS);
    expect(all.valType).toBe(1);
    expect(all.ts).toHaveLength(120);
    for (let k = 0; k < all.ts.length; k++) {
      expect(all.ts[k]! % SAMPLE_PERIOD_US).toBe(0);
      if (k > 0) expect(all.ts[k]! - all.ts[k - 1]!).toBe(SAMPLE_PERIOD_US);
      // The value is util at the sample's instant, noise included (20 s of it).
      expect(all.values[k]).toBe(readingOf(s, s.gpus[0]!, Math.floor(all.ts[k]! / 1000)).util);
    }
    expect(all.ts.at(-1)!).toBeLessThanOrEqual(Date.now() * 1000 + 1000);

    const middle = all.ts[60]!;
    const newer = read(middle, 120);
    expect(newer.rc).toBe(SUCCESS);
    expect(newer.ts[0]).toBe(middle + SAMPLE_PERIOD_US);
    expect(newer.ts.every((t) => t > middle)).toBe(true);

    // A short buffer gets the oldest newer ones, so the next call can go on from there.
    const short = read(middle, 5);
    expect(short.ts).toEqual([1, 2, 3, 4, 5].map((k) => middle + k * SAMPLE_PERIOD_US));

    // Nothing newer yet, until the driver's next sample.
    const last = read(0, 120).ts.at(-1)!;
    const next = await eventually(
      "a new utilization sample",
      () => {
        const r = read(last, 120);
        if (r.rc === NOT_FOUND) return undefined;
        return r;
      },
      10_000,
      20,
    );
    expect(next.rc).toBe(SUCCESS);
    expect(next.ts[0]).toBe(last + SAMPLE_PERIOD_US);

    expect(nvml.samples(dev(0), 0, 0, [0], [120], Buffer.alloc(16 * 120))).toBe(NOT_SUPPORTED);
    expect(nvml.samples(dev(4), 1, 0, [0], [120], Buffer.alloc(16 * 120))).toBe(NOT_SUPPORTED);
  });

  it("lists compute processes with the NVML size protocol and per-process SM utilization", () => {
    const s = stub.scenario;
    // Too small a buffer, or none: INSUFFICIENT_SIZE and the count needed.
    let count = [0];
    expect(nvml.processes(dev(2), count, null)).toBe(INSUFFICIENT_SIZE);
    expect(count[0]).toBe(2);
    count = [1];
    expect(nvml.processes(dev(2), count, Buffer.alloc(24))).toBe(INSUFFICIENT_SIZE);
    expect(count[0]).toBe(2);
    const infos = Buffer.alloc(48);
    count = [2];
    expect(nvml.processes(dev(2), count, infos)).toBe(SUCCESS);
    const r2 = readingOf(s, s.gpus[2]!, Date.now());
    expect([infos.readUInt32LE(0), infos.readUInt32LE(24)]).toEqual([10200, 10201]);
    expect(Number(infos.readBigUInt64LE(8))).toBe(r2.processes![0]!.usedMemoryBytes);
    // No processes: SUCCESS with none.
    count = [0];
    expect(nvml.processes(dev(4), count, null)).toBe(SUCCESS);
    expect(count[0]).toBe(0);
    // Unknown memory reads NVML_VALUE_NOT_AVAILABLE.
    const infos3 = Buffer.alloc(48);
    expect(nvml.processes(dev(3), [2], infos3)).toBe(SUCCESS);
    expect([infos3.readUInt32LE(0), Number(infos3.readBigUInt64LE(8))]).toEqual([4242, 1000 * MiB]);
    expect([infos3.readUInt32LE(24), infos3.readBigUInt64LE(32)]).toEqual([4343, NOT_AVAILABLE]);

    // Per-process utilization: one sample per process with a known SM utilization, taken now.
    count = [0];
    expect(nvml.processUtil(dev(2), null, count, 0)).toBe(INSUFFICIENT_SIZE);
    expect(count[0]).toBe(2);
    const samples = Buffer.alloc(32 * 2);
    const before = Date.now() * 1000;
    expect(nvml.processUtil(dev(2), samples, count, 0)).toBe(SUCCESS);
    const decoded = [0, 1].map((k) => ({
      pid: samples.readUInt32LE(32 * k),
      smUtil: samples.readUInt32LE(32 * k + 16),
    }));
    expect(decoded).toEqual(r2.processes!.map((p) => ({ pid: p.pid, smUtil: p.smUtil })));
    const stamp = Number(samples.readBigUInt64LE(8));
    expect(stamp).toBeGreaterThanOrEqual(before);
    expect(nvml.processUtil(dev(2), samples, [2], stamp + 60_000_000)).toBe(NOT_FOUND);
    // Only the explicit process that says its smUtil.
    count = [2];
    expect(nvml.processUtil(dev(3), samples, count, 0)).toBe(SUCCESS);
    expect(count[0]).toBe(1);
    expect([samples.readUInt32LE(0), samples.readUInt32LE(16)]).toEqual([4242, 15]);
  });

  it("offers GPM where the scenario says, with SM activity averaged between two samples at least 100 ms apart", async () => {
    const support = (i: number, version = 1): [number, number] => {
      const b = Buffer.alloc(8);
      b.writeUInt32LE(version, 0);
      const rc = nvml.gpmSupport(dev(i), b) as number;
      return [rc, b.readUInt32LE(4)];
    };
    expect(SCENARIO.gpus.map((_, i) => (i === 5 || i === 6 ? "lost" : support(i)[1]))).toEqual([
      1,
      0,
      1,
      1,
      0,
      "lost",
      "lost",
      0,
    ]);
    expect(stub.scenario.gpus.map(hasGpm)).toEqual([true, false, true, true, false, false, false, false]);
    expect(() => parseScenario({ gpus: [{ gpm: "yes", phases: [{ for: "1s" }] }] })).toThrow(
      /gpus\[0\]\.gpm must be true or false/,
    );
    expect(support(2, 2)[0]).toBe(ARGUMENT_VERSION_MISMATCH);

    const alloc = (): unknown => {
      const out: unknown[] = [null];
      expect(nvml.gpmAlloc(out)).toBe(SUCCESS);
      return out[0];
    };
    const [a1, a2, a3, b1, b2, c1] = [alloc(), alloc(), alloc(), alloc(), alloc(), alloc()];
    const metrics = (s1: unknown, s2: unknown, ids: number[], version = 1, numMetrics = ids.length) => {
      const buf = Buffer.alloc(24 + 40 * Math.max(ids.length, numMetrics));
      buf.writeUInt32LE(version, 0);
      buf.writeUInt32LE(numMetrics, 4);
      buf.writeBigUInt64LE(s1 as bigint, 8);
      buf.writeBigUInt64LE(s2 as bigint, 16);
      for (const [k, id] of ids.entries()) buf.writeUInt32LE(id, 24 + 40 * k);
      const rc = nvml.gpmMetrics(buf) as number;
      return {
        rc,
        results: ids.map((_, k) => ({
          rc: buf.readInt32LE(24 + 40 * k + 4),
          value: buf.readDoubleLE(24 + 40 * k + 8),
        })),
      };
    };

    expect(nvml.gpmGet(dev(1), c1)).toBe(NOT_SUPPORTED);
    expect(nvml.gpmGet(dev(2), a1)).toBe(SUCCESS);
    expect(nvml.gpmGet(dev(3), b1)).toBe(SUCCESS);
    await sleep(150);
    expect(nvml.gpmGet(dev(2), a2)).toBe(SUCCESS);
    expect(nvml.gpmGet(dev(2), a3)).toBe(SUCCESS);
    expect(nvml.gpmGet(dev(3), b2)).toBe(SUCCESS);

    const m = metrics(a1, a2, [2, 3, 5, 10, 1]);
    expect(m.rc).toBe(SUCCESS);
    expect(m.results.slice(0, 4).map((r) => r.rc)).toEqual([SUCCESS, SUCCESS, SUCCESS, SUCCESS]);
    // The active preset's SM activity, 0.72, and the metrics derived from it.
    expect(m.results[0]!.value).toBeCloseTo(72, 9);
    expect(m.results[1]!.value).toBeCloseTo(36, 9);
    expect(m.results[2]!.value).toBeCloseTo(43.2, 9);
    expect(m.results[3]!.value).toBeCloseTo(28.8, 9);
    expect(m.results[4]!.rc).toBe(NOT_SUPPORTED);
    // The scenario's own smActive.
    expect(metrics(b1, b2, [2]).results[0]!.value).toBeCloseTo(30, 9);
    // Less than 100 ms apart, two GPUs, a sample never taken, bad version or size.
    expect(metrics(a2, a3, [2]).rc).toBe(INVALID_ARGUMENT);
    expect(metrics(a1, b2, [2]).rc).toBe(INVALID_ARGUMENT);
    expect(metrics(a1, c1, [2]).rc).toBe(INVALID_ARGUMENT);
    expect(metrics(a1, a2, [2], 2).rc).toBe(ARGUMENT_VERSION_MISMATCH);
    expect(metrics(a1, a2, [2], 1, 334).rc).toBe(INVALID_ARGUMENT);
    for (const x of [a1, a2, a3, b1, b2, c1]) expect(nvml.gpmFree(x)).toBe(SUCCESS);
  });

  it("answers a lost GPU's calls with the phase's error, except for its handle and index", () => {
    for (const [i, code] of [
      [5, GPU_IS_LOST],
      [6, RESET_REQUIRED],
    ] as const) {
      expect(nvml.handle(i, [null])).toBe(SUCCESS);
      expect(u32(nvml.index, dev(i))).toEqual([SUCCESS, i]);
      expect(str(nvml.uuid, dev(i), 96)[0]).toBe(code);
      expect(str(nvml.name, dev(i), 96)[0]).toBe(code);
      expect(str(nvml.serial, dev(i), 30)[0]).toBe(code);
      expect(nvml.pci(dev(i), Buffer.alloc(68))).toBe(code);
      expect(nvml.utilization(dev(i), Buffer.alloc(8))).toBe(code);
      expect(u32(nvml.power, dev(i))[0]).toBe(code);
      expect(u32(nvml.powerLimit, dev(i))[0]).toBe(code);
      expect(nvml.processes(dev(i), [0], null)).toBe(code);
      expect(nvml.samples(dev(i), 1, 0, [0], [1], Buffer.alloc(16))).toBe(code);
    }
    expect(nvmlErrorOf("GPU is lost")).toBe(GPU_IS_LOST);
    expect(nvmlErrorOf("Not Supported")).toBe(NOT_SUPPORTED);
    expect(nvmlErrorOf("GPU requires reset")).toBe(RESET_REQUIRED);
    expect(nvmlErrorOf("Unknown Error")).toBe(UNKNOWN);
  });

  it("answers NOT_SUPPORTED for a signal the scenario leaves out, and checks the memory struct's version", () => {
    expect(nvml.utilization(dev(4), Buffer.alloc(8))).toBe(NOT_SUPPORTED);
    expect(u32(nvml.power, dev(4))[0]).toBe(NOT_SUPPORTED);
    expect(nvml.eventReasons(dev(4), [0n])).toBe(NOT_SUPPORTED);
    expect(nvml.encoder(dev(4), [0], [0])).toBe(NOT_SUPPORTED);
    expect(nvml.decoder(dev(4), [0], [0])).toBe(NOT_SUPPORTED);
    const mem = Buffer.alloc(40);
    mem.writeUInt32LE(MEMORY_V2, 0);
    expect(nvml.memory(dev(4), mem)).toBe(NOT_SUPPORTED);
    // The busiest media engine shows as the decoder.
    const [enc, dec, period] = [[0], [0], [0]];
    expect(nvml.encoder(dev(3), enc, period)).toBe(SUCCESS);
    expect(nvml.decoder(dev(3), dec, period)).toBe(SUCCESS);
    expect([enc[0], dec[0], period[0]]).toEqual([0, 40, SAMPLE_PERIOD_US]);
    const old = [0n];
    expect(nvml.throttleReasons(dev(1), old)).toBe(SUCCESS);
    expect(Number(old[0])).toBe(1);
    mem.writeUInt32LE(40 | (1 << 24), 0);
    expect(nvml.memory(dev(1), mem)).toBe(ARGUMENT_VERSION_MISMATCH);
  });

  it("makes the calls on a hung GPU wait while the other GPUs answer", async () => {
    const hangMs = 1500;
    stub.control.hang(1, hangMs);
    const order: string[] = [];
    const started = performance.now();
    const hung = callAsync(nvml.uuid, dev(1), Buffer.alloc(96), 96).then((rc) => {
      order.push("gpu 1");
      return { rc, elapsed: performance.now() - started };
    });
    const other = callAsync(nvml.uuid, dev(0), Buffer.alloc(96), 96).then((rc) => {
      order.push("gpu 0");
      return rc;
    });
    expect(await other).toBe(SUCCESS);
    const h = await hung;
    expect(order).toEqual(["gpu 0", "gpu 1"]);
    expect(h.rc).toBe(SUCCESS);
    expect(h.elapsed).toBeGreaterThanOrEqual(hangMs);

    stub.control.hang(1, 0);
    // Many calls at once from koffi's worker threads, on every GPU that answers.
    const burst = await Promise.all(
      Array.from({ length: 64 }, (_, k) => {
        const i = [0, 1, 2, 3][k % 4]!;
        return callAsync(nvml.utilization, dev(i), Buffer.alloc(8));
      }),
    );
    expect(burst.every((rc) => rc === SUCCESS)).toBe(true);

    stub.control.hang("all", 300);
    const t0 = performance.now();
    expect(await callAsync(nvml.count, [0])).toBe(SUCCESS);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(300);
    stub.control.clear();
  });

  it("answers DRIVER_NOT_LOADED while the driver is away, and UNINITIALIZED after its reload until shutdown and init", () => {
    const inits = stub.control.initCount();
    stub.control.unloadDriver();
    expect(nvml.init()).toBe(DRIVER_NOT_LOADED);
    expect(u32(nvml.count)[0]).toBe(DRIVER_NOT_LOADED);
    expect(str(nvml.uuid, dev(0), 96)[0]).toBe(DRIVER_NOT_LOADED);
    expect(nvml.shutdown()).toBe(DRIVER_NOT_LOADED);

    stub.control.reloadDriver();
    expect(u32(nvml.count)[0]).toBe(UNINITIALIZED);
    expect(str(nvml.uuid, dev(0), 96)[0]).toBe(UNINITIALIZED);
    // Another init alone is not enough: the library's state went with the old driver.
    expect(nvml.init()).toBe(SUCCESS);
    expect(str(nvml.uuid, dev(0), 96)[0]).toBe(UNINITIALIZED);
    expect(nvml.shutdown()).toBe(SUCCESS);
    expect(u32(nvml.count)[0]).toBe(UNINITIALIZED);
    expect(nvml.init()).toBe(SUCCESS);
    expect(u32(nvml.count)).toEqual([SUCCESS, SCENARIO.gpus.length]);
    const out: unknown[] = [null];
    expect(nvml.handle(0, out)).toBe(SUCCESS);
    expect(str(nvml.uuid, out[0], 96)).toEqual([SUCCESS, stub.scenario.gpus[0]!.uuid]);
    expect(stub.control.initCount()).toBe(inits + 2);
  });

  it("burns, per call, the CPU time the call costs on a real H200, and counts every call", () => {
    const calls = koffi.load(stub.libPath).func("int64_t trueidle_stub_calls(const char *fn)") as (
      fn: string,
    ) => number | bigint;
    const count = (fn: string): number => Number(calls(fn));
    expect(count("nvmlDeviceGetFanSpeed")).toBe(-1);
    const cost = H200_CALL_COST_US["nvmlDeviceGetSamples"]!;
    expect(cost).toBeGreaterThan(2_000);
    const before = count("nvmlDeviceGetSamples");
    const valType = [0];
    const n = [0];
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < 20; i++) nvml.samples(dev(2), 1, 0n, valType, n, null);
    const cpu = process.cpuUsage(cpu0);
    expect(count("nvmlDeviceGetSamples") - before).toBe(20);
    // The stub spins until the calling thread has used the cost: a lower bound, whatever the machine.
    expect(cpu.user + cpu.system).toBeGreaterThanOrEqual(20 * cost * 0.999);
    // A cheap call stays cheap: 20 power readings burn 20 µs, far under one sample read.
    const p0 = process.cpuUsage();
    for (let i = 0; i < 20; i++) u32(nvml.power, dev(2));
    const p = process.cpuUsage(p0);
    expect(p.user + p.system).toBeLessThan(cost);
  });

  it("takes its cost table from the H200 measurement, figure for figure", () => {
    const measured = readFileSync(join(ROOT, "docs/gpu-truth/h200-580.159.04-2026-12-04/nvml-call-cost.txt"), "utf8");
    const cpuOf = new Map(
      measured
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => {
          const m = /^(.+?)\s+wall\s+[\d.]+ us\s+cpu\s+([\d.]+) us$/.exec(l);
          if (!m) throw new Error(`unexpected line in nvml-call-cost.txt: ${l}`);
          return [m[1]!.replace(/ \(python floor\)$/, ""), Number(m[2])] as const;
        }),
    );
    expect(Object.fromEntries(cpuOf)).toEqual(H200_MEASURED_US);
    // Every function the stub exports has a cost; every cost names one.
    const exported = Object.keys(H200_CALL_COST_US);
    const calls = koffi.load(stub.libPath).func("int64_t trueidle_stub_calls(const char *fn)") as (
      fn: string,
    ) => number | bigint;
    for (const fn of exported) expect(Number(calls(fn)), fn).toBeGreaterThanOrEqual(0);
    expect(exported).toHaveLength(28);
  });

  it("fails nvmlInit_v2 with UNKNOWN and one line on stderr when the table is missing or bad", () => {
    const bad = join(dir, "bad-table.txt");
    const init = (table: string | undefined): { rc: string; stderr: string } => {
      const env: NodeJS.ProcessEnv = { ...process.env, STUB_LIB: stub.libPath };
      delete env["TRUEIDLE_NVML_STUB_CONTROL"];
      if (table === undefined) delete env["TRUEIDLE_NVML_STUB_TABLE"];
      else env["TRUEIDLE_NVML_STUB_TABLE"] = table;
      const script =
        'import koffi from "koffi"; const lib = koffi.load(process.env.STUB_LIB); process.stdout.write(String(lib.func("int nvmlInit_v2()")()));';
      const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
        cwd: ROOT,
        env,
        encoding: "utf8",
        timeout: 30_000,
      });
      return { rc: r.stdout, stderr: r.stderr };
    };
    const lines = (s: string): string[] => s.split("\n").filter((l) => l !== "");

    const missing = init(join(dir, "no-such-table.txt"));
    expect(missing.rc).toBe(String(UNKNOWN));
    expect(lines(missing.stderr)).toEqual([expect.stringMatching(/cannot read table file .*no-such-table\.txt/)]);

    writeFileSync(bad, "gpus: 2\n");
    const notTable = init(bad);
    expect(notTable.rc).toBe(String(UNKNOWN));
    expect(lines(notTable.stderr)).toEqual([
      expect.stringMatching(/bad-table\.txt line 1: not a trueidle nvml stub table/),
    ]);

    writeFileSync(bad, "trueidle-nvml-stub-table 1\ndriver 550.54.15\ngpu\nuuid GPU-x\nphase ms=-5\n");
    const badPhase = init(bad);
    expect(badPhase.rc).toBe(String(UNKNOWN));
    expect(lines(badPhase.stderr)).toEqual([expect.stringMatching(/bad-table\.txt line 5: bad phase value/)]);

    writeFileSync(bad, "trueidle-nvml-stub-table 1\ndriver 550.54.15\ncost nvmlDeviceGetFanSpeed 3\n");
    const badCost = init(bad);
    expect(badCost.rc).toBe(String(UNKNOWN));
    expect(lines(badCost.stderr)).toEqual([
      expect.stringMatching(/bad-table\.txt line 3: cost of a function the stub does not export/),
    ]);

    const unset = init(undefined);
    expect(unset.rc).toBe(String(UNKNOWN));
    expect(lines(unset.stderr)).toEqual([expect.stringMatching(/TRUEIDLE_NVML_STUB_TABLE is not set/)]);
  });
});
