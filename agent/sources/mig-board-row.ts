/**
 * The row of a board in MIG mode (DESIGN "MIG"; GpuReading.migBoard): its instances are the
 * GPUs, so of the board's own reading only what the board alone has is kept, its power and
 * power limit, and whether it reads. (Its memory is its instances'.) Every source makes it here, so the
 * simulator, nvidia-smi and NVML show the same row.
 */
import type { GpuReading } from "../../common/types.js";

export function migBoardRow(r: GpuReading): GpuReading {
  return {
    uuid: r.uuid,
    index: r.index,
    model: r.model,
    busId: r.busId,
    driverVersion: r.driverVersion,
    migBoard: true,
    powerW: r.powerW,
    powerLimitW: r.powerLimitW,
    error: r.error,
  };
}
