/**
 * The NVML worker's handle on the driver, shared by the readers: every call announced in
 * the watch buffer for its duration (so the event loop sees a call that hangs), return codes
 * sorted into "value absent", "this GPU failed" and "the driver went away", scratch buffers
 * reused by every call (the worker is single-threaded), and implausible values counted and
 * logged once. Runs on the worker thread only.
 */
import {
  ABSENT_VALUE_ERRORS,
  BUFFER_SIZE,
  DRIVER_LEVEL_ERRORS,
  NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
  NVML_ERROR_FUNCTION_NOT_FOUND,
  NVML_ERROR_INSUFFICIENT_SIZE,
  NVML_ERROR_INVALID_ARGUMENT,
  NVML_SUCCESS,
  cString,
  type NvmlFunctions,
  type NvmlLibrary,
} from "./bindings.js";
import { CALL_ID, type CallName, type CallWatch, type WorkerMessage } from "./protocol.js";

type Fn = ((...a: unknown[]) => number) | undefined;

/** A driver-level failure (uninitialised, unloaded, reloaded): unwinds the tick so the worker re-initialises. */
export class DriverLost extends Error {}

/** A failure of one GPU (lost, needs a reset): that GPU reads unavailable. */
export class GpuFailure extends Error {
  constructor(
    readonly code: number,
    readonly call: CallName,
    message: string,
  ) {
    super(message);
  }
}

/** Most log lines about implausible values, over the worker's life. */
const MAX_BAD_VALUE_LOGS = 1024;

export class Driver {
  readonly fn: NvmlFunctions;
  /** The GPU whose calls are being made, for the watch; -1: none in particular. */
  gpu = -1;
  /** Scratch: two 32-bit words, a 64-bit word, a string. */
  readonly u32 = Buffer.alloc(8);
  readonly u32b = Buffer.alloc(8);
  readonly u64 = Buffer.alloc(8);
  readonly text = Buffer.alloc(BUFFER_SIZE.processName);
  private readonly badLogged = new Set<string>();

  constructor(
    readonly nvml: NvmlLibrary,
    private readonly watch: CallWatch,
    private readonly post: (m: WorkerMessage) => void,
    private readonly countBad: (n: number) => void,
  ) {
    this.fn = nvml.fn;
  }

  /** One NVML call, announced in the watch buffer for its duration. */
  call(name: CallName, f: Fn, ...args: unknown[]): number {
    if (!f) return NVML_ERROR_FUNCTION_NOT_FOUND;
    this.watch.begin(CALL_ID[name], this.gpu);
    try {
      return f(...args);
    } finally {
      this.watch.end();
    }
  }

  /**
   * A device call: success, an absent value (NOT_SUPPORTED, NO_PERMISSION, …), a size or
   * version to retry with; a driver-level code throws DriverLost, any other GpuFailure.
   */
  dcall(name: CallName, f: Fn, ...args: unknown[]): number {
    const rc = this.call(name, f, ...args);
    if (rc === NVML_SUCCESS || ABSENT_VALUE_ERRORS.has(rc) || rc === NVML_ERROR_INSUFFICIENT_SIZE) return rc;
    if (DRIVER_LEVEL_ERRORS.has(rc)) throw new DriverLost(this.failure(rc, name));
    if (rc === NVML_ERROR_INVALID_ARGUMENT || rc === NVML_ERROR_ARGUMENT_VERSION_MISMATCH) return rc;
    throw new GpuFailure(rc, name, this.failure(rc, name));
  }

  /** The text every NVML failure reads as: `NVML: <NVML's words> (<call>)`. */
  failure(rc: number, name: CallName): string {
    return `NVML: ${this.nvml.errorString(rc)} (${name})`;
  }

  /** A string the driver writes into a buffer of `size` bytes; undefined when it cannot. */
  readText(name: CallName, f: Fn, handle: bigint, size: number): string | undefined {
    this.text.fill(0, 0, size);
    return this.dcall(name, f, handle, this.text, size) === NVML_SUCCESS ? cString(this.text, 0, size) : undefined;
  }

  /**
   * A value inside what a GPU can report, or NaN: a driver glitch (an all-ones word, a unit
   * slip) reads as missing, is counted, and is logged once per GPU and field, rather than
   * costing the GPU its window at the collector.
   */
  plausible(gpu: number, field: string, v: number, max: number): number {
    if (Number.isFinite(v) && v >= 0 && v <= max) return v;
    this.countBad(1);
    const key = `${gpu}/${field}`;
    if (!this.badLogged.has(key) && this.badLogged.size < MAX_BAD_VALUE_LOGS) {
      this.badLogged.add(key);
      this.post({
        kind: "log",
        level: "warn",
        msg: "NVML gave an implausible value; it is read as missing.",
        fields: { gpu, field, value: v, max },
      });
    }
    return Number.NaN;
  }
}

/**
 * An unsigned 64-bit field as a number, without a BigInt per read. Exact below 2^53: bytes
 * of GPU memory and µs since the epoch are.
 */
export function u64(buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset) + buf.readUInt32LE(offset + 4) * 0x1_0000_0000;
}

export function clampPercent(v: number): number {
  return Math.min(100, Math.max(0, Math.round(v * 10) / 10));
}
