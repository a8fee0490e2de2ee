/**
 * Memory: total and used, every tick. `nvmlDeviceGetMemoryInfo_v2` keeps the driver's
 * reserved memory out of `used`, as nvidia-smi does; a driver without it (or that refuses
 * its version, or says it is not supported or not found) is read with the first version
 * from then on. About 6 µs a call on an H200.
 */
import { MAX_MEMORY_BYTES } from "../../../common/wire-limits.js";
import {
  MEMORY_V1,
  MEMORY_V2,
  NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
  NVML_ERROR_FUNCTION_NOT_FOUND,
  NVML_ERROR_INVALID_ARGUMENT,
  NVML_ERROR_NOT_SUPPORTED,
  NVML_SUCCESS,
} from "./bindings.js";
import { u64, type Driver } from "./driver.js";
import { F } from "./readings-board.js";

/** What `_v2` answers that sends the reader to the first version for good. */
const V1_INSTEAD: ReadonlySet<number> = new Set([
  NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
  NVML_ERROR_INVALID_ARGUMENT,
  NVML_ERROR_NOT_SUPPORTED,
  NVML_ERROR_FUNCTION_NOT_FOUND,
]);

export class MemoryReader {
  private useV2: boolean;
  private readonly buf = Buffer.alloc(MEMORY_V2.size);

  constructor(
    private readonly d: Driver,
    private readonly handle: bigint,
    private readonly gpu: number,
  ) {
    this.useV2 = d.fn.nvmlDeviceGetMemoryInfo_v2 !== undefined;
  }

  /** Reads memory into `out`; returns the call's return code (NOT_FOUND on a MIG instance: it is gone). */
  read(out: Float64Array): number {
    const fn = this.d.fn;
    if (this.useV2) {
      this.buf.fill(0);
      this.buf.writeUInt32LE(MEMORY_V2.version, 0);
      const rc = this.d.dcall("nvmlDeviceGetMemoryInfo_v2", fn.nvmlDeviceGetMemoryInfo_v2, this.handle, this.buf);
      if (rc === NVML_SUCCESS) {
        this.set(out, u64(this.buf, MEMORY_V2.total), u64(this.buf, MEMORY_V2.used));
        return rc;
      }
      if (!V1_INSTEAD.has(rc)) return rc;
      this.useV2 = false;
    }
    const rc = this.d.dcall("nvmlDeviceGetMemoryInfo", fn.nvmlDeviceGetMemoryInfo, this.handle, this.buf);
    if (rc === NVML_SUCCESS) this.set(out, u64(this.buf, MEMORY_V1.total), u64(this.buf, MEMORY_V1.used));
    return rc;
  }

  private set(out: Float64Array, total: number, used: number): void {
    const t = this.d.plausible(this.gpu, "memory total", total, MAX_MEMORY_BYTES);
    out[F.memTotalBytes] = t;
    out[F.memUsedBytes] = Number.isNaN(t) ? Number.NaN : this.d.plausible(this.gpu, "memory used", used, t);
  }
}
