/**
 * Schedulers' allocations of GPUs (DESIGN "The idle model": a GPU a scheduler allocated is
 * held): the interface each integration implements — the kubelet's pod-resources API
 * (pod-resources.ts), a batch system's job mapping directory (job-mapping.ts) — and the
 * combiner the agent asks, once a second, for the owners of each GPU it read.
 *
 * Lifecycle: `start` returns at once and reading runs in the background; `stop` is safe
 * twice and before `start`. `current()` is synchronous and cheap: the last good answer,
 * never a call to the scheduler, so nothing a scheduler does can stall sampling.
 */
import type { Service } from "../../common/lifecycle.js";
import type { GpuOwner, GpuReading } from "../../common/types.js";

/** Counters every allocation source keeps (each adds its own). */
export interface AllocationSourceStats {
  /** Reads (a List call, a scan of the mapping directory) that gave an answer. */
  reads: number;
  /** Reads that gave no answer, by reason (each source's table of reasons). */
  failures: Record<string, number>;
  /** Things in an answer that could not be used, by kind (a device id form, a bad file). */
  rejected: Record<string, number>;
  /** Times the last good answer grew too old and was dropped. */
  staleDrops: number;
  /** Owners left out because a GPU had more than the per-GPU bound. */
  ownersDropped: number;
  /** When the answer `current()` returns was read (ms since the epoch); undefined when none. */
  lastGoodMs: number | undefined;
}

export interface AllocationSource extends Service {
  /** Where its owners come from; also their `via`. */
  readonly name: "pod_resources" | "job_mapping";
  /** What it reads (the kubelet's socket, the mapping directory), for messages. */
  readonly where: string;
  start(): void;
  stop(): Promise<void>;
  /**
   * Resolves once the first read after `start` has ended, with an answer or without (and
   * at once after `stop`); never rejects. A single look at the host (`agent --once`) waits
   * for it, bounded, so that it shows owners.
   */
  firstRead(): Promise<void>;
  /**
   * GPU uuid → the pods or jobs it is allocated to; a GPU allocated to nobody is absent.
   * Empty while `ready()` is false.
   */
  current(): ReadonlyMap<string, GpuOwner[]>;
  /**
   * True while the source has an answer no older than its bound: then a GPU absent from
   * `current()` is known to be unallocated. False before the first answer, and after the
   * scheduler stopped answering for longer than the bound (a stale allocation must not
   * hold a GPU forever), or where the integration is absent (no kubelet socket).
   */
  ready(): boolean;
  stats(): AllocationSourceStats;
}

/** One source as the agent's metrics and `agent --once` show it. */
export interface AllocationSourceStatus {
  name: AllocationSource["name"];
  where: string;
  /** True while its answer is current (AllocationSource.ready). */
  ready: boolean;
  stats: AllocationSourceStats;
}

/** Owners one GPU carries at most, across sources; the rest are counted in `ownersDropped`. */
export const DEFAULT_MAX_ALLOCATIONS_PER_GPU = 16;

/**
 * An owner's identity: what it is, not which process of it (pid and command are left out).
 * The same pod container or job reported twice (an index file and a uuid file, two
 * replicas) is one owner; a window counts each owner's seconds once (agent/pipeline.ts).
 * Cached per owner object: sources hand out the same objects tick after tick.
 */
export function ownerKey(o: GpuOwner): string {
  let k = ownerKeys.get(o);
  if (k === undefined) {
    const f = (v: string | undefined): string => v ?? "";
    k = JSON.stringify([
      o.via,
      f(o.namespace),
      f(o.pod),
      f(o.container),
      f(o.podUid),
      f(o.job),
      f(o.step),
      f(o.user),
      f(o.runtime),
      f(o.containerId),
    ]);
    ownerKeys.set(o, k);
  }
  return k;
}
const ownerKeys = new WeakMap<GpuOwner, string>();

/**
 * Merges per-source maps into one: owners in source order, duplicates once, at most `max`
 * per GPU. Returns the merged map and how many owners the bound left out.
 */
export function mergeAllocations(
  maps: readonly ReadonlyMap<string, readonly GpuOwner[]>[],
  max = DEFAULT_MAX_ALLOCATIONS_PER_GPU,
): { byGpu: Map<string, GpuOwner[]>; dropped: number } {
  const byGpu = new Map<string, GpuOwner[]>();
  const seen = new Map<string, Set<string>>();
  let dropped = 0;
  for (const m of maps) {
    for (const [uuid, owners] of m) {
      let list = byGpu.get(uuid);
      let keys = seen.get(uuid);
      if (list === undefined || keys === undefined) {
        list = [];
        keys = new Set();
        byGpu.set(uuid, list);
        seen.set(uuid, keys);
      }
      for (const o of owners) {
        const k = ownerKey(o);
        if (keys.has(k)) continue;
        keys.add(k);
        if (list.length >= max) dropped++;
        else list.push(o);
      }
    }
  }
  return { byGpu, dropped };
}

/**
 * The agent's view of every allocation source together. With no source configured it
 * answers `undefined` for every GPU (no integration is on); otherwise a GPU's owners from
 * the sources that are ready, [] when none of them allocated it, and `undefined` while no
 * source is ready (nothing is known: no kubelet socket yet, or every source stale).
 */
export class Allocations implements Service {
  private readonly sources: readonly AllocationSource[];
  private readonly max: number;
  private dropped = 0;

  constructor(sources: readonly AllocationSource[], options: { maxPerGpu?: number } = {}) {
    this.sources = sources;
    this.max = options.maxPerGpu ?? DEFAULT_MAX_ALLOCATIONS_PER_GPU;
  }

  /** True when at least one integration is configured. */
  get enabled(): boolean {
    return this.sources.length > 0;
  }

  start(): void {
    for (const s of this.sources) s.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.stop()));
  }

  /** Resolves once every source has ended its first read (AllocationSource.firstRead). */
  async firstReads(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.firstRead()));
  }

  /** GPU uuid → owners from every ready source; undefined when no source is ready. */
  snapshot(): ReadonlyMap<string, GpuOwner[]> | undefined {
    const ready = this.sources.filter((s) => s.ready());
    if (ready.length === 0) return undefined;
    const { byGpu, dropped } = mergeAllocations(
      ready.map((s) => s.current()),
      this.max,
    );
    this.dropped += dropped;
    return byGpu;
  }

  /** Each reading with `allocations` set as GpuReading documents it; the inputs are not changed. */
  attach(readings: readonly GpuReading[]): GpuReading[] {
    const snap = this.snapshot();
    // Nothing known (no kubelet on this host, every source stale): the readings as they are, no copies each tick.
    if (snap === undefined)
      return readings.map((r) => (r.allocations === undefined ? r : { ...r, allocations: undefined }));
    return readings.map((r) => ({ ...r, allocations: [...(snap.get(r.uuid) ?? [])] }));
  }

  /** Owners the per-GPU bound left out while merging, since start. */
  get ownersDropped(): number {
    return this.dropped;
  }

  stats(): Record<string, AllocationSourceStats> {
    const out: Record<string, AllocationSourceStats> = {};
    for (const s of this.sources) out[s.name] = s.stats();
    return out;
  }

  /** Each source in order: what it reads, whether its answer is current, its counters. */
  status(): AllocationSourceStatus[] {
    return this.sources.map((s) => ({ name: s.name, where: s.where, ready: s.ready(), stats: s.stats() }));
  }
}
