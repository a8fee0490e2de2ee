/**
 * The agent's per-sample pipeline: classify every reading with the idle model, keep each
 * GPU's baseline, and fold samples into windows aligned to wall-clock multiples of the
 * window length. Clock-free: callers pass the sample time, so the same code serves live
 * sampling and simulated backfill.
 *
 * Sample times of a GPU only move forward into its windows. A wall clock that steps back
 * (an NTP step, a clock set by hand) would otherwise open windows over time the GPU's
 * windows covered already, which the collector must refuse or would count twice: a sample
 * at or before the GPU's last folded sample, or before the end of its last closed window,
 * is dropped instead, counted in `samplesDropped` and reported once per step through
 * `onClockStepBack`. A clock that jumps forward only leaves a gap.
 */
import {
  HELD_BY,
  type GpuOwner,
  type GpuProcess,
  type GpuReading,
  type GpuState,
  type HeldBy,
  type Thresholds,
} from "../common/types.js";
import {
  classify,
  idleStreakSeconds,
  nextBaseline,
  powerFloor,
  powerFraction,
  type Classification,
  type GpuBaseline,
  reportedUtil,
} from "./model/idle-model.js";
import { ownerKey } from "./owners/allocations.js";
import {
  emptyHeldBySeconds,
  emptyStateSeconds,
  MAX_WINDOW_OWNERS,
  type GpuWindowRecord,
  type WindowHolder,
  type WindowOwner,
} from "./window.js";

/** Holders reported per window, largest first. */
export const TOP_HOLDERS = 3;
/**
 * Processes whose SM utilization one window of one GPU follows at most. A GPU can show
 * many short-lived processes; past this, the smallest by memory are dropped, processes
 * not seen in the current sample first, so the holders a window reports keep their share.
 */
export const MAX_TRACKED_PIDS = 64;

export interface ClassifiedSample {
  timeMs: number;
  reading: GpuReading;
  classification: Classification;
  idleStreakS: number;
}

interface OpenWindow {
  rec: GpuWindowRecord;
  powerSum: number;
  powerN: number;
  /** Samples added so far; marks which tracked processes the current sample showed. */
  samples: number;
  /** Per-process SM utilization, by pid; at most MAX_TRACKED_PIDS entries. */
  sm: Map<number, ProcessSm>;
  /** Owners seen in the window, by identity, with the sample that last counted them; at most MAX_TRACKED_OWNERS. */
  owners: Map<string, { owner: WindowOwner; lastSample: number }>;
  /** The last sample, and the last process list that held anything: `last` and the top holders at close. */
  lastSample?: ClassifiedSample | undefined;
  lastHolders?: readonly GpuProcess[] | undefined;
}

interface ProcessSm {
  /** Σ smUtil/100 · dt. */
  busyS: number;
  /** Seconds the process was seen with a known smUtil. */
  seenS: number;
  /** Memory at its last sighting (-1 when unknown): the eviction order. */
  memBytes: number;
  /** `samples` count of the window when it was last seen. */
  lastSample: number;
}

interface GpuTrack {
  baseline: GpuBaseline;
  open?: OpenWindow | undefined;
  last?: ClassifiedSample | undefined;
  /** Time of the last sample folded into a window; later samples must come after it. */
  foldedMs: number;
  /** End of the GPU's last closed window; later samples must not come before it. */
  closedEndMs: number;
  /** The last sample was dropped: the clock is still behind the GPU's windows. */
  behind: boolean;
}

/** A wall clock that stepped back behind the time a GPU's windows already cover. */
export interface ClockStepBack {
  /** The first sample time after the step. */
  timeMs: number;
  /** How far the clock went back: from where the next sample was due (one interval after the last call) to `timeMs`. */
  stepMs: number;
  /** Samples are dropped until the clock is back here. */
  resumeMs: number;
  /** GPUs whose samples are dropped from this step on. */
  gpus: number;
}

export interface PipelineOptions {
  windowMs: number;
  /** Nominal seconds each sample stands for (the sampling interval). */
  intervalMs: number;
  thresholds: Thresholds;
  /** Told once per step back of the clock, with the first sample it made the pipeline drop. */
  onClockStepBack?: ((step: ClockStepBack) => void) | undefined;
}

export class SamplePipeline {
  private readonly windowMs: number;
  private readonly intervalMs: number;
  private readonly dtS: number;
  private thresholds: Thresholds;
  private readonly onClockStepBack: ((step: ClockStepBack) => void) | undefined;
  private readonly tracks = new Map<string, GpuTrack>();
  private ready: GpuWindowRecord[] = [];
  private dropped = 0;
  /** Time of the last call of ingest or closeUntil: where the clock was. */
  private lastCallMs = -Infinity;

  constructor(opts: PipelineOptions) {
    if (!(opts.windowMs > 0) || !(opts.intervalMs > 0) || opts.intervalMs > opts.windowMs) {
      throw new RangeError(
        `window (${opts.windowMs} ms) must be positive and at least the interval (${opts.intervalMs} ms)`,
      );
    }
    this.windowMs = opts.windowMs;
    this.intervalMs = opts.intervalMs;
    this.dtS = opts.intervalMs / 1000;
    this.thresholds = { ...opts.thresholds };
    this.onClockStepBack = opts.onClockStepBack;
  }

  /** Samples (one per GPU and instant) dropped because the clock was behind the GPU's windows. */
  get samplesDropped(): number {
    return this.dropped;
  }

  setThresholds(t: Thresholds): void {
    this.thresholds = { ...t };
  }

  getThresholds(): Thresholds {
    return { ...this.thresholds };
  }

  /** Classifies and aggregates one sample of every GPU taken at `timeMs`. */
  ingest(timeMs: number, readings: readonly GpuReading[]): void {
    const windowStart = timeMs - mod(timeMs, this.windowMs);
    let step: ClockStepBack | undefined;
    const boards = this.boardPowerFracs(readings);
    for (const reading of readings) {
      let track = this.tracks.get(reading.uuid);
      if (!track) {
        track = { baseline: {}, foldedMs: -Infinity, closedEndMs: -Infinity, behind: false };
        this.tracks.set(reading.uuid, track);
      }
      // A dropped sample still classifies and shows as the GPU's latest: it is a true reading, only its time is taken.
      const boardFrac = reading.parentUuid === undefined ? undefined : boards?.get(reading.parentUuid);
      const c = classify(reading, track.baseline, this.thresholds, boardFrac);
      track.baseline = nextBaseline(reading, c, track.baseline, timeMs);
      const streak = idleStreakSeconds(track.baseline, c.state, timeMs);
      const sample: ClassifiedSample = { timeMs, reading, classification: c, idleStreakS: streak };
      const prev = track.last;
      track.last = sample;

      if (timeMs <= track.foldedMs || timeMs < track.closedEndMs) {
        this.dropped++;
        // A new step: the first dropped sample, or the clock went back again while behind.
        if (!track.behind || (prev !== undefined && timeMs < prev.timeMs)) {
          const stepMs = Math.max(0, this.lastCallMs + this.intervalMs - timeMs);
          const resumeMs = Math.max(track.foldedMs, track.closedEndMs);
          step = step
            ? {
                timeMs,
                stepMs: Math.max(step.stepMs, stepMs),
                resumeMs: Math.max(step.resumeMs, resumeMs),
                gpus: step.gpus + 1,
              }
            : { timeMs, stepMs, resumeMs, gpus: 1 };
        }
        track.behind = true;
        continue;
      }
      track.behind = false;
      if (track.open && track.open.rec.startMs !== windowStart) this.close(track);
      if (!track.open) track.open = openWindow(reading, windowStart, this.windowMs);
      this.addSample(track.open, sample);
      track.foldedMs = timeMs;
    }
    // GPUs that gave no reading this tick: close their windows once time has moved on.
    this.closeUntil(timeMs);
    if (step) this.onClockStepBack?.(step);
  }

  /**
   * The powerFrac of each board in MIG mode that read its power this tick, by uuid, for its
   * instances without SM activity (classify's boardPowerFrac); undefined on a host without
   * board rows.
   */
  private boardPowerFracs(readings: readonly GpuReading[]): Map<string, number> | undefined {
    let out: Map<string, number> | undefined;
    for (const r of readings) {
      if (!r.migBoard || r.error !== undefined) continue;
      const baseline = this.tracks.get(r.uuid)?.baseline ?? {};
      const frac = powerFraction(r.powerW, powerFloor(r, baseline), r.powerLimitW);
      if (frac !== undefined) (out ??= new Map()).set(r.uuid, frac);
    }
    return out;
  }

  /** Closes every window that ended at or before `timeMs` (call on a tick with no readings). */
  closeUntil(timeMs: number): void {
    this.lastCallMs = timeMs;
    for (const track of this.tracks.values()) {
      if (track.open && track.open.rec.startMs + this.windowMs <= timeMs) this.close(track);
    }
  }

  /** Finished windows since the last call, oldest first. */
  drain(): GpuWindowRecord[] {
    const out = this.ready;
    this.ready = [];
    return out;
  }

  /** Closes every open window, partial ones too (on shutdown), and returns all finished windows. */
  flushAll(): GpuWindowRecord[] {
    for (const track of this.tracks.values()) if (track.open) this.close(track);
    return this.drain();
  }

  /** The latest classified sample of every GPU, by index. */
  latest(): ClassifiedSample[] {
    const out: ClassifiedSample[] = [];
    for (const t of this.tracks.values()) if (t.last) out.push(t.last);
    return out.sort((a, b) => a.reading.index - b.reading.index);
  }

  private close(track: GpuTrack): void {
    const open = track.open;
    if (!open) return;
    this.ready.push(closeWindow(open));
    track.closedEndMs = open.rec.startMs + open.rec.durationMs;
    track.open = undefined;
  }

  private addSample(w: OpenWindow, s: ClassifiedSample): void {
    const dt = this.dtS;
    const rec = w.rec;
    const r = s.reading;
    const c = s.classification;
    w.samples++;
    rec.observedS += dt;
    if (r.migBoard) {
      addBoardSample(w, s, dt);
      return;
    }
    rec.stateS[c.state] += dt;
    if (c.reportedIdle) rec.reportedIdleS += dt;
    const util = reportedUtil(r, c);
    if (util !== undefined) rec.reportedBusyS += (util / 100) * dt;
    rec.realBusyS += c.real * dt;
    if (r.model && c.state !== "unavailable") rec.model = r.model;
    if (r.driverVersion) rec.driverVersion = r.driverVersion;
    if (r.parentUuid) rec.parentUuid = r.parentUuid;
    if (r.migProfile) rec.migProfile = r.migProfile;
    rec.index = r.index;
    addPower(w, r, c);
    if (r.memUsedBytes !== undefined && (rec.memUsedMaxBytes === undefined || r.memUsedBytes > rec.memUsedMaxBytes)) {
      rec.memUsedMaxBytes = r.memUsedBytes;
    }
    if (r.memTotalBytes !== undefined) rec.memTotalBytes = r.memTotalBytes;
    const procs = r.processes?.length ?? 0;
    if (procs > rec.processesMax) rec.processesMax = procs;
    if (r.processes && r.processes.length > 0) {
      w.lastHolders = r.processes;
      trackSm(w, r.processes, dt);
    }
    if (c.heldBy !== 0) {
      for (let i = 0; i < HELD_BY.length; i++)
        if ((c.heldBy & (1 << i)) !== 0) (rec.heldByS ??= emptyHeldBySeconds())[HELD_BY[i] as HeldBy] += dt;
    }
    if (r.allocations !== undefined || r.processes !== undefined) trackOwners(w, r, c, dt);
    w.lastSample = s;
  }
}

/**
 * A sample of a board in MIG mode (GpuReading.migBoard): its seconds are observed, and
 * unavailable while it cannot be read, nothing else; its power and limit.
 */
function addBoardSample(w: OpenWindow, s: ClassifiedSample, dt: number): void {
  const rec = w.rec;
  const r = s.reading;
  rec.migBoard = true;
  if (r.error !== undefined) rec.stateS.unavailable += dt;
  if (r.model && r.error === undefined) rec.model = r.model;
  if (r.driverVersion) rec.driverVersion = r.driverVersion;
  rec.index = r.index;
  addPower(w, r, s.classification);
  w.lastSample = s;
}

/** A sample's power into the window: its mean and max, and the floor and limit in force. */
function addPower(w: OpenWindow, r: GpuReading, c: Classification): void {
  const rec = w.rec;
  if (r.powerW !== undefined) {
    w.powerSum += r.powerW;
    w.powerN++;
    if (rec.powerMaxW === undefined || r.powerW > rec.powerMaxW) rec.powerMaxW = r.powerW;
  }
  if (c.floorW !== undefined) rec.powerFloorW = c.floorW;
  if (r.powerLimitW !== undefined) rec.powerLimitW = r.powerLimitW;
}

function openWindow(r: GpuReading, startMs: number, durationMs: number): OpenWindow {
  return {
    powerSum: 0,
    powerN: 0,
    samples: 0,
    sm: new Map(),
    owners: new Map(),
    rec: {
      uuid: r.uuid,
      index: r.index,
      model: r.model,
      driverVersion: r.driverVersion ?? "",
      startMs,
      durationMs,
      observedS: 0,
      stateS: emptyStateSeconds(),
      reportedIdleS: 0,
      reportedBusyS: 0,
      realBusyS: 0,
      processesMax: 0,
      last: {
        timeMs: startMs,
        state: "unavailable" as GpuState,
        real: 0,
        realSource: "none",
        processes: 0,
        idleStreakS: 0,
        heldBy: 0,
      },
      topHolders: [],
    },
  };
}

function closeWindow(w: OpenWindow): GpuWindowRecord {
  if (w.powerN > 0) w.rec.powerMeanW = w.powerSum / w.powerN;
  const s = w.lastSample;
  if (s && w.rec.migBoard) {
    // A board row's last reading: only its power and whether it read.
    w.rec.last = {
      timeMs: s.timeMs,
      state: s.classification.state,
      real: 0,
      realSource: "none",
      powerW: s.reading.powerW,
      processes: 0,
      idleStreakS: 0,
      error: s.reading.error,
      heldBy: 0,
    };
  } else if (s) {
    const r = s.reading;
    w.rec.last = {
      timeMs: s.timeMs,
      state: s.classification.state,
      real: s.classification.real,
      realSource: s.classification.source,
      utilPercent: r.util,
      powerW: r.powerW,
      memUsedBytes: r.memUsedBytes,
      processes: r.processes?.length ?? 0,
      idleStreakS: s.idleStreakS,
      error: r.error,
      heldBy: s.classification.heldBy,
    };
  }
  if (w.owners.size > 0) {
    w.rec.owners = [...w.owners.values()]
      .map((e) => e.owner)
      .sort((a, b) => b.observedS - a.observedS)
      .slice(0, MAX_WINDOW_OWNERS);
    w.owners.clear();
  }
  if (w.lastHolders) w.rec.topHolders = topHolders(w.lastHolders);
  for (const h of w.rec.topHolders) {
    const e = w.sm.get(h.pid);
    if (e && e.seenS > 0) h.smShare = e.busyS / e.seenS;
  }
  w.sm.clear();
  return w.rec;
}

/**
 * Owners a window follows at most: a GPU shows few, but a host whose processes come and go
 * must not grow a window without bound. Past it, new owners are not followed.
 */
export const MAX_TRACKED_OWNERS = 16;

/** Adds one sample to the seconds of every owner it shows: the GPU's allocations and its processes' owners, each once. */
function trackOwners(w: OpenWindow, r: GpuReading, c: Classification, dt: number): void {
  const now = w.samples;
  const state = c.state;
  const util = reportedUtil(r, c);
  const reportedBusy = util !== undefined ? (util / 100) * dt : 0;
  const add = (o: GpuOwner): void => {
    const key = ownerKey(o);
    let e = w.owners.get(key);
    if (!e) {
      if (w.owners.size >= MAX_TRACKED_OWNERS) return;
      e = {
        owner: { ...o, observedS: 0, stateS: emptyStateSeconds(), reportedIdleS: 0, reportedBusyS: 0, realBusyS: 0 },
        lastSample: -1,
      };
      w.owners.set(key, e);
    }
    if (e.lastSample === now) return;
    e.lastSample = now;
    e.owner.observedS += dt;
    e.owner.stateS[state] += dt;
    if (c.reportedIdle) e.owner.reportedIdleS += dt;
    e.owner.reportedBusyS += reportedBusy;
    e.owner.realBusyS += c.real * dt;
  };
  if (r.allocations) for (const o of r.allocations) add(o);
  if (r.processes) for (const p of r.processes) if (p.owner) add(p.owner);
}

/** Adds one sample's per-process SM utilization to the window's per-pid sums. */
function trackSm(w: OpenWindow, procs: readonly GpuProcess[], dt: number): void {
  const now = w.samples;
  // Known pids first, so a newcomer never evicts one this very sample still shows.
  let fresh: GpuProcess[] | undefined;
  for (const p of procs) {
    if (p.smUtil === undefined || !Number.isFinite(p.smUtil)) continue;
    const e = w.sm.get(p.pid);
    if (e) addSm(e, p, dt, now);
    else (fresh ??= []).push(p);
  }
  if (!fresh) return;
  for (const p of fresh) {
    if (w.sm.has(p.pid)) continue; // listed twice in one sample
    const mem = p.usedMemoryBytes ?? -1;
    if (w.sm.size >= MAX_TRACKED_PIDS && !evictSmallest(w.sm, now, mem)) continue;
    const e: ProcessSm = { busyS: 0, seenS: 0, memBytes: mem, lastSample: -1 };
    w.sm.set(p.pid, e);
    addSm(e, p, dt, now);
  }
}

function addSm(e: ProcessSm, p: GpuProcess, dt: number, now: number): void {
  if (e.lastSample === now) return; // listed twice in one sample
  // Clamped: one out-of-range value from a driver must not get the whole window refused.
  e.busyS += (Math.min(100, Math.max(0, p.smUtil!)) / 100) * dt;
  e.seenS += dt;
  e.memBytes = p.usedMemoryBytes ?? -1;
  e.lastSample = now;
}

/**
 * Drops the tracked process least worth keeping: one absent from the current sample
 * before one present, the smaller by memory first. A present one is dropped only for a
 * newcomer holding more memory. Returns whether room was made.
 */
function evictSmallest(sm: Map<number, ProcessSm>, now: number, newMem: number): boolean {
  let victim: number | undefined;
  let vPresent = true;
  let vMem = Infinity;
  for (const [pid, e] of sm) {
    const present = e.lastSample === now;
    if ((vPresent && !present) || (present === vPresent && e.memBytes < vMem)) {
      victim = pid;
      vPresent = present;
      vMem = e.memBytes;
    }
  }
  if (victim === undefined || (vPresent && vMem >= newMem)) return false;
  sm.delete(victim);
  return true;
}

function topHolders(
  procs: readonly { pid: number; name: string; usedMemoryBytes?: number | undefined }[],
): WindowHolder[] {
  return [...procs]
    .sort((a, b) => (b.usedMemoryBytes ?? -1) - (a.usedMemoryBytes ?? -1))
    .slice(0, TOP_HOLDERS)
    .map((p) => ({ pid: p.pid, name: p.name, usedMemoryBytes: p.usedMemoryBytes }));
}

function mod(a: number, b: number): number {
  const m = a % b;
  return m < 0 ? m + b : m;
}
