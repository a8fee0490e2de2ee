/**
 * What the NVML worker thread and the agent's event loop say to each other, and the shared
 * memory through which the event loop watches every call the worker makes into the driver.
 * The readings themselves go through another piece of shared memory, the board
 * (readings-board.ts); messages carry only what changes rarely.
 *
 * The watch: before each NVML call the worker writes the call's id, the GPU it concerns and
 * the time into a SharedArrayBuffer, and clears the id after. The event loop reads it on a
 * timer; a call older than its deadline is a hung driver call. That costs the worker two
 * stores per call and needs no message, so it works while the worker is blocked.
 *
 * The same buffer carries the stop request: the worker sleeps between ticks in
 * Atomics.wait on it (a futex, no event loop turning), and the event loop wakes it to stop.
 */
import type { GpuProcess } from "../../../common/types.js";

/** The soname the driver installs; dlopen finds it through the loader's search path. */
export const DEFAULT_NVML_LIBRARY = "libnvidia-ml.so.1";

/** Call ids; 0 is "no call in progress". */
export const CALL_NAMES = [
  "",
  "nvmlInit_v2",
  "nvmlShutdown",
  "nvmlSystemGetDriverVersion",
  "nvmlSystemGetProcessName",
  "nvmlDeviceGetCount_v2",
  "nvmlDeviceGetHandleByIndex_v2",
  "nvmlDeviceGetUUID",
  "nvmlDeviceGetName",
  "nvmlDeviceGetSerial",
  "nvmlDeviceGetPciInfo_v3",
  "nvmlDeviceGetMemoryInfo_v2",
  "nvmlDeviceGetMemoryInfo",
  "nvmlDeviceGetUtilizationRates",
  "nvmlDeviceGetSamples",
  "nvmlDeviceGetPowerUsage",
  "nvmlDeviceGetEnforcedPowerLimit",
  "nvmlDeviceGetClockInfo",
  "nvmlDeviceGetCurrentClocksEventReasons",
  "nvmlDeviceGetEncoderUtilization",
  "nvmlDeviceGetDecoderUtilization",
  "nvmlDeviceGetComputeRunningProcesses_v3",
  "nvmlDeviceGetProcessUtilization",
  "nvmlGpmQueryDeviceSupport",
  "nvmlGpmSampleAlloc",
  "nvmlGpmSampleFree",
  "nvmlGpmSampleGet",
  "nvmlGpmMetricsGet",
  "nvmlDeviceGetMigMode",
  "nvmlDeviceGetMaxMigDeviceCount",
  "nvmlDeviceGetMigDeviceHandleByIndex",
  "nvmlDeviceGetGpuInstanceId",
  "nvmlDeviceGetComputeInstanceId",
  "nvmlGpmMigSampleGet",
] as const;
export type CallName = Exclude<(typeof CALL_NAMES)[number], "">;
export const CALL_ID: Readonly<Record<CallName, number>> = Object.fromEntries(
  CALL_NAMES.map((n, i) => [n, i]).filter(([n]) => n !== ""),
) as Record<CallName, number>;

/** Byte layout of the watch buffer: int32 call id, int32 GPU index (-1: none), float64 start ms, int32 stop. */
export const WATCH_BYTES = 24;

export class CallWatch {
  private readonly ints: Int32Array;
  private readonly start: Float64Array;
  private readonly stop: Int32Array;
  constructor(readonly buffer: SharedArrayBuffer) {
    this.ints = new Int32Array(buffer, 0, 2);
    this.start = new Float64Array(buffer, 8, 1);
    this.stop = new Int32Array(buffer, 16, 1);
  }
  /** Event-loop side: asks the worker to stop, waking it if it sleeps. */
  requestStop(): void {
    Atomics.store(this.stop, 0, 1);
    Atomics.notify(this.stop, 0);
  }
  /** Worker side: sleeps `ms`, or less when a stop is requested; true when one is. */
  sleep(ms: number): boolean {
    if (ms > 0) Atomics.wait(this.stop, 0, 0, ms);
    return this.stopRequested();
  }
  stopRequested(): boolean {
    return Atomics.load(this.stop, 0) !== 0;
  }
  /** Worker side: a call begins. */
  begin(call: number, gpu: number): void {
    this.start[0] = Date.now();
    this.ints[1] = gpu;
    Atomics.store(this.ints, 0, call);
  }
  /** Worker side: the call returned. */
  end(): void {
    Atomics.store(this.ints, 0, 0);
  }
  /** Event-loop side: the call in progress, if any. */
  current(): { call: CallName; gpu: number; sinceMs: number } | undefined {
    const id = Atomics.load(this.ints, 0);
    if (id === 0) return undefined;
    return { call: CALL_NAMES[id] as CallName, gpu: this.ints[1]!, sinceMs: this.start[0]! };
  }
}

export interface WorkerConfig {
  libPath: string;
  intervalMs: number;
  processIntervalMs: number;
  /** GPU indices not to touch: a call on them hung and has not returned. */
  skip: number[];
  watch: SharedArrayBuffer;
}

/** How a GPU's driver keeps utilization samples (nvmlDeviceGetSamples, read once at discovery). */
export interface UtilSampleBuffer {
  /** Samples the driver held. */
  count: number;
  /** Time between two samples, ms. */
  periodMs: number;
  /** Oldest to newest, s: how far back the buffer reaches. */
  spanS: number;
}

/** What makes a MIG instance one: its board, profile and ids. */
export interface NvmlMigIdentity {
  /** The board's uuid ("GPU-…"). */
  parentUuid: string;
  /** For example "3g.40gb", from the instance's name ("<board> MIG <profile>"). */
  profile: string;
  /** NaN where NVML does not say. */
  gpuInstanceId: number;
  computeInstanceId: number;
}

/**
 * A GPU as NVML lists it: a board, or an instance of a board in MIG mode (`mig`), which is
 * a GPU of its own (its MIG uuid, the board's index and model, its own slot).
 */
export interface NvmlGpu {
  index: number;
  uuid: string;
  model: string;
  busId?: string | undefined;
  serial?: string | undefined;
  gpm: boolean;
  /** Its slot on the board. */
  slot: number;
  /** Goes up whenever the identity above changes; board readings carry the version they belong to. */
  version: number;
  /** Why the GPU could not be read at discovery, when it could not. */
  error?: string | undefined;
  utilSamples?: UtilSampleBuffer | undefined;
  /**
   * A board in MIG mode: not a GPU of its own to trueidle while its instances are; its slot
   * says only whether its instances could be listed.
   */
  migMode?: boolean | undefined;
  /** A MIG instance. */
  mig?: NvmlMigIdentity | undefined;
}

export type WorkerMessage =
  /**
   * The GPUs (boards, and the instances of boards in MIG mode), their board of readings
   * (`slots` slots: a board in MIG mode keeps one for each instance it can hold) and how to
   * spell NVML's return codes (for errors on the board).
   */
  | {
      kind: "ready";
      library: string;
      driverVersion: string;
      gpus: NvmlGpu[];
      board: SharedArrayBuffer;
      slots: number;
      errorStrings: Record<number, string>;
      reinit: boolean;
    }
  /** The first readings after "ready" are on the board. */
  | { kind: "tick"; atMs: number }
  /**
   * The instances a board in MIG mode has now, all of them: one not listed was destroyed;
   * a re-created one comes under a new uuid. Sent before any process list of a new
   * instance; its readings carry its own version, so none is taken for another's.
   */
  | { kind: "mig"; parentUuid: string; instances: NvmlGpu[] }
  /** Process lists that changed, by slot; `undefined`: the list cannot be read. smUtil where measured. */
  | { kind: "processes"; lists: Array<{ slot: number; processes: GpuProcess[] | undefined }> }
  | { kind: "driver_lost"; error: string }
  | { kind: "fatal"; error: string }
  | { kind: "log"; level: "info" | "warn" | "error"; msg: string; fields?: Record<string, unknown> | undefined };
