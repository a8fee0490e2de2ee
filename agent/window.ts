/**
 * One GPU's aggregate over one window — the unit the agent ships and the collector
 * stores. Keyed by (uuid, startMs): a window sent twice is the same window.
 */
import type { GpuOwner, GpuState, HeldBy, RealSource } from "../common/types.js";

/** Owners one window reports at most, those who held the GPU longest first. */
export const MAX_WINDOW_OWNERS = 4;

/** Who held the GPU in the window, and for how many of its seconds in each state. */
export interface WindowOwner extends GpuOwner {
  observedS: number;
  stateS: Record<GpuState, number>;
  /** Over the seconds this owner held the GPU: as the window's fields of the same names. */
  reportedIdleS: number;
  reportedBusyS: number;
  realBusyS: number;
}

export interface WindowHolder {
  pid: number;
  name: string;
  usedMemoryBytes?: number | undefined;
  /**
   * Mean SM utilization of the process, 0–1, over the seconds of the window it was seen
   * with a known per-process utilization (NVML); absent where it never was (nvidia-smi).
   * A holder with a large allocation and a share near 0 holds the GPU idle, even while a
   * neighbour process keeps the GPU busy.
   */
  smShare?: number | undefined;
}

export interface WindowLast {
  timeMs: number;
  state: GpuState;
  real: number;
  realSource: RealSource;
  utilPercent?: number | undefined;
  powerW?: number | undefined;
  memUsedBytes?: number | undefined;
  processes: number;
  idleStreakS: number;
  error?: string | undefined;
  /** What held the GPU in the last sample (HELD_BY_* bits of agent/model/idle-model.ts); 0 or absent: nothing known. */
  heldBy?: number | undefined;
}

export interface GpuWindowRecord {
  uuid: string;
  index: number;
  model: string;
  driverVersion: string;
  /** A MIG instance's board uuid and profile (GpuReading); absent for a whole GPU. */
  parentUuid?: string | undefined;
  migProfile?: string | undefined;
  /**
   * The row of a board in MIG mode (GpuReading.migBoard): observedS and stateS.unavailable
   * (seconds it could not be read) and its power; every other seconds field stays 0.
   */
  migBoard?: boolean | undefined;
  startMs: number;
  durationMs: number;
  observedS: number;
  stateS: Record<GpuState, number>;
  reportedIdleS: number;
  reportedBusyS: number;
  realBusyS: number;
  powerMeanW?: number | undefined;
  powerMaxW?: number | undefined;
  powerFloorW?: number | undefined;
  powerLimitW?: number | undefined;
  memUsedMaxBytes?: number | undefined;
  memTotalBytes?: number | undefined;
  processesMax: number;
  last: WindowLast;
  topHolders: WindowHolder[];
  /** Seconds the GPU was held by each kind of holder (a sample may count under several); absent: none. */
  heldByS?: Record<HeldBy, number> | undefined;
  /** Who held the GPU, longest first, at most MAX_WINDOW_OWNERS; absent: none known. */
  owners?: WindowOwner[] | undefined;
}

export function emptyHeldBySeconds(): Record<HeldBy, number> {
  return { process: 0, memory: 0, allocation: 0 };
}

export function emptyStateSeconds(): Record<GpuState, number> {
  return { unavailable: 0, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 0 };
}

/** Real idle seconds: free_idle + held_idle + busy_phantom. */
export function realIdleSeconds(s: Record<GpuState, number>): number {
  return s.free_idle + s.held_idle + s.busy_phantom;
}
