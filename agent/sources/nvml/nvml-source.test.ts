/**
 * The NVML source against the stub libnvidia-ml.so.1 (test/nvml-stub/), built with gcc:
 * the real FFI path, worker thread and watchdog, with a library that follows a scenario.
 */
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { GpuReading } from "../../../common/types.js";
import { recordingLogger } from "../../../common/log.js";
import { TrueidleError } from "../../../common/errors.js";
import { readingOf } from "../../sim/evaluate.js";
import koffi from "koffi";
import { prepareNvmlStub, type NvmlStub } from "../../../test/helpers/nvml-stub.js";
import { H200_CALL_COST_US } from "../../../test/helpers/nvml-call-cost.js";
import { eventually } from "../../../test/helpers/eventually.js";
import { NvmlSource, type NvmlSourceOptions } from "./nvml-source.js";

const MiB = 1024 * 1024;
let dirs: string[] = [];
let sources: NvmlSource[] = [];

afterEach(async () => {
  for (const s of sources) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  sources = [];
  dirs = [];
});

function stub(scenario: object): NvmlStub {
  const dir = mkdtempSync(path.join(tmpdir(), "trueidle-nvml-"));
  dirs.push(dir);
  const s = prepareNvmlStub(dir, scenario);
  // The stub reads its table and control file from the environment of the process that loads it.
  Object.assign(process.env, s.env);
  return s;
}

function source(
  s: NvmlStub,
  opts: Partial<NvmlSourceOptions> = {},
): { src: NvmlSource; log: ReturnType<typeof recordingLogger> } {
  const log = recordingLogger();
  const src = new NvmlSource({ libPath: s.libPath, intervalMs: 250, processIntervalMs: 500, logger: log, ...opts });
  sources.push(src);
  return { src, log };
}

function byIndex(rs: GpuReading[], i: number): GpuReading {
  const r = rs.find((x) => x.index === i);
  if (!r) throw new Error(`no GPU ${i} in ${JSON.stringify(rs)}`);
  return r;
}

const H100 = "NVIDIA H100 80GB HBM3";

/** Calls into the stub so far, by function (the worker thread loads the same library). */
function stubCalls(s: NvmlStub) {
  const count = koffi.load(s.libPath).func("int64_t trueidle_stub_calls(const char *fn)") as (
    fn: string,
  ) => number | bigint;
  const snapshot = (): Record<string, number> =>
    Object.fromEntries(Object.keys(H200_CALL_COST_US).map((fn) => [fn, Number(count(fn))]));
  return {
    snapshot,
    since: (before: Record<string, number>): Record<string, number> => {
      const now = snapshot();
      return Object.fromEntries(Object.entries(now).map(([fn, n]) => [fn, n - (before[fn] ?? 0)]));
    },
  };
}

describe("NVML source (stub library)", () => {
  it("reads every GPU as its scenario says, with GPM SM activity where the GPU supports it", async () => {
    const s = stub({
      gpus: [
        { model: H100, gpm: true, phases: [{ for: "1h", state: "active" }] },
        { model: "NVIDIA A100-SXM4-80GB", phases: [{ for: "1h", state: "held_idle" }] },
        { model: H100, gpm: true, phases: [{ for: "1h", state: "busy_phantom" }] },
      ],
    });
    const { src } = source(s);
    await src.start();
    expect(src.describe()).toMatch(/^NVML \(.*libnvidia-ml\.so\.1, driver 550\.90\.07\); GPM SM activity on GPU 0, 2$/);
    const now = Date.now();
    const got = src.sample(now);
    expect(got.map((r) => r.index)).toEqual([0, 1, 2]);
    for (const g of s.scenario.gpus) {
      const want = readingOf(s.scenario, g, now);
      const r = byIndex(got, g.index);
      expect(r.error).toBeUndefined();
      expect(r).toMatchObject({ uuid: want.uuid, model: want.model, busId: want.busId, driverVersion: "550.90.07" });
      expect(r.util).toBe(want.util);
      expect(r.powerW).toBeCloseTo(want.powerW!, 2);
      expect(r.powerLimitW).toBe(want.powerLimitW);
      expect(r.memUsedBytes).toBe(want.memUsedBytes);
      expect(r.memTotalBytes).toBe(want.memTotalBytes);
      expect(r.processes?.map((p) => [p.pid, p.name, p.usedMemoryBytes, p.smUtil])).toEqual(
        want.processes?.map((p) => [p.pid, p.name, p.usedMemoryBytes, p.smUtil]),
      );
    }
    // GPM: SM activity on the Hopper GPUs that have it; none on the A100 (nvidia-smi never has it).
    expect(byIndex(got, 0).smActive).toBeCloseTo(0.72, 2);
    expect(byIndex(got, 0).tensorActive).toBeCloseTo(0.72 * 0.6, 2);
    expect(byIndex(got, 2).smActive).toBeCloseTo(0.01, 3);
    expect(byIndex(got, 1).smActive).toBeUndefined();
    // The clocks event reason says idle exactly where utilization is 0.
    expect(byIndex(got, 1).idleReason).toBe(true);
    expect(byIndex(got, 0).idleReason).toBe(false);
  });

  it("makes only the cheap calls per tick: utilization as nvidia-smi reads it, the sample buffer once per GPU at discovery", async () => {
    const s = stub({
      gpus: [
        { model: H100, gpm: true, phases: [{ for: "1h", state: "active", processes: 1 }] },
        { model: H100, phases: [{ for: "1h", state: "held_idle" }] },
        { model: "NVIDIA A100-SXM4-80GB", phases: [{ for: "1h", state: "free_idle", util: null }] },
      ],
    });
    const calls = stubCalls(s);
    const before = calls.snapshot();
    const { src, log } = source(s, { intervalMs: 250 });
    await src.start();
    await new Promise((r) => setTimeout(r, 2_000));
    const got = src.sample(Date.now());
    const made = calls.since(before);
    // Ticks: at least the 2 s waited, every GPU read each tick with the cheap calls.
    expect(made["nvmlDeviceGetUtilizationRates"]).toBeGreaterThanOrEqual(3 * 7);
    expect(made["nvmlDeviceGetMemoryInfo_v2"]).toBe(made["nvmlDeviceGetUtilizationRates"]);
    expect(made["nvmlGpmSampleGet"]).toBeGreaterThanOrEqual(7);
    // The millisecond calls: the sample buffer once per GPU, per-process utilization never
    // (no GPU here has two processes).
    expect(made["nvmlDeviceGetSamples"]).toBe(3);
    expect(made["nvmlDeviceGetProcessUtilization"]).toBe(0);
    // utilization.gpu is the driver's current value, as nvidia-smi shows it.
    expect(byIndex(got, 0).util).toBe(97);
    expect(byIndex(got, 1).util).toBe(0);
    expect(byIndex(got, 2).util).toBeUndefined();
    // The buffer is what the driver keeps: a sample every 1/6 s, 120 of them, about 20 s back.
    expect(src.describeSampleBuffers()).toBe("GPU 0, 1: every 166.7 ms, 120 kept (19.8 s); GPU 2: not readable");
    expect(log.lines.find((l) => l.msg === "NVML source started.")?.fields?.["utilization_samples"]).toBe(
      src.describeSampleBuffers(),
    );
  });

  it("measures per-process SM shares only where several processes share a GPU, at most once a minute; a GPU's only process has the GPU's utilization", async () => {
    const s = stub({
      gpus: [
        // Two processes: the first does the GPU's work (SM share = util), the second idles beside it.
        { model: H100, phases: [{ for: "1h", state: "active" }] },
        { model: H100, phases: [{ for: "1h", state: "busy_phantom" }] },
        { model: H100, phases: [{ for: "1h", state: "free_idle" }] },
      ],
    });
    const calls = stubCalls(s);
    const before = calls.snapshot();
    const { src } = source(s, { intervalMs: 250, processIntervalMs: 500 });
    await src.start();
    await new Promise((r) => setTimeout(r, 2_000));
    const got = src.sample(Date.now());
    expect(byIndex(got, 0).processes?.map((p) => [p.pid, p.smUtil])).toEqual([
      [10000, 97],
      [10001, 0],
    ]);
    expect(byIndex(got, 1).processes?.map((p) => [p.pid, p.smUtil])).toEqual([[10100, 100]]);
    expect(byIndex(got, 2).processes).toEqual([]);
    const made = calls.since(before);
    // One read, on the shared GPU, in 2 s of ticks every 250 ms and process lists every 500 ms.
    expect(made["nvmlDeviceGetProcessUtilization"]).toBe(1);
    expect(made["nvmlDeviceGetComputeRunningProcesses_v3"]).toBeGreaterThanOrEqual(3 * 3);
  });

  it("reads more processes than its buffers first hold, growing them as NVML's size protocol asks", async () => {
    const processes = Array.from({ length: 150 }, (_, i) => ({
      pid: 20_000 + i,
      name: `worker-${i}`,
      usedMiB: 100 + i,
      smUtil: i % 3 === 0 ? 30 : 0,
    }));
    const s = stub({ gpus: [{ model: H100, phases: [{ for: "1h", state: "held_idle", processes }] }] });
    const { src } = source(s);
    await src.start();
    const r = byIndex(src.sample(Date.now()), 0);
    expect(r.processes?.map((p) => [p.pid, p.name, p.usedMemoryBytes, p.smUtil])).toEqual(
      processes.map((p) => [p.pid, p.name, p.usedMiB * MiB, p.smUtil]),
    );
  });

  it("makes a lost GPU unavailable while the others go on, and leaves unsupported values missing", async () => {
    const s = stub({
      gpus: [
        { model: H100, phases: [{ for: "1h", state: "active" }] },
        { model: H100, phases: [{ for: "1h", error: "GPU is lost" }] },
        { model: "Tesla T4", phases: [{ for: "1h", state: "held_idle", util: null, powerW: null }] },
      ],
    });
    const { src } = source(s);
    await src.start();
    const got = src.sample(Date.now());
    expect(byIndex(got, 0).error).toBeUndefined();
    expect(byIndex(got, 0).util).toBe(97);
    expect(byIndex(got, 1).error).toMatch(/^NVML: .*(lost|Lost)/);
    expect(byIndex(got, 2).error).toBeUndefined();
    expect(byIndex(got, 2).util).toBeUndefined();
    expect(byIndex(got, 2).powerW).toBeUndefined();
    expect(byIndex(got, 2).memUsedBytes).toBe(Math.round(15360 * 0.3) * MiB);
  });

  it("lists a GPU that was lost at start under its uuid once it answers, without a phantom placeholder", async () => {
    const originMs = Date.now();
    const s = stub({
      originMs,
      gpus: [
        { model: H100, phases: [{ for: "1h", state: "active" }] },
        {
          model: H100,
          phases: [
            { for: "2s", error: "GPU is lost" },
            { for: "1h", state: "held_idle" },
          ],
        },
      ],
    });
    const { src } = source(s);
    await src.start();
    const before = src.sample(Date.now());
    expect(before).toHaveLength(2);
    expect(byIndex(before, 1).error).toMatch(/lost/i);
    const after = await eventually(
      "GPU 1 identified and read",
      () => {
        const rs = src.sample(Date.now());
        return byIndex(rs, 1).error === undefined ? rs : undefined;
      },
      20_000,
      100,
    );
    expect(after).toHaveLength(2);
    expect(byIndex(after, 1).uuid).toBe(s.scenario.gpus[1]!.uuid);
    expect(byIndex(after, 1).util).toBe(0);
  });

  it("reads an implausible value as missing, counts it and says so once", async () => {
    // More memory used than the board has: no driver reports that, a glitch could.
    const s = stub({
      gpus: [{ model: H100, count: 2, phases: [{ for: "1h", state: "held_idle", memUsedMiB: 200_000 }] }],
    });
    const { src, log } = source(s);
    await src.start();
    await new Promise((r) => setTimeout(r, 600));
    const got = src.sample(Date.now());
    for (const r of got) {
      expect(r.error).toBeUndefined();
      expect(r.memUsedBytes).toBeUndefined();
      expect(r.memTotalBytes).toBe(81559 * MiB);
      expect(r.util).toBe(0);
    }
    expect(src.stats().parseErrors).toBeGreaterThanOrEqual(4);
    const warned = log.lines.filter((l) => l.msg.startsWith("NVML gave an implausible value"));
    expect(warned.map((l) => [l.fields?.["gpu"], l.fields?.["field"]])).toEqual([
      [0, "memory used"],
      [1, "memory used"],
    ]);
  });

  it("re-initialises NVML after the driver is unloaded and loaded again", async () => {
    const s = stub({ gpus: [{ model: H100, count: 2, phases: [{ for: "1h", state: "active" }] }] });
    const { src, log } = source(s);
    await src.start();
    expect(s.control.initCount()).toBe(1);
    s.control.unloadDriver();
    await eventually(
      "every GPU unavailable",
      () => {
        const rs = src.sample(Date.now());
        return rs.length === 2 && rs.every((r) => /Driver Not Loaded|driver/i.test(r.error ?? "")) ? rs : undefined;
      },
      20_000,
      100,
    );
    s.control.reloadDriver();
    await eventually(
      "readings again",
      () => {
        const rs = src.sample(Date.now());
        return rs.length === 2 && rs.every((r) => r.error === undefined && r.util === 97) ? rs : undefined;
      },
      30_000,
      100,
    );
    expect(s.control.initCount()).toBeGreaterThanOrEqual(2);
    expect(src.stats().restarts).toBeGreaterThanOrEqual(1);
    expect(log.lines.some((r) => r.msg.includes("initialised again"))).toBe(true);
  });

  it("takes a GPU whose driver call hangs out of sampling, keeps the others fresh, and takes it back when the call returns", async () => {
    const s = stub({ gpus: [{ model: H100, count: 3, phases: [{ for: "1h", state: "active" }] }] });
    const { src, log } = source(s, { callTimeoutMs: 400 });
    await src.start();
    s.control.hang(1, 4_000);
    const during = await eventually(
      "GPU 1 unavailable for a hung call",
      () => {
        const rs = src.sample(Date.now());
        return /has not returned for \d+ s \(driver hung\)/.test(byIndex(rs, 1).error ?? "") ? rs : undefined;
      },
      20_000,
      100,
    );
    expect(byIndex(during, 1).error).toMatch(/^NVML: nvmlDevice\w+ on this GPU/);
    expect(src.hungCalls()).toBe(1);
    s.control.hang(1, 0);
    // The others keep reading while the hung thread is stuck: fresh readings, several ticks.
    const first = src.sample(Date.now());
    await new Promise((r) => setTimeout(r, 1_000));
    const later = src.sample(Date.now());
    for (const i of [0, 2]) {
      expect(byIndex(first, i).error).toBeUndefined();
      expect(byIndex(later, i).error).toBeUndefined();
    }
    await eventually(
      "GPU 1 back",
      () => {
        const rs = src.sample(Date.now());
        return rs.every((r) => r.error === undefined) && src.hungCalls() === 0 ? rs : undefined;
      },
      30_000,
      100,
    );
    expect(log.lines.some((r) => r.level === "error" && r.msg.includes("did not return in time"))).toBe(true);
    expect(log.lines.some((r) => r.msg.includes("hung NVML call returned"))).toBe(true);
  });

  it("fails start with a reason when the library cannot be used", async () => {
    const log = recordingLogger();
    const missing = new NvmlSource({
      libPath: "/nonexistent/libnvidia-ml.so.1",
      intervalMs: 250,
      logger: log,
      failHint: "use --source nvidia-smi",
    });
    sources.push(missing);
    const e1 = await missing.start().catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(TrueidleError);
    expect((e1 as TrueidleError).code).toBe("nvml_unavailable");
    expect((e1 as Error).message).toMatch(
      /cannot load \/nonexistent\/libnvidia-ml\.so\.1: .* — use --source nvidia-smi$/,
    );

    const notNvml = new NvmlSource({ libPath: "libc.so.6", intervalMs: 250, logger: log });
    sources.push(notNvml);
    await expect(notNvml.start()).rejects.toThrow(/libc\.so\.6 has no nvmlInit_v2: not an NVML library/);

    const s = stub({ gpus: [{ model: H100, phases: [{ for: "1h", state: "active" }] }] });
    process.env["TRUEIDLE_NVML_STUB_TABLE"] = path.join(dirs[dirs.length - 1]!, "no-such-table.txt");
    // A copy of the library under a path of its own: a worker of an earlier test (a hung call
    // returns when it likes) may still hold the shared stub initialised, and a second
    // nvmlInit_v2 on an initialised library only counts up, without reading the table.
    const fresh = path.join(dirs[dirs.length - 1]!, "libnvidia-ml.so.1");
    copyFileSync(s.libPath, fresh);
    const noTable = new NvmlSource({ libPath: fresh, intervalMs: 250, logger: log });
    sources.push(noTable);
    await expect(noTable.start()).rejects.toThrow(/NVML did not initialise: .* \(nvmlInit_v2\)/);
  });
});
