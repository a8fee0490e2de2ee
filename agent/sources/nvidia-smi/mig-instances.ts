/**
 * MIG instances as the nvidia-smi source shows them: what `nvidia-smi -L` says of each
 * instance (its `MIG-…` uuid and profile, by board and device index) joined with what
 * `nvidia-smi -q -x` says of the same device (GPU and compute instance ids, SMs, memory,
 * and the processes running in it). Pure; parse-mig.ts reads the two outputs.
 *
 * The two runs are separate, so an instance created or destroyed between them changes the
 * device indexes under that board: a board whose two answers do not name the same devices
 * is left out of the join ("unsettled"), and the caller keeps what it knew of it until a
 * later read agrees.
 */
import type { GpuProcess, GpuReading } from "../../../common/types.js";
import { instanceProcesses, type ListedGpu, type MigBoard } from "./parse-mig.js";

/** One MIG instance (a compute instance inside a GPU instance) of a board. */
export interface MigInstance {
  /** `MIG-…`, as `-L` prints it. */
  uuid: string;
  /** As `-L` prints it, e.g. "3g.40gb". */
  profile: string;
  /** Index under its board (`Device  N`), NVIDIA's numbering. */
  deviceIndex: number;
  gpuInstanceId: number;
  computeInstanceId: number | undefined;
  multiprocessorCount: number | undefined;
  memTotalBytes: number | undefined;
  memUsedBytes: number | undefined;
  /** The compute processes running in this instance. */
  processes: GpuProcess[];
}

export interface MigJoin {
  /** Board uuid → its instances in device order, for every board whose two answers agree. */
  instances: Map<string, MigInstance[]>;
  /** Boards with MIG devices in `-L` that `-q -x` does not match device for device. */
  unsettled: string[];
  /** `<mig_device>` entries without an index or GPU instance id: unreadable. */
  invalidDevices: number;
}

/** Whether `-L` lists any MIG device. */
export function listsMigDevices(list: readonly ListedGpu[]): boolean {
  return list.some((b) => b.migDevices.length > 0);
}

export function joinMig(list: readonly ListedGpu[], report: readonly MigBoard[]): MigJoin {
  const out: MigJoin = { instances: new Map(), unsettled: [], invalidDevices: 0 };
  for (const listed of list) {
    if (listed.uuid === undefined || listed.migDevices.length === 0) continue;
    const board = report.find((b) => b.uuid === listed.uuid);
    const devices = board?.migDevices ?? [];
    const invalid = devices.filter((d) => d.index === undefined || d.gpuInstanceId === undefined).length;
    out.invalidDevices += invalid;
    const joined: MigInstance[] = [];
    for (const dev of listed.migDevices) {
      const found = devices.filter((d) => d.index === dev.deviceIndex);
      const d = found[0];
      // R450/R460 uuids carry the ids, and some drivers' XML the uuid: they must name the same instance.
      const sameIds =
        d?.gpuInstanceId !== undefined &&
        (dev.gpuInstanceId === undefined || dev.gpuInstanceId === d.gpuInstanceId) &&
        (dev.computeInstanceId === undefined || dev.computeInstanceId === d.computeInstanceId) &&
        (d.uuid === undefined || d.uuid === dev.uuid);
      if (!board || found.length !== 1 || !d || !sameIds) break;
      const gi = d.gpuInstanceId!;
      const ci = d.computeInstanceId;
      joined.push({
        uuid: dev.uuid,
        profile: dev.profile,
        deviceIndex: dev.deviceIndex,
        gpuInstanceId: gi,
        computeInstanceId: ci,
        multiprocessorCount: d.multiprocessorCount,
        memTotalBytes: d.memoryTotalBytes,
        memUsedBytes: d.memoryUsedBytes,
        // Graphics processes are not what --query-compute-apps lists; MIG runs none anyway.
        processes: instanceProcesses(board, gi, ci)
          .filter((p) => p.type !== "G")
          .map((p) => ({ pid: p.pid, name: p.name ?? "unknown", usedMemoryBytes: p.usedMemoryBytes })),
      });
    }
    if (board && invalid === 0 && joined.length === listed.migDevices.length && devices.length === joined.length)
      out.instances.set(listed.uuid, joined);
    else out.unsettled.push(listed.uuid);
  }
  // Devices in -q -x under a board -L listed without any: created between the two runs.
  for (const board of report) {
    if (board.uuid === undefined || board.migDevices.length === 0) continue;
    const listed = list.find((b) => b.uuid === board.uuid);
    if (listed && listed.migDevices.length === 0) out.unsettled.push(board.uuid);
  }
  return out;
}

/**
 * The readings of a board's instances, from the board's own reading (`--query-gpu` row):
 * each a GPU of its own with the board's index, model, bus and driver, its memory and
 * processes, and neither utilization.gpu nor power (the board's) nor SM activity (which
 * nvidia-smi does not give per instance). A board that gives no reading gives its
 * instances its error.
 */
export function instanceReadings(board: GpuReading, instances: readonly MigInstance[]): GpuReading[] {
  return instances.map((m) => {
    const identity: GpuReading = {
      uuid: m.uuid,
      index: board.index,
      model: board.model,
      parentUuid: board.uuid,
      migProfile: m.profile,
      busId: board.busId,
      driverVersion: board.driverVersion,
    };
    if (board.error !== undefined) return { ...identity, error: board.error };
    if (m.memTotalBytes === undefined && m.memUsedBytes === undefined)
      return { ...identity, error: "nvidia-smi gave no memory value for this MIG instance" };
    return {
      ...identity,
      memUsedBytes: m.memUsedBytes,
      memTotalBytes: m.memTotalBytes,
      processes: m.processes.map((p) => ({ ...p })),
    };
  });
}
