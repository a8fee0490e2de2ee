/**
 * A board in MIG mode: each of its instances is a GPU of its own (DESIGN "MIG"), read
 * through the instance's own handle; the board itself is not read (its utilization does not
 * exist in MIG mode and its power is no instance's).
 *
 * Which instances exist is learnt by looking at every slot of the board
 * (`nvmlDeviceGetMigDeviceHandleByIndex`; NOT_FOUND: an empty slot, slots are sparse) and
 * reading the uuid of each instance found: about 53 µs a board of 7 with its MIG mode, on
 * an H200's figures (the MIG calls' costs are estimates, test/helpers/nvml-stub.ts). Not
 * worth paying every tick, so it is done every MIG_SCAN_MS, 2 s (26 µs a second a board,
 * against the 400 µs a second its 7 instances cost to read at a 1 s interval): an instance
 * created shows within 2 s and a tick. One slot is looked at again at once when a call on
 * its instance says it may be gone or another (memory or a GPM sample NOT_FOUND, GPM
 * refusing to pair the last two samples), so a destroyed instance leaves within a tick, and
 * one destroyed and re-created between two ticks is told apart at the next tick where GPM
 * refuses the pair, else at the next scan.
 *
 * Per tick each instance costs its memory (6 µs) and its GPM sample and metrics (52 µs);
 * its process list, at the process interval (7 µs). Nothing else: an instance has no
 * utilization of its own, and NVML gives no per-process utilization in MIG mode. On a host
 * of many instances (eight boards split seven ways are 56) GPM every tick would cost 2.9 ms
 * a second, beyond the agent's budget (DESIGN "Cost": 0.2 % of a core), so a host samples
 * at most MIG_GPM_SAMPLES_PER_S instances' GPM a second: each instance every `migGpmStride`
 * ticks, staggered by slot, its SM activity then the mean over those ticks (nothing between
 * two samples is lost, only its timing is coarser). Up to 20 instances at a 1 s interval,
 * every tick.
 *
 * An instance is known by its board, GPU instance id and uuid: a re-created instance (the
 * same ids, a new uuid) is a new one, with readers of its own, so its GPM samples never
 * pair with its predecessor's, and a new identity version, so no reading of one is taken
 * for the other. One instance that fails reads unavailable; the others go on.
 */
import {
  BUFFER_SIZE,
  NVML_DEVICE_MIG_ENABLE,
  NVML_ERROR_INVALID_ARGUMENT,
  NVML_ERROR_NOT_FOUND,
  NVML_SUCCESS,
  type NvmlFunctions,
} from "./bindings.js";
import { GpuFailure, type Driver } from "./driver.js";
import type { NvmlGpu, WorkerMessage } from "./protocol.js";
import { blankReading, type ReadingsBoard } from "./readings-board.js";
import { GpmReader } from "./read-gpm.js";
import { MemoryReader } from "./read-memory.js";
import { type ProcessBuffers, type ProcessNames, ProcessReader } from "./read-processes.js";
import type { GpuProcess } from "../../../common/types.js";

/** How often the slots of a board in MIG mode are looked at, and every board's MIG mode read. */
export const MIG_SCAN_MS = 2_000;
/** GPM samples of MIG instances a host takes at most per second (about 52 µs each). */
export const MIG_GPM_SAMPLES_PER_S = 20;

/** Every how many ticks each MIG instance's GPM is sampled, on a host with `instances` of them. */
export function migGpmStride(instances: number, intervalMs: number): number {
  return Math.max(1, Math.ceil((instances * 1000) / intervalMs / MIG_GPM_SAMPLES_PER_S));
}
/** Slots looked at where the driver does not say how many a board has (7 on every MIG GPU so far). */
const DEFAULT_MIG_SLOTS = 7;
/** Slots looked at, at most, whatever the driver says. */
const MAX_MIG_SLOTS = 16;
/** What NVML calls a MIG device: "<board's name> MIG <profile>". */
const MIG_NAME = " MIG ";

/** Process lists that changed during a tick, by slot. */
export type ChangedLists = Array<{ slot: number; processes: GpuProcess[] | undefined }>;

export interface MigContext {
  names: ProcessNames;
  buffers: ProcessBuffers;
  processIntervalMs: number;
  post: (m: WorkerMessage) => void;
}

interface Instance {
  gpu: NvmlGpu;
  handle: bigint;
  memory: MemoryReader;
  processes: ProcessReader;
  gpm?: GpmReader | undefined;
  /** Why the instance failed to read last tick; logged once per change. */
  lastError?: string | undefined;
}

/**
 * Whether a board is in MIG mode: true or false, undefined where the driver cannot say (a
 * GPU without MIG, a library older than MIG). About 1 µs.
 */
export function migModeOf(d: Driver, handle: bigint): boolean | undefined {
  const rc = d.dcall("nvmlDeviceGetMigMode", d.fn.nvmlDeviceGetMigMode, handle, d.u32, d.u32b);
  return rc === NVML_SUCCESS ? d.u32.readUInt32LE(0) === NVML_DEVICE_MIG_ENABLE : undefined;
}

/** How many instance slots a board in MIG mode has, as the driver says. */
export function migSlotsOf(d: Driver, handle: bigint): number {
  const rc = d.dcall("nvmlDeviceGetMaxMigDeviceCount", d.fn.nvmlDeviceGetMaxMigDeviceCount, handle, d.u32);
  const n = rc === NVML_SUCCESS ? d.u32.readUInt32LE(0) : 0;
  return n > 0 ? Math.min(n, MAX_MIG_SLOTS) : DEFAULT_MIG_SLOTS;
}

export class MigBoard {
  private readonly bySlot: Array<Instance | undefined>;
  private scannedAtMs = Number.NEGATIVE_INFINITY;
  /** Identity versions handed out on this board, so each instance's is its own. */
  private versions = 0;
  /** Why the slots could not be looked at last time (the board failed), when they could not. */
  failure: GpuFailure | undefined;

  /**
   * @param board the board, identified, in MIG mode
   * @param baseSlot the first of `slots` slots on the board of readings, one per instance slot
   * @param gpm whether the board supports GPM (then each instance has SM activity)
   */
  constructor(
    private readonly d: Driver,
    private readonly board: NvmlGpu,
    private readonly handle: bigint,
    readonly baseSlot: number,
    readonly slots: number,
    private readonly gpm: boolean,
    private readonly ctx: MigContext,
  ) {
    this.bySlot = Array.from({ length: slots }, () => undefined);
  }

  /** The instances now, as the event loop is told of them. */
  instances(): NvmlGpu[] {
    return this.bySlot.flatMap((i) => (i ? [{ ...i.gpu }] : []));
  }

  /** How many instances the board has now. */
  get count(): number {
    let n = 0;
    for (const i of this.bySlot) if (i) n++;
    return n;
  }

  /** Every instance's processes, for the names kept. */
  pids(): GpuProcess[] {
    return this.bySlot.flatMap((i) => (i ? i.processes.pids() : []));
  }

  /** Whether the slots are due to be looked at again. */
  scanDue(atMs: number): boolean {
    return atMs - this.scannedAtMs >= MIG_SCAN_MS;
  }

  /**
   * Looks at every slot: instances created, destroyed, re-created. True when the instances
   * changed. A board that fails keeps the instances it had (each then reads its own
   * failure) and says why in `failure`; DriverLost goes through.
   */
  scan(atMs: number): boolean {
    this.scannedAtMs = atMs;
    let changed = false;
    for (let slot = 0; slot < this.slots; slot++) {
      const r = this.scanSlot(slot);
      if (r === "failed") return changed;
      if (r === "changed") changed = true;
    }
    this.failure = undefined;
    return changed;
  }

  /**
   * Reads every instance into its slot on `readings`, after looking at the slots when due;
   * GPM of the instances whose turn it is, tick `tick` of `gpmStride` (migGpmStride).
   * An instance whose calls say it may be gone or another (NOT_FOUND; GPM refusing to pair
   * its last two samples) has its slot looked at again at once: its reading is written only
   * if it is still the same instance. True when the instances changed.
   */
  read(
    atMs: number,
    out: Float64Array,
    readings: ReadingsBoard,
    lists: ChangedLists,
    tick = 0,
    gpmStride = 1,
  ): boolean {
    let changed = this.scanDue(atMs) ? this.scan(atMs) : false;
    for (let slot = 0; slot < this.slots; slot++) {
      const inst = this.bySlot[slot];
      if (!inst) continue;
      const gpmDue = gpmStride <= 1 || (tick + inst.gpu.slot) % gpmStride === 0;
      if (this.readOne(inst, atMs, out, lists, gpmDue)) {
        if (this.scanSlot(slot) === "changed") changed = true;
        if (this.bySlot[slot] !== inst) continue;
      }
      readings.write(inst.gpu.slot, out);
    }
    return changed;
  }

  /** Frees every instance's GPM samples; the board is not used after. */
  close(): void {
    for (const inst of this.bySlot) inst?.gpm?.close();
  }

  /** Looks at one slot: "changed" when its instance did (created, destroyed, re-created). */
  private scanSlot(slot: number): "same" | "changed" | "failed" {
    const { d } = this;
    let rc: number;
    try {
      rc = d.dcall(
        "nvmlDeviceGetMigDeviceHandleByIndex",
        d.fn.nvmlDeviceGetMigDeviceHandleByIndex,
        this.handle,
        slot,
        d.u64,
      );
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      this.failure = err;
      return "failed";
    }
    const cur = this.bySlot[slot];
    // NOT_FOUND: an empty slot.
    const handle = rc === NVML_SUCCESS ? d.u64.readBigUInt64LE(0) : 0n;
    let uuid: string | undefined;
    try {
      if (handle !== 0n) uuid = d.readText("nvmlDeviceGetUUID", d.fn.nvmlDeviceGetUUID, handle, BUFFER_SIZE.uuid);
    } catch (err) {
      // The instance cannot say who it is: the slot stays as it was until it can.
      if (!(err instanceof GpuFailure)) throw err;
      return "same";
    }
    if (cur && cur.gpu.uuid === uuid && cur.handle === handle) return "same";
    let changed = false;
    if (cur) {
      this.drop(slot);
      changed = true;
    }
    const inst = uuid ? this.open(slot, handle, uuid) : undefined;
    if (inst) {
      this.bySlot[slot] = inst;
      changed = true;
    }
    return changed ? "changed" : "same";
  }

  /** An instance found in `slot`: its identity and readers; undefined when it cannot say who it is. */
  private open(slot: number, handle: bigint, uuid: string): Instance | undefined {
    const { d, board } = this;
    try {
      const name = d.readText("nvmlDeviceGetName", d.fn.nvmlDeviceGetName, handle, BUFFER_SIZE.deviceName);
      const at = name?.lastIndexOf(MIG_NAME) ?? -1;
      const gpuInstanceId = this.id("nvmlDeviceGetGpuInstanceId", d.fn.nvmlDeviceGetGpuInstanceId, handle);
      const computeInstanceId = this.id("nvmlDeviceGetComputeInstanceId", d.fn.nvmlDeviceGetComputeInstanceId, handle);
      const gpm =
        this.gpm && !Number.isNaN(gpuInstanceId) ? GpmReader.openMig(d, this.handle, gpuInstanceId) : undefined;
      const inst: Instance = {
        gpu: {
          index: board.index,
          uuid,
          // The board's model, as the instance's name gives it, without " MIG <profile>".
          model: name !== undefined && at > 0 ? name.slice(0, at) : board.model,
          busId: board.busId,
          gpm: gpm !== undefined,
          slot: this.baseSlot + slot,
          version: ++this.versions,
          mig: {
            parentUuid: board.uuid,
            // Every MIG device's name ends in its profile; "unknown" stands for one that does not.
            profile: name !== undefined && at > 0 ? name.slice(at + MIG_NAME.length).trim() || "unknown" : "unknown",
            gpuInstanceId,
            computeInstanceId,
          },
        },
        handle,
        memory: new MemoryReader(d, handle, board.index),
        processes: new ProcessReader(d, handle, this.ctx.names, this.ctx.buffers, this.ctx.processIntervalMs, false),
        gpm,
      };
      this.ctx.post({
        kind: "log",
        level: "info",
        msg: "A MIG instance appeared; it is read as a GPU of its own.",
        fields: { gpu: board.index, uuid, profile: inst.gpu.mig!.profile, gi: gpuInstanceId, ci: computeInstanceId },
      });
      return inst;
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      return undefined;
    }
  }

  /** A GPU or compute instance id; NaN where NVML does not say. */
  private id(
    name: "nvmlDeviceGetGpuInstanceId" | "nvmlDeviceGetComputeInstanceId",
    f: NvmlFunctions["nvmlDeviceGetGpuInstanceId"],
    handle: bigint,
  ): number {
    const d = this.d;
    const rc = d.dcall(name, f, handle, d.u32);
    return rc === NVML_SUCCESS ? d.u32.readUInt32LE(0) : Number.NaN;
  }

  private drop(slot: number): void {
    const inst = this.bySlot[slot];
    if (!inst) return;
    inst.gpm?.close();
    this.bySlot[slot] = undefined;
    this.ctx.post({
      kind: "log",
      level: "info",
      msg: "A MIG instance is gone.",
      fields: { gpu: this.board.index, uuid: inst.gpu.uuid, profile: inst.gpu.mig?.profile },
    });
  }

  /**
   * Reads one instance into `out`; true when a call says it may be gone or another instance
   * (then its process list waits for the next tick).
   */
  private readOne(inst: Instance, atMs: number, out: Float64Array, lists: ChangedLists, gpmDue: boolean): boolean {
    const g = inst.gpu;
    blankReading(out, atMs, g.version);
    try {
      if (inst.memory.read(out) === NVML_ERROR_NOT_FOUND) return true;
      if (inst.gpm) {
        inst.gpm.read(out, gpmDue);
        if (inst.gpm.sampleRc === NVML_ERROR_NOT_FOUND || inst.gpm.metricsRc === NVML_ERROR_INVALID_ARGUMENT)
          return true;
      }
      if (inst.processes.tick(atMs)) lists.push({ slot: g.slot, processes: inst.processes.processes() });
      if (inst.lastError !== undefined) {
        this.ctx.post({
          kind: "log",
          level: "info",
          msg: "MIG instance reads again.",
          fields: { gpu: g.index, uuid: g.uuid },
        });
        inst.lastError = undefined;
      }
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      blankReading(out, atMs, g.version, err);
      if (inst.lastError !== err.message) {
        this.ctx.post({
          kind: "log",
          level: "warn",
          msg: "MIG instance cannot be read; it counts as unavailable.",
          fields: { gpu: g.index, uuid: g.uuid, error: err.message },
        });
        inst.lastError = err.message;
      }
    }
    return false;
  }
}
