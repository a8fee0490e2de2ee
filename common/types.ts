/**
 * Types shared by every part of trueidle. Every GPU signal may be missing: a missing
 * value is `undefined`, never 0.
 */

/** The idle model's states, in precedence order (first match wins). */
export const GPU_STATES = ["unavailable", "free_idle", "active", "busy_phantom", "held_idle"] as const;
export type GpuState = (typeof GPU_STATES)[number];

/** Where real utilization came from. `none`: unheld or unavailable, so real is 0. */
export const REAL_SOURCES = ["none", "sm_active", "power", "media", "util"] as const;
export type RealSource = (typeof REAL_SOURCES)[number];

export interface GpuProcess {
  pid: number;
  name: string;
  /** Bytes of GPU memory the process holds; undefined where the driver does not say (WDDM). */
  usedMemoryBytes?: number | undefined;
  /**
   * The process's SM utilization, 0–100, as NVML `nvmlDeviceGetProcessUtilization` reports
   * it; undefined where the source cannot see it (nvidia-smi).
   */
  smUtil?: number | undefined;
}

/** One reading of one GPU at one instant. */
export interface GpuReading {
  uuid: string;
  index: number;
  model: string;
  busId?: string | undefined;
  driverVersion?: string | undefined;
  /** utilization.gpu, 0–100. */
  util?: number | undefined;
  memUsedBytes?: number | undefined;
  memTotalBytes?: number | undefined;
  powerW?: number | undefined;
  powerLimitW?: number | undefined;
  /** The gpu_idle clocks event reason. */
  idleReason?: boolean | undefined;
  /** SM activity, 0–1 (GPM or DCGM PROF_SM_ACTIVE). */
  smActive?: number | undefined;
  /** GPM SM occupancy, tensor-pipe activity and DRAM bandwidth use, 0–1 (NVML source, Hopper and newer). */
  smOccupancy?: number | undefined;
  tensorActive?: number | undefined;
  dramActive?: number | undefined;
  /** SM clock, MHz. */
  smClockMHz?: number | undefined;
  /** Busiest media engine (encoder, decoder, JPEG, OFA), 0–100. */
  media?: number | undefined;
  /** Compute processes; undefined when the process list could not be read. */
  processes?: GpuProcess[] | undefined;
  /** Set when the GPU gave no valid reading: lost, read error, sampler down. */
  error?: string | undefined;
}

/** Thresholds of the idle model; pushed from the collector so a fleet classifies one way. */
export interface Thresholds {
  /** U: utilization.gpu (percent) at or above which a reading is reported busy. */
  utilBusyPercent: number;
  /** R: real utilization (0–1) at or above which a GPU is active. */
  realActiveRatio: number;
  /** Memory above the idle baseline that makes a GPU held. */
  heldMemoryBytes: number;
}

export const DEFAULT_THRESHOLDS: Readonly<Thresholds> = Object.freeze({
  utilBusyPercent: 5,
  realActiveRatio: 0.1,
  heldMemoryBytes: 256 * 1024 * 1024,
});

/** Host identity sent in the stream's Hello. */
export interface HostIdentity {
  hostname: string;
  machineId: string;
  labels: Record<string, string>;
}
