/**
 * Compute processes and their share of the SMs, at the cadence each is worth:
 *
 * * The list (`nvmlDeviceGetComputeRunningProcesses_v3`, pid and memory; names through
 *   `nvmlSystemGetProcessName`, once per pid) every process interval (`--process-interval`,
 *   default 5 s): about 7 µs a call on an H200, 8 µs a new name.
 * * Per-process SM utilization (`nvmlDeviceGetProcessUtilization`) costs 2.4 ms of CPU a
 *   call on the same H200, so it is read only where it says something the GPU's own
 *   utilization does not: on a GPU with two or more processes, at most once a minute, with
 *   the timestamp of the newest sample seen before, so one call returns every sample since
 *   (as far back as the driver keeps them) and each process's share is its mean over that
 *   span. A GPU's only process has the GPU's utilization as its share: the event loop sets
 *   it from each tick's reading, so none is read here. A MIG instance has neither: NVML
 *   gives no per-process utilization on one, and the instance no utilization of its own.
 */
import type { GpuProcess } from "../../../common/types.js";
import {
  BUFFER_SIZE,
  NVML_ERROR_INSUFFICIENT_SIZE,
  NVML_ERROR_NOT_FOUND,
  NVML_SUCCESS,
  NVML_VALUE_NOT_AVAILABLE_HALF,
  PROCESS_INFO,
  PROCESS_UTIL_SAMPLE,
  cString,
} from "./bindings.js";
import { clampPercent, u64, type Driver } from "./driver.js";

/** Per-process utilization on a shared GPU: at most this often. */
export const PROCESS_UTIL_EVERY_MS = 60_000;
const MAX_PROCESSES = 4096;
const PROCESS_NAME_NOT_FOUND = "[Not Found]";
/** Names kept for pids no GPU shows any more, before they are forgotten (pids are reused). */
const NAMES_KEPT = 256;

/** Process names by pid, for every GPU of the worker: a name is asked for once. */
export class ProcessNames {
  private readonly names = new Map<number, string>();

  constructor(private readonly d: Driver) {}

  get(pid: number): string {
    const known = this.names.get(pid);
    if (known !== undefined) return known;
    const d = this.d;
    d.text.fill(0);
    const rc = d.call("nvmlSystemGetProcessName", d.fn.nvmlSystemGetProcessName, pid, d.text, BUFFER_SIZE.processName);
    const name = rc === NVML_SUCCESS ? cString(d.text) : PROCESS_NAME_NOT_FOUND;
    this.names.set(pid, name);
    return name;
  }

  /** Forgets the names of pids not in `live`, once more than a few are kept. */
  forgetAllBut(live: ReadonlySet<number>): void {
    if (this.names.size <= NAMES_KEPT) return;
    for (const pid of this.names.keys()) if (!live.has(pid)) this.names.delete(pid);
  }
}

/** Scratch for the process calls, shared by every GPU's reader (one thread). */
export class ProcessBuffers {
  info = Buffer.alloc(PROCESS_INFO.size * 64);
  util = Buffer.alloc(PROCESS_UTIL_SAMPLE.size * 64);
}

export class ProcessReader {
  /** The last list read; undefined before the first or when it cannot be read. */
  private list: GpuProcess[] | undefined;
  private listRead = false;
  private listAtMs = 0;
  /** Mean SM utilization by pid over the span of the last per-process read, on a shared GPU. */
  private shares: Map<number, number> | undefined;
  private sharesAtMs: number | undefined;
  /** µs timestamp of the newest per-process sample seen. */
  private seenUs = 0;

  constructor(
    private readonly d: Driver,
    private readonly handle: bigint,
    private readonly names: ProcessNames,
    private readonly bufs: ProcessBuffers,
    private readonly processIntervalMs: number,
    /** False on a MIG instance: NVML has no per-process utilization there. */
    private readonly measureShares = true,
  ) {}

  /** Reads what is due at `atMs`; true when the list or the shares changed. */
  tick(atMs: number): boolean {
    let changed = false;
    if (!this.listRead || atMs - this.listAtMs >= this.processIntervalMs) {
      const list = this.readList();
      changed = !sameList(list, this.list);
      this.list = list;
      this.listRead = true;
      this.listAtMs = atMs;
    }
    const shared = this.measureShares && this.list !== undefined && this.list.length >= 2;
    if (!shared) {
      if (this.shares !== undefined) changed = true;
      this.shares = undefined;
      this.sharesAtMs = undefined;
    } else if (this.sharesAtMs === undefined || atMs - this.sharesAtMs >= PROCESS_UTIL_EVERY_MS) {
      // The first read on a newly shared GPU covers the time since the previous list.
      if (this.sharesAtMs === undefined) this.seenUs = (atMs - this.processIntervalMs) * 1000;
      const shares = this.readShares();
      this.sharesAtMs = atMs;
      if (!sameShares(shares, this.shares)) changed = true;
      this.shares = shares;
    }
    return changed;
  }

  /** The list with each process's measured share, where there is one. */
  processes(): GpuProcess[] | undefined {
    const shares = this.shares;
    return this.list?.map((p) => ({ ...p, smUtil: shares === undefined ? undefined : (shares.get(p.pid) ?? 0) }));
  }

  pids(): readonly GpuProcess[] {
    return this.list ?? [];
  }

  private readList(): GpuProcess[] | undefined {
    const { d, bufs } = this;
    const f = d.fn.nvmlDeviceGetComputeRunningProcesses_v3;
    if (!f) return undefined;
    const { rc, n } = this.fill("info", PROCESS_INFO.size, (buf) =>
      d.dcall("nvmlDeviceGetComputeRunningProcesses_v3", f, this.handle, d.u32, buf),
    );
    if (rc !== NVML_SUCCESS) return undefined;
    const out: GpuProcess[] = [];
    for (let i = 0; i < n; i++) {
      const o = i * PROCESS_INFO.size;
      const pid = bufs.info.readUInt32LE(o + PROCESS_INFO.pid);
      const notAvailable =
        bufs.info.readUInt32LE(o + PROCESS_INFO.usedGpuMemory) === NVML_VALUE_NOT_AVAILABLE_HALF &&
        bufs.info.readUInt32LE(o + PROCESS_INFO.usedGpuMemory + 4) === NVML_VALUE_NOT_AVAILABLE_HALF;
      out.push({
        pid,
        name: this.names.get(pid),
        usedMemoryBytes: notAvailable ? undefined : u64(bufs.info, o + PROCESS_INFO.usedGpuMemory),
      });
    }
    return out;
  }

  /** Mean SM utilization per pid since the newest sample seen; undefined when the GPU cannot say. */
  private readShares(): Map<number, number> | undefined {
    const { d, bufs } = this;
    const f = d.fn.nvmlDeviceGetProcessUtilization;
    if (!f) return undefined;
    const { rc, n } = this.fill("util", PROCESS_UTIL_SAMPLE.size, (buf) =>
      d.dcall("nvmlDeviceGetProcessUtilization", f, this.handle, buf, d.u32, this.seenUs),
    );
    // NOT_FOUND: no process ran anything since the last read.
    if (rc === NVML_ERROR_NOT_FOUND) return new Map();
    if (rc !== NVML_SUCCESS) return undefined;
    const sums = new Map<number, [number, number]>();
    let newest = this.seenUs;
    for (let i = 0; i < n; i++) {
      const o = i * PROCESS_UTIL_SAMPLE.size;
      const at = u64(bufs.util, o + PROCESS_UTIL_SAMPLE.timeStamp);
      if (at <= this.seenUs) continue;
      if (at > newest) newest = at;
      const pid = bufs.util.readUInt32LE(o + PROCESS_UTIL_SAMPLE.pid);
      const s = sums.get(pid) ?? [0, 0];
      s[0] += bufs.util.readUInt32LE(o + PROCESS_UTIL_SAMPLE.smUtil);
      s[1]++;
      sums.set(pid, s);
    }
    this.seenUs = newest;
    return new Map([...sums].map(([pid, [sum, count]]) => [pid, clampPercent(sum / count)]));
  }

  /**
   * A call that fills one of the scratch buffers with records and takes the count in and
   * out through d.u32, NVML's size protocol: on INSUFFICIENT_SIZE the buffer grows to what
   * the driver asked for (and some) and the call is made again, three times at most.
   */
  private fill(
    which: keyof ProcessBuffers,
    recordSize: number,
    call: (buf: Buffer) => number,
  ): { rc: number; n: number } {
    const { d, bufs } = this;
    let rc = NVML_ERROR_INSUFFICIENT_SIZE;
    for (let attempt = 0; attempt < 3 && rc === NVML_ERROR_INSUFFICIENT_SIZE; attempt++) {
      const capacity = bufs[which].length / recordSize;
      d.u32.writeUInt32LE(capacity, 0);
      rc = call(bufs[which]);
      if (rc === NVML_ERROR_INSUFFICIENT_SIZE)
        bufs[which] = Buffer.alloc(recordSize * grown(d.u32.readUInt32LE(0), capacity));
      else return { rc, n: Math.min(d.u32.readUInt32LE(0), capacity) };
    }
    return { rc, n: 0 };
  }
}

function grown(need: number, capacity: number): number {
  return Math.min(MAX_PROCESSES, Math.max(need + 16, capacity * 2));
}

function sameList(a: GpuProcess[] | undefined, b: GpuProcess[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.length === b.length &&
    a.every((p, i) => p.pid === b[i]!.pid && p.name === b[i]!.name && p.usedMemoryBytes === b[i]!.usedMemoryBytes)
  );
}

function sameShares(a: Map<number, number> | undefined, b: Map<number, number> | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.size === b.size && [...a].every(([pid, v]) => b.get(pid) === v);
}
