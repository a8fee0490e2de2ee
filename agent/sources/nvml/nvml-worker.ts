/**
 * The NVML worker thread: the only place trueidle calls into the driver. This file only
 * schedules: it loads the library and lists the GPUs, reads every GPU once per interval on
 * the wall clock (a little ahead of the agent's own tick, so each tick finds a fresh
 * reading), and re-initialises NVML when the driver goes away. What each tick reads, and at
 * what cadence the expensive calls are made, is the business of one small reader per signal
 * family: read-memory.ts, read-utilization.ts, read-power-clocks.ts, read-media.ts,
 * read-processes.ts, read-gpm.ts. Every call goes through driver.ts, which announces it in
 * the watch buffer so the event loop sees a call that hangs (see nvml-source.ts).
 *
 * Finished readings go on the board (readings-board.ts), shared memory the event loop reads
 * at its tick; messages carry only what changes rarely: the GPU list, process lists, logs.
 *
 * A board in MIG mode is read as its instances, each a GPU of its own (read-mig.ts), with a
 * slot on the board for every instance it can hold, so instances coming and going never
 * change the board. Every MIG_SCAN_MS each board's MIG mode is read again (about 1 µs); a
 * board that changed mode (after a reset) has the GPUs listed anew.
 *
 * Per-GPU failures (GPU_IS_LOST and the like) make that GPU's reading an error while the
 * others go on; a value the GPU does not have (NOT_SUPPORTED, NO_PERMISSION) is just
 * missing. Driver-level failures (UNINITIALIZED, DRIVER_NOT_LOADED, RM version mismatch)
 * mean the driver went away or was reloaded: the worker shuts NVML down and initialises it
 * again with backoff, then lists the GPUs anew.
 */
import { parentPort, workerData } from "node:worker_threads";
import {
  BUFFER_SIZE,
  DRIVER_LEVEL_ERRORS,
  NVML_SUCCESS,
  PCI_INFO,
  cString,
  loadNvml,
  type NvmlLibrary,
} from "./bindings.js";
import { Driver, DriverLost, GpuFailure } from "./driver.js";
import { CallWatch, type NvmlGpu, type WorkerConfig, type WorkerMessage } from "./protocol.js";
import { F, ReadingsBoard, blankReading, emptyReading } from "./readings-board.js";
import { GPM_MIN_GAP_MS, GpmReader } from "./read-gpm.js";
import { MediaReader } from "./read-media.js";
import { MemoryReader } from "./read-memory.js";
import { PowerClocksReader } from "./read-power-clocks.js";
import { ProcessBuffers, ProcessNames, ProcessReader } from "./read-processes.js";
import { type ChangedLists, MIG_SCAN_MS, MigBoard, migGpmStride, migModeOf, migSlotsOf } from "./read-mig.js";
import { UtilizationReader } from "./read-utilization.js";
import { errorMessage } from "../../../common/errors.js";

/** How far ahead of the agent's tick the worker reads (at most a quarter of the interval). */
const LEAD_MS = 100;
/** NVML's return codes, spelled by the library once, for the event loop to name a failure on the board. */
const ERROR_CODES = [...Array.from({ length: 64 }, (_, i) => i), 999];

interface Readers {
  memory: MemoryReader;
  util: UtilizationReader;
  power: PowerClocksReader;
  media: MediaReader;
  processes: ProcessReader;
  gpm?: GpmReader | undefined;
}

interface Device {
  gpu: NvmlGpu;
  handle: bigint;
  /** Made once the GPU is identified, unless it is in MIG mode. */
  readers?: Readers | undefined;
  /** A board in MIG mode: its instances. */
  mig?: MigBoard | undefined;
  /** A board in MIG mode: its power, for its board row (GpuReading.migBoard). */
  boardPower?: PowerClocksReader | undefined;
  /** When the MIG mode was last read. */
  modeAtMs: number;
  /** Why the device failed to read last tick; logged once per change. */
  lastError?: string | undefined;
}

class NvmlWorker {
  private readonly watch: CallWatch;
  private nvml!: NvmlLibrary;
  private driver!: Driver;
  private board = ReadingsBoard.create(0);
  private devices: Device[] = [];
  private driverVersion = "";
  private errorStrings: Record<number, string> = {};
  private initialised = false;
  /** The wall-clock tick the last read stood for. */
  private lastTickMs = 0;
  /** Ticks read, and every how many of them each MIG instance's GPM is sampled (migGpmStride). */
  private ticks = 0;
  private gpmStride = 1;
  /** Whether the next tick is the first since "ready" (the event loop waits for it). */
  private announceTick = false;
  private readonly reading = emptyReading();
  private names!: ProcessNames;
  private readonly processBuffers = new ProcessBuffers();
  /** Slots on the board: one per GPU listed, and per instance a board in MIG mode can hold. */
  private slots = 0;
  /** A board changed MIG mode (or was found in it after discovery): list the GPUs anew. */
  private rediscover = false;

  constructor(private readonly cfg: WorkerConfig) {
    this.watch = new CallWatch(cfg.watch);
  }

  /** Loads NVML, lists the GPUs, then reads them every interval until asked to stop. */
  run(): void {
    try {
      this.nvml = loadNvml(this.cfg.libPath);
    } catch (err) {
      this.post({ kind: "fatal", error: errorMessage(err) });
      return;
    }
    this.driver = new Driver(
      this.nvml,
      this.watch,
      (m) => this.post(m),
      (n) => this.board.addBadValues(n),
    );
    this.names = new ProcessNames(this.driver);
    this.errorStrings = Object.fromEntries(ERROR_CODES.map((c) => [c, this.nvml.errorString(c)]));
    const rc = this.driver.call("nvmlInit_v2", this.nvml.fn.nvmlInit_v2);
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
    this.loop();
  }

  private loop(): void {
    let afterDiscovery = true;
    /** While the driver is away: the wait before the next attempt to initialise NVML. */
    let retryMs = 0;
    for (;;) {
      if (retryMs > 0) {
        if (this.watch.sleep(retryMs)) break;
        const error = this.initialiseAgain();
        if (error === undefined) {
          retryMs = 0;
          afterDiscovery = true;
        } else {
          this.post({ kind: "driver_lost", error });
          retryMs = Math.min(retryMs * 2, 30_000);
        }
        continue;
      }
      const { tickMs, delayMs } = this.next(afterDiscovery);
      afterDiscovery = false;
      if (this.watch.sleep(delayMs)) break;
      const lost = this.tick(tickMs);
      if (lost !== undefined) {
        this.post({ kind: "driver_lost", error: lost });
        this.shutDownNvml();
        retryMs = 1_000;
      }
    }
    this.shutDownNvml();
    process.exit(0);
  }

  private shutDownNvml(): void {
    this.driver.gpu = -1;
    if (!this.initialised) return;
    this.closeReaders();
    this.devices = [];
    this.driver.call("nvmlShutdown", this.nvml.fn.nvmlShutdown);
    this.initialised = false;
  }

  /** nvmlInit_v2 and discovery again; the reason it failed, or undefined. */
  private initialiseAgain(): string | undefined {
    const rc = this.driver.call("nvmlInit_v2", this.nvml.fn.nvmlInit_v2);
    if (rc !== NVML_SUCCESS) return this.driver.failure(rc, "nvmlInit_v2");
    this.initialised = true;
    try {
      this.discover(true);
      return undefined;
    } catch (err) {
      if (!(err instanceof DriverLost)) throw err;
      // Initialised, but the driver is not answering yet (a reload ends only with a shutdown).
      this.shutDownNvml();
      return err.message;
    }
  }

  // ---- discovery --------------------------------------------------------------------

  private discover(reinit: boolean): void {
    const d = this.driver;
    const fn = this.nvml.fn;
    d.gpu = -1;
    d.text.fill(0);
    if (
      d.call("nvmlSystemGetDriverVersion", fn.nvmlSystemGetDriverVersion, d.text, BUFFER_SIZE.driverVersion) ===
      NVML_SUCCESS
    ) {
      this.driverVersion = cString(d.text, 0, BUFFER_SIZE.driverVersion);
    }
    const rc = d.call("nvmlDeviceGetCount_v2", fn.nvmlDeviceGetCount_v2, d.u32);
    if (rc !== NVML_SUCCESS) throw new DriverLost(d.failure(rc, "nvmlDeviceGetCount_v2"));
    const count = d.u32.readUInt32LE(0);
    const skip = new Set(this.cfg.skip);
    const devices: Device[] = [];
    let slots = 0;
    // What the GPUs listed before opened is freed first: a failure below frees what it opened.
    this.closeReaders();
    this.devices = devices;
    this.rediscover = false;
    for (let index = 0; index < count; index++) {
      if (skip.has(index)) continue;
      d.gpu = index;
      const hrc = d.call("nvmlDeviceGetHandleByIndex_v2", fn.nvmlDeviceGetHandleByIndex_v2, index, d.u64);
      if (DRIVER_LEVEL_ERRORS.has(hrc)) throw new DriverLost(d.failure(hrc, "nvmlDeviceGetHandleByIndex_v2"));
      const handle = hrc === NVML_SUCCESS ? d.u64.readBigUInt64LE(0) : 0n;
      const gpu: NvmlGpu = {
        index,
        uuid: `unknown-nvml-${index}`,
        model: "unknown",
        gpm: false,
        slot: slots++,
        version: 1,
      };
      const dev: Device = { gpu, handle, modeAtMs: Date.now() };
      devices.push(dev);
      if (hrc !== NVML_SUCCESS) gpu.error = d.failure(hrc, "nvmlDeviceGetHandleByIndex_v2");
      else this.identify(dev, slots);
      if (dev.mig) slots += dev.mig.slots;
      if (dev.readers) gpu.utilSamples = this.probe(dev);
    }
    this.board = ReadingsBoard.create(slots);
    this.slots = slots;
    // Which instances each board in MIG mode has, before the event loop hears of the GPUs.
    const now = Date.now();
    for (const dev of devices) {
      if (!dev.mig) continue;
      d.gpu = dev.gpu.index;
      dev.mig.scan(now);
    }
    d.gpu = -1;
    this.announceTick = true;
    this.postReady(reinit);
  }

  /** How the GPU keeps utilization samples: one expensive call per discovery, never per tick. */
  private probe(dev: Device): NvmlGpu["utilSamples"] {
    this.driver.gpu = dev.gpu.index;
    try {
      return dev.readers?.util.probeSampleBuffer();
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      return undefined;
    }
  }

  /**
   * Static identity and the readers; a GPU that fails here is listed with its error. A board
   * in MIG mode gets its instances' slots from `migBaseSlot` on; found in MIG mode where no
   * slots can be given (after discovery), it has the GPUs listed anew.
   */
  private identify(dev: Device, migBaseSlot?: number): void {
    const d = this.driver;
    const fn = this.nvml.fn;
    const gpu = dev.gpu;
    const pci = Buffer.alloc(PCI_INFO.size);
    try {
      if (d.dcall("nvmlDeviceGetPciInfo_v3", fn.nvmlDeviceGetPciInfo_v3, dev.handle, pci) === NVML_SUCCESS) {
        gpu.busId = cString(pci, PCI_INFO.busIdOffset, PCI_INFO.busIdLength);
        gpu.uuid = `unknown-${gpu.busId}`;
      }
      gpu.uuid = d.readText("nvmlDeviceGetUUID", fn.nvmlDeviceGetUUID, dev.handle, BUFFER_SIZE.uuid) ?? gpu.uuid;
      gpu.model =
        d.readText("nvmlDeviceGetName", fn.nvmlDeviceGetName, dev.handle, BUFFER_SIZE.deviceName) ?? gpu.model;
      gpu.serial = d.readText("nvmlDeviceGetSerial", fn.nvmlDeviceGetSerial, dev.handle, BUFFER_SIZE.serial);
      dev.modeAtMs = Date.now();
      if (migModeOf(d, dev.handle) === true) {
        if (migBaseSlot === undefined) {
          this.rediscover = true;
          gpu.error = "NVML: the GPU is in MIG mode; its instances are being listed";
          return;
        }
        gpu.migMode = true;
        gpu.gpm = GpmReader.supported(d, dev.handle);
        dev.boardPower = new PowerClocksReader(d, dev.handle, gpu.index);
        dev.mig = new MigBoard(d, gpu, dev.handle, migBaseSlot, migSlotsOf(d, dev.handle), gpu.gpm, {
          names: this.names,
          buffers: this.processBuffers,
          processIntervalMs: this.cfg.processIntervalMs,
          post: (m) => this.post(m),
        });
        gpu.error = undefined;
        return;
      }
      dev.readers?.gpm?.close();
      const gpm = GpmReader.open(d, dev.handle);
      dev.readers = {
        memory: new MemoryReader(d, dev.handle, gpu.index),
        util: new UtilizationReader(d, dev.handle, gpu.index),
        power: new PowerClocksReader(d, dev.handle, gpu.index),
        media: new MediaReader(d, dev.handle, gpu.index),
        processes: new ProcessReader(d, dev.handle, this.names, this.processBuffers, this.cfg.processIntervalMs),
        gpm,
      };
      gpu.gpm = gpm !== undefined;
      gpu.error = undefined;
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      gpu.error = err.message;
    }
  }

  private closeReaders(): void {
    for (const dev of this.devices) {
      dev.readers?.gpm?.close();
      dev.mig?.close();
    }
  }

  private postReady(reinit: boolean): void {
    this.post({
      kind: "ready",
      library: this.nvml.path,
      driverVersion: this.driverVersion,
      gpus: this.devices.flatMap((dv) => [{ ...dv.gpu }, ...(dv.mig?.instances() ?? [])]),
      board: this.board.buffer,
      slots: this.slots,
      errorStrings: this.errorStrings,
      reinit,
    });
  }

  // ---- ticks ------------------------------------------------------------------------

  /** The next tick of the agent's wall-clock grid not yet read for, and how long to sleep to read it `lead` ahead. */
  private next(afterDiscovery: boolean): { tickMs: number; delayMs: number } {
    const iv = this.cfg.intervalMs;
    const lead = Math.min(LEAD_MS, iv / 4);
    const now = Date.now();
    let tickMs = Math.floor((now + lead) / iv) * iv + iv;
    if (tickMs <= this.lastTickMs) tickMs = this.lastTickMs + iv;
    // The first tick after discovery comes at least the GPM gap after the first GPM sample,
    // so that it carries SM activity too.
    return { tickMs, delayMs: Math.max(tickMs - lead - now, afterDiscovery ? GPM_MIN_GAP_MS + 10 : 0) };
  }

  /** Reads every GPU; returns why the driver went away, when it did. */
  private tick(tickMs: number): string | undefined {
    this.lastTickMs = tickMs;
    const atMs = Date.now();
    const lists: ChangedLists = [];
    this.ticks++;
    let instances = 0;
    for (const dev of this.devices) instances += dev.mig?.count ?? 0;
    this.gpmStride = migGpmStride(instances, this.cfg.intervalMs);
    try {
      for (const dev of this.devices) this.read(dev, atMs, lists);
      if (this.rediscover) {
        this.discover(false);
        return undefined;
      }
    } catch (err) {
      if (!(err instanceof DriverLost)) throw err;
      return err.message;
    }
    if (lists.length > 0) {
      this.post({ kind: "processes", lists });
      this.names.forgetAllBut(
        new Set(
          this.devices.flatMap((dv) =>
            [...(dv.readers?.processes.pids() ?? []), ...(dv.mig?.pids() ?? [])].map((p) => p.pid),
          ),
        ),
      );
    }
    if (this.announceTick) {
      this.announceTick = false;
      this.post({ kind: "tick", atMs });
    }
    return undefined;
  }

  /** Reads one GPU into the scratch reading and publishes it on the board. */
  private read(dev: Device, atMs: number, lists: ChangedLists): void {
    const g = dev.gpu;
    const out = this.reading;
    out.fill(Number.NaN);
    out[F.atMs] = atMs;
    this.driver.gpu = g.index;
    try {
      if (dev.handle !== 0n && g.error === undefined && atMs - dev.modeAtMs >= MIG_SCAN_MS) this.checkMode(dev, atMs);
      if (dev.mig) {
        this.readMig(dev, dev.mig, atMs, lists);
        return;
      }
      if (dev.handle !== 0n && g.error !== undefined) {
        // Listed with an error at discovery: try to identify it again, and tell the event
        // loop its identity when that works.
        this.identify(dev, undefined);
        if (g.error === undefined) {
          g.version++;
          this.postReady(false);
        }
      }
      out[F.version] = g.version;
      const r = dev.readers;
      if (dev.handle === 0n || g.error !== undefined || !r) {
        out[F.failedCode] = 0;
      } else {
        r.memory.read(out);
        r.util.read(out);
        r.power.read(out);
        r.media.read(out);
        if (r.processes.tick(atMs)) lists.push({ slot: g.slot, processes: r.processes.processes() });
        r.gpm?.read(out);
        if (dev.lastError !== undefined) {
          this.post({ kind: "log", level: "info", msg: "GPU reads again.", fields: { gpu: g.index, uuid: g.uuid } });
          dev.lastError = undefined;
        }
      }
    } catch (err) {
      if (!(err instanceof GpuFailure)) throw err;
      blankReading(out, atMs, g.version, err);
      if (dev.lastError !== err.message) {
        this.post({
          kind: "log",
          level: "warn",
          msg: "GPU cannot be read; it counts as unavailable.",
          fields: { gpu: g.index, uuid: g.uuid, error: err.message },
        });
        dev.lastError = err.message;
      }
    } finally {
      this.driver.gpu = -1;
    }
    this.board.write(g.slot, out);
  }

  /** Reads the board's MIG mode again; one that changed has the GPUs listed anew after this tick. */
  private checkMode(dev: Device, atMs: number): void {
    const g = dev.gpu;
    dev.modeAtMs = atMs;
    let mig: boolean;
    try {
      mig = migModeOf(this.driver, dev.handle) === true;
    } catch (err) {
      // A GPU that fails says so through its readings.
      if (!(err instanceof GpuFailure)) throw err;
      return;
    }
    if (mig === (g.migMode === true)) return;
    this.post({
      kind: "log",
      level: "info",
      msg: "A GPU changed MIG mode; the GPUs are listed anew.",
      fields: { gpu: g.index, uuid: g.uuid, mig },
    });
    this.rediscover = true;
  }

  /**
   * A board in MIG mode: its instances, each into its own slot; the board's slot holds its
   * board row, its power (about 4 µs), or why its instances could not be listed (the event
   * loop shows the board, unavailable, when they could not and none is known).
   */
  private readMig(dev: Device, mig: MigBoard, atMs: number, lists: ChangedLists): void {
    const g = dev.gpu;
    const out = this.reading;
    if (mig.read(atMs, out, this.board, lists, this.ticks, this.gpmStride)) {
      this.post({ kind: "mig", parentUuid: g.uuid, instances: mig.instances() });
    }
    blankReading(out, atMs, g.version, mig.failure);
    if (mig.failure === undefined) {
      try {
        dev.boardPower?.read(out);
      } catch (err) {
        if (!(err instanceof GpuFailure)) throw err;
        blankReading(out, atMs, g.version, err);
      }
    }
    this.board.write(g.slot, out);
  }

  private post(msg: WorkerMessage): void {
    parentPort!.postMessage(msg);
  }
}

new NvmlWorker(workerData as WorkerConfig).run();
