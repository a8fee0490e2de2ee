/**
 * Types shared by every part of trueidle. Every GPU signal may be missing: a missing
 * value is `undefined`, never 0.
 */
import { THRESHOLD_SETTINGS } from "./threshold-settings.js";

/** The idle model's states, in precedence order (first match wins). */
export const GPU_STATES = ["unavailable", "free_idle", "active", "busy_phantom", "held_idle"] as const;
export type GpuState = (typeof GPU_STATES)[number];

/** Where real utilization came from. `none`: unheld or unavailable, so real is 0. */
export const REAL_SOURCES = ["none", "sm_active", "power", "media", "util"] as const;
export type RealSource = (typeof REAL_SOURCES)[number];

/**
 * What held a GPU in a sample (DESIGN "The idle model", `held_by`): a listed compute
 * process, memory above the idle baseline, a scheduler's allocation — any of them.
 */
export const HELD_BY = ["process", "memory", "allocation"] as const;
export type HeldBy = (typeof HELD_BY)[number];

/** Where an owner was learned. */
export const OWNER_SOURCES = ["pod_resources", "job_mapping", "process"] as const;
export type OwnerSource = (typeof OWNER_SOURCES)[number];

/**
 * Who holds a GPU, as far as the host can tell (DESIGN "Owners"). Every field may be
 * missing; `via` says where the owner came from.
 */
export interface GpuOwner {
  via: OwnerSource;
  /** Kubernetes: the pod the GPU is allocated to, or whose cgroup a process is in. */
  namespace?: string | undefined;
  pod?: string | undefined;
  container?: string | undefined;
  /** Kubernetes pod uid, from a process's cgroup (the pod-resources API names pods, not uids). */
  podUid?: string | undefined;
  /** Batch system: the job id (Slurm), and its step where a process's cgroup names one. */
  job?: string | undefined;
  step?: string | undefined;
  /** User name from the host's /etc/passwd, or the numeric uid as text when it has none. */
  user?: string | undefined;
  /** Container runtime and container id, from a process's cgroup. */
  runtime?: string | undefined;
  containerId?: string | undefined;
  /** A process's pid and command (comm), for owners learned from processes. */
  pid?: number | undefined;
  command?: string | undefined;
}

export interface GpuProcess {
  pid: number;
  name: string;
  /** Bytes of GPU memory the process holds; undefined where the driver does not say (WDDM). */
  usedMemoryBytes?: number | undefined;
  /** Who runs the process, from the host's /proc (agent/owners/); undefined where not visible. */
  owner?: GpuOwner | undefined;
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
  /** A MIG instance: the uuid of its board ("GPU-…"); uuid is then the instance's "MIG-…". */
  parentUuid?: string | undefined;
  /** A MIG instance's profile, for example "3g.40gb". */
  migProfile?: string | undefined;
  /**
   * The row of a board in MIG mode, whose instances are the GPUs: only what the board alone
   * has (power, power limit, and whether it reads). Never a GPU's capacity.
   */
  migBoard?: boolean | undefined;
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
  /**
   * Schedulers' allocations of this GPU (kubelet pod-resources, a job mapping): one owner
   * per pod or job it is allocated to; undefined when no scheduler integration is on or
   * none has a current answer (nothing known), [] when one answered and the GPU is
   * allocated to nobody.
   */
  allocations?: GpuOwner[] | undefined;
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
  utilBusyPercent: THRESHOLD_SETTINGS.utilBusyPercent.default,
  realActiveRatio: THRESHOLD_SETTINGS.realActiveRatio.default,
  heldMemoryBytes: THRESHOLD_SETTINGS.heldMemoryBytes.default,
});

/** Host identity sent in the stream's Hello. */
export interface HostIdentity {
  hostname: string;
  machineId: string;
  labels: Record<string, string>;
}
