/**
 * Media engines, every tick: encoder and decoder utilization; the busier one is `media`
 * (video work barely moves utilization.gpu: NVENC at 70 % reads 7 %). About 1 µs a call
 * each on an H200.
 */
import { NVML_SUCCESS } from "./bindings.js";
import type { Driver } from "./driver.js";
import { F } from "./readings-board.js";

export class MediaReader {
  constructor(
    private readonly d: Driver,
    private readonly handle: bigint,
    private readonly gpu: number,
  ) {}

  read(out: Float64Array): void {
    const { d, handle } = this;
    let media = Number.NaN;
    if (
      d.dcall("nvmlDeviceGetEncoderUtilization", d.fn.nvmlDeviceGetEncoderUtilization, handle, d.u32, d.u32b) ===
      NVML_SUCCESS
    ) {
      media = d.plausible(this.gpu, "encoder utilization", d.u32.readUInt32LE(0), 100);
    }
    if (
      d.dcall("nvmlDeviceGetDecoderUtilization", d.fn.nvmlDeviceGetDecoderUtilization, handle, d.u32, d.u32b) ===
      NVML_SUCCESS
    ) {
      const dec = d.plausible(this.gpu, "decoder utilization", d.u32.readUInt32LE(0), 100);
      if (!Number.isNaN(dec)) media = Math.max(Number.isNaN(media) ? 0 : media, dec);
    }
    out[F.media] = media;
  }
}
