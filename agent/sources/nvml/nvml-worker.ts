/**
 * The NVML worker thread: the only place trueidle calls into the driver. It loads the
 * library, lists the GPUs, and every interval (aligned to the wall clock) reads each GPU
 * and posts the readings to the agent's event loop. Every call is announced in the shared
 * watch buffer first, so the event loop sees a call that hangs (see nvml-source.ts).
 *
 * Per-GPU failures (GPU_IS_LOST and the like) make that GPU's reading an error while the
 * others go on; a value the GPU does not have (NOT_SUPPORTED, NO_PERMISSION) is just
 * missing. Driver-level failures (UNINITIALIZED, DRIVER_NOT_LOADED, RM version mismatch)
 * mean the driver went away or was reloaded: the worker shuts NVML down and initialises it
 * again with backoff, then lists the GPUs anew.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { GpuProcess, GpuReading } from "../../../common/types.js";
import { MAX_MEMORY_BYTES, MAX_POWER_W } from "../../../common/wire-limits.js";
import {
  ABSENT_VALUE_ERRORS, BUFFER_SIZE, DRIVER_LEVEL_ERRORS, GPM_METRICS_GET, GPM_SUPPORT, MEMORY_V1, MEMORY_V2,
  NVML_CLOCK_SM, NVML_CLOCKS_EVENT_REASON_GPU_IDLE, NVML_ERROR_ARGUMENT_VERSION_MISMATCH, NVML_ERROR_FUNCTION_NOT_FOUND,
  NVML_ERROR_INSUFFICIENT_SIZE, NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_NOT_FOUND, NVML_GPM_METRIC_ANY_TENSOR_UTIL,
  NVML_GPM_METRIC_DRAM_BW_UTIL, NVML_GPM_METRIC_SM_OCCUPANCY, NVML_GPM_METRIC_SM_UTIL, NVML_GPU_UTILIZATION_SAMPLES,
  NVML_SUCCESS, NVML_VALUE_NOT_AVAILABLE_HALF, PCI_INFO, PROCESS_INFO, PROCESS_UTIL_SAMPLE, SAMPLE, cString, loadNvml,
  type NvmlLibrary,
} from "./bindings.js";
import { CALL_ID, CallWatch, type CallName, type MainMessage, type NvmlGpu, type WorkerConfig, type WorkerMessage } from "./protocol.js";

/** A driver-level failure: unwinds the tick so the worker can re-initialise. */
class DriverLost extends Error {}
/** A failure of one GPU (lost, needs a reset): that GPU's reading becomes an error. */
class GpuFailure extends Error {}

/** What each tick asks GPM for, in the order readGpm reads them back. */
const GPM_METRIC_IDS = [NVML_GPM_METRIC_SM_UTIL, NVML_GPM_METRIC_SM_OCCUPANCY, NVML_GPM_METRIC_ANY_TENSOR_UTIL, NVML_GPM_METRIC_DRAM_BW_UTIL] as const;
/** GPM metrics need two samples at least this far apart (NVML documents 100 ms). */
const GPM_MIN_GAP_MS = 100;
const MAX_PROCESSES = 4096;
const PROCESS_NAME_NOT_FOUND = "[Not Found]";

interface Device {
  gpu: NvmlGpu;
  handle: bigint;
  /** µs timestamp of the newest utilization sample seen; 0 before the first read. */
  utilSeenUs: number;
  useSamples: boolean;
  useMemoryV2: boolean;
  processSeenUs: number;
  processes?: GpuProcess[] | undefined;
  processesAtMs: number;
  gpmSamples?: [bigint, bigint] | undefined;
  gpmTurn: number;
  gpmPrevAtMs?: number | undefined;
  gpmLast?: Pick<GpuReading, "smActive" | "smOccupancy" | "tensorActive" | "dramActive"> | undefined;
  /** Why this device failed to read last tick; logged once per change. */
  lastError?: string | undefined;
}

class Worker {
  private readonly watch: CallWatch;
  private nvml!: NvmlLibrary;
  private devices: Device[] = [];
  private driverVersion = "";
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private initialised = false;
  /** Scratch buffers reused every call: the worker is single-threaded. */
  private readonly u32 = Buffer.alloc(8);
  private readonly u32b = Buffer.alloc(8);
  private readonly u64 = Buffer.alloc(8);
  private readonly text = Buffer.alloc(BUFFER_SIZE.processName);
  private readonly pci = Buffer.alloc(PCI_INFO.size);
  private readonly mem = Buffer.alloc(MEMORY_V2.size);
  private samples = Buffer.alloc(SAMPLE.size * 128);
  private procInfo = Buffer.alloc(PROCESS_INFO.size * 64);
  private procUtil = Buffer.alloc(PROCESS_UTIL_SAMPLE.size * 64);
  private readonly gpmMetrics = Buffer.alloc(GPM_METRICS_GET.size);
  private readonly names = new Map<number, string>();
  /** Implausible values since the last tick message, and the GPU/field pairs already logged. */
  private badValues = 0;
  private readonly badLogged = new Set<string>();
  /** The GPU whose calls are being made, for the watch. */
  private gpu = -1;

  constructor(private readonly cfg: WorkerConfig) {
    this.watch = new CallWatch(cfg.watch);
  }

  run(): void {
    try {
      this.nvml = loadNvml(this.cfg.libPath);
    } catch (err) {
      this.post({ kind: "fatal", error: (err as Error).message });
      return;
    }
    const rc = this.call("nvmlInit_v2", this.nvml.fn.nvmlInit_v2);
    if (rc !== NVML_SUCCESS) {
      this.post({ kind: "fatal", error: `NVML did not initialise: ${this.nvml.errorString(rc)} (nvmlInit_v2)` });
      return;
    }
    this.initialised = true;
    try {
      this.discover(false);
    } catch (err) {
      if (!(err instanceof DriverLost)) throw err;
      this.post({ kind: "fatal", error: err.message });
      return;
    }
    this.schedule(true);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.initialised) {
      this.freeGpmSamples();
      this.call("nvmlShutdown", this.nvml.fn.nvmlShutdown);
    }
    process.exit(0);
  }

  // ---- calls ------------------------------------------------------------------------

  /** One NVML call, announced in the watch buffer for its duration. */
  private call(name: CallName, f: ((...a: unknown[]) => number) | undefined, ...args: unknown[]): number {
    if (!f) return NVML_ERROR_FUNCTION_NOT_FOUND;
    this.watch.begin(CALL_ID[name], this.gpu);
    try {
      return f(...args);
    } finally {
      this.watch.end();
    }
  }

  /** A device call: driver-level codes unwind; per-GPU failures throw a GpuFailure. */
  private dcall(name: CallName, f: ((...a: unknown[]) => number) | undefined, ...args: unknown[]): number {
    const rc = this.call(name, f, ...args);
    if (rc === NVML_SUCCESS || ABSENT_VALUE_ERRORS.has(rc) || rc === NVML_ERROR_INSUFFICIENT_SIZE) return rc;
    if (DRIVER_LEVEL_ERRORS.has(rc)) throw new DriverLost(`NVML: ${this.nvml.errorString(rc)} (${name})`);
    if (rc === NVML_ERROR_INVALID_ARGUMENT || rc === NVML_ERROR_ARGUMENT_VERSION_MISMATCH) return rc;
    throw new GpuFailure(`NVML: ${this.nvml.errorString(rc)} (${name})`);
  }

  private readText(name: CallName, f: ((...a: unknown[]) => number) | undefined, handle: bigint, size: number): string | undefined {
    this.text.fill(0, 0, size);
    return this.dcall(name, f, handle, this.text, size) === NVML_SUCCESS ? cString(this.text, 0, size) : undefined;
  }

  // ---- discovery --------------------------------------------------------------------

  private discover(reinit: boolean): void {
    const fn = this.nvml.fn;
    this.gpu = -1;
    this.text.fill(0);
    if (this.call("nvmlSystemGetDriverVersion", fn.nvmlSystemGetDriverVersion, this.text, BUFFER_SIZE.driverVersion) === NVML_SUCCESS) {
      this.driverVersion = cString(this.text, 0, BUFFER_SIZE.driverVersion);
    }
    const rc = this.call("nvmlDeviceGetCount_v2", fn.nvmlDeviceGetCount_v2, this.u32);
    if (rc !== NVML_SUCCESS) throw new DriverLost(`NVML: ${this.nvml.errorString(rc)} (nvmlDeviceGetCount_v2)`);
    const count = this.u32.readUInt32LE(0);
    const skip = new Set(this.cfg.skip);
    const nowMs = Date.now();
    const devices: Device[] = [];
    for (let index = 0; index < count; index++) {
      if (skip.has(index)) continue;
      this.gpu = index;
      const hrc = this.call("nvmlDeviceGetHandleByIndex_v2", fn.nvmlDeviceGetHandleByIndex_v2, index, this.u64);
      if (DRIVER_LEVEL_ERRORS.has(hrc)) throw new DriverLost(`NVML: ${this.nvml.errorString(hrc)} (nvmlDeviceGetHandleByIndex_v2)`);
      const handle = hrc === NVML_SUCCESS ? this.u64.readBigUInt64LE(0) : 0n;
      const gpu: NvmlGpu = { index, uuid: `unknown-nvml-${index}`, model: "unknown", gpm: false };
      const dev: Device = {
        gpu, handle, utilSeenUs: (nowMs - this.cfg.intervalMs) * 1000, useSamples: fn.nvmlDeviceGetSamples !== undefined,
        useMemoryV2: fn.nvmlDeviceGetMemoryInfo_v2 !== undefined, processSeenUs: (nowMs - this.cfg.intervalMs) * 1000,
        processesAtMs: 0, gpmTurn: 0,
      };
      if (hrc !== NVML_SUCCESS) gpu.error = `NVML: ${this.nvml.errorString(hrc)} (nvmlDeviceGetHandleByIndex_v2)`;
      else this.identify(dev);
      devices.push(dev);
    }
    this.gpu = -1;
    this.devices = devices;
    this.post({ kind: "ready", library: this.nvml.path, driverVersion: this.driverVersion, gpus: devices.map((d) => d.gpu), reinit });
  }

  /** Static identity and GPM support; a GPU that fails here is listed with its error. */
  private identify(dev: Device): void {
    const fn = this.nvml.fn;
    const gpu = dev.gpu;
    try {
      this.pci.fill(0);
      if (this.dcall("nvmlDeviceGetPciInfo_v3", fn.nvmlDeviceGetPciInfo_v3, dev.handle, this.pci) === NVML_SUCCESS) {
        gpu.busId = cString(this.pci, PCI_INFO.busIdOffset, PCI_INFO.busIdLength);
        gpu.uuid = `unknown-${gpu.busId}`;
      }
      gpu.uuid = this.readText("nvmlDeviceGetUUID", fn.nvmlDeviceGetUUID, dev.handle, BUFFER_SIZE.uuid) ?? gpu.uuid;
      gpu.model = this.readText("nvmlDeviceGetName", fn.nvmlDeviceGetName, dev.handle, BUFFER_SIZE.deviceName) ?? gpu.model;
      gpu.serial = this.readText("nvmlDeviceGetSerial", fn.nvmlDeviceGetSerial, dev.handle, BUFFER_SIZE.serial);
      gpu.gpm = this.setUpGpm(dev);
      gpu.error = undefined;
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      gpu.error = err.message;
    }
  }

  private setUpGpm(dev: Device): boolean {
    const fn = this.nvml.fn;
    if (!fn.nvmlGpmQueryDeviceSupport || !fn.nvmlGpmSampleAlloc || !fn.nvmlGpmSampleGet || !fn.nvmlGpmMetricsGet) return false;
    const support = Buffer.alloc(GPM_SUPPORT.size);
    support.writeUInt32LE(GPM_SUPPORT.version, 0);
    if (this.dcall("nvmlGpmQueryDeviceSupport", fn.nvmlGpmQueryDeviceSupport, dev.handle, support) !== NVML_SUCCESS) return false;
    if (support.readUInt32LE(GPM_SUPPORT.isSupported) === 0) return false;
    const handles: bigint[] = [];
    for (let i = 0; i < 2; i++) {
      if (this.call("nvmlGpmSampleAlloc", fn.nvmlGpmSampleAlloc, this.u64) !== NVML_SUCCESS) {
        for (const h of handles) this.call("nvmlGpmSampleFree", fn.nvmlGpmSampleFree, h);
        return false;
      }
      handles.push(this.u64.readBigUInt64LE(0));
    }
    dev.gpmSamples = [handles[0]!, handles[1]!];
    // The first sample now, so the first tick (at least GPM_MIN_GAP_MS later) has SM activity.
    if (this.dcall("nvmlGpmSampleGet", fn.nvmlGpmSampleGet, dev.handle, dev.gpmSamples[0]) === NVML_SUCCESS) {
      dev.gpmPrevAtMs = Date.now();
      dev.gpmTurn = 1;
    }
    return true;
  }

  private freeGpmSamples(): void {
    for (const d of this.devices) {
      if (!d.gpmSamples) continue;
      for (const h of d.gpmSamples) this.call("nvmlGpmSampleFree", this.nvml.fn.nvmlGpmSampleFree, h);
      d.gpmSamples = undefined;
    }
  }

  // ---- ticks ------------------------------------------------------------------------

  private schedule(firstAfterDiscovery = false): void {
    if (this.stopped) return;
    const now = Date.now();
    const next = Math.floor(now / this.cfg.intervalMs) * this.cfg.intervalMs + this.cfg.intervalMs;
    // The first tick after discovery comes at least the GPM gap after the first GPM sample,
    // so that it carries SM activity too; later ticks keep to the wall clock.
    this.timer = setTimeout(() => this.tick(), Math.max(next - now, firstAfterDiscovery ? GPM_MIN_GAP_MS + 10 : 0));
  }

  private tick(): void {
    const atMs = Date.now();
    try {
      const readings = this.devices.map((d) => this.read(d, atMs));
      this.post({ kind: "tick", atMs, readings, badValues: this.badValues });
      this.badValues = 0;
    } catch (err) {
      if (!(err instanceof DriverLost)) throw err;
      this.post({ kind: "driver_lost", error: err.message });
      this.reinitialise(err.message, 1_000);
      return;
    }
    this.schedule();
  }

  /** Shut NVML down and initialise it again until it works, backing off to 30 s. */
  private reinitialise(reason: string, delayMs: number): void {
    this.gpu = -1;
    if (this.initialised) {
      this.freeGpmSamples();
      this.call("nvmlShutdown", this.nvml.fn.nvmlShutdown);
      this.initialised = false;
    }
    this.timer = setTimeout(() => {
      if (this.stopped) return;
      const rc = this.call("nvmlInit_v2", this.nvml.fn.nvmlInit_v2);
      if (rc === NVML_SUCCESS) {
        this.initialised = true;
        try {
          this.discover(true);
          this.schedule(true);
          return;
        } catch (err) {
          if (!(err instanceof DriverLost)) throw err;
          reason = err.message;
        }
      } else {
        reason = `NVML: ${this.nvml.errorString(rc)} (nvmlInit_v2)`;
      }
      this.post({ kind: "driver_lost", error: reason });
      this.reinitialise(reason, Math.min(delayMs * 2, 30_000));
    }, delayMs);
  }

  private read(dev: Device, atMs: number): GpuReading {
    const g = dev.gpu;
    const identity: GpuReading = { uuid: g.uuid, index: g.index, model: g.model, busId: g.busId, driverVersion: this.driverVersion };
    this.gpu = g.index;
    if (dev.handle === 0n) return { ...identity, error: g.error ?? "NVML: no device handle" };
    try {
      if (g.error !== undefined) {
        // Listed with an error at discovery: try to identify it again, and tell the event
        // loop its identity when that works.
        this.identify(dev);
        if (g.error !== undefined) return { ...identity, error: g.error };
        this.post({ kind: "ready", library: this.nvml.path, driverVersion: this.driverVersion, gpus: this.devices.map((d) => d.gpu), reinit: false });
        return this.read(dev, atMs);
      }
      const r = this.readSignals(dev, identity, atMs);
      if (dev.lastError !== undefined) {
        this.post({ kind: "log", level: "info", msg: "GPU reads again.", fields: { gpu: g.index, uuid: g.uuid } });
        dev.lastError = undefined;
      }
      return r;
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      if (dev.lastError !== err.message) {
        this.post({ kind: "log", level: "warn", msg: "GPU cannot be read; it counts as unavailable.", fields: { gpu: g.index, uuid: g.uuid, error: err.message } });
        dev.lastError = err.message;
      }
      return { ...identity, error: err.message };
    } finally {
      this.gpu = -1;
    }
  }

  private readSignals(dev: Device, identity: GpuReading, atMs: number): GpuReading {
    const fn = this.nvml.fn;
    const h = dev.handle;
    const r: GpuReading = { ...identity };

    // Memory: v2 keeps the driver's reserved memory out of `used`, as nvidia-smi does.
    if (dev.useMemoryV2) {
      this.mem.fill(0);
      this.mem.writeUInt32LE(MEMORY_V2.version, 0);
      const rc = this.dcall("nvmlDeviceGetMemoryInfo_v2", fn.nvmlDeviceGetMemoryInfo_v2, h, this.mem);
      if (rc === NVML_SUCCESS) {
        this.setMemory(dev, r, u64(this.mem, MEMORY_V2.total), u64(this.mem, MEMORY_V2.used));
      } else if (rc === NVML_ERROR_ARGUMENT_VERSION_MISMATCH || rc === NVML_ERROR_INVALID_ARGUMENT) {
        dev.useMemoryV2 = false;
      }
    }
    if (!dev.useMemoryV2 && this.dcall("nvmlDeviceGetMemoryInfo", fn.nvmlDeviceGetMemoryInfo, h, this.mem) === NVML_SUCCESS) {
      this.setMemory(dev, r, u64(this.mem, MEMORY_V1.total), u64(this.mem, MEMORY_V1.used));
    }

    r.util = this.readUtil(dev);

    if (this.dcall("nvmlDeviceGetPowerUsage", fn.nvmlDeviceGetPowerUsage, h, this.u32) === NVML_SUCCESS) {
      r.powerW = this.plausible(dev, "power", Math.round(this.u32.readUInt32LE(0) / 10) / 100, MAX_POWER_W);
    }
    if (this.dcall("nvmlDeviceGetEnforcedPowerLimit", fn.nvmlDeviceGetEnforcedPowerLimit, h, this.u32) === NVML_SUCCESS) {
      r.powerLimitW = this.plausible(dev, "power limit", Math.round(this.u32.readUInt32LE(0) / 10) / 100, MAX_POWER_W);
    }
    if (this.dcall("nvmlDeviceGetClockInfo", fn.nvmlDeviceGetClockInfo, h, NVML_CLOCK_SM, this.u32) === NVML_SUCCESS) {
      r.smClockMHz = this.u32.readUInt32LE(0);
    }
    if (this.dcall("nvmlDeviceGetCurrentClocksEventReasons", fn.clocksEventReasons, h, this.u64) === NVML_SUCCESS) {
      r.idleReason = (this.u64.readUInt32LE(0) & NVML_CLOCKS_EVENT_REASON_GPU_IDLE) !== 0;
    }
    let media: number | undefined;
    if (this.dcall("nvmlDeviceGetEncoderUtilization", fn.nvmlDeviceGetEncoderUtilization, h, this.u32, this.u32b) === NVML_SUCCESS) {
      media = this.plausible(dev, "encoder utilization", this.u32.readUInt32LE(0), 100);
    }
    if (this.dcall("nvmlDeviceGetDecoderUtilization", fn.nvmlDeviceGetDecoderUtilization, h, this.u32, this.u32b) === NVML_SUCCESS) {
      const dec = this.plausible(dev, "decoder utilization", this.u32.readUInt32LE(0), 100);
      if (dec !== undefined) media = Math.max(media ?? 0, dec);
    }
    r.media = media;

    if (atMs - dev.processesAtMs >= this.cfg.processIntervalMs || dev.processes === undefined) {
      dev.processes = this.readProcesses(dev);
      dev.processesAtMs = atMs;
    }
    if (dev.processes) {
      const sm = dev.processes.length > 0 ? this.readProcessUtil(dev) : undefined;
      r.processes = dev.processes.map((p) => ({ ...p, smUtil: sm === undefined ? undefined : (sm.get(p.pid) ?? 0) }));
    }

    if (dev.gpmSamples) this.readGpm(dev, r);
    return r;
  }

  /** Mean of every driver utilization sample since the last read; the rates call if there are none. */
  private readUtil(dev: Device): number | undefined {
    const fn = this.nvml.fn;
    if (dev.useSamples) {
      for (let attempt = 0; attempt < 2; attempt++) {
        const capacity = this.samples.length / SAMPLE.size;
        this.u32b.writeUInt32LE(capacity, 0);
        const rc = this.dcall("nvmlDeviceGetSamples", fn.nvmlDeviceGetSamples, dev.handle, NVML_GPU_UTILIZATION_SAMPLES,
          dev.utilSeenUs, this.u32, this.u32b, this.samples);
        if (rc === NVML_ERROR_INSUFFICIENT_SIZE) {
          this.samples = Buffer.alloc(SAMPLE.size * Math.min(4096, capacity * 4));
          continue;
        }
        if (rc === NVML_SUCCESS) {
          const n = Math.min(this.u32b.readUInt32LE(0), capacity);
          const type = this.u32.readUInt32LE(0);
          let sum = 0, count = 0;
          for (let i = 0; i < n; i++) {
            const at = u64(this.samples, i * SAMPLE.size);
            if (at <= dev.utilSeenUs) continue;
            dev.utilSeenUs = at;
            const v = this.plausible(dev, "utilization sample", sampleValue(this.samples, i * SAMPLE.size + SAMPLE.value, type), 100);
            if (v === undefined) continue;
            sum += v;
            count++;
          }
          if (count > 0) return clampPercent(sum / count);
        } else if (rc !== NVML_ERROR_NOT_FOUND) {
          // NOT_SUPPORTED and the like: this GPU has no sample buffer (MIG, vGPU).
          dev.useSamples = false;
        }
        break;
      }
    }
    if (this.dcall("nvmlDeviceGetUtilizationRates", fn.nvmlDeviceGetUtilizationRates, dev.handle, this.u32) === NVML_SUCCESS) {
      return this.plausible(dev, "utilization", this.u32.readUInt32LE(0), 100);
    }
    return undefined;
  }

  private setMemory(dev: Device, r: GpuReading, total: number, used: number): void {
    r.memTotalBytes = this.plausible(dev, "memory total", total, MAX_MEMORY_BYTES);
    r.memUsedBytes = r.memTotalBytes === undefined ? undefined : this.plausible(dev, "memory used", used, r.memTotalBytes);
  }

  /**
   * A value inside what a GPU can report, or undefined: a driver glitch (an all-ones word,
   * a unit slip) reads as missing, is counted, and is logged once per GPU and field, rather
   * than costing the GPU its window at the collector.
   */
  private plausible(dev: Device, field: string, v: number, max: number): number | undefined {
    if (Number.isFinite(v) && v >= 0 && v <= max) return v;
    this.badValues++;
    const key = `${dev.gpu.index}/${field}`;
    if (!this.badLogged.has(key) && this.badLogged.size < 1024) {
      this.badLogged.add(key);
      this.post({ kind: "log", level: "warn", msg: "NVML gave an implausible value; it is read as missing.", fields: { gpu: dev.gpu.index, field, value: v, max } });
    }
    return undefined;
  }

  /** Compute processes with their memory and names; undefined when the list cannot be read. */
  private readProcesses(dev: Device): GpuProcess[] | undefined {
    const fn = this.nvml.fn;
    if (!fn.nvmlDeviceGetComputeRunningProcesses_v3) return undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      const capacity = this.procInfo.length / PROCESS_INFO.size;
      this.u32.writeUInt32LE(capacity, 0);
      const rc = this.dcall("nvmlDeviceGetComputeRunningProcesses_v3", fn.nvmlDeviceGetComputeRunningProcesses_v3, dev.handle, this.u32, this.procInfo);
      if (rc === NVML_ERROR_INSUFFICIENT_SIZE) {
        const need = Math.min(MAX_PROCESSES, Math.max(this.u32.readUInt32LE(0) + 16, capacity * 2));
        this.procInfo = Buffer.alloc(PROCESS_INFO.size * need);
        continue;
      }
      if (rc !== NVML_SUCCESS) return undefined;
      const n = Math.min(this.u32.readUInt32LE(0), capacity);
      const out: GpuProcess[] = [];
      for (let i = 0; i < n; i++) {
        const o = i * PROCESS_INFO.size;
        const pid = this.procInfo.readUInt32LE(o + PROCESS_INFO.pid);
        const notAvailable = this.procInfo.readUInt32LE(o + PROCESS_INFO.usedGpuMemory) === NVML_VALUE_NOT_AVAILABLE_HALF &&
          this.procInfo.readUInt32LE(o + PROCESS_INFO.usedGpuMemory + 4) === NVML_VALUE_NOT_AVAILABLE_HALF;
        out.push({ pid, name: this.processName(pid), usedMemoryBytes: notAvailable ? undefined : u64(this.procInfo, o + PROCESS_INFO.usedGpuMemory) });
      }
      this.forgetNames(out);
      return out;
    }
    return undefined;
  }

  private processName(pid: number): string {
    const known = this.names.get(pid);
    if (known !== undefined) return known;
    this.text.fill(0);
    const rc = this.call("nvmlSystemGetProcessName", this.nvml.fn.nvmlSystemGetProcessName, pid, this.text, BUFFER_SIZE.processName);
    const name = rc === NVML_SUCCESS ? cString(this.text) : PROCESS_NAME_NOT_FOUND;
    this.names.set(pid, name);
    return name;
  }

  /** Names are cached by pid; pids no GPU shows any more are forgotten (pids are reused). */
  private forgetNames(latest: GpuProcess[]): void {
    if (this.names.size <= 256) return;
    const live = new Set<number>(latest.map((p) => p.pid));
    for (const d of this.devices) for (const p of d.processes ?? []) live.add(p.pid);
    for (const pid of this.names.keys()) if (!live.has(pid)) this.names.delete(pid);
  }

  /** Mean SM utilization per pid since the last read; undefined when the GPU cannot say. */
  private readProcessUtil(dev: Device): Map<number, number> | undefined {
    const fn = this.nvml.fn;
    if (!fn.nvmlDeviceGetProcessUtilization) return undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      const capacity = this.procUtil.length / PROCESS_UTIL_SAMPLE.size;
      this.u32.writeUInt32LE(capacity, 0);
      const rc = this.dcall("nvmlDeviceGetProcessUtilization", fn.nvmlDeviceGetProcessUtilization, dev.handle, this.procUtil, this.u32, dev.processSeenUs);
      if (rc === NVML_ERROR_INSUFFICIENT_SIZE) {
        const need = Math.min(MAX_PROCESSES, Math.max(this.u32.readUInt32LE(0) + 16, capacity * 2));
        this.procUtil = Buffer.alloc(PROCESS_UTIL_SAMPLE.size * need);
        continue;
      }
      // NOT_FOUND: no process ran anything since the last read.
      if (rc === NVML_ERROR_NOT_FOUND) return new Map();
      if (rc !== NVML_SUCCESS) return undefined;
      const n = Math.min(this.u32.readUInt32LE(0), capacity);
      const sums = new Map<number, [number, number]>();
      let newest = dev.processSeenUs;
      for (let i = 0; i < n; i++) {
        const o = i * PROCESS_UTIL_SAMPLE.size;
        const at = u64(this.procUtil, o + PROCESS_UTIL_SAMPLE.timeStamp);
        if (at <= dev.processSeenUs) continue;
        if (at > newest) newest = at;
        const pid = this.procUtil.readUInt32LE(o + PROCESS_UTIL_SAMPLE.pid);
        const s = sums.get(pid) ?? [0, 0];
        s[0] += this.procUtil.readUInt32LE(o + PROCESS_UTIL_SAMPLE.smUtil);
        s[1]++;
        sums.set(pid, s);
      }
      dev.processSeenUs = newest;
      return new Map([...sums].map(([pid, [sum, count]]) => [pid, clampPercent(sum / count)]));
    }
    return undefined;
  }

  /** GPM: a sample now, and the metrics between it and the previous one. */
  private readGpm(dev: Device, r: GpuReading): void {
    const fn = this.nvml.fn;
    const samples = dev.gpmSamples!;
    const now = Date.now();
    if (dev.gpmPrevAtMs !== undefined && now - dev.gpmPrevAtMs < GPM_MIN_GAP_MS) {
      // Too soon for a new pair: the previous metrics still describe the GPU.
      Object.assign(r, dev.gpmLast);
      return;
    }
    const cur = samples[dev.gpmTurn]!;
    if (this.dcall("nvmlGpmSampleGet", fn.nvmlGpmSampleGet, dev.handle, cur) !== NVML_SUCCESS) {
      dev.gpmPrevAtMs = undefined;
      return;
    }
    const hadPrev = dev.gpmPrevAtMs !== undefined;
    const prev = samples[1 - dev.gpmTurn]!;
    dev.gpmPrevAtMs = now;
    dev.gpmTurn = 1 - dev.gpmTurn;
    if (!hadPrev) return;
    const m = this.gpmMetrics;
    m.fill(0, 0, GPM_METRICS_GET.metrics + GPM_METRIC_IDS.length * GPM_METRICS_GET.metricSize);
    m.writeUInt32LE(GPM_METRICS_GET.version, 0);
    m.writeUInt32LE(GPM_METRIC_IDS.length, 4);
    m.writeBigUInt64LE(prev, GPM_METRICS_GET.sample1);
    m.writeBigUInt64LE(cur, GPM_METRICS_GET.sample2);
    GPM_METRIC_IDS.forEach((id, i) => m.writeUInt32LE(id, GPM_METRICS_GET.metrics + i * GPM_METRICS_GET.metricSize));
    if (this.dcall("nvmlGpmMetricsGet", fn.nvmlGpmMetricsGet, m) !== NVML_SUCCESS) return;
    const value = (i: number): number | undefined => {
      const o = GPM_METRICS_GET.metrics + i * GPM_METRICS_GET.metricSize;
      if (m.readUInt32LE(o + GPM_METRICS_GET.metricReturn) !== NVML_SUCCESS) return undefined;
      const v = m.readDoubleLE(o + GPM_METRICS_GET.metricValue);
      return Number.isFinite(v) ? Math.min(1, Math.max(0, v / 100)) : undefined;
    };
    dev.gpmLast = { smActive: value(0), smOccupancy: value(1), tensorActive: value(2), dramActive: value(3) };
    Object.assign(r, dev.gpmLast);
  }

  private post(msg: WorkerMessage): void {
    parentPort!.postMessage(msg);
  }
}

/**
 * An unsigned 64-bit field as a number, without a BigInt per read (the worker reads
 * thousands a second). Exact below 2^53: bytes of GPU memory and µs since the epoch are.
 */
function u64(buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset) + buf.readUInt32LE(offset + 4) * 0x1_0000_0000;
}

function sampleValue(buf: Buffer, offset: number, type: number): number {
  switch (type) {
    case 0: return buf.readDoubleLE(offset); // NVML_VALUE_TYPE_DOUBLE
    case 2: case 3: return u64(buf, offset); // UNSIGNED_LONG, UNSIGNED_LONG_LONG
    case 4: return Number(buf.readBigInt64LE(offset)); // SIGNED_LONG_LONG
    case 5: return buf.readInt32LE(offset); // SIGNED_INT
    default: return buf.readUInt32LE(offset); // UNSIGNED_INT
  }
}

function clampPercent(v: number): number {
  return Math.min(100, Math.max(0, Math.round(v * 10) / 10));
}

const worker = new Worker(workerData as WorkerConfig);
parentPort!.on("message", (m: MainMessage) => {
  if (m.kind === "stop") worker.stop();
});
worker.run();
