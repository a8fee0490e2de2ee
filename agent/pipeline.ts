/**
 * The agent's per-sample pipeline: classify every reading with the idle model, keep each
 * GPU's baseline, and fold samples into windows aligned to wall-clock multiples of the
 * window length. Clock-free: callers pass the sample time, so the same code serves live
 * sampling and simulated backfill.
 */
import type { GpuReading, GpuState, Thresholds } from "../common/types.js";
import { classify, idleStreakSeconds, nextBaseline, type Classification, type GpuBaseline } from "./model/idle-model.js";
import { emptyStateSeconds, type GpuWindowRecord, type WindowHolder } from "./window.js";

/** Holders reported per window, largest first. */
export const TOP_HOLDERS = 3;

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
}

interface GpuTrack {
  baseline: GpuBaseline;
  open?: OpenWindow | undefined;
  last?: ClassifiedSample | undefined;
}

export interface PipelineOptions {
  windowMs: number;
  /** Nominal seconds each sample stands for (the sampling interval). */
  intervalMs: number;
  thresholds: Thresholds;
}

export class SamplePipeline {
  private readonly windowMs: number;
  private readonly dtS: number;
  private thresholds: Thresholds;
  private readonly tracks = new Map<string, GpuTrack>();
  private ready: GpuWindowRecord[] = [];

  constructor(opts: PipelineOptions) {
    if (!(opts.windowMs > 0) || !(opts.intervalMs > 0) || opts.intervalMs > opts.windowMs) {
      throw new RangeError(`window (${opts.windowMs} ms) must be positive and at least the interval (${opts.intervalMs} ms)`);
    }
    this.windowMs = opts.windowMs;
    this.dtS = opts.intervalMs / 1000;
    this.thresholds = { ...opts.thresholds };
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
    for (const reading of readings) {
      let track = this.tracks.get(reading.uuid);
      if (!track) {
        track = { baseline: {} };
        this.tracks.set(reading.uuid, track);
      }
      const c = classify(reading, track.baseline, this.thresholds);
      track.baseline = nextBaseline(reading, c, track.baseline, timeMs);
      const streak = idleStreakSeconds(track.baseline, c.state, timeMs);
      const sample: ClassifiedSample = { timeMs, reading, classification: c, idleStreakS: streak };
      track.last = sample;

      if (track.open && track.open.rec.startMs !== windowStart) {
        this.ready.push(closeWindow(track.open));
        track.open = undefined;
      }
      if (!track.open) track.open = openWindow(reading, windowStart, this.windowMs);
      this.addSample(track.open, sample);
    }
    // GPUs that gave no reading this tick: close their windows once time has moved on.
    this.closeUntil(timeMs);
  }

  /** Closes every window that ended at or before `timeMs` (call on a tick with no readings). */
  closeUntil(timeMs: number): void {
    for (const track of this.tracks.values()) {
      if (track.open && track.open.rec.startMs + this.windowMs <= timeMs) {
        this.ready.push(closeWindow(track.open));
        track.open = undefined;
      }
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
    for (const track of this.tracks.values()) {
      if (track.open) {
        this.ready.push(closeWindow(track.open));
        track.open = undefined;
      }
    }
    return this.drain();
  }

  /** The latest classified sample of every GPU, by index. */
  latest(): ClassifiedSample[] {
    const out: ClassifiedSample[] = [];
    for (const t of this.tracks.values()) if (t.last) out.push(t.last);
    return out.sort((a, b) => a.reading.index - b.reading.index);
  }

  private addSample(w: OpenWindow, s: ClassifiedSample): void {
    const dt = this.dtS;
    const rec = w.rec;
    const r = s.reading;
    const c = s.classification;
    rec.observedS += dt;
    rec.stateS[c.state] += dt;
    if (c.reportedIdle) rec.reportedIdleS += dt;
    if (r.util !== undefined && c.state !== "unavailable") rec.reportedBusyS += (r.util / 100) * dt;
    rec.realBusyS += c.real * dt;
    if (r.model && c.state !== "unavailable") rec.model = r.model;
    if (r.driverVersion) rec.driverVersion = r.driverVersion;
    rec.index = r.index;
    if (r.powerW !== undefined) {
      w.powerSum += r.powerW;
      w.powerN++;
      if (rec.powerMaxW === undefined || r.powerW > rec.powerMaxW) rec.powerMaxW = r.powerW;
    }
    if (c.floorW !== undefined) rec.powerFloorW = c.floorW;
    if (r.powerLimitW !== undefined) rec.powerLimitW = r.powerLimitW;
    if (r.memUsedBytes !== undefined && (rec.memUsedMaxBytes === undefined || r.memUsedBytes > rec.memUsedMaxBytes)) {
      rec.memUsedMaxBytes = r.memUsedBytes;
    }
    if (r.memTotalBytes !== undefined) rec.memTotalBytes = r.memTotalBytes;
    const procs = r.processes?.length ?? 0;
    if (procs > rec.processesMax) rec.processesMax = procs;
    if (r.processes && r.processes.length > 0) rec.topHolders = topHolders(r.processes);
    rec.last = {
      timeMs: s.timeMs,
      state: c.state,
      real: c.real,
      realSource: c.source,
      utilPercent: r.util,
      powerW: r.powerW,
      memUsedBytes: r.memUsedBytes,
      processes: procs,
      idleStreakS: s.idleStreakS,
      error: r.error,
    };
  }
}

function openWindow(r: GpuReading, startMs: number, durationMs: number): OpenWindow {
  return {
    powerSum: 0,
    powerN: 0,
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
      last: { timeMs: startMs, state: "unavailable" as GpuState, real: 0, realSource: "none", processes: 0, idleStreakS: 0 },
      topHolders: [],
    },
  };
}

function closeWindow(w: OpenWindow): GpuWindowRecord {
  if (w.powerN > 0) w.rec.powerMeanW = w.powerSum / w.powerN;
  return w.rec;
}

function topHolders(procs: readonly { pid: number; name: string; usedMemoryBytes?: number | undefined }[]): WindowHolder[] {
  return [...procs]
    .sort((a, b) => (b.usedMemoryBytes ?? -1) - (a.usedMemoryBytes ?? -1))
    .slice(0, TOP_HOLDERS)
    .map((p) => ({ pid: p.pid, name: p.name, usedMemoryBytes: p.usedMemoryBytes }));
}

function mod(a: number, b: number): number {
  const m = a % b;
  return m < 0 ? m + b : m;
}
