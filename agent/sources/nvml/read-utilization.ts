/**
 * Utilization: `nvmlDeviceGetUtilizationRates` every tick, the value nvidia-smi shows as
 * utilization.gpu — the share of the driver's last sample period (1/6 s to 1 s by product)
 * in which a kernel ran. About 1 µs a call on an H200.
 *
 * Not `nvmlDeviceGetSamples`, which returns every sample in the driver's buffer since a
 * timestamp: 2.5 ms of CPU a call on the same H200, 2,500 times as dear, so it is read once
 * per GPU at discovery, to learn how the GPU samples (the period, and how far back the
 * buffer reaches), and never per tick.
 */
import { NVML_ERROR_INSUFFICIENT_SIZE, NVML_GPU_UTILIZATION_SAMPLES, NVML_SUCCESS, SAMPLE } from "./bindings.js";
import { u64, type Driver } from "./driver.js";
import { F } from "./readings-board.js";
import type { UtilSampleBuffer } from "./protocol.js";

const MAX_SAMPLES = 4096;

export class UtilizationReader {
  constructor(
    private readonly d: Driver,
    private readonly handle: bigint,
    private readonly gpu: number,
  ) {}

  read(out: Float64Array): void {
    const rc = this.d.dcall(
      "nvmlDeviceGetUtilizationRates",
      this.d.fn.nvmlDeviceGetUtilizationRates,
      this.handle,
      this.d.u32,
    );
    if (rc === NVML_SUCCESS) out[F.util] = this.d.plausible(this.gpu, "utilization", this.d.u32.readUInt32LE(0), 100);
  }

  /** Every sample the driver holds, once: how many, how far apart, how far back. Undefined where it keeps none. */
  probeSampleBuffer(): UtilSampleBuffer | undefined {
    const f = this.d.fn.nvmlDeviceGetSamples;
    if (!f) return undefined;
    let capacity = 256;
    for (;;) {
      const buf = Buffer.alloc(SAMPLE.size * capacity);
      this.d.u32b.writeUInt32LE(capacity, 0);
      const rc = this.d.dcall(
        "nvmlDeviceGetSamples",
        f,
        this.handle,
        NVML_GPU_UTILIZATION_SAMPLES,
        0,
        this.d.u32,
        this.d.u32b,
        buf,
      );
      if (rc === NVML_ERROR_INSUFFICIENT_SIZE && capacity < MAX_SAMPLES) {
        capacity *= 4;
        continue;
      }
      if (rc !== NVML_SUCCESS) return undefined;
      const n = Math.min(this.d.u32b.readUInt32LE(0), capacity);
      const at: number[] = [];
      for (let i = 0; i < n; i++) at.push(u64(buf, i * SAMPLE.size));
      at.sort((a, b) => a - b);
      if (at.length < 2) return undefined;
      const gaps = at
        .slice(1)
        .map((t, i) => t - at[i]!)
        .sort((a, b) => a - b);
      const periodMs = gaps[gaps.length >> 1]! / 1000;
      return {
        count: n,
        periodMs: Math.round(periodMs * 10) / 10,
        spanS: Math.round((at[at.length - 1]! - at[0]!) / 1e5) / 10,
      };
    }
  }
}
