/**
 * The idle model of DESIGN.md, as pure functions.
 *
 * Per GPU the agent keeps a small `GpuBaseline` (idle power floor, idle memory baseline,
 * last time active). `classify` turns one reading plus the baseline into a state and a real
 * utilization; `nextBaseline` folds the reading into the baseline for the next sample.
 */
import {
  HELD_BY,
  type GpuReading,
  type GpuState,
  type HeldBy,
  type RealSource,
  type Thresholds,
} from "../../common/types.js";
import { defaultPowerFloor } from "./power-floors.js";

/** The idle memory baseline is never above this, so a GPU held since the agent started still counts as held. */
export const MEM_BASELINE_CAP_BYTES = 64 * 1024 * 1024;

export interface GpuBaseline {
  /** Lowest power seen while unheld, W; undefined until one such reading. */
  learnedFloorW?: number | undefined;
  /** Lowest memory used seen, bytes. */
  minMemUsedBytes?: number | undefined;
  /** Time of the last `active` sample, ms; undefined if never active. */
  lastActiveMs?: number | undefined;
  /** Time of the first sample, ms. */
  firstSeenMs?: number | undefined;
}

export interface Classification {
  state: GpuState;
  /** Real utilization 0–1; 0 when unheld or unavailable. */
  real: number;
  source: RealSource;
  /** Whether the GPU is held: a process listed, memory above the baseline, a scheduler's allocation — or nothing known either way. */
  held: boolean;
  /** What held it (HELD_BY_* bits); 0 when free, or held only for want of evidence either way. */
  heldBy: number;
  /** Floor used for this reading, W. */
  floorW?: number | undefined;
  powerFrac?: number | undefined;
  /** utilization.gpu present and below U, on a valid reading. */
  reportedIdle: boolean;
}

/** The floor in force: the learned floor, never above the per-model default cap. */
export function powerFloor(reading: GpuReading, baseline: GpuBaseline): number | undefined {
  const cap = defaultPowerFloor(reading.model, reading.powerLimitW);
  const learned = baseline.learnedFloorW;
  if (cap === undefined) return learned;
  if (learned === undefined) return cap;
  return Math.min(learned, cap);
}

export function powerFraction(
  powerW: number | undefined,
  floorW: number | undefined,
  limitW: number | undefined,
): number | undefined {
  if (powerW === undefined || floorW === undefined || limitW === undefined) return undefined;
  const span = limitW - floorW;
  if (!(span > 0)) return undefined;
  return clamp01((powerW - floorW) / span);
}

/** Bits of `Classification.heldBy`, in the order of HELD_BY. */
export const HELD_BY_PROCESS = 1;
export const HELD_BY_MEMORY = 2;
export const HELD_BY_ALLOCATION = 4;

/** The names of the bits set in a `heldBy` mask, in HELD_BY order. */
export function heldByNames(mask: number): HeldBy[] {
  return HELD_BY.filter((_, i) => (mask & (1 << i)) !== 0);
}

/**
 * What holds the GPU, as HELD_BY_* bits: a listed compute process; memory above the idle
 * baseline (a process the agent cannot see still holds memory); a scheduler's allocation
 * (a pod or job it is given to, even with nothing running on it).
 */
export function heldByMask(reading: GpuReading, baseline: GpuBaseline, thresholds: Thresholds): number {
  let mask = 0;
  const procs = reading.processes;
  if (procs !== undefined && procs.length > 0) mask |= HELD_BY_PROCESS;
  const used = reading.memUsedBytes;
  if (used !== undefined) {
    const base = Math.min(baseline.minMemUsedBytes ?? used, used, MEM_BASELINE_CAP_BYTES);
    if (used > base + thresholds.heldMemoryBytes) mask |= HELD_BY_MEMORY;
  }
  const alloc = reading.allocations;
  if (alloc !== undefined && alloc.length > 0) mask |= HELD_BY_ALLOCATION;
  return mask;
}

/**
 * Whether the GPU is held. Unknown (no process list and no memory reading) counts as held:
 * the model never calls a GPU free without evidence.
 */
export function isHeld(reading: GpuReading, baseline: GpuBaseline, thresholds: Thresholds): boolean {
  return heldByMask(reading, baseline, thresholds) !== 0 || unknownHeld(reading);
}

/** Neither a process list nor a memory reading: no evidence the GPU is free. */
function unknownHeld(reading: GpuReading): boolean {
  return reading.processes === undefined && reading.memUsedBytes === undefined;
}

/**
 * A MIG instance without utilization.gpu — NVML and nvidia-smi give none per instance.
 * What the usual tools show for such an instance is whether it is taken: a scheduler counts
 * the slice as used while it is allocated, nvidia-smi lists its processes, and its
 * utilization reads N/A. So trueidle's "reported" figures for it follow that: reported idle
 * while it is free, reported busy (as if at 100 %) while it is held, whatever it does. Its
 * state still comes from what it really does (GPM SM activity per instance); with no
 * utilization it is never busy_phantom, and a held instance doing nothing is held_idle.
 */
export function isMigWithoutUtil(reading: GpuReading): boolean {
  return reading.parentUuid !== undefined && reading.util === undefined;
}

/**
 * A MIG instance with no SM activity of its own (nvidia-smi; boards without GPM, such as
 * the A100) has no signal of its own of what it does: no utilization, no power. Its board's
 * power is the one signal there is, so its `compute` is read from it (source `power`), as
 * the most the instance can be doing: the board's powerFrac as if all of the board's power
 * above its floor were this instance's, scaled to its share of the board's compute slices,
 * `min(1, boardPowerFrac × boardSlices / instanceSlices)`. A board at its idle floor says
 * every instance on it idles (a held one is held_idle); a board drawing power says work runs
 * somewhere on it, and no held instance on it is called idle unless even that bound is below
 * R. It never calls a working instance idle; it may call an idle one beside a working one
 * active, for want of a finer signal.
 */
export function migPowerCompute(boardPowerFrac: number, profile: string | undefined, model: string): number {
  return clamp01((boardPowerFrac * boardComputeSlices(model)) / instanceComputeSlices(profile));
}

/** Compute slices of a MIG profile: `3g.40gb` 3, `1c.3g.40gb` 1 (its compute instance's); 1 where unknown. */
export function instanceComputeSlices(profile: string | undefined): number {
  const m = /^(?:(\d+)c\.)?(\d+)g\./.exec(profile ?? "");
  const n = m ? Number(m[1] ?? m[2]) : 1;
  return Math.max(n, 1);
}

/** Compute slices of a board in MIG mode: 4 on an A30, 7 on every other MIG GPU so far. */
export function boardComputeSlices(model: string): number {
  return /\bA30\b/.test(model) ? 4 : 7;
}

/**
 * The utilization the usual tools show, %, for reported_busy_s (Σ util·dt): utilization.gpu,
 * or for a MIG instance without it, 100 while held and 0 while free (isMigWithoutUtil).
 */
export function reportedUtil(reading: GpuReading, c: Classification): number | undefined {
  if (c.state === "unavailable") return undefined;
  if (isMigWithoutUtil(reading)) return c.held ? 100 : 0;
  return reading.util;
}

/** Classifies one reading. Pure: same inputs, same answer. */
/**
 * @param boardPowerFrac for a MIG instance, its board's powerFrac at the same tick (from the
 *   board's row), where the board's power could be read: its `real` where it has no SM
 *   activity of its own (migPowerCompute).
 */
export function classify(
  reading: GpuReading,
  baseline: GpuBaseline,
  thresholds: Thresholds,
  boardPowerFrac?: number,
): Classification {
  const util = reading.util;
  let reportedIdle = util !== undefined && util < thresholds.utilBusyPercent;
  const floorW = powerFloor(reading, baseline);
  const powerFrac = powerFraction(reading.powerW, floorW, reading.powerLimitW);

  if (reading.migBoard) {
    // The row of a board in MIG mode is no GPU (its instances are): no state of its own
    // beyond whether it reads, and never held, so its lowest power is learnt as its floor.
    const state = reading.error === undefined ? "free_idle" : "unavailable";
    return { state, real: 0, source: "none", held: false, heldBy: 0, floorW, powerFrac, reportedIdle: false };
  }
  if (reading.error !== undefined || !hasSignal(reading)) {
    // No valid reading: nobody calls it idle, the usual tools included.
    return {
      state: "unavailable",
      real: 0,
      source: "none",
      held: false,
      heldBy: 0,
      floorW,
      powerFrac,
      reportedIdle: false,
    };
  }
  const heldBy = heldByMask(reading, baseline, thresholds);
  const held = heldBy !== 0 || unknownHeld(reading);
  // A MIG instance has no utilization.gpu: the usual tools show it in use while it is held.
  if (isMigWithoutUtil(reading)) reportedIdle = !held;
  if (!held) return { state: "free_idle", real: 0, source: "none", held, heldBy, floorW, powerFrac, reportedIdle };

  let compute: number | undefined;
  let source: RealSource = "none";
  if (reading.smActive !== undefined) {
    compute = clamp01(reading.smActive);
    source = "sm_active";
  } else if (powerFrac !== undefined) {
    compute = util === undefined ? powerFrac : Math.min(clamp01(util / 100), powerFrac);
    source = "power";
  } else if (reading.parentUuid !== undefined && boardPowerFrac !== undefined) {
    compute = migPowerCompute(boardPowerFrac, reading.migProfile, reading.model);
    source = "power";
  } else if (util !== undefined) {
    // No power reading (some consumer boards and vGPUs): utilization.gpu is all there is.
    compute = clamp01(util / 100);
    source = "util";
  }
  let real = compute ?? 0;
  if (reading.media !== undefined) {
    const media = clamp01(reading.media / 100);
    if (compute === undefined || media > compute) {
      real = media;
      source = "media";
    }
  }

  let state: GpuState;
  if (real >= thresholds.realActiveRatio) state = "active";
  else if (util !== undefined && util >= thresholds.utilBusyPercent) state = "busy_phantom";
  else state = "held_idle";
  return { state, real, source, held, heldBy, floorW, powerFrac, reportedIdle };
}

/** Folds a classified reading into the GPU's baseline: a new object, or the same one when nothing changed. */
export function nextBaseline(
  reading: GpuReading,
  c: Classification,
  baseline: GpuBaseline,
  timeMs: number,
): GpuBaseline {
  const firstSeen = baseline.firstSeenMs === undefined;
  const usable = c.state !== "unavailable";
  const mem = reading.memUsedBytes;
  const lowerMem =
    usable && mem !== undefined && (baseline.minMemUsedBytes === undefined || mem < baseline.minMemUsedBytes);
  const power = reading.powerW;
  // The floor is learned while nothing runs on the GPU: an allocation alone draws idle power.
  const idlePower = !c.held || c.heldBy === HELD_BY_ALLOCATION;
  const lowerFloor =
    usable &&
    idlePower &&
    power !== undefined &&
    power > 0 &&
    (baseline.learnedFloorW === undefined || power < baseline.learnedFloorW);
  const active = c.state === "active";
  if (!firstSeen && !lowerMem && !lowerFloor && !active) return baseline;
  return {
    learnedFloorW: lowerFloor ? power : baseline.learnedFloorW,
    minMemUsedBytes: lowerMem ? mem : baseline.minMemUsedBytes,
    lastActiveMs: active ? timeMs : baseline.lastActiveMs,
    firstSeenMs: firstSeen ? timeMs : baseline.firstSeenMs,
  };
}

/** Seconds since the GPU was last active (or since it was first seen). */
export function idleStreakSeconds(baseline: GpuBaseline, state: GpuState, timeMs: number): number {
  if (state === "active") return 0;
  const since = baseline.lastActiveMs ?? baseline.firstSeenMs ?? timeMs;
  return Math.max(0, (timeMs - since) / 1000);
}

function hasSignal(r: GpuReading): boolean {
  return (
    r.util !== undefined ||
    r.smActive !== undefined ||
    r.media !== undefined ||
    (r.powerW !== undefined && r.powerLimitW !== undefined) ||
    // A MIG instance read without GPM (nvidia-smi, or a board without it) has only its memory
    // and processes: enough to tell free from held, and held with no activity known is held_idle.
    (r.parentUuid !== undefined && (r.memUsedBytes !== undefined || r.processes !== undefined))
  );
}

function clamp01(x: number): number {
  return Math.min(1, Math.max(0, x));
}
