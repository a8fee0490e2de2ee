/**
 * The NVML source: readings straight from the driver library through FFI, with no
 * subprocess. Every NVML call runs on one worker thread (nvml-worker.ts); the agent's event
 * loop only picks up finished readings from shared memory (readings-board.ts) at its tick,
 * so a slow or hung driver never stalls it, and no message crosses per tick.
 *
 * Contracts:
 * * `start()` returns once the GPUs are listed and the first readings are in, or fails
 *   with a TrueidleError("nvml_unavailable") that says why (library missing, not NVML,
 *   driver not loaded). Auto source choice falls back to nvidia-smi on that error.
 * * Each call into the driver has a deadline (`callTimeoutMs`, `initTimeoutMs` for
 *   nvmlInit). A call past it is a hung driver call: the GPU it concerns reads as
 *   unavailable, naming the call; a new worker carries on with the other GPUs and skips
 *   that one. The hung thread cannot be interrupted; when its call finally returns, the
 *   GPU is taken back. At most two hung threads exist at once: past that every GPU reads
 *   unavailable until one returns, so a dead driver cannot pile up threads.
 * * Per-GPU errors (GPU_IS_LOST, …) make that GPU unavailable; driver-level errors make
 *   every GPU unavailable while the worker re-initialises NVML. A GPU once seen stays
 *   known (a GPU that falls off the bus is unavailable capacity, not gone capacity).
 * * A GPU's only process has the GPU's utilization as its SM share, set here from each
 *   reading; on a GPU several processes share, the worker measures the shares (at most once
 *   a minute: the call costs milliseconds) and they come with the process list.
 * * A board in MIG mode is not a GPU of its own: each of its instances is (DESIGN "MIG"),
 *   with its MIG uuid, its board's uuid and index, the board's model and its profile, no
 *   utilization and no power (both are the board's). An instance destroyed is gone, not
 *   unavailable (it is no capacity any more); re-created, it is a new GPU with a new uuid.
 *   The board shows, unavailable, only when it cannot be read and none of its instances is
 *   known.
 * * Every timer is unref()ed; `stop()` is safe twice and before start.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { GpuProcess, GpuReading } from "../../../common/types.js";
import type { Logger } from "../../../common/log.js";
import { TrueidleError } from "../../../common/errors.js";
import type { GpuSource, SourceStats } from "../source.js";
// Not bindings.js: koffi loads only in the worker, so a platform without a koffi build fails
// NVML (and --source auto falls back to nvidia-smi) instead of failing the agent.
import {
  CALL_NAMES,
  CallWatch,
  DEFAULT_NVML_LIBRARY,
  WATCH_BYTES,
  type NvmlGpu,
  type WorkerConfig,
  type WorkerMessage,
} from "./protocol.js";
import { F, ReadingsBoard, emptyReading } from "./readings-board.js";
import { AGENT_SETTINGS } from "../../settings.js";
import { migBoardRow } from "../mig-board-row.js";

export interface NvmlSourceOptions {
  /** The library: a path, or a soname the dynamic loader finds. */
  libPath?: string | undefined;
  intervalMs: number;
  processIntervalMs?: number | undefined;
  logger: Logger;
  /** A driver call running longer than this is hung; default 5000. */
  callTimeoutMs?: number | undefined;
  /** Deadline of nvmlInit (slow without persistence mode) and of start(); default 60000. */
  initTimeoutMs?: number | undefined;
  /** A GPU with no fresh reading for this long reads as unavailable; default 3×interval + 2 s. */
  staleAfterMs?: number | undefined;
  /** Appended to a start failure: what the user can do about it. */
  failHint?: string | undefined;
}

const MAX_HUNG_THREADS = 2;
/**
 * The watch is looked at on every sample() (each agent tick), and by a timer only when
 * samples stop coming (start-up, --once): a hung call shows within its deadline plus the
 * sampling interval, without a wake-up of its own every second.
 */
const WATCH_IDLE_MS = 2_000;
const RESPAWN_DELAY_MS = 1_000;
const STOP_GRACE_MS = 2_000;

interface Known {
  gpu: NvmlGpu;
  /** The GPU's slot on the current worker's board; -1 while that worker does not list it. */
  slot: number;
  /** The last reading taken from the board (its numbers), and when it was taken; at 0: none yet. */
  values: Float64Array;
  at: number;
  /** The last process list the worker sent; undefined: none, or it cannot be read. */
  processes?: GpuProcess[] | undefined;
}

interface Hung {
  worker: Worker;
  call: string;
  gpu: number;
  sinceMs: number;
}

export class NvmlSource implements GpuSource {
  readonly name = "nvml";
  private readonly libPath: string;
  private readonly intervalMs: number;
  private readonly processIntervalMs: number;
  private readonly callTimeoutMs: number;
  private readonly initTimeoutMs: number;
  private readonly staleAfterMs: number;
  private readonly failHint: string;
  private readonly logger: Logger;
  private worker: Worker | undefined;
  private watch: CallWatch | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private respawnTimer: NodeJS.Timeout | undefined;
  private readonly known = new Map<string, Known>();
  /** GPU index → the hung call that keeps it out of the worker. */
  private readonly quarantine = new Map<number, Hung>();
  private readonly hung = new Set<Hung>();
  private driverError: string | undefined;
  private stopped = false;
  private started = false;
  /** New workers, and NVML initialised again after the driver came back. */
  private restarts = 0;
  /** Workers in a row that could not initialise NVML after start. */
  private failedStarts = 0;
  private driverVersion = "";
  private library = "";
  private board: ReadingsBoard | undefined;
  /** Implausible values counted on boards of workers gone. */
  private badValuesBefore = 0;
  private errorStrings: Record<number, string> = {};
  private readonly scratch = emptyReading();
  private readyWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;

  constructor(opts: NvmlSourceOptions) {
    this.libPath = opts.libPath ?? DEFAULT_NVML_LIBRARY;
    this.intervalMs = opts.intervalMs;
    this.processIntervalMs = opts.processIntervalMs ?? AGENT_SETTINGS.processIntervalMs.default;
    this.callTimeoutMs = opts.callTimeoutMs ?? 5_000;
    this.initTimeoutMs = opts.initTimeoutMs ?? 60_000;
    this.staleAfterMs = opts.staleAfterMs ?? 3 * opts.intervalMs + 2_000;
    this.failHint = opts.failHint ? ` — ${opts.failHint}` : "";
    this.logger = opts.logger;
  }

  /** What `agent --once` and the start log say about this source. */
  describe(): string {
    // Boards: an instance has SM activity where its board has GPM.
    const boards = [...this.known.values()].filter((k) => !k.gpu.mig);
    const gpm = boards.filter((k) => k.gpu.gpm).map((k) => k.gpu.index);
    const mig = boards.filter((k) => k.gpu.migMode).map((k) => k.gpu.index);
    return (
      `NVML (${this.library || this.libPath}, driver ${this.driverVersion || "?"}); ` +
      (gpm.length === 0 ? "no GPU supports GPM SM activity" : `GPM SM activity on GPU ${gpm.join(", ")}`) +
      (mig.length === 0 ? "" : `; MIG mode on GPU ${mig.join(", ")}: each instance a GPU of its own`)
    );
  }

  /**
   * How the driver keeps each GPU's utilization samples, as read once at discovery: the
   * period (the time base of utilization.gpu) and how far back the buffer reaches.
   */
  describeSampleBuffers(): string {
    const groups = new Map<string, number[]>();
    for (const k of this.known.values()) {
      if (k.gpu.mig) continue;
      const b = k.gpu.utilSamples;
      const key = b
        ? `every ${b.periodMs} ms, ${b.count} kept (${b.spanS} s)`
        : k.gpu.migMode
          ? "none in MIG mode"
          : "not readable";
      groups.set(key, [...(groups.get(key) ?? []), k.gpu.index]);
    }
    return [...groups].map(([key, gpus]) => `GPU ${gpus.sort((a, b) => a - b).join(", ")}: ${key}`).join("; ");
  }

  /** Driver calls that hung and have not returned; the process cannot exit cleanly while any is stuck. */
  hungCalls(): number {
    return this.hung.size;
  }

  async start(signal?: AbortSignal): Promise<void> {
    if (this.started) return;
    this.started = true;
    const ready = new Promise<void>((resolve, reject) => {
      this.readyWaiter = { resolve, reject };
    });
    this.spawn();
    this.watchTimer = setInterval(() => this.checkWatch(), Math.max(WATCH_IDLE_MS, 2 * this.intervalMs));
    this.watchTimer.unref();
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void =>
      this.readyWaiter?.reject(new TrueidleError("aborted", "stopped while NVML was starting"));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await Promise.race([
        ready,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new TrueidleError(
                  "nvml_unavailable",
                  `NVML gave no readings within ${Math.round(this.initTimeoutMs / 1000)} s of starting (${this.libPath}); the driver may be hung`,
                ),
              ),
            this.initTimeoutMs + this.intervalMs,
          );
          timer.unref();
        }),
      ]);
      this.logger.info("NVML source started.", {
        library: this.library,
        driver: this.driverVersion,
        gpus: [...this.known.values()].filter((k) => !k.gpu.migMode).length,
        detail: this.describe(),
        utilization_samples: this.describeSampleBuffers(),
      });
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      this.readyWaiter = undefined;
    }
  }

  sample(nowMs: number): GpuReading[] {
    this.checkWatch();
    this.watchTimer?.refresh();
    const out: GpuReading[] = [];
    // A hung call that concerns no GPU in particular (init, count) stops them all.
    const global =
      [...this.hung].find((h) => h.gpu < 0) ?? (this.hung.size >= MAX_HUNG_THREADS ? [...this.hung][0] : undefined);
    const allDown = this.driverError ?? (global ? this.hungText(global) : undefined);
    const withInstances = new Set<string>();
    for (const k of this.known.values()) if (k.gpu.mig) withInstances.add(k.gpu.mig.parentUuid);
    // Boards, then each board's instances in slot order.
    const entries = [...this.known.values()].sort((a, b) => a.gpu.index - b.gpu.index || a.gpu.slot - b.gpu.slot);
    for (const k of entries) {
      this.takeFromBoard(k);
      const g = k.gpu;
      // A board in MIG mode is its instances, and its board row (only its power and whether
      // it reads); a GPU that reads unavailable only when it fails and no instance is known.
      const boardRow = g.migMode === true && withInstances.has(g.uuid);
      const identity: GpuReading = {
        uuid: g.uuid,
        index: g.index,
        model: g.model,
        ...(g.mig ? { parentUuid: g.mig.parentUuid, migProfile: g.mig.profile } : {}),
        busId: g.busId,
        driverVersion: this.driverVersion || undefined,
      };
      const q = this.quarantine.get(g.index);
      let r: GpuReading | undefined;
      if (allDown !== undefined) r = { ...identity, error: allDown };
      else if (q) r = { ...identity, error: this.hungText(q) };
      // An instance just created has no reading yet: it shows from its first.
      else if (k.at === 0)
        r = g.mig && !g.error ? undefined : { ...identity, error: g.error ?? "NVML: no reading yet" };
      else if (nowMs - k.at > this.staleAfterMs)
        r = { ...identity, error: `NVML: no reading for ${Math.round((nowMs - k.at) / 1000)} s` };
      else r = this.toReading(identity, k);
      if (r && g.migMode && (boardRow || r.error === undefined)) r = migBoardRow(r);
      if (r) out.push(r);
    }
    return out;
  }

  /** Takes the GPU's reading from the board when it is newer and of the identity known here. */
  private takeFromBoard(k: Known): void {
    const board = this.board;
    if (!board || k.slot < 0 || k.slot >= board.slots) return;
    const v = this.scratch;
    if (!board.read(k.slot, v)) return;
    if (v[F.atMs]! > k.at && v[F.version] === k.gpu.version) {
      k.values.set(v);
      k.at = v[F.atMs]!;
    }
  }

  private toReading(identity: GpuReading, k: Known): GpuReading {
    const v = k.values;
    const code = v[F.failedCode]!;
    if (!Number.isNaN(code)) {
      if (code === 0) return { ...identity, error: k.gpu.error ?? "NVML: no device handle" };
      const call = CALL_NAMES[v[F.failedCall]!] ?? "an NVML call";
      return { ...identity, error: `NVML: ${this.errorStrings[code] ?? `NVML error ${code}`} (${call})` };
    }
    const util = opt(v[F.util]!);
    const idle = v[F.idleReason]!;
    let processes = k.processes;
    // A GPU's only process has the GPU's utilization as its share of the SMs.
    if (processes?.length === 1 && processes[0]!.smUtil === undefined && util !== undefined)
      processes = [{ ...processes[0]!, smUtil: util }];
    return {
      uuid: identity.uuid,
      index: identity.index,
      model: identity.model,
      ...(identity.parentUuid === undefined
        ? {}
        : { parentUuid: identity.parentUuid, migProfile: identity.migProfile }),
      busId: identity.busId,
      driverVersion: identity.driverVersion,
      util,
      memUsedBytes: opt(v[F.memUsedBytes]!),
      memTotalBytes: opt(v[F.memTotalBytes]!),
      powerW: opt(v[F.powerW]!),
      powerLimitW: opt(v[F.powerLimitW]!),
      idleReason: Number.isNaN(idle) ? undefined : idle === 1,
      smActive: opt(v[F.smActive]!),
      smOccupancy: opt(v[F.smOccupancy]!),
      tensorActive: opt(v[F.tensorActive]!),
      dramActive: opt(v[F.dramActive]!),
      smClockMHz: opt(v[F.smClockMHz]!),
      media: opt(v[F.media]!),
      processes,
    };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.watchTimer);
    clearTimeout(this.respawnTimer);
    const w = this.worker;
    this.worker = undefined;
    if (w && this.watch) await stopWorker(w, this.watch);
    for (const h of this.hung) void h.worker.terminate();
  }

  stats(): SourceStats {
    return { restarts: this.restarts, parseErrors: this.badValuesBefore + (this.board?.badValues() ?? 0) };
  }

  // ---- the worker -------------------------------------------------------------------

  private spawn(): void {
    if (this.stopped) return;
    const watch = new SharedArrayBuffer(WATCH_BYTES);
    const cfg: WorkerConfig = {
      libPath: this.libPath,
      intervalMs: this.intervalMs,
      processIntervalMs: this.processIntervalMs,
      skip: [...this.quarantine.keys()],
      watch,
    };
    const w = startWorker(cfg);
    this.worker = w;
    this.watch = new CallWatch(watch);
    w.on("message", (m: WorkerMessage) => {
      if (this.worker === w) this.onMessage(m);
    });
    w.on("error", (err) => {
      if (this.worker !== w) return;
      if (this.readyWaiter) {
        this.readyWaiter.reject(
          new TrueidleError("nvml_unavailable", `the NVML worker failed: ${err.message}${this.failHint}`),
        );
        return;
      }
      this.logger.error("The NVML worker failed; starting a new one.", { error: err.message });
      this.replaceWorker();
    });
    w.on("exit", (code) => {
      if (this.worker !== w || this.stopped) return;
      if (this.readyWaiter) return; // a fatal start error already said why
      this.logger.warn("The NVML worker exited; starting a new one.", { code });
      this.replaceWorker();
    });
  }

  private replaceWorker(): void {
    const old = this.worker;
    this.worker = undefined;
    if (old) void old.terminate();
    this.restarts++;
    clearTimeout(this.respawnTimer);
    // 1 s, doubling while new workers cannot initialise NVML, up to 30 s.
    const delay = Math.min(RESPAWN_DELAY_MS * 2 ** Math.min(this.failedStarts, 5), 30_000);
    this.respawnTimer = setTimeout(() => this.spawn(), delay);
    this.respawnTimer.unref();
  }

  private onMessage(m: WorkerMessage): void {
    switch (m.kind) {
      case "fatal":
        if (this.readyWaiter) {
          this.readyWaiter.reject(new TrueidleError("nvml_unavailable", m.error + this.failHint));
        } else {
          if (this.driverError !== m.error) {
            this.logger.error("NVML cannot be used; every GPU reads unavailable until it can. Retrying with backoff.", {
              error: m.error,
            });
          }
          this.driverError = m.error;
          this.failedStarts++;
          this.replaceWorker();
        }
        return;
      case "ready": {
        this.failedStarts = 0;
        this.library = m.library;
        this.driverVersion = m.driverVersion;
        this.driverError = undefined;
        this.errorStrings = m.errorStrings;
        if (this.board?.buffer !== m.board) {
          this.badValuesBefore += this.board?.badValues() ?? 0;
          this.board = new ReadingsBoard(m.board, m.slots);
          for (const k of this.known.values()) k.slot = -1;
        }
        const listed = new Set<string>();
        for (const g of m.gpus) {
          listed.add(g.uuid);
          this.list(g);
        }
        for (const [uuid, k] of this.known) {
          if (listed.has(uuid) || this.quarantine.has(k.gpu.index)) continue;
          // A placeholder for a GPU that could not be identified, now listed under its uuid.
          if (uuid.startsWith("unknown-")) {
            this.known.delete(uuid);
            continue;
          }
          // An instance its board no longer has: destroyed, while the driver was away.
          if (k.gpu.mig && listed.has(k.gpu.mig.parentUuid)) {
            this.known.delete(uuid);
            continue;
          }
          // Gone from NVML's list: still capacity that exists and cannot be used.
          this.known.set(uuid, {
            gpu: { ...k.gpu, error: "NVML no longer lists this GPU" },
            slot: -1,
            values: emptyReading(),
            at: 0,
          });
        }
        if (m.reinit) {
          this.restarts++;
          this.logger.info("NVML initialised again after the driver came back.", {
            gpus: m.gpus.length,
            driver: m.driverVersion,
          });
        }
        return;
      }
      case "tick":
        this.readyWaiter?.resolve();
        return;
      case "mig": {
        // Every instance the board has: one not listed was destroyed, and is gone.
        const listed = new Set(m.instances.map((g) => g.uuid));
        for (const [uuid, k] of this.known) {
          if (k.gpu.mig?.parentUuid === m.parentUuid && !listed.has(uuid)) this.known.delete(uuid);
        }
        for (const g of m.instances) this.list(g);
        return;
      }
      case "processes":
        for (const { slot, processes } of m.lists) {
          for (const k of this.known.values()) if (k.slot === slot) k.processes = processes;
        }
        return;
      case "driver_lost":
        if (this.driverError !== m.error) {
          this.logger.error(
            "The NVIDIA driver stopped answering; every GPU reads unavailable while NVML is initialised again.",
            { error: m.error },
          );
        }
        this.driverError = m.error;
        return;
      case "log":
        this.logger[m.level](m.msg, m.fields ?? {});
        return;
    }
  }

  /** A GPU the current worker lists, in its slot: known from now on, or known again. */
  private list(g: NvmlGpu): void {
    const k = this.known.get(g.uuid);
    if (k) {
      k.gpu = g;
      k.slot = g.slot;
    } else {
      this.known.set(g.uuid, { gpu: g, slot: g.slot, values: emptyReading(), at: 0 });
    }
  }

  // ---- hung calls -------------------------------------------------------------------

  private checkWatch(): void {
    const w = this.worker;
    const cur = this.watch?.current();
    if (!w || !cur) return;
    const deadline = cur.call === "nvmlInit_v2" ? this.initTimeoutMs : this.callTimeoutMs;
    if (Date.now() - cur.sinceMs <= deadline) return;
    const h: Hung = { worker: w, call: cur.call, gpu: cur.gpu, sinceMs: cur.sinceMs };
    this.hung.add(h);
    if (h.gpu >= 0) this.quarantine.set(h.gpu, h);
    this.logger.error(
      "An NVML call did not return in time: the driver is hung or very slow. " +
        (h.gpu >= 0
          ? "That GPU reads unavailable; the others go on."
          : "Every GPU reads unavailable until NVML answers."),
      { call: h.call, gpu: h.gpu >= 0 ? h.gpu : undefined, deadlineMs: deadline },
    );
    if (this.readyWaiter && h.gpu < 0) {
      this.readyWaiter.reject(
        new TrueidleError(
          "nvml_unavailable",
          `${h.call} did not return within ${Math.round(deadline / 1000)} s: the driver is hung`,
        ),
      );
    }
    // The stuck thread cannot be interrupted: ask it to end once its call returns, then
    // take its GPU back; meanwhile a new worker goes on without that GPU.
    this.worker = undefined;
    void w.terminate();
    w.once("exit", () => this.onHungExit(h));
    if (this.hung.size < MAX_HUNG_THREADS) {
      this.restarts++;
      this.spawn();
    }
  }

  private onHungExit(h: Hung): void {
    this.hung.delete(h);
    if (this.quarantine.get(h.gpu) === h) this.quarantine.delete(h.gpu);
    if (this.stopped) return;
    this.logger.info("The hung NVML call returned; the GPU is read again.", {
      call: h.call,
      gpu: h.gpu >= 0 ? h.gpu : undefined,
      hungForMs: Date.now() - h.sinceMs,
    });
    // Start over with every GPU: the current worker skips the one that hung.
    const cur = this.worker;
    this.worker = undefined;
    if (cur && this.watch) void stopWorker(cur, this.watch);
    this.restarts++;
    this.spawn();
  }

  private hungText(h: Hung): string {
    return `NVML: ${h.call}${h.gpu >= 0 ? " on this GPU" : ""} has not returned for ${Math.round((Date.now() - h.sinceMs) / 1000)} s (driver hung)`;
  }
}

/** A board number as a reading's value: NaN is missing. */
function opt(x: number): number | undefined {
  return Number.isNaN(x) ? undefined : x;
}

/** The worker, compiled (dist/) or, when running from the TypeScript sources, through tsx. */
function startWorker(cfg: WorkerConfig): Worker {
  const js = new URL("./nvml-worker.js", import.meta.url);
  if (existsSync(fileURLToPath(js))) return new Worker(js, { workerData: cfg });
  const ts = new URL("./nvml-worker.ts", import.meta.url);
  const code = `import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(ts.href)}); });`;
  return new Worker(code, { eval: true, workerData: cfg });
}

/** Ask the worker to shut NVML down and exit; terminate it when it does not in time. */
async function stopWorker(w: Worker, watch: CallWatch): Promise<void> {
  const exited = new Promise<void>((resolve) => w.once("exit", () => resolve()));
  watch.requestStop();
  let timer: NodeJS.Timeout | undefined;
  const late = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), STOP_GRACE_MS);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
  if (late) void w.terminate();
}
