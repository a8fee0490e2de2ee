import { describe, expect, it } from "vitest";
import { MAX_TRACKED_OWNERS, MAX_TRACKED_PIDS, SamplePipeline, type ClockStepBack } from "./pipeline.js";
import { MAX_WINDOW_OWNERS } from "./window.js";
import { DEFAULT_THRESHOLDS, type GpuProcess, type GpuReading } from "../common/types.js";
import { readingsAt, sourceReadingsAt } from "./sim/evaluate.js";
import { parseScenario } from "./sim/scenario.js";

const MiB = 1024 * 1024;
const T0 = Date.UTC(2026, 10, 29, 12, 0, 0); // a multiple of 10 s

function reading(over: Partial<GpuReading> = {}): GpuReading {
  return {
    uuid: "GPU-a",
    index: 0,
    model: "NVIDIA H100 80GB HBM3",
    driverVersion: "550.90.07",
    util: 0,
    powerW: 70,
    powerLimitW: 700,
    memUsedBytes: 0,
    memTotalBytes: 80 * 1024 * MiB,
    processes: [],
    ...over,
  };
}

const held = { memUsedBytes: 20_000 * MiB, processes: [{ pid: 7, name: "python3", usedMemoryBytes: 20_000 * MiB }] };

describe("SamplePipeline", () => {
  it("aligns windows to wall-clock multiples and closes them when the next window's first sample arrives", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    for (let s = 3; s < 10; s++) p.ingest(T0 + s * 1000, [reading()]);
    expect(p.drain()).toEqual([]);
    p.ingest(T0 + 10_000, [reading()]);
    const [w, ...rest] = p.drain();
    expect(rest).toEqual([]);
    expect(w!.startMs).toBe(T0);
    expect(w!.durationMs).toBe(10_000);
    expect(w!.observedS).toBe(7); // started mid-window: 7 samples of 1 s
    expect(w!.stateS.free_idle).toBe(7);
    expect(w!.reportedIdleS).toBe(7);
  });

  it("splits a window's seconds by state and sums util and real", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const plan: Array<Partial<GpuReading>> = [
      {},
      {}, // free_idle
      { ...held, util: 0, powerW: 80 }, // held_idle
      { ...held, util: 100, powerW: 80 },
      { ...held, util: 100, powerW: 80 }, // busy_phantom
      { ...held, util: 90, powerW: 600 },
      { ...held, util: 90, powerW: 600 },
      { ...held, util: 90, powerW: 600 }, // active
      { error: "GPU is lost", util: undefined, powerW: undefined, memUsedBytes: undefined, processes: undefined }, // unavailable
      { util: 100 }, // free_idle although util reads 100
    ];
    for (const [i, o] of plan.entries()) p.ingest(T0 + i * 1000, [reading(o)]);
    p.ingest(T0 + 10_000, [reading()]);
    const [w] = p.drain();
    expect(w!.observedS).toBe(10);
    expect(w!.stateS).toEqual({ free_idle: 3, held_idle: 1, busy_phantom: 2, active: 3, unavailable: 1 });
    // reported idle: util < 5 → samples 0,1,2 (util 0); not the unavailable one, not util 100/90
    expect(w!.reportedIdleS).toBe(3);
    expect(w!.reportedBusyS).toBeCloseTo(1 + 1 + 0.9 * 3 + 1, 9);
    // real = min(util, powerFrac) with floor 70 W learned while unheld: (600-70)/(700-70)
    const frac = (600 - 70) / 630;
    // held_idle with util 0 adds min(0, frac) = 0; busy_phantom adds min(1, 10/630) twice
    expect(w!.realBusyS).toBeCloseTo(3 * Math.min(0.9, frac) + 2 * (10 / 630), 9);
    expect(w!.powerMaxW).toBe(600);
    expect(w!.processesMax).toBe(1);
    expect(w!.memUsedMaxBytes).toBe(20_000 * MiB);
    expect(w!.powerFloorW).toBe(70);
    expect(w!.topHolders).toEqual([{ pid: 7, name: "python3", usedMemoryBytes: 20_000 * MiB }]);
    expect(w!.last.state).toBe("free_idle");
    expect(w!.last.idleStreakS).toBe(2); // last active at +7 s, last sample at +9 s
  });

  it("keeps GPUs apart and closes a GPU's window even when it stops reporting", () => {
    const p = new SamplePipeline({ windowMs: 5_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    for (let s = 0; s < 5; s++) p.ingest(T0 + s * 1000, [reading(), reading({ uuid: "GPU-b", index: 1 })]);
    p.ingest(T0 + 5000, [reading()]); // GPU-b vanished from the readings
    const ws = p.drain();
    expect(ws.map((w) => w.uuid).sort()).toEqual(["GPU-a", "GPU-b"]);
    expect(ws.every((w) => w.observedS === 5)).toBe(true);
  });

  it("flushAll ships the partial window on shutdown", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    p.ingest(T0, [reading()]);
    p.ingest(T0 + 1000, [reading()]);
    const ws = p.flushAll();
    expect(ws).toHaveLength(1);
    expect(ws[0]!.observedS).toBe(2);
    expect(p.flushAll()).toEqual([]);
  });

  it("applies new thresholds to later samples", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    p.ingest(T0, [reading({ ...held, util: 8, powerW: 80 })]); // util 8 ≥ U=5 → busy_phantom
    p.setThresholds({ ...DEFAULT_THRESHOLDS, utilBusyPercent: 10 });
    p.ingest(T0 + 1000, [reading({ ...held, util: 8, powerW: 80 })]); // util 8 < U=10 → held_idle
    const [w] = p.flushAll();
    expect(w!.stateS.busy_phantom).toBe(1);
    expect(w!.stateS.held_idle).toBe(1);
  });

  it("refuses a window shorter than the interval", () => {
    expect(() => new SamplePipeline({ windowMs: 500, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS })).toThrow(
      /at least the interval/,
    );
  });
});

describe("SamplePipeline: the row of a board in MIG mode", () => {
  it("gives instances without SM activity their board's power as their real use, tick by tick", () => {
    // An A100-like board without GPM: idle power for 10 s, then 400 W for 10 s.
    const scenario = parseScenario({
      gpus: [
        {
          model: "NVIDIA H100 80GB HBM3",
          gpm: false,
          phases: [
            { for: "10s", powerW: 80 },
            { for: "10s", powerW: 400 },
          ],
          mig: [
            { profile: "3g.40gb", gi: 2, phases: [{ for: "20s", state: "held_idle" }] },
            { profile: "1g.10gb", gi: 9, phases: [{ for: "20s", state: "free_idle" }] },
          ],
        },
      ],
    });
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const origin = scenario.originMs;
    for (let s = 0; s < 21; s++) p.ingest(origin + s * 1000, sourceReadingsAt(scenario, origin + s * 1000));
    const ws = p.drain().filter((w) => w.migProfile !== undefined);
    const of = (profile: string, start: number) => ws.find((w) => w.migProfile === profile && w.startMs === start)!;
    // Idle power: the held instance is held_idle on its board's word; the free one free.
    expect(of("3g.40gb", origin).stateS).toMatchObject({ held_idle: 10, active: 0 });
    expect(of("3g.40gb", origin).realBusyS).toBeLessThan(0.5);
    expect(of("1g.10gb", origin).stateS.free_idle).toBe(10);
    // The board draws power: the held instance is not called idle; the free one still is free.
    expect(of("3g.40gb", origin + 10_000).stateS).toMatchObject({ held_idle: 0, active: 10 });
    expect(of("3g.40gb", origin + 10_000).last.realSource).toBe("power");
    expect(of("1g.10gb", origin + 10_000).stateS.free_idle).toBe(10);
  });

  it("counts only its observed and unavailable seconds, and keeps its power, never a GPU's figures", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    // Figures a board row never has, to show none of them is counted.
    const row = (s: number): GpuReading =>
      reading({
        migBoard: true,
        util: 100,
        powerW: 100 + 10 * s,
        ...held,
        allocations: [{ via: "pod_resources", namespace: "ml", pod: "p" }],
        error: s >= 7 ? "GPU is lost" : undefined,
      });
    for (let s = 0; s < 10; s++) p.ingest(T0 + s * 1000, [row(s)]);
    p.ingest(T0 + 10_000, []);
    const [w, ...rest] = p.drain();
    expect(rest).toEqual([]);
    expect(w).toMatchObject({
      migBoard: true,
      observedS: 10,
      stateS: { unavailable: 3, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 0 },
      reportedIdleS: 0,
      reportedBusyS: 0,
      realBusyS: 0,
      processesMax: 0,
      topHolders: [],
      powerMaxW: 190,
      powerLimitW: 700,
    });
    expect(w!.powerMeanW).toBeCloseTo(145, 9);
    expect(w!.heldByS).toBeUndefined();
    expect(w!.owners).toBeUndefined();
    expect(w!.memUsedMaxBytes).toBeUndefined();
    expect(w!.parentUuid).toBeUndefined();
    expect(w!.last).toEqual({
      timeMs: T0 + 9_000,
      state: "unavailable",
      real: 0,
      realSource: "none",
      powerW: 190,
      processes: 0,
      idleStreakS: 0,
      error: "GPU is lost",
      heldBy: 0,
    });
  });
});

describe("SamplePipeline: the top holders' SM share", () => {
  const pipeline = (): SamplePipeline =>
    new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
  const proc = (pid: number, mib: number, smUtil?: number): GpuProcess => ({
    pid,
    name: `p${pid}`,
    usedMemoryBytes: mib * MiB,
    smUtil,
  });
  const busy = (processes: GpuProcess[], util = 90): Partial<GpuReading> => ({
    util,
    powerW: 600,
    memUsedBytes: 60_000 * MiB,
    processes,
  });
  const share = (w: { topHolders: { pid: number; smShare?: number | undefined }[] }, pid: number): number | undefined =>
    w.topHolders.find((h) => h.pid === pid)?.smShare;

  it("tells the busy process from its idle neighbour: mean SM utilization over the window, as a ratio", () => {
    const p = pipeline();
    // The worker runs at 80% then 100%; the neighbour holds more memory and runs nothing.
    for (let s = 0; s < 10; s++)
      p.ingest(T0 + s * 1000, [reading(busy([proc(1, 20_000, s < 5 ? 80 : 100), proc(2, 40_000, 0)]))]);
    const [w] = p.flushAll();
    expect(w!.stateS.active).toBe(10);
    expect(w!.topHolders.map((h) => h.pid)).toEqual([2, 1]); // still chosen by memory
    expect(share(w!, 1)).toBeCloseTo(0.9, 12);
    expect(share(w!, 2)).toBe(0);
  });

  it("gives the simulator's active preset a busy process and an idle one", () => {
    const scenario = parseScenario({ gpus: [{ phases: [{ for: "1h", state: "active" }] }] });
    const p = pipeline();
    for (let s = 0; s < 10; s++) p.ingest(T0 + s * 1000, readingsAt(scenario, T0 + s * 1000));
    const [w] = p.flushAll();
    const procs = readingsAt(scenario, T0)[0]!.processes!;
    expect(procs.map((x) => x.smUtil)).toEqual([97, 0]);
    expect(share(w!, procs[0]!.pid)).toBeCloseTo(0.97, 12);
    expect(share(w!, procs[1]!.pid)).toBe(0);
  });

  it("averages over the seconds a process was seen with a known utilization, and gives none where it never was", () => {
    const p = pipeline();
    // pid 1 is seen with a utilization for 4 s (at 50%), without for the rest; pid 2 never.
    for (let s = 0; s < 10; s++)
      p.ingest(T0 + s * 1000, [reading(busy([proc(1, 30_000, s < 4 ? 50 : undefined), proc(2, 10_000)]))]);
    const [w] = p.flushAll();
    expect(share(w!, 1)).toBeCloseTo(0.5, 12);
    expect(w!.topHolders.find((h) => h.pid === 2)).toEqual({ pid: 2, name: "p2", usedMemoryBytes: 10_000 * MiB });
    expect(w!.topHolders.find((h) => h.pid === 2)).not.toHaveProperty("smShare");
  });

  it("counts a process listed twice in one sample once", () => {
    const p = pipeline();
    p.ingest(T0, [reading(busy([proc(1, 30_000, 100), proc(1, 30_000, 100)]))]);
    p.ingest(T0 + 1000, [reading(busy([proc(1, 30_000, 0)]))]);
    const [w] = p.flushAll();
    expect(share(w!, 1)).toBe(0.5);
  });

  it("starts every window afresh", () => {
    const p = pipeline();
    for (let s = 0; s < 20; s++) p.ingest(T0 + s * 1000, [reading(busy([proc(1, 30_000, s < 10 ? 100 : 0)]))]);
    const [a, b] = p.flushAll();
    expect([a!.startMs, share(a!, 1)]).toEqual([T0, 1]);
    expect([b!.startMs, share(b!, 1)]).toEqual([T0 + 10_000, 0]);
  });

  it("clamps an out-of-range value from the driver instead of shipping a share the collector refuses", () => {
    const p = pipeline();
    p.ingest(T0, [reading(busy([proc(1, 30_000, 250)]))]);
    p.ingest(T0 + 1000, [reading(busy([proc(1, 30_000, -5)]))]);
    p.ingest(T0 + 2000, [reading(busy([proc(1, 30_000, Number.NaN)]))]);
    const [w] = p.flushAll();
    expect(share(w!, 1)).toBe(0.5);
  });

  it("keeps a steady holder's share through a flood of short-lived processes", () => {
    const p = pipeline();
    let pid = 100_000;
    for (let s = 0; s < 10; s++) {
      // 3 × MAX_TRACKED_PIDS small processes, each seen once, beside one large one at 30%.
      const flood = Array.from({ length: 3 * MAX_TRACKED_PIDS }, () => proc(pid++, 100, 100));
      p.ingest(T0 + s * 1000, [reading(busy([...flood, proc(7, 50_000, 30)]))]);
    }
    const [w] = p.flushAll();
    expect(w!.topHolders[0]!.pid).toBe(7);
    expect(share(w!, 7)).toBeCloseTo(0.3, 12);
  });

  it(`follows at most ${MAX_TRACKED_PIDS} processes a window, dropping the smallest`, () => {
    const p = pipeline();
    const full = Array.from({ length: MAX_TRACKED_PIDS }, (_, i) => proc(i + 1, i + 1, 100)); // pids 1..64, 1..64 MiB
    p.ingest(T0, [reading(busy(full))]);
    // Full: a newcomer smaller than every process present is not followed (pid 1000); a
    // larger one takes the place of the smallest present (pid 2000 evicts pid 1).
    p.ingest(T0 + 1000, [reading(busy([...full, proc(1000, 0.5, 100), proc(2000, 1000, 40)]))]);
    // Only pids 1 and 1000 remain, both idle now: each share covers this sample alone, so
    // neither kept its earlier seconds at 100%.
    p.ingest(T0 + 2000, [reading(busy([proc(1, 1, 0), proc(1000, 0.5, 0)]))]);
    const [w] = p.flushAll();
    expect(w!.topHolders.map((h) => [h.pid, h.smShare])).toEqual([
      [1, 0],
      [1000, 0],
    ]);
  });
});

describe("SamplePipeline: a wall clock that steps back", () => {
  const steps: ClockStepBack[] = [];
  const pipeline = (): SamplePipeline => {
    steps.length = 0;
    return new SamplePipeline({
      windowMs: 10_000,
      intervalMs: 1000,
      thresholds: DEFAULT_THRESHOLDS,
      onClockStepBack: (s) => void steps.push(s),
    });
  };
  const two = (): GpuReading[] => [reading(), reading({ uuid: "GPU-b", index: 1 })];

  it("drops the samples of time already folded, reports the step once, and never opens a window twice", () => {
    const p = pipeline();
    for (let s = 0; s < 15; s++) p.ingest(T0 + s * 1000, two());
    // The clock steps back 10 s: the next sample is stamped +5 s instead of +15 s.
    for (let s = 5; s < 25; s++) p.ingest(T0 + s * 1000, two());
    const ws = [...p.drain(), ...p.flushAll()];
    expect(p.samplesDropped).toBe(2 * 10); // +5 … +14, both GPUs
    expect(steps).toEqual([{ timeMs: T0 + 5000, stepMs: 10_000, resumeMs: T0 + 14_000, gpus: 2 }]);
    // Each window once, each holding each second once.
    expect(ws.map((w) => [w.uuid, (w.startMs - T0) / 1000, w.observedS]).sort()).toEqual([
      ["GPU-a", 0, 10],
      ["GPU-a", 10, 10],
      ["GPU-a", 20, 5],
      ["GPU-b", 0, 10],
      ["GPU-b", 10, 10],
      ["GPU-b", 20, 5],
    ]);
    // The dropped samples are still the GPUs' latest readings while they come.
    p.ingest(T0 + 1000, two());
    expect(p.latest().map((s) => s.timeMs)).toEqual([T0 + 1000, T0 + 1000]);
  });

  it("drops samples before the end of a closed window even where no sample of it was taken", () => {
    const p = pipeline();
    for (let s = 0; s < 8; s++) p.ingest(T0 + s * 1000, [reading()]);
    p.closeUntil(T0 + 12_000); // the GPU gave no reading for a while: [0, 10) is closed
    const [first] = p.drain();
    expect(first!.observedS).toBe(8);
    for (let s = 8; s < 12; s++) p.ingest(T0 + s * 1000, [reading()]);
    expect(p.drain()).toEqual([]);
    expect(p.samplesDropped).toBe(2); // +8 and +9 fall in the closed window; +10 and +11 open the next
    expect(steps).toEqual([{ timeMs: T0 + 8000, stepMs: 5000, resumeMs: T0 + 10_000, gpus: 1 }]);
    const [next] = p.flushAll();
    expect([(next!.startMs - T0) / 1000, next!.observedS]).toEqual([10, 2]);
  });

  it("reports each step once, a second one while still behind too, and ships the open window as it was", () => {
    const p = pipeline();
    for (let s = 0; s < 5; s++) p.ingest(T0 + s * 1000, [reading()]);
    for (let s = -60; s < -50; s++) p.ingest(T0 + s * 1000, [reading()]); // back a minute
    for (let s = -120; s < -100; s++) p.ingest(T0 + s * 1000, [reading()]); // and another, still behind
    expect(steps.map((s) => [s.stepMs / 1000, (s.resumeMs - T0) / 1000])).toEqual([
      [65, 4],
      [70, 4],
    ]);
    expect(p.samplesDropped).toBe(30);
    const [w, ...rest] = p.flushAll();
    expect(rest).toEqual([]);
    expect([w!.startMs, w!.observedS]).toEqual([T0, 5]);
  });

  it("leaves a gap where the clock jumps forward, dropping nothing", () => {
    const p = pipeline();
    for (let s = 0; s < 3; s++) p.ingest(T0 + s * 1000, [reading()]);
    for (let s = 3_600; s < 3_603; s++) p.ingest(T0 + s * 1000, [reading()]);
    const ws = p.flushAll();
    expect(ws.map((w) => [(w.startMs - T0) / 1000, w.observedS])).toEqual([
      [0, 3],
      [3_600, 3],
    ]);
    expect([p.samplesDropped, steps]).toEqual([0, []]);
  });
});

describe("owners in a window", () => {
  const pod = { via: "pod_resources" as const, namespace: "ml", pod: "trainer-0", container: "main" };
  const job = { via: "job_mapping" as const, job: "4242", user: "1001" };

  it("counts an allocated GPU with nothing on it as held idle by its pod, second by second", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    for (let s = 0; s < 10; s++) p.ingest(T0 + s * 1000, [reading({ allocations: s < 6 ? [pod] : [] })]);
    p.ingest(T0 + 10_000, [reading()]);
    const [w] = p.drain();
    expect(w!.stateS).toMatchObject({ held_idle: 6, free_idle: 4 });
    expect(w!.heldByS).toEqual({ process: 0, memory: 0, allocation: 6 });
    expect(w!.owners).toEqual([
      {
        ...pod,
        observedS: 6,
        stateS: { unavailable: 0, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 6 },
        reportedIdleS: 6,
        reportedBusyS: 0,
        realBusyS: 0,
      },
    ]);
    expect(w!.last.heldBy).toBe(0);
  });

  it("follows the owners of the GPU's processes once each per sample, and the allocation beside them", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const alice = { via: "process" as const, user: "alice", job: "4242", pid: 7, command: "python3" };
    // Two processes of one owner (same user and job, other pid): one owner, counted once a sample.
    const procs = [
      { pid: 7, name: "python3", usedMemoryBytes: 10_000 * MiB, owner: alice },
      { pid: 8, name: "python3", usedMemoryBytes: 10_000 * MiB, owner: { ...alice, pid: 8 } },
    ];
    for (let s = 0; s < 10; s++) {
      const busy = s >= 5;
      p.ingest(T0 + s * 1000, [
        reading({ ...held, processes: procs, allocations: [job], util: busy ? 90 : 0, powerW: busy ? 600 : 80 }),
      ]);
    }
    p.ingest(T0 + 10_000, [reading()]);
    const [w] = p.drain();
    expect(w!.heldByS).toEqual({ process: 10, memory: 10, allocation: 10 });
    expect(
      w!.owners?.map((o) => [o.via, o.user, o.job, o.pid, o.observedS, o.stateS.held_idle, o.stateS.active]),
    ).toEqual([
      ["job_mapping", "1001", "4242", undefined, 10, 5, 5],
      ["process", "alice", "4242", 7, 10, 5, 5],
    ]);
    // What the usual tools read over the owner's seconds: idle while util was 0, 90 % after.
    const alices = w!.owners!.find((o) => o.via === "process")!;
    expect([alices.reportedIdleS, alices.reportedBusyS]).toEqual([5, 4.5]);
    expect(alices.realBusyS).toBeCloseTo(w!.realBusyS, 9);
  });

  it(`reports at most ${MAX_WINDOW_OWNERS} owners, those who held the GPU longest, and follows at most ${MAX_TRACKED_OWNERS}`, () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    // Sample s shows owners 0..s: owner 0 holds the GPU 10 s, owner 9 one second.
    for (let s = 0; s < 10; s++) {
      const allocations = Array.from({ length: s + 1 }, (_, i) => ({
        via: "pod_resources" as const,
        namespace: "ns",
        pod: `p${i}`,
      }));
      p.ingest(T0 + s * 1000, [reading({ allocations })]);
    }
    p.ingest(T0 + 10_000, [reading()]);
    const [w] = p.drain();
    expect(w!.owners?.map((o) => [o.pod, o.observedS])).toEqual([
      ["p0", 10],
      ["p1", 9],
      ["p2", 8],
      ["p3", 7],
    ]);
    const q = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const many = Array.from({ length: MAX_TRACKED_OWNERS + 10 }, (_, i) => ({
      via: "pod_resources" as const,
      pod: `q${i}`,
    }));
    q.ingest(T0, [reading({ allocations: many })]);
    q.ingest(T0 + 10_000, [reading()]);
    expect(q.drain()[0]!.owners).toHaveLength(MAX_WINDOW_OWNERS);
  });
});
