import { describe, expect, it } from "vitest";
import { SamplePipeline } from "./pipeline.js";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../common/types.js";

const MiB = 1024 * 1024;
const T0 = Date.UTC(2026, 10, 29, 12, 0, 0); // a multiple of 10 s

function reading(over: Partial<GpuReading> = {}): GpuReading {
  return {
    uuid: "GPU-a", index: 0, model: "NVIDIA H100 80GB HBM3", driverVersion: "550.90.07",
    util: 0, powerW: 70, powerLimitW: 700, memUsedBytes: 0, memTotalBytes: 80 * 1024 * MiB, processes: [],
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
      {}, {}, // free_idle
      { ...held, util: 0, powerW: 80 }, // held_idle
      { ...held, util: 100, powerW: 80 }, { ...held, util: 100, powerW: 80 }, // busy_phantom
      { ...held, util: 90, powerW: 600 }, { ...held, util: 90, powerW: 600 }, { ...held, util: 90, powerW: 600 }, // active
      { error: "GPU is lost", util: undefined, powerW: undefined, memUsedBytes: undefined, processes: undefined }, // unavailable
      { util: 100 }, // free_idle although util reads 100
    ];
    plan.forEach((o, i) => p.ingest(T0 + i * 1000, [reading(o)]));
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
    expect(() => new SamplePipeline({ windowMs: 500, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS })).toThrow(/at least the interval/);
  });
});
