/**
 * The idle model of DESIGN.md, tested at every boundary: U, R, the held-memory margin,
 * the 64 MiB baseline cap, the power floor, and the state precedence.
 */
import { describe, expect, it } from "vitest";
import {
  DEFAULT_THRESHOLDS,
  type GpuReading,
  type GpuState,
  type RealSource,
  type Thresholds,
} from "../../common/types.js";
import {
  boardComputeSlices,
  classify,
  idleStreakSeconds,
  instanceComputeSlices,
  migPowerCompute,
  HELD_BY_ALLOCATION,
  HELD_BY_MEMORY,
  HELD_BY_PROCESS,
  heldByNames,
  isHeld,
  MEM_BASELINE_CAP_BYTES,
  nextBaseline,
  powerFloor,
  powerFraction,
  reportedUtil,
  type GpuBaseline,
} from "./idle-model.js";

const MiB = 1024 * 1024;
const GB = 1e9;
const T: Thresholds = { ...DEFAULT_THRESHOLDS };
const U = T.utilBusyPercent;
const R = T.realActiveRatio;
const HELD = T.heldMemoryBytes;

/**
 * An H100 (floor cap 75 W, limit 700 W: 625 W of span) held by one process, with nothing
 * running: util 0, power at the floor. Tests override what they vary.
 */
function h100(over: Partial<GpuReading> = {}): GpuReading {
  return {
    uuid: "GPU-00000000-0000-0000-0000-000000000001",
    index: 0,
    model: "NVIDIA H100 80GB HBM3",
    util: 0,
    memUsedBytes: 20 * GB,
    memTotalBytes: 80 * GB,
    powerW: 75,
    powerLimitW: 700,
    processes: [{ pid: 4242, name: "python3", usedMemoryBytes: 20 * GB }],
    ...over,
  };
}
/** The same GPU with nothing on it. */
function freeH100(over: Partial<GpuReading> = {}): GpuReading {
  return h100({ memUsedBytes: 1 * MiB, processes: [], ...over });
}
/** Power that gives this powerFrac on the H100 above (floor 75 W, limit 700 W). */
const powerAt = (frac: number): number => 75 + frac * 625;

describe("thresholds", () => {
  it("defaults to U = 5 %, R = 0.10, 256 MiB", () => {
    expect(DEFAULT_THRESHOLDS).toEqual({ utilBusyPercent: 5, realActiveRatio: 0.1, heldMemoryBytes: 256 * MiB });
  });
});

describe("util boundary U", () => {
  // Held, power at the floor (real 0): util alone decides busy_phantom vs held_idle.
  it.each<[string, number | undefined, GpuState, boolean]>([
    ["0", 0, "held_idle", true],
    ["just below U", U - 1e-9, "held_idle", true],
    ["4.99", 4.99, "held_idle", true],
    ["exactly U", U, "busy_phantom", false],
    ["above U", 50, "busy_phantom", false],
    ["100", 100, "busy_phantom", false],
    ["missing", undefined, "held_idle", false],
  ])("util %s → %s, reportedIdle %s", (_name, util, state, reportedIdle) => {
    const c = classify(h100({ util }), {}, T);
    expect(c.state).toBe(state);
    expect(c.reportedIdle).toBe(reportedIdle);
    expect(c.real).toBe(0);
  });

  it("follows a configured U", () => {
    const t = { ...T, utilBusyPercent: 50 };
    expect(classify(h100({ util: 49 }), {}, t).state).toBe("held_idle");
    expect(classify(h100({ util: 50 }), {}, t).state).toBe("busy_phantom");
  });
});

describe("real boundary R", () => {
  it.each<[string, Partial<GpuReading>, number, RealSource, GpuState]>([
    ["smActive exactly R", { util: 100, smActive: R }, R, "sm_active", "active"],
    ["smActive just below R", { util: 100, smActive: R - 1e-9 }, R - 1e-9, "sm_active", "busy_phantom"],
    ["powerFrac exactly R", { util: 100, powerW: powerAt(0.1) }, 0.1, "power", "active"],
    ["powerFrac just below R", { util: 100, powerW: 137.4 }, 62.4 / 625, "power", "busy_phantom"],
    ["util/100 exactly R, power high", { util: 10, powerW: 700 }, 0.1, "power", "active"],
    ["util/100 just below R, power high", { util: 9.99, powerW: 700 }, 0.0999, "power", "busy_phantom"],
    ["media exactly R", { util: 1, media: 10 }, 0.1, "media", "active"],
    ["media just below R", { util: 1, media: 9.99 }, 0.0999, "media", "held_idle"],
  ])("%s", (_name, over, real, source, state) => {
    const c = classify(h100(over), {}, T);
    expect(c.real).toBeCloseTo(real, 12);
    expect(c.source).toBe(source);
    expect(c.state).toBe(state);
  });

  it("follows a configured R", () => {
    const t = { ...T, realActiveRatio: 0.5 };
    expect(classify(h100({ smActive: 0.49, util: 100 }), {}, t).state).toBe("busy_phantom");
    expect(classify(h100({ smActive: 0.5, util: 100 }), {}, t).state).toBe("active");
  });
});

describe("held", () => {
  it("is held when a compute process is listed, whatever the memory says", () => {
    const r = freeH100({ processes: [{ pid: 1, name: "x" }] });
    expect(isHeld(r, {}, T)).toBe(true);
    expect(classify(r, {}, T).held).toBe(true);
  });

  it.each<[string, GpuBaseline, number, boolean]>([
    ["exactly heldMemoryBytes above the baseline", { minMemUsedBytes: 1 * MiB }, 1 * MiB + HELD, false],
    ["one byte more", { minMemUsedBytes: 1 * MiB }, 1 * MiB + HELD + 1, true],
    ["at the baseline", { minMemUsedBytes: 1 * MiB }, 1 * MiB, false],
    ["a baseline of 0", { minMemUsedBytes: 0 }, HELD, false],
    ["a baseline of 0, one byte more", { minMemUsedBytes: 0 }, HELD + 1, true],
    // The baseline is capped at 64 MiB: a GPU held since the agent started still counts.
    ["lowest seen 40 GB, still at 40 GB", { minMemUsedBytes: 40 * GB }, 40 * GB, true],
    ["lowest seen 40 GB, at cap + margin", { minMemUsedBytes: 40 * GB }, MEM_BASELINE_CAP_BYTES + HELD, false],
    ["lowest seen 40 GB, cap + margin + 1", { minMemUsedBytes: 40 * GB }, MEM_BASELINE_CAP_BYTES + HELD + 1, true],
    ["first reading, 40 GB", {}, 40 * GB, true],
    ["first reading, cap + margin", {}, MEM_BASELINE_CAP_BYTES + HELD, false],
    ["first reading, cap + margin + 1", {}, MEM_BASELINE_CAP_BYTES + HELD + 1, true],
    // The current reading counts as seen: memory below the learned minimum lowers the baseline.
    ["below the learned minimum", { minMemUsedBytes: 10 * MiB }, 2 * MiB, false],
  ])("memory %s, no process listed → held %s", (_name, baseline, used, held) => {
    expect(isHeld(freeH100({ memUsedBytes: used }), baseline, T)).toBe(held);
    // The same holds when the process list could not be read: memory is the evidence.
    expect(isHeld(freeH100({ memUsedBytes: used, processes: undefined }), baseline, T)).toBe(held);
  });

  it("baseline cap is 64 MiB", () => {
    expect(MEM_BASELINE_CAP_BYTES).toBe(64 * MiB);
  });

  it("counts as held when neither processes nor memory are known", () => {
    expect(isHeld(freeH100({ processes: undefined, memUsedBytes: undefined }), {}, T)).toBe(true);
  });

  it("counts as free when the process list is empty and memory is unknown", () => {
    expect(isHeld(freeH100({ memUsedBytes: undefined }), {}, T)).toBe(false);
  });

  it("is held, idle, when a scheduler allocated the GPU and nothing runs on it: never free_idle", () => {
    const pod = { via: "pod_resources" as const, namespace: "ml", pod: "trainer-0", container: "main" };
    const c = classify(freeH100({ allocations: [pod] }), {}, T);
    expect({ state: c.state, held: c.held, heldBy: heldByNames(c.heldBy) }).toEqual({
      state: "held_idle",
      held: true,
      heldBy: ["allocation"],
    });
    // An empty allocation list (an integration that is on, the GPU given to nobody) holds nothing.
    expect(classify(freeH100({ allocations: [] }), {}, T).state).toBe("free_idle");
    // util reads 100 on the allocated, empty GPU: reported busy, not working.
    expect(classify(freeH100({ allocations: [pod], util: 100 }), {}, T).state).toBe("busy_phantom");
  });

  it("says what held each sample: process, memory, allocation, any of them together", () => {
    const pod = { via: "pod_resources" as const, pod: "p" };
    expect(classify(h100({ allocations: [pod] }), {}, T).heldBy).toBe(
      HELD_BY_PROCESS | HELD_BY_MEMORY | HELD_BY_ALLOCATION,
    );
    expect(classify(h100({ processes: [] }), {}, T).heldBy).toBe(HELD_BY_MEMORY);
    expect(classify(freeH100({ processes: [{ pid: 1, name: "x" }] }), {}, T).heldBy).toBe(HELD_BY_PROCESS);
    expect(heldByNames(HELD_BY_PROCESS | HELD_BY_ALLOCATION)).toEqual(["process", "allocation"]);
    // Held for want of evidence (no process list, no memory reading) names nothing.
    const unknown = classify(freeH100({ processes: undefined, memUsedBytes: undefined }), {}, T);
    expect({ held: unknown.held, heldBy: unknown.heldBy }).toEqual({ held: true, heldBy: 0 });
  });

  it("learns the power floor on a GPU held only by an allocation: nothing runs on it", () => {
    const c = classify(freeH100({ allocations: [{ via: "job_mapping", job: "4242" }], powerW: 61 }), {}, T);
    expect(nextBaseline(freeH100({ powerW: 61 }), c, {}, 0).learnedFloorW).toBe(61);
  });

  it("follows a configured heldMemoryBytes", () => {
    const t = { ...T, heldMemoryBytes: 1 * GB };
    expect(isHeld(freeH100({ memUsedBytes: 1 * GB }), { minMemUsedBytes: 0 }, t)).toBe(false);
    expect(isHeld(freeH100({ memUsedBytes: 1 * GB + 1 }), { minMemUsedBytes: 0 }, t)).toBe(true);
  });
});

describe("power floor", () => {
  it.each<[string, string, number | undefined, GpuBaseline, number | undefined]>([
    ["H100, nothing learned → the model cap", "NVIDIA H100 80GB HBM3", 700, {}, 75],
    ["H100, learned below the cap", "NVIDIA H100 80GB HBM3", 700, { learnedFloorW: 62 }, 62],
    ["H100, learned above the cap", "NVIDIA H100 80GB HBM3", 700, { learnedFloorW: 110 }, 75],
    ["A100", "NVIDIA A100-SXM4-80GB", 400, {}, 60],
    ["T4", "Tesla T4", 70, { learnedFloorW: 30 }, 27],
    ["unknown model → 10 % of the limit", "NVIDIA GeForce GT 1030", 300, {}, 30],
    ["unknown model, learned below 10 %", "NVIDIA GeForce GT 1030", 300, { learnedFloorW: 12 }, 12],
    ["unknown model, learned above 10 %", "NVIDIA GeForce GT 1030", 300, { learnedFloorW: 45 }, 30],
    ["unknown model, no limit → learned", "Graphics Device", undefined, { learnedFloorW: 12 }, 12],
    ["unknown model, no limit, nothing learned", "Graphics Device", undefined, {}, undefined],
  ])("%s", (_name, model, powerLimitW, baseline, floor) => {
    expect(powerFloor(h100({ model, powerLimitW }), baseline)).toBe(floor);
    expect(classify(h100({ model, powerLimitW }), baseline, T).floorW).toBe(floor);
  });
});

describe("powerFraction", () => {
  it.each<[number | undefined, number | undefined, number | undefined, number | undefined]>([
    [75, 75, 700, 0],
    [50, 75, 700, 0], // below the floor clamps at 0
    [387.5, 75, 700, 0.5],
    [700, 75, 700, 1],
    [900, 75, 700, 1], // above the limit (boost, bad limit) clamps at 1
    [undefined, 75, 700, undefined],
    [100, undefined, 700, undefined],
    [100, 75, undefined, undefined],
    [100, 75, 75, undefined], // no span between floor and limit
    [100, 80, 75, undefined],
  ])("power %s, floor %s, limit %s → %s", (power, floor, limit, frac) => {
    expect(powerFraction(power, floor, limit)).toBe(frac);
  });

  it("is reported by classify", () => {
    expect(classify(h100({ powerW: powerAt(0.5) }), {}, T).powerFrac).toBe(0.5);
    expect(classify(h100({ powerW: 10 }), {}, T).powerFrac).toBe(0);
    expect(classify(h100({ powerW: 1000 }), {}, T).powerFrac).toBe(1);
  });
});

describe("compute source", () => {
  it.each<[string, Partial<GpuReading>, number, RealSource]>([
    ["smActive wins over util and power", { util: 100, powerW: 700, smActive: 0.3 }, 0.3, "sm_active"],
    ["smActive 0 wins too (a spinning kernel is not work)", { util: 100, powerW: 700, smActive: 0 }, 0, "sm_active"],
    ["smActive above 1 clamps", { smActive: 1.5 }, 1, "sm_active"],
    ["min(util, powerFrac): power lower", { util: 100, powerW: powerAt(0.4) }, 0.4, "power"],
    ["min(util, powerFrac): util lower", { util: 20, powerW: powerAt(0.9) }, 0.2, "power"],
    ["util missing → powerFrac alone", { util: undefined, powerW: powerAt(0.6) }, 0.6, "power"],
    ["power missing → util alone", { util: 70, powerW: undefined }, 0.7, "util"],
    ["limit missing → util alone", { util: 70, powerLimitW: undefined, model: "Graphics Device" }, 0.7, "util"],
    ["util above 100 clamps", { util: 150, powerW: undefined }, 1, "util"],
    ["nothing but media", { util: undefined, powerW: undefined, media: 30 }, 0.3, "media"],
  ])("%s", (_name, over, real, source) => {
    const c = classify(h100(over), {}, T);
    expect(c.real).toBeCloseTo(real, 12);
    expect(c.source).toBe(source);
  });

  it("uses the learned floor when it is below the model cap", () => {
    // Learned floor 50 W: span 650 W, so 115 W is exactly 0.1.
    const c = classify(h100({ util: 100, powerW: 115 }), { learnedFloorW: 50 }, T);
    expect(c.floorW).toBe(50);
    expect(c.real).toBeCloseTo(0.1, 12);
    expect(c.state).toBe("active");
  });
});

describe("media", () => {
  // NVENC at 70 % reads util 7 %: without media this would be held_idle or busy_phantom.
  it("wins when busier than compute", () => {
    const c = classify(h100({ util: 7, powerW: powerAt(0.05), media: 70 }), {}, T);
    expect(c).toMatchObject({ real: 0.7, source: "media", state: "active" });
  });
  it("loses when compute is busier", () => {
    const c = classify(h100({ smActive: 0.8, media: 30 }), {}, T);
    expect(c).toMatchObject({ real: 0.8, source: "sm_active", state: "active" });
  });
  it("keeps the compute source on a tie", () => {
    const c = classify(h100({ smActive: 0.3, media: 30 }), {}, T);
    expect(c.real).toBeCloseTo(0.3, 12);
    expect(c.source).toBe("sm_active");
  });
  it("is real when there is no compute signal", () => {
    const c = classify(h100({ util: undefined, powerW: undefined, media: 5 }), {}, T);
    expect(c).toMatchObject({ real: 0.05, source: "media", state: "held_idle" });
  });
});

describe("not held → free_idle", () => {
  it.each<[string, Partial<GpuReading>]>([
    ["util 100 (persistence mode off)", { util: 100 }],
    ["util 100 and high power", { util: 100, powerW: 600 }],
    ["smActive and media", { util: 100, smActive: 0.9, media: 80 }],
    ["util missing", { util: undefined }],
    ["process list unreadable, memory at baseline", { util: 100, processes: undefined }],
  ])("%s", (_name, over) => {
    const c = classify(freeH100(over), {}, T);
    expect(c).toMatchObject({ state: "free_idle", real: 0, source: "none", held: false });
  });

  it("is reported idle only when util < U", () => {
    expect(classify(freeH100({ util: 100 }), {}, T).reportedIdle).toBe(false);
    expect(classify(freeH100({ util: 0 }), {}, T).reportedIdle).toBe(true);
    expect(classify(freeH100({ util: undefined }), {}, T).reportedIdle).toBe(false);
  });
});

describe("unavailable", () => {
  it.each<[string, Partial<GpuReading>]>([
    ["an error, even with signals", { error: "GPU is lost", util: 100, smActive: 0.9 }],
    ["an error on a free GPU", { error: "Unknown Error", processes: [], memUsedBytes: 0 }],
    ["no signal at all", { util: undefined, powerW: undefined, smActive: undefined, media: undefined }],
    ["power without a limit is no signal", { util: undefined, powerLimitW: undefined }],
  ])("%s", (_name, over) => {
    const c = classify(h100(over), {}, T);
    expect(c).toMatchObject({ state: "unavailable", real: 0, source: "none", held: false });
  });

  it("power with a limit is a signal", () => {
    expect(classify(h100({ util: undefined }), {}, T).state).toBe("held_idle");
  });
});

describe("precedence: unavailable > free_idle > active > busy_phantom > held_idle", () => {
  it.each<[string, GpuReading, GpuState]>([
    ["error beats everything", h100({ error: "GPU is lost", util: 100, smActive: 1 }), "unavailable"],
    ["free beats active signals", freeH100({ util: 100, smActive: 1, media: 100 }), "free_idle"],
    ["active beats busy (util >= U and real >= R)", h100({ util: 100, smActive: 0.5 }), "active"],
    ["active with util < U (media work)", h100({ util: 1, media: 50 }), "active"],
    ["busy_phantom: util >= U, real < R", h100({ util: 100, powerW: powerAt(0.02) }), "busy_phantom"],
    ["held_idle: util < U, real < R", h100({ util: 2, powerW: powerAt(0.02) }), "held_idle"],
    ["held_idle: util missing, real < R", h100({ util: undefined, powerW: powerAt(0.02) }), "held_idle"],
    [
      "held with unknown processes and memory",
      h100({ processes: undefined, memUsedBytes: undefined, util: 0 }),
      "held_idle",
    ],
  ])("%s", (_name, reading, state) => {
    expect(classify(reading, {}, T).state).toBe(state);
  });

  it("is pure: same inputs, same answer, inputs untouched", () => {
    const reading = h100({ util: 100 });
    const baseline: GpuBaseline = { learnedFloorW: 70, minMemUsedBytes: 0 };
    const copy = structuredClone({ reading, baseline });
    expect(classify(reading, baseline, T)).toEqual(classify(reading, baseline, T));
    expect({ reading, baseline }).toEqual(copy);
  });
});

describe("nextBaseline", () => {
  it("learns the floor only while unheld, and keeps the lowest", () => {
    let b: GpuBaseline = {};
    const step = (r: GpuReading, t: number): void => {
      b = nextBaseline(r, classify(r, b, T), b, t);
    };
    step(freeH100({ powerW: 68 }), 1000);
    expect(b.learnedFloorW).toBe(68);
    step(freeH100({ powerW: 72 }), 2000);
    expect(b.learnedFloorW).toBe(68);
    step(h100({ powerW: 40 }), 3000); // held: a low reading here is not the idle floor
    expect(b.learnedFloorW).toBe(68);
    step(freeH100({ powerW: 0 }), 4000); // 0 W is a broken reading, not a floor
    expect(b.learnedFloorW).toBe(68);
    step(freeH100({ powerW: undefined }), 5000);
    expect(b.learnedFloorW).toBe(68);
    step(freeH100({ powerW: 64 }), 6000);
    expect(b.learnedFloorW).toBe(64);
  });

  it("does not learn a floor from memory-held readings", () => {
    const r = freeH100({ powerW: 30, memUsedBytes: 10 * GB, processes: undefined });
    const c = classify(r, {}, T);
    expect(c.held).toBe(true);
    expect(nextBaseline(r, c, {}, 0).learnedFloorW).toBeUndefined();
  });

  it("keeps the minimum memory seen, held or not", () => {
    let b: GpuBaseline = {};
    const step = (r: GpuReading, t: number): void => {
      b = nextBaseline(r, classify(r, b, T), b, t);
    };
    step(h100({ memUsedBytes: 40 * GB }), 0);
    expect(b.minMemUsedBytes).toBe(40 * GB);
    step(h100({ memUsedBytes: 30 * GB }), 1000);
    expect(b.minMemUsedBytes).toBe(30 * GB);
    step(h100({ memUsedBytes: 50 * GB }), 2000);
    expect(b.minMemUsedBytes).toBe(30 * GB);
    step(h100({ memUsedBytes: undefined }), 3000);
    expect(b.minMemUsedBytes).toBe(30 * GB);
  });

  it("records the last active time and the first time seen", () => {
    let b: GpuBaseline = {};
    const step = (r: GpuReading, t: number): void => {
      b = nextBaseline(r, classify(r, b, T), b, t);
    };
    step(h100(), 1000);
    expect(b.firstSeenMs).toBe(1000);
    expect(b.lastActiveMs).toBeUndefined();
    step(h100({ smActive: 0.5 }), 2000);
    step(h100({ smActive: 0.5 }), 3000);
    step(h100({ util: 100 }), 4000); // busy_phantom is not active
    expect(b).toMatchObject({ firstSeenMs: 1000, lastActiveMs: 3000 });
  });

  it("learns nothing from an unavailable reading but still notes when the GPU was first seen", () => {
    const r = freeH100({ error: "GPU is lost", powerW: 10, memUsedBytes: 0 });
    const b = nextBaseline(r, classify(r, {}, T), {}, 500);
    expect(b).toEqual({ firstSeenMs: 500 });
  });

  it("returns a new object and leaves the old one alone", () => {
    const old: GpuBaseline = { learnedFloorW: 70, minMemUsedBytes: 5 * MiB, firstSeenMs: 0 };
    const r = freeH100({ powerW: 60, memUsedBytes: 1 * MiB });
    const next = nextBaseline(r, classify(r, old, T), old, 1000);
    expect(next).not.toBe(old);
    expect(old).toEqual({ learnedFloorW: 70, minMemUsedBytes: 5 * MiB, firstSeenMs: 0 });
    expect(next).toMatchObject({ learnedFloorW: 60, minMemUsedBytes: 1 * MiB, firstSeenMs: 0 });
  });

  it("a learned floor changes later classifications", () => {
    // 100 W with util 100: against the 75 W cap that is 0.04 (busy_phantom); after the GPU was
    // seen idle at 30 W unheld, it is (100 - 30) / 670 > 0.10 (active).
    const r = h100({ util: 100, powerW: 100 });
    expect(classify(r, {}, T).state).toBe("busy_phantom");
    const free = freeH100({ powerW: 30 });
    const b = nextBaseline(free, classify(free, {}, T), {}, 0);
    expect(classify(r, b, T).state).toBe("active");
  });
});

describe("idleStreakSeconds", () => {
  it.each<[string, GpuBaseline, GpuState, number, number]>([
    ["active → 0", { lastActiveMs: 1000, firstSeenMs: 0 }, "active", 90_000, 0],
    ["since the last active sample", { lastActiveMs: 10_000, firstSeenMs: 0 }, "held_idle", 70_000, 60],
    ["never active → since first seen", { firstSeenMs: 5_000 }, "busy_phantom", 65_500, 60.5],
    ["nothing known → 0", {}, "free_idle", 65_500, 0],
    ["clock went back → 0, never negative", { lastActiveMs: 10_000 }, "held_idle", 9_000, 0],
  ])("%s", (_name, baseline, state, now, seconds) => {
    expect(idleStreakSeconds(baseline, state, now)).toBe(seconds);
  });

  it("counts across a run of samples", () => {
    let b: GpuBaseline = {};
    const readings: Array<[number, GpuReading]> = [
      [0, h100({ smActive: 0.9 })],
      [1000, h100({ smActive: 0.9 })],
      [2000, h100({ util: 100 })],
      [3000, freeH100()],
      [4000, h100()],
    ];
    const streaks: number[] = [];
    for (const [t, r] of readings) {
      const c = classify(r, b, T);
      b = nextBaseline(r, c, b, t);
      streaks.push(idleStreakSeconds(b, c.state, t));
    }
    expect(streaks).toEqual([0, 0, 1, 2, 3]);
  });
});

describe("a MIG instance: no utilization.gpu, so reported follows whether it is taken", () => {
  /** A 3g.40gb instance of an H100: no util, no power of its own, GPM SM activity per instance. */
  const mig = (over: Partial<GpuReading> = {}): GpuReading =>
    h100({
      uuid: "MIG-1",
      parentUuid: "GPU-0",
      migProfile: "3g.40gb",
      util: undefined,
      powerW: undefined,
      powerLimitW: undefined,
      smActive: 0,
      ...over,
    });
  const base: GpuBaseline = {};

  it("held by a process and doing nothing: held_idle, reported busy (as schedulers and nvidia-smi show it)", () => {
    const c = classify(mig({ smActive: 0.01 }), base, T);
    expect(c).toMatchObject({ state: "held_idle", source: "sm_active", reportedIdle: false });
    expect(reportedUtil(mig({ smActive: 0.01 }), c)).toBe(100);
  });

  it("free: free_idle and reported idle", () => {
    const r = mig({ processes: [], memUsedBytes: 0 });
    const c = classify(r, base, T);
    expect(c).toMatchObject({ state: "free_idle", reportedIdle: true });
    expect(reportedUtil(r, c)).toBe(0);
  });

  it("running: active from its own SM activity, never busy_phantom", () => {
    expect(classify(mig({ smActive: R }), base, T).state).toBe("active");
    expect(classify(mig({ smActive: R / 2 }), base, T).state).toBe("held_idle");
  });

  it("unavailable: neither reported idle nor busy", () => {
    const r = mig({ error: "GPU is lost" });
    const c = classify(r, base, T);
    expect(c).toMatchObject({ state: "unavailable", reportedIdle: false });
    expect(reportedUtil(r, c)).toBeUndefined();
  });

  it("read without SM activity (nvidia-smi): memory and processes still tell free from held", () => {
    // Nor its board's power: nothing says what it does.
    const held = mig({ smActive: undefined });
    expect(classify(held, base, T)).toMatchObject({ state: "held_idle", real: 0, source: "none" });
    const free = mig({ smActive: undefined, processes: [], memUsedBytes: 0 });
    expect(classify(free, base, T)).toMatchObject({ state: "free_idle", reportedIdle: true });
    // Nothing at all read: unavailable, as any GPU.
    expect(classify(mig({ smActive: undefined, processes: undefined, memUsedBytes: undefined }), base, T).state).toBe(
      "unavailable",
    );
  });

  it("without SM activity, bounds its real use from its board's power, scaled to its share of the board", () => {
    const held = mig({ smActive: undefined });
    // A board at its floor: every instance on it idles.
    expect(classify(held, base, T, 0)).toMatchObject({ state: "held_idle", real: 0, source: "power" });
    // 3 of 7 slices: the board's powerFrac × 7/3, so a 3g instance alone at full tilt reads 1.
    expect(classify(held, base, T, 0.03).real).toBeCloseTo(0.07, 12);
    expect(classify(held, base, T, 0.03).state).toBe("held_idle");
    expect(classify(held, base, T, 0.05)).toMatchObject({ state: "active", source: "power" });
    expect(classify(held, base, T, 0.6).real).toBe(1);
    // A free instance stays free whatever the board draws; SM activity, where read, wins.
    const free = mig({ smActive: undefined, processes: [], memUsedBytes: 0 });
    expect(classify(free, base, T, 0.9)).toMatchObject({ state: "free_idle", real: 0 });
    expect(classify(mig({ smActive: 0.01 }), base, T, 0.9)).toMatchObject({ state: "held_idle", source: "sm_active" });
    // A whole GPU never takes a board's power.
    expect(classify(h100({ smActive: 0, powerW: undefined, util: 0 }), base, T, 0.9).real).toBe(0);
  });

  it("counts compute slices by profile and board", () => {
    expect(
      ["1g.10gb", "3g.40gb", "7g.80gb", "1g.10gb+me", "1c.3g.40gb", "2c.4g.40gb", "odd", undefined].map(
        instanceComputeSlices,
      ),
    ).toEqual([1, 3, 7, 1, 1, 2, 1, 1]);
    expect(boardComputeSlices("NVIDIA A30")).toBe(4);
    expect(boardComputeSlices("NVIDIA H100 80GB HBM3")).toBe(7);
    expect(boardComputeSlices("NVIDIA A100-SXM4-40GB")).toBe(7);
    expect(migPowerCompute(0.1, "1g.10gb", "NVIDIA A30")).toBeCloseTo(0.4, 12);
    expect(migPowerCompute(0.1, "1c.3g.40gb", "NVIDIA H100 80GB HBM3")).toBeCloseTo(0.7, 12);
  });

  it("leaves a whole GPU without utilization as before: not reported idle, no reported busy", () => {
    const r = h100({ util: undefined, processes: [], memUsedBytes: 0 });
    const c = classify(r, base, T);
    expect(c).toMatchObject({ state: "free_idle", reportedIdle: false });
    expect(reportedUtil(r, c)).toBeUndefined();
  });
});
