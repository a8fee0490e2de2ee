/**
 * The collector's view of the fleet: one record per GPU, keyed by (host, uuid), and
 * roll-up groups by model and the host's configured labels.
 *
 * Contracts:
 * - Windows must be validated before `applyWindow` (see validate.ts).
 * - Each GPU record keeps the time its applied windows cover, as at most
 *   MAX_COVERED_SPANS spans [from, to) (adjacent windows merge into one span, so a GPU
 *   that reports steadily holds one). A window [start, start + duration) is then
 *   - inside covered time: a replay ("replayed"), acknowledged but counted nowhere, so
 *     re-sent batches are harmless;
 *   - apart from covered time: counted, also where it fills a gap that a window stamped
 *     ahead left (an agent whose clock stepped back), so no GPU-second is lost or counted
 *     twice;
 *   - partly inside covered time: refused ("overlap"), as its seconds cannot be counted
 *     without counting some twice. Logged at most once a minute.
 *   Past the bound the oldest span goes and its end becomes the record's floor: before it
 *   the collector no longer tells gaps from covered time, so a window ending by the floor
 *   is taken for a replay (what a window that old almost always is; it is still written
 *   and counted as a replay), and one reaching across the floor is refused as overlap.
 * - The current state (state, real, power, ..., freshness) follows the window with the
 *   newest start: a window filling a gap adds its seconds to the counters only. A fresh
 *   window is one that starts after every window applied before it.
 * - Counters only grow while a record lives. A GPU is "up" until `staleAfterWindows` of
 *   its window lengths pass (by the collector's clock) without a fresh window; after that
 *   its current state is `unavailable`. After `expireAfterMs` without a fresh window the record
 *   and its per-GPU series go; the fleet roll-up counters stay until their group has had
 *   no GPU for `expireAfterMs` too.
 * - Freshness is measured from arrival, not from the window's own timestamps, so agent
 *   clock skew cannot make a GPU flap.
 * - Series are capped, so no agent can blow up Prometheus cardinality: at most
 *   `maxGpusPerHost` GPUs per host ("too_many_gpus") and `maxGpus` GPUs and roll-up groups
 *   in all ("series_limit"). A window that would need a record or group beyond a cap is
 *   refused and creates nothing; GPUs already known keep working, and expired GPUs and
 *   groups free their places. So memory is bounded too: hosts ≤ GPUs ≤ maxGpus, groups ≤
 *   maxGpus.
 * - The row of a board in MIG mode (GpuWindow.mig_board; its instances are the GPUs) is a
 *   BoardRecord, kept apart from the GPU records: it is in no GPU count, roll-up group,
 *   summary or list of GPUs, as its seconds are no GPU capacity. It is keyed by (host, uuid)
 *   like a GPU, its windows are covered, replayed, refused as overlap, made stale and
 *   expired by the same rules, and it holds its own counters (observed and unavailable
 *   seconds) and the last power figures. Board rows have a cap of their own, by the same
 *   flags: at most `maxGpusPerHost` per host ("too_many_gpus") and `maxGpus` in all
 *   ("series_limit"), so they never take a GPU's place and memory stays bounded: boards ≤
 *   maxGpus. (A board in MIG mode is there for its instances, so no real fleet has more
 *   boards than GPUs.)
 */
import type { Service } from "../common/lifecycle.js";
import type { Logger } from "../common/log.js";
import { GPU_STATES, REAL_SOURCES, type GpuState, type RealSource } from "../common/types.js";
import type { GpuWindow, Owner } from "../gen/trueidle/v1/ingest_pb.js";
import { OWNER_LABELS } from "../common/owner-fields.js";
import type { OwnerLabelFields } from "./owner-ledger.js";
import { COLLECTOR_SETTINGS } from "./settings.js";
import { DEFAULT_WINDOW_LIMITS } from "./validate.js";

/** The host facts a stream's Hello gave. */
export interface HostInfo {
  hostname: string;
  labels: Readonly<Record<string, string>>;
  /** The agent's window length. */
  windowMs: number;
}

export type ApplyOutcome = "applied" | "replayed" | "overlap" | "too_many_gpus" | "series_limit";

/** A roll-up group: GPUs of one model with one set of configured labels. */
export interface FleetGroup {
  readonly key: string;
  readonly model: string;
  /** Configured labels, sorted by key. */
  readonly labels: readonly (readonly [string, string])[];
  /**
   * The group's counters: the sums of its GPUs' counters over every window applied to a GPU
   * while in the group. They only grow: a GPU that expires or moves to another group takes
   * nothing with it, so the roll-ups answer every fleet ratio without per-GPU series.
   */
  readonly stateS: Record<GpuState, number>;
  observedS: number;
  reportedIdleS: number;
  reportedBusyS: number;
  realBusyS: number;
  /** Live GPU records in the group. */
  gpuCount: number;
  /** When gpuCount last fell to 0; meaningful only while it is 0. */
  emptySince: number;
  /** Cache for the renderer; the group's identity never changes. */
  promLabels: string | undefined;
}

export interface GpuRecord {
  readonly host: string;
  readonly uuid: string;
  index: number;
  model: string;
  driver: string;
  /** A MIG instance: its board's uuid and its profile; "" for a whole GPU. */
  parentUuid: string;
  migProfile: string;
  /** The host's configured labels, sorted by key. */
  labels: readonly (readonly [string, string])[];
  group: FleetGroup;

  observedS: number;
  readonly stateS: Record<GpuState, number>;
  reportedIdleS: number;
  reportedBusyS: number;
  realBusyS: number;

  /** Start of the newest window applied (agent clock); the current state below is that window's. */
  lastStartMs: number;
  /**
   * Time the applied windows cover (agent clock), as flat pairs [from0, to0, from1, to1, ...]:
   * sorted, disjoint and not adjacent, at most MAX_COVERED_SPANS pairs. Replaced, not
   * grown, when its spans are added or merged, so it holds no spare room.
   */
  covered: readonly number[];
  /** End of the last span dropped (the oldest then) to keep `covered` bounded; time before it counts as covered. */
  coveredFloorMs: number;
  /** Window length used for staleness: the larger of the host's and the newest window's. */
  windowMs: number;
  /** Collector clock when the newest window was applied. */
  freshAt: number;

  /** Values of the last sample of the newest window; undefined where not reported. */
  state: GpuState;
  real: number;
  realSource: RealSource;
  reportedUtilization: number | undefined;
  idleStreakS: number;
  processes: number;
  powerW: number | undefined;
  powerFloorW: number | undefined;
  memUsedBytes: number | undefined;
  /**
   * Who held the GPU in its newest window (trueidle_gpu_owner_info and the fleet page, while
   * it is held): each owner's label fields, frozen, and the same objects from window to
   * window while they do not change.
   */
  owners: readonly OwnerLabelFields[];

  /** Cache for the renderer; cleared whenever an identity label changes. */
  promLabels: string | undefined;
}

/** Time covered by a record's windows (GpuRecord, BoardRecord): see GpuRecord.covered. */
interface CoveredTime {
  covered: readonly number[];
  coveredFloorMs: number;
}

/** What staleness is measured from (GpuRecord, BoardRecord). */
interface Freshness {
  /** Window length used for staleness: the larger of the host's and the newest window's. */
  windowMs: number;
  /** Collector clock when the newest window was applied. */
  freshAt: number;
}

/**
 * The row of a board in MIG mode (GpuWindow.mig_board): only what the board alone has. Its
 * MIG instances are GPU records of their own (GpuRecord.parentUuid is this uuid); its seconds
 * are not GPU capacity and enter no GPU count or sum.
 */
export interface BoardRecord {
  readonly host: string;
  /** The board's uuid (`GPU-…`). */
  readonly uuid: string;
  index: number;
  model: string;
  driver: string;
  /** The host's configured labels, sorted by key. */
  labels: readonly (readonly [string, string])[];

  /** Seconds the board was sampled, and of those the seconds it could not be read. */
  observedS: number;
  unavailableS: number;

  /** As GpuRecord's: the newest window's start, the covered time, and freshness. */
  lastStartMs: number;
  covered: readonly number[];
  coveredFloorMs: number;
  windowMs: number;
  freshAt: number;

  /** Whether the last reading of the newest window was read without an error. */
  readable: boolean;
  /** The newest window's last reading's power, and its floor and limit; undefined where not reported. */
  powerW: number | undefined;
  powerFloorW: number | undefined;
  powerLimitW: number | undefined;

  /** Cache for the renderer; cleared whenever an identity label changes. */
  promLabels: string | undefined;
}

export interface FleetSummary {
  gpus: number;
  up: number;
  byState: Record<GpuState, number>;
  /** Cumulative since start over accepted windows; real idle = free_idle + held_idle + busy_phantom. */
  totals: { observedS: number; realIdleS: number; reportedIdleS: number; stateS: Record<GpuState, number> };
}

export interface FleetStateOptions {
  now?: (() => number) | undefined;
  /** Window lengths without a fresh window before a GPU is down (default 3). */
  staleAfterWindows?: number | undefined;
  /** Time without a window before a GPU's series are removed (default 15 min). */
  expireAfterMs?: number | undefined;
  /** Distinct GPUs one host may report (default 64). */
  maxGpusPerHost?: number | undefined;
  /** GPUs, and roll-up groups, across all hosts (default 100,000). */
  maxGpus?: number | undefined;
  /** Told, at most once a minute, when windows are refused at `maxGpus`. */
  logger?: Logger | undefined;
}

export const DEFAULT_STALE_AFTER_WINDOWS: number = COLLECTOR_SETTINGS.staleAfterWindows.default;
export const DEFAULT_EXPIRE_AFTER_MS: number = COLLECTOR_SETTINGS.expireAfterMs.default;
export const DEFAULT_MAX_GPUS: number = COLLECTOR_SETTINGS.maxGpus.default;
const SERIES_LIMIT_LOG_INTERVAL_MS = 60_000;
const OVERLAP_LOG_INTERVAL_MS = 60_000;
/**
 * Spans of covered time one GPU record keeps. One is the rule; each further one is a gap
 * (an agent's clock that jumped, windows sent to another collector meanwhile) that a late
 * window could still fill. Past the bound the oldest span goes.
 */
export const MAX_COVERED_SPANS = 8;

/** Proto enum value → state / source; the proto numbers them in the same order as common/types.ts. */
const STATE_BY_ENUM: readonly (GpuState | undefined)[] = [undefined, ...GPU_STATES];
const SOURCE_BY_ENUM: readonly (RealSource | undefined)[] = [undefined, ...REAL_SOURCES];
/** The owners of a window without any: one array shared by every record. */
const NO_OWNERS: readonly OwnerLabelFields[] = Object.freeze([]);
/** Distinct driver versions, and host label sets, kept for sharing (see SharedCopies). */
const MAX_SHARED_DRIVER_VERSIONS = 64;
const MAX_SHARED_LABEL_SETS = 1_024;

/**
 * One copy of each of a few values that many records hold: a driver version, a host's
 * sorted labels. Each window and Hello decodes its own copy of such strings, while a fleet
 * runs few driver versions and its hosts share few label sets, so the records share one
 * copy per value instead of holding one each. Past `max` values the table starts over
 * (records keep the copies they hold), so it stays small however varied the fleet.
 */
class SharedCopies<T> {
  private readonly byKey = new Map<string, T>();

  constructor(private readonly max: number) {}

  get(key: string, make: () => T): T {
    let v = this.byKey.get(key);
    if (v === undefined) {
      if (this.byKey.size >= this.max) this.byKey.clear();
      v = make();
      this.byKey.set(key, v);
    }
    return v;
  }

  clear(): void {
    this.byKey.clear();
  }
}

interface SortedLabels {
  labels: readonly (readonly [string, string])[];
  labelsKey: string;
}

export function zeroStates(): Record<GpuState, number> {
  return { unavailable: 0, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 0 };
}

function windowStates(w: GpuWindow): Record<GpuState, number> {
  return {
    unavailable: w.unavailableS,
    free_idle: w.freeIdleS,
    active: w.activeS,
    busy_phantom: w.busyPhantomS,
    held_idle: w.heldIdleS,
  };
}

function leaveGroup(group: FleetGroup, now: number): void {
  group.gpuCount--;
  if (group.gpuCount === 0) group.emptySince = now;
}

interface HostEntry {
  labelsKey: string;
  labels: readonly (readonly [string, string])[];
  gpus: Map<string, GpuRecord>;
}

export class FleetState implements Service {
  readonly now: () => number;
  readonly staleAfterWindows: number;
  readonly expireAfterMs: number;
  readonly maxGpusPerHost: number;
  readonly maxGpus: number;

  private readonly logger: Logger | undefined;
  private lastSeriesLimitLogAt = -Infinity;
  private lastOverlapLogAt = -Infinity;
  private readonly hosts = new Map<string, HostEntry>();
  /** Every live record, in the order they first appeared. */
  private readonly records = new Set<GpuRecord>();
  /** Board rows by host and uuid, and every live one in the order they first appeared (see BoardRecord). */
  private readonly boardHosts = new Map<string, Map<string, BoardRecord>>();
  private readonly boardSet = new Set<BoardRecord>();
  private readonly groupMap = new Map<string, FleetGroup>();
  private readonly totals = { observedS: 0, reportedIdleS: 0, stateS: zeroStates() };
  private sweeper: NodeJS.Timeout | undefined;
  private readonly driverVersions = new SharedCopies<string>(MAX_SHARED_DRIVER_VERSIONS);
  private readonly labelSets = new SharedCopies<SortedLabels>(MAX_SHARED_LABEL_SETS);
  private changes = 0;
  /** Sorted labels per HostInfo object: a stream passes the same one with every window. */
  private readonly sortedLabels = new WeakMap<HostInfo, SortedLabels>();

  constructor(options: FleetStateOptions = {}) {
    this.now = options.now ?? Date.now;
    this.staleAfterWindows = options.staleAfterWindows ?? DEFAULT_STALE_AFTER_WINDOWS;
    this.expireAfterMs = options.expireAfterMs ?? DEFAULT_EXPIRE_AFTER_MS;
    this.maxGpusPerHost = options.maxGpusPerHost ?? DEFAULT_WINDOW_LIMITS.maxGpusPerHost;
    this.maxGpus = options.maxGpus ?? DEFAULT_MAX_GPUS;
    this.logger = options.logger;
  }

  /** Live GPU records, in the order they first appeared. */
  gpus(): IterableIterator<GpuRecord> {
    return this.records.values();
  }

  groups(): IterableIterator<FleetGroup> {
    return this.groupMap.values();
  }

  get size(): number {
    return this.records.size;
  }

  /** Live board rows (boards in MIG mode), in the order they first appeared; none is a GPU. */
  boards(): IterableIterator<BoardRecord> {
    return this.boardSet.values();
  }

  get boardCount(): number {
    return this.boardSet.size;
  }

  /** Counts every applied window and every GPU or group removed: unchanged, nothing applied or removed since. */
  get generation(): number {
    return this.changes;
  }

  /** Hosts with at least one live GPU. */
  get hostCount(): number {
    return this.hosts.size;
  }

  isUp(rec: Freshness, now = this.now()): boolean {
    return now - rec.freshAt <= this.staleAfterWindows * rec.windowMs;
  }

  /** A board is up while fresh windows arrive for it (isUp) and its newest one's last reading had no error. */
  boardUp(board: BoardRecord, now = this.now()): boolean {
    return board.readable && this.isUp(board, now);
  }

  /**
   * The MIG instances of each board row that are up: GPU records of the board's host whose
   * parent_uuid is the board's uuid, counted in one pass over the GPU records. A board
   * without any is absent.
   */
  boardInstanceCounts(now = this.now()): Map<BoardRecord, number> {
    const counts = new Map<BoardRecord, number>();
    if (this.boardSet.size === 0) return counts;
    for (const rec of this.records) {
      if (rec.parentUuid === "" || !this.isUp(rec, now)) continue;
      const board = this.boardHosts.get(rec.host)?.get(rec.parentUuid);
      if (board) counts.set(board, (counts.get(board) ?? 0) + 1);
    }
    return counts;
  }

  /** The state to expose: the last sample's, or `unavailable` once the GPU is stale. */
  currentState(rec: GpuRecord, now = this.now()): GpuState {
    return this.isUp(rec, now) ? rec.state : "unavailable";
  }

  /** Applies one validated window of `host`. */
  applyWindow(host: HostInfo, w: GpuWindow): ApplyOutcome {
    if (w.migBoard) return this.applyBoardWindow(host, w);
    const now = this.now();
    let rec = this.hosts.get(host.hostname)?.gpus.get(w.uuid);
    const startMs = Number(w.startMs);
    const endMs = startMs + w.durationMs;
    if (rec) {
      const coverage = coverageOf(rec, startMs, endMs);
      if (coverage === "covered") return "replayed";
      if (coverage === "overlap") return this.overlap(host, rec, w, endMs, now);
    }
    // A window older than the newest one fills a gap: it counts, but leaves the identity and current state alone.
    const newest = !rec || startMs > rec.lastStartMs;
    if (!rec) {
      const known = this.hosts.get(host.hostname);
      if (known && known.gpus.size >= this.maxGpusPerHost) return "too_many_gpus";
      if (this.records.size >= this.maxGpus) return this.seriesLimit(host, w, now, "GPUs");
      const { labels } = this.sortedLabelsOf(host);
      const group = this.group(w.model, labels, now);
      if (!group) return this.seriesLimit(host, w, now, "roll-up groups");
      rec = this.createRecord(host.hostname, this.hostEntry(host), group, w, now);
    } else if (newest) {
      const hostEntry = this.hostEntry(host);
      if (
        rec.model !== w.model ||
        rec.labels !== hostEntry.labels ||
        rec.index !== w.index ||
        rec.driver !== w.driverVersion ||
        rec.parentUuid !== w.parentUuid ||
        rec.migProfile !== w.migProfile
      ) {
        if (!this.relabel(rec, hostEntry, w)) return this.seriesLimit(host, w, now, "roll-up groups");
      }
    }
    const states = windowStates(w);
    const group = rec.group;
    rec.observedS += w.observedS;
    group.observedS += w.observedS;
    this.totals.observedS += w.observedS;
    for (const s of GPU_STATES) {
      rec.stateS[s] += states[s];
      group.stateS[s] += states[s];
      this.totals.stateS[s] += states[s];
    }
    rec.reportedIdleS += w.reportedIdleS;
    group.reportedIdleS += w.reportedIdleS;
    this.totals.reportedIdleS += w.reportedIdleS;
    rec.reportedBusyS += w.reportedBusyS;
    group.reportedBusyS += w.reportedBusyS;
    rec.realBusyS += w.realBusyS;
    group.realBusyS += w.realBusyS;
    cover(rec, startMs, endMs);
    this.changes++;
    if (!newest) return "applied";
    const last = w.last;
    rec.lastStartMs = startMs;
    rec.windowMs = Math.max(host.windowMs, w.durationMs);
    rec.freshAt = now;
    rec.state = STATE_BY_ENUM[last?.state ?? 0] ?? "unavailable";
    rec.real = last?.real ?? 0;
    rec.realSource = SOURCE_BY_ENUM[last?.realSource ?? 0] ?? "none";
    rec.reportedUtilization = last?.utilPercent === undefined ? undefined : last.utilPercent / 100;
    rec.idleStreakS = last?.idleStreakS ?? 0;
    rec.processes = last?.processes ?? 0;
    rec.powerW = last?.powerW;
    rec.powerFloorW = w.powerFloorW;
    rec.memUsedBytes = last?.memUsedBytes === undefined ? undefined : Number(last.memUsedBytes);
    rec.owners = keptOwners(rec.owners, w.owners);
    return "applied";
  }

  /**
   * A board's row: counted, replayed or refused as overlap like a GPU's window, into its
   * BoardRecord only. Within the caps it costs what a GPU's window costs: no allocation
   * once the board is known and its windows come one after another.
   */
  private applyBoardWindow(host: HostInfo, w: GpuWindow): ApplyOutcome {
    const now = this.now();
    let byUuid = this.boardHosts.get(host.hostname);
    let board = byUuid?.get(w.uuid);
    const startMs = Number(w.startMs);
    const endMs = startMs + w.durationMs;
    if (board) {
      const coverage = coverageOf(board, startMs, endMs);
      if (coverage === "covered") return "replayed";
      if (coverage === "overlap") return this.overlap(host, board, w, endMs, now);
    } else {
      // Caps of their own (see the contracts above): boards never take a GPU's place.
      if (byUuid && byUuid.size >= this.maxGpusPerHost) return "too_many_gpus";
      if (this.boardSet.size >= this.maxGpus) return this.seriesLimit(host, w, now, "MIG boards");
      if (!byUuid) this.boardHosts.set(host.hostname, (byUuid = new Map()));
      board = this.createBoard(host, w, now);
      byUuid.set(w.uuid, board);
    }
    const newest = startMs > board.lastStartMs;
    board.observedS += w.observedS;
    board.unavailableS += w.unavailableS;
    cover(board, startMs, endMs);
    this.changes++;
    if (!newest) return "applied";
    const { labels } = this.sortedLabelsOf(host);
    if (
      board.index !== w.index ||
      board.model !== w.model ||
      board.driver !== w.driverVersion ||
      board.labels !== labels
    ) {
      board.index = w.index;
      board.model = w.model;
      if (board.driver !== w.driverVersion) board.driver = this.driverVersion(w.driverVersion);
      board.labels = labels;
      board.promLabels = undefined;
    }
    const last = w.last;
    board.lastStartMs = startMs;
    board.windowMs = Math.max(host.windowMs, w.durationMs);
    board.freshAt = now;
    board.readable = last !== undefined && last.error === "";
    board.powerW = last?.powerW;
    board.powerFloorW = w.powerFloorW;
    board.powerLimitW = w.powerLimitW;
    return "applied";
  }

  private createBoard(host: HostInfo, w: GpuWindow, now: number): BoardRecord {
    const board: BoardRecord = {
      host: host.hostname,
      uuid: w.uuid,
      index: w.index,
      model: w.model,
      driver: this.driverVersion(w.driverVersion),
      labels: this.sortedLabelsOf(host).labels,
      observedS: 0,
      unavailableS: 0,
      lastStartMs: -Infinity,
      covered: [],
      coveredFloorMs: -Infinity,
      windowMs: 0,
      freshAt: now,
      readable: false,
      powerW: undefined,
      powerFloorW: undefined,
      powerLimitW: undefined,
      promLabels: undefined,
    };
    this.boardSet.add(board);
    return board;
  }

  /** Removes GPUs and board rows without a window for `expireAfterMs`, and empty groups as old. Returns GPUs removed. */
  sweep(now = this.now()): number {
    let removed = 0;
    for (const rec of this.records) {
      if (now - rec.freshAt <= this.expireAfterMs) continue;
      this.records.delete(rec);
      leaveGroup(rec.group, now);
      const host = this.hosts.get(rec.host);
      host?.gpus.delete(rec.uuid);
      if (host && host.gpus.size === 0) this.hosts.delete(rec.host);
      removed++;
      this.changes++;
    }
    for (const board of this.boardSet) {
      if (now - board.freshAt <= this.expireAfterMs) continue;
      this.boardSet.delete(board);
      const byUuid = this.boardHosts.get(board.host);
      byUuid?.delete(board.uuid);
      if (byUuid && byUuid.size === 0) this.boardHosts.delete(board.host);
      this.changes++;
    }
    for (const [key, group] of this.groupMap) {
      if (group.gpuCount === 0 && now - group.emptySince > this.expireAfterMs) {
        this.groupMap.delete(key);
        this.changes++;
      }
    }
    if (this.records.size === 0 && this.boardSet.size === 0) {
      this.driverVersions.clear();
      this.labelSets.clear();
    }
    return removed;
  }

  /** Sweeps every `intervalMs` on an unref'd timer until `stop()`; the state is kept and used without it. Safe twice. */
  start(intervalMs = Math.max(1_000, Math.min(30_000, this.expireAfterMs / 4))): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep(), intervalMs);
    this.sweeper.unref();
  }

  /** Stops sweeping; the records stay. Safe twice and before start(). */
  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** GPUs per current state for every group, groups without GPUs included (all zero). */
  groupStateCounts(now = this.now()): Map<FleetGroup, Record<GpuState, number>> {
    const counts = new Map<FleetGroup, Record<GpuState, number>>();
    for (const group of this.groupMap.values()) counts.set(group, zeroStates());
    for (const rec of this.records.values()) {
      const c = counts.get(rec.group);
      if (c) c[this.currentState(rec, now)]++;
    }
    return counts;
  }

  summary(now = this.now()): FleetSummary {
    const byState = zeroStates();
    let up = 0;
    for (const rec of this.records.values()) {
      const isUp = this.isUp(rec, now);
      if (isUp) up++;
      byState[isUp ? rec.state : "unavailable"]++;
    }
    const t = this.totals;
    return {
      gpus: this.records.size,
      up,
      byState,
      totals: {
        observedS: t.observedS,
        realIdleS: t.stateS.free_idle + t.stateS.held_idle + t.stateS.busy_phantom,
        reportedIdleS: t.reportedIdleS,
        stateS: { ...t.stateS },
      },
    };
  }

  private seriesLimit(host: HostInfo, w: GpuWindow, now: number, what: string): "series_limit" {
    if (this.logger && now - this.lastSeriesLimitLogAt >= SERIES_LIMIT_LOG_INTERVAL_MS) {
      this.lastSeriesLimitLogAt = now;
      const kind = w.migBoard ? "MIG boards" : "GPUs";
      const one = w.migBoard ? "MIG board" : "GPU";
      this.logger.warn(
        `The collector holds ${this.maxGpus} ${what}, its limit (--max-gpus): windows of new ${kind} are refused as series_limit ` +
          `until ${kind} silent for the expiry time are removed; the first refused was ${one} ${w.uuid} of ${host.hostname}. ` +
          "Refusals are counted in trueidle_windows_rejected_total and logged at most once a minute.",
        {
          host: host.hostname,
          uuid: w.uuid,
          gpus: this.records.size,
          groups: this.groupMap.size,
          boards: this.boardSet.size,
        },
      );
    }
    return "series_limit";
  }

  private overlap(host: HostInfo, rec: CoveredTime, w: GpuWindow, endMs: number, now: number): "overlap" {
    if (this.logger && now - this.lastOverlapLogAt >= OVERLAP_LOG_INTERVAL_MS) {
      this.lastOverlapLogAt = now;
      const startMs = Number(w.startMs);
      const span = `${iso(startMs)} to ${iso(endMs)}`;
      const why =
        startMs < rec.coveredFloorMs
          ? `reaches across ${iso(rec.coveredFloorMs)}, before which the collector no longer tracks the GPU's time in detail`
          : `partly overlaps time the GPU's windows already covered (${describeCovered(rec.covered, startMs, endMs)})`;
      this.logger.warn(
        `A window of ${w.migBoard ? "MIG board" : "GPU"} ${w.uuid} of ${host.hostname} from ${span} ${why}: it is refused as overlap and its seconds are not ` +
          "counted, since some of them were counted already (the host's clock stepped back, or its agent's window length changed). " +
          `Refusals are counted in trueidle_windows_rejected_total{reason="overlap"} and logged at most once a minute.`,
        {
          host: host.hostname,
          uuid: w.uuid,
          startMs,
          durationMs: w.durationMs,
          covered: coveredPairs(rec.covered),
          floorMs: rec.coveredFloorMs,
        },
      );
    }
    return "overlap";
  }

  /** The host's labels sorted by key, one copy shared by the hosts with the same labels. */
  private sortedLabelsOf(host: HostInfo): SortedLabels {
    let sorted = this.sortedLabels.get(host);
    if (!sorted) {
      const labels = Object.entries(host.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const labelsKey = JSON.stringify(labels);
      sorted = this.labelSets.get(labelsKey, () => ({ labels, labelsKey }));
      this.sortedLabels.set(host, sorted);
    }
    return sorted;
  }

  /** The host's entry, created or moved to the labels of `host`. Call only where a GPU record follows or exists. */
  private hostEntry(host: HostInfo): HostEntry {
    const { labels, labelsKey } = this.sortedLabelsOf(host);
    let entry = this.hosts.get(host.hostname);
    if (!entry) {
      entry = { labelsKey, labels, gpus: new Map() };
      this.hosts.set(host.hostname, entry);
    } else if (entry.labelsKey !== labelsKey) {
      // The host came back with other labels: its GPUs move to them with their next window.
      entry.labelsKey = labelsKey;
      entry.labels = labels;
    }
    return entry;
  }

  /** The group of (model, labels), created when missing; undefined when that would pass `maxGpus` groups. */
  private group(model: string, labels: readonly (readonly [string, string])[], now: number): FleetGroup | undefined {
    const key = JSON.stringify([model, labels]);
    let g = this.groupMap.get(key);
    if (!g) {
      if (this.groupMap.size >= this.maxGpus) return undefined;
      g = {
        key,
        model,
        labels,
        stateS: zeroStates(),
        observedS: 0,
        reportedIdleS: 0,
        reportedBusyS: 0,
        realBusyS: 0,
        gpuCount: 0,
        emptySince: now,
        promLabels: undefined,
      };
      this.groupMap.set(key, g);
    }
    return g;
  }

  private createRecord(hostname: string, host: HostEntry, group: FleetGroup, w: GpuWindow, now: number): GpuRecord {
    group.gpuCount++;
    const rec: GpuRecord = {
      host: hostname,
      uuid: w.uuid,
      index: w.index,
      model: group.model,
      driver: this.driverVersion(w.driverVersion),
      parentUuid: w.parentUuid,
      migProfile: w.migProfile,
      labels: host.labels,
      group,
      observedS: 0,
      stateS: zeroStates(),
      reportedIdleS: 0,
      reportedBusyS: 0,
      realBusyS: 0,
      lastStartMs: -Infinity,
      covered: [],
      coveredFloorMs: -Infinity,
      windowMs: 0,
      freshAt: now,
      state: "unavailable",
      real: 0,
      realSource: "none",
      reportedUtilization: undefined,
      idleStreakS: 0,
      processes: 0,
      powerW: undefined,
      powerFloorW: undefined,
      memUsedBytes: undefined,
      owners: NO_OWNERS,
      promLabels: undefined,
    };
    host.gpus.set(w.uuid, rec);
    this.records.add(rec);
    return rec;
  }

  /** The shared copy of a driver version string. */
  private driverVersion(v: string): string {
    return this.driverVersions.get(v, () => v);
  }

  /** Moves the record to the window's identity; false (nothing changed) when its new group would pass the cap. */
  private relabel(rec: GpuRecord, host: HostEntry, w: GpuWindow): boolean {
    if (rec.model !== w.model || rec.labels !== host.labels) {
      const now = this.now();
      const group = this.group(w.model, host.labels, now);
      if (!group) return false;
      rec.model = group.model;
      rec.labels = host.labels;
      leaveGroup(rec.group, now);
      rec.group = group;
      rec.group.gpuCount++;
    }
    rec.index = w.index;
    if (rec.driver !== w.driverVersion) rec.driver = this.driverVersion(w.driverVersion);
    rec.parentUuid = w.parentUuid;
    rec.migProfile = w.migProfile;
    rec.promLabels = undefined;
    return true;
  }
}

/**
 * Where [from, to) lies against the record's covered time: inside one span, or before the
 * floor ("covered"); apart from every span and not before the floor ("new"); or neither
 * ("overlap").
 */
function coverageOf(rec: CoveredTime, from: number, to: number): "new" | "covered" | "overlap" {
  if (from < rec.coveredFloorMs) return to <= rec.coveredFloorMs ? "covered" : "overlap";
  const c = rec.covered;
  // Newest span first: a window usually comes right after it.
  for (let i = c.length - 2; i >= 0; i -= 2) {
    const spanFrom = c[i] as number;
    const spanTo = c[i + 1] as number;
    if (spanTo <= from) return "new";
    if (spanFrom < to) return spanFrom <= from && to <= spanTo ? "covered" : "overlap";
  }
  return "new";
}

/**
 * Adds [from, to), apart from every span (coverageOf said "new"), merging it with adjacent
 * spans. A span that grows is changed in place (a steady GPU's every window); a span added
 * or two merged make a new array of the exact length, as growing one in place would
 * leave it spare room for several more spans.
 */
function cover(rec: CoveredTime, from: number, to: number): void {
  const c = rec.covered as number[];
  let i = c.length;
  while (i >= 2 && (c[i - 2] as number) > from) i -= 2;
  const joinsBefore = i >= 2 && c[i - 1] === from;
  const joinsAfter = i < c.length && c[i] === to;
  if (joinsBefore && joinsAfter) {
    // The span before ends where the one after ended.
    rec.covered = c.slice(0, i - 1).concat(c.slice(i + 1));
  } else if (joinsBefore) {
    c[i - 1] = to;
  } else if (joinsAfter) {
    c[i] = from;
  } else {
    let spans = c.slice(0, i).concat([from, to], c.slice(i));
    if (spans.length > 2 * MAX_COVERED_SPANS) {
      rec.coveredFloorMs = spans[1] as number;
      spans = spans.slice(2);
    }
    rec.covered = spans;
  }
}

/**
 * What a record keeps of a window's owners: their label fields (a decoded Owner message,
 * with its ids, command and seconds, is many times larger), the record's previous objects
 * where they are unchanged, as they are from window to window while the GPU has the same
 * owners.
 */
function keptOwners(prev: readonly OwnerLabelFields[], owners: readonly Owner[]): readonly OwnerLabelFields[] {
  if (owners.length === 0) return NO_OWNERS;
  if (owners.length === prev.length && owners.every((o, i) => sameLabelFields(prev[i] as OwnerLabelFields, o)))
    return prev;
  return Object.freeze(
    owners.map((o, i) => {
      const p = prev[i];
      if (p !== undefined && sameLabelFields(p, o)) return p;
      return Object.freeze({ namespace: o.namespace, pod: o.pod, container: o.container, job: o.job, user: o.user });
    }),
  );
}

function sameLabelFields(a: OwnerLabelFields, b: OwnerLabelFields): boolean {
  for (const l of OWNER_LABELS) if (a[l] !== b[l]) return false;
  return true;
}

function iso(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms);
}

function coveredPairs(c: readonly number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < c.length; i += 2) out.push(`${iso(c[i] as number)}/${iso(c[i + 1] as number)}`);
  return out;
}

/** The covered spans [from, to) touches, as text. */
function describeCovered(c: readonly number[], from: number, to: number): string {
  const hit: string[] = [];
  for (let i = 0; i + 1 < c.length; i += 2) {
    const a = c[i] as number;
    const b = c[i + 1] as number;
    if (a < to && from < b) hit.push(`${iso(a)} to ${iso(b)}`);
  }
  return hit.join(", ");
}
