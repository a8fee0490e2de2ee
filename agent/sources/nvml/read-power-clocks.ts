/**
 * Power and clocks, every tick: power draw and the enforced limit (the headroom `real`'s
 * power estimate divides by), the SM clock and the clocks event reasons (`gpu_idle`). About
 * 1 µs a call each on an H200.
 */
import { MAX_POWER_W } from "../../../common/wire-limits.js";
import { NVML_CLOCK_SM, NVML_CLOCKS_EVENT_REASON_GPU_IDLE, NVML_SUCCESS } from "./bindings.js";
import type { Driver } from "./driver.js";
import { F } from "./readings-board.js";

export class PowerClocksReader {
  constructor(
    private readonly d: Driver,
    private readonly handle: bigint,
    private readonly gpu: number,
  ) {}

  read(out: Float64Array): void {
    const { d, handle } = this;
    const fn = d.fn;
    if (d.dcall("nvmlDeviceGetPowerUsage", fn.nvmlDeviceGetPowerUsage, handle, d.u32) === NVML_SUCCESS) {
      out[F.powerW] = d.plausible(this.gpu, "power", milliwatts(d.u32), MAX_POWER_W);
    }
    if (
      d.dcall("nvmlDeviceGetEnforcedPowerLimit", fn.nvmlDeviceGetEnforcedPowerLimit, handle, d.u32) === NVML_SUCCESS
    ) {
      out[F.powerLimitW] = d.plausible(this.gpu, "power limit", milliwatts(d.u32), MAX_POWER_W);
    }
    if (d.dcall("nvmlDeviceGetClockInfo", fn.nvmlDeviceGetClockInfo, handle, NVML_CLOCK_SM, d.u32) === NVML_SUCCESS) {
      out[F.smClockMHz] = d.u32.readUInt32LE(0);
    }
    if (d.dcall("nvmlDeviceGetCurrentClocksEventReasons", fn.clocksEventReasons, handle, d.u64) === NVML_SUCCESS) {
      out[F.idleReason] = (d.u64.readUInt32LE(0) & NVML_CLOCKS_EVENT_REASON_GPU_IDLE) !== 0 ? 1 : 0;
    }
  }
}

/** Watts, to 10 mW, from the driver's milliwatts. */
function milliwatts(buf: Buffer): number {
  return Math.round(buf.readUInt32LE(0) / 10) / 100;
}
