/**
 * What every simulated GPU shows at an instant. Pure and deterministic in (scenario, time),
 * so the simulator source, the fake nvidia-smi and the tests that check them agree.
 */
import type { GpuProcess, GpuReading } from "../../common/types.js";
import { migBoardRow } from "../sources/mig-board-row.js";
import type { Scenario, ScenarioGpu, ScenarioMigInstance, ScenarioPhase } from "./scenario.js";

const MiB = 1024 * 1024;

export function phaseAt(gpu: ScenarioGpu, timeMs: number, originMs: number): ScenarioPhase {
  let t = (timeMs - originMs) % gpu.cycleMs;
  if (t < 0) t += gpu.cycleMs;
  for (const p of gpu.phases) {
    if (t < p.durationMs) return p;
    t -= p.durationMs;
  }
  return gpu.phases[gpu.phases.length - 1]!;
}

/** Readings of every GPU of the scenario at `timeMs`: boards, as nvidia-smi's --query-gpu lists them. */
export function readingsAt(scenario: Scenario, timeMs: number): GpuReading[] {
  return scenario.gpus.map((g) => readingOf(scenario, g, timeMs));
}

/**
 * What the simulator source shows at `timeMs`: each GPU, and for a board in MIG mode its
 * board row (migBoardReadingOf) and each of its instances present then, a GPU of its own.
 */
export function sourceReadingsAt(scenario: Scenario, timeMs: number): GpuReading[] {
  const out: GpuReading[] = [];
  for (const g of scenario.gpus) {
    if (g.mig) out.push(migBoardReadingOf(scenario, g, timeMs), ...migReadingsOf(scenario, g, timeMs));
    else out.push(readingOf(scenario, g, timeMs));
  }
  return out;
}

/** The row of a board in MIG mode: its power and limit from the board's own phases, or their error. */
export function migBoardReadingOf(scenario: Scenario, g: ScenarioGpu, timeMs: number): GpuReading {
  return migBoardRow(readingOf(scenario, g, timeMs));
}

/** SM activity (GPM per instance) a MIG instance shows for a preset when its phase does not set `smActive`. */
const MIG_SM_OF_PRESET: Partial<Record<NonNullable<ScenarioPhase["state"]>, number>> = {
  active: 0.72,
  busy_phantom: 0.01,
  free_busy: 0.005,
};

/** Where `timeMs` falls in a cycle of phases: the phase, and how many absent phases began before it since originMs. */
function migPhaseAt(
  inst: ScenarioMigInstance,
  timeMs: number,
  originMs: number,
): { phase: ScenarioPhase; destroyed: number } {
  const absentPerCycle = inst.phases.filter((p) => p.absent).length;
  const since = timeMs - originMs;
  const cycles = Math.floor(since / inst.cycleMs);
  let t = since - cycles * inst.cycleMs;
  let destroyed = cycles * absentPerCycle;
  for (const p of inst.phases) {
    if (t < p.durationMs) return { phase: p, destroyed };
    if (p.absent) destroyed++;
    t -= p.durationMs;
  }
  return { phase: inst.phases[inst.phases.length - 1]!, destroyed };
}

/** The instances of a MIG board present at `timeMs`, each a GPU of its own (see scenario.ts). */
export function migReadingsOf(scenario: Scenario, g: ScenarioGpu, timeMs: number): GpuReading[] {
  const out: GpuReading[] = [];
  for (const inst of g.mig ?? []) {
    const { phase, destroyed } = migPhaseAt(inst, timeMs, scenario.originMs);
    if (phase.absent) continue;
    // A re-created instance is a new one: a uuid of its own each time.
    const uuid = migUuid(g.uuid, inst.gpuInstanceId, inst.computeInstanceId, destroyed);
    const base = {
      uuid,
      index: g.index,
      model: g.model,
      parentUuid: g.uuid,
      migProfile: inst.profile,
      busId: g.busId,
      driverVersion: scenario.driverVersion,
    };
    const spec: ScenarioGpu = { ...g, uuid, memTotalMiB: inst.memTotalMiB, mig: undefined };
    const v = phaseValues(spec, phase);
    if (v.error !== undefined) {
      out.push({ ...base, error: v.error });
      continue;
    }
    const m = v.memUsedMiB;
    out.push({
      ...base,
      // Per instance there is no utilization.gpu and no power: both are the board's.
      memUsedBytes: m === undefined ? undefined : m * MiB,
      memTotalBytes: inst.memTotalMiB * MiB,
      smActive:
        g.gpm === false ? undefined : (v.smActive ?? (phase.state ? MIG_SM_OF_PRESET[phase.state] : undefined) ?? 0),
      processes: v.processes.map((x) => ({
        pid: x.pid + (inst.gpuInstanceId + 1) * 1000,
        name: x.name,
        usedMemoryBytes: x.usedMemoryBytes,
      })),
    });
  }
  return out;
}

/** A stable `MIG-…` uuid for an instance of a board, new for each re-creation. */
export function migUuid(boardUuid: string, gi: number, ci: number, generation: number): string {
  const seed = `${boardUuid}/${gi}/${ci}/${generation}`;
  let h1 = 0x9e3779b9,
    h2 = 0x85ebca6b;
  for (let i = 0; i < seed.length; i++) {
    h1 = Math.imul(h1 ^ seed.charCodeAt(i), 16777619) >>> 0;
    h2 = Math.imul(h2 ^ seed.charCodeAt(i), 2246822519) >>> 0;
  }
  const hex = (h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0")).repeat(2);
  return `MIG-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

export function readingOf(scenario: Scenario, g: ScenarioGpu, timeMs: number): GpuReading {
  const p = phaseAt(g, timeMs, scenario.originMs);
  const v = phaseValuesOf(g, p);
  if (v.error !== undefined) {
    return {
      uuid: g.uuid,
      index: g.index,
      model: g.model,
      busId: g.busId,
      driverVersion: scenario.driverVersion,
      error: v.error,
    };
  }
  const noise = v.noise;
  const jitter = noise > 0 ? (hash01(g.uuid, timeMs) - 0.5) * 2 * noise : 0;
  let u = v.util;
  if (u !== undefined && noise > 0 && u > 0 && u < 100) u = Math.min(100, Math.max(0, Math.round(u * (1 + jitter))));
  let w = v.powerW;
  if (w !== undefined && noise > 0) w = Math.max(0, w * (1 + jitter / 4));
  const m = v.memUsedMiB;
  return {
    uuid: g.uuid,
    index: g.index,
    model: g.model,
    busId: g.busId,
    driverVersion: scenario.driverVersion,
    util: u,
    powerW: w === undefined ? undefined : Math.round(w * 100) / 100,
    powerLimitW: g.powerLimitW,
    memUsedBytes: m === undefined ? undefined : m * MiB,
    memTotalBytes: g.memTotalMiB * MiB,
    smActive: v.smActive,
    media: v.media,
    processes: v.processes.map((x) => ({
      pid: x.pid,
      name: x.name,
      usedMemoryBytes: x.usedMemoryBytes,
      smUtil: x.smUtil === "util" ? u : x.smUtil,
    })),
  };
}

/** phaseValues, worked out once per GPU and phase: readings are asked for every second. */
const valuesCache = new WeakMap<ScenarioGpu, Map<ScenarioPhase, PhaseValues>>();

function phaseValuesOf(g: ScenarioGpu, p: ScenarioPhase): PhaseValues {
  let byPhase = valuesCache.get(g);
  if (!byPhase) valuesCache.set(g, (byPhase = new Map()));
  let v = byPhase.get(p);
  if (!v) byPhase.set(p, (v = phaseValues(g, p)));
  return v;
}

/**
 * A phase's values before the per-second noise, which readingOf adds; the stub
 * libnvidia-ml.so's table (test/helpers/nvml-stub.ts) is written from these.
 */
export interface PhaseValues {
  /** Set when the GPU gives no reading in this phase. */
  error?: string | undefined;
  util?: number | undefined;
  /** Unrounded: readingOf rounds after the noise. */
  powerW?: number | undefined;
  memUsedMiB?: number | undefined;
  smActive?: number | undefined;
  media?: number | undefined;
  noise: number;
  /** `smUtil: "util"`: the process shows the GPU's util, noise included, as its own. */
  processes: Array<Omit<GpuProcess, "smUtil"> & { smUtil?: number | "util" | undefined }>;
}

/**
 * What each preset state reads like: util %, power as a share of the span from idle power
 * to the power limit, memory used as a share of the GPU's, and processes.
 */
const PRESETS: Record<
  Exclude<ScenarioPhase["state"], "unavailable" | undefined>,
  { util: number; powerShare: number; memShare: number; procs: number }
> = {
  free_idle: { util: 0, powerShare: 0, memShare: 0, procs: 0 },
  held_idle: { util: 0, powerShare: 0.02, memShare: 0.3, procs: 1 },
  busy_phantom: { util: 100, powerShare: 0.04, memShare: 0.4, procs: 1 },
  active: { util: 97, powerShare: 0.75, memShare: 0.7, procs: 2 },
  // util 100 with nothing on the GPU: what the reading alone calls busy.
  free_busy: { util: 100, powerShare: 0.01, memShare: 0, procs: 0 },
};

export function phaseValues(g: ScenarioGpu, p: ScenarioPhase): PhaseValues {
  const preset = p.state;
  if (p.error !== undefined || preset === "unavailable") {
    return { error: p.error ?? "GPU is lost", noise: 0, processes: [] };
  }
  const { util, powerShare, memShare, procs } = PRESETS[preset ?? "free_idle"];
  const power = g.idlePowerW + powerShare * (g.powerLimitW - g.idlePowerW);
  const memMiB = Math.round(g.memTotalMiB * memShare);
  const pick = (v: number | null | undefined, dflt: number | undefined): number | undefined =>
    v === null ? undefined : v !== undefined ? v : dflt;
  const u = pick(p.util, util);
  const m = pick(p.memUsedMiB, memMiB);
  const smActive = p.smActive ?? undefined;
  const media = p.media ?? undefined;

  let processes: PhaseValues["processes"];
  if (Array.isArray(p.processes)) {
    processes = p.processes.map((x) => ({
      pid: x.pid,
      name: x.name,
      usedMemoryBytes: x.usedMiB === undefined ? undefined : x.usedMiB * MiB,
      smUtil: x.smUtil,
    }));
  } else {
    const n = p.processes ?? procs;
    processes = [];
    for (let i = 0; i < n; i++) {
      processes.push({
        pid: 10000 + g.index * 100 + i,
        name: i === 0 ? "python3" : "torchrun",
        usedMemoryBytes: m === undefined ? undefined : Math.floor(m / n) * MiB,
        // One process does the GPU's work and the rest idle beside it, so the per-process
        // share tells a busy GPU with an idle neighbour from a held-idle one.
        smUtil: u === undefined ? undefined : i === 0 ? "util" : 0,
      });
    }
  }
  return { util: u, powerW: pick(p.powerW, power), memUsedMiB: m, smActive, media, noise: p.noise ?? 0, processes };
}

/**
 * Deterministic pseudo-random number in [0, 1) from a GPU and a second. The stub
 * libnvidia-ml.so (test/nvml-stub/nvml-stub.c) has the same function bit for bit: change both.
 */
function hash01(uuid: string, timeMs: number): number {
  let h = 2166136261 ^ Math.floor(timeMs / 1000);
  for (let i = 0; i < uuid.length; i++) h = Math.imul(h ^ uuid.charCodeAt(i), 16777619);
  h ^= h >>> 13;
  h = Math.imul(h, 0x5bd1e995);
  h ^= h >>> 15;
  return (h >>> 0) / 4294967296;
}
