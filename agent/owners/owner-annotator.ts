/**
 * Puts owners on the agent's readings, once a tick and without waiting for anything:
 * each GPU's scheduler allocations (allocations.ts: the kubelet's pod-resources API, a job
 * mapping directory) and, for each process on a GPU, who runs it (process-owners.ts: the
 * host's /proc and /etc/passwd).
 *
 * Both read in the background. The allocation sources start at the first `annotate` with
 * readings after `start`, once the GPUs' indexes are known: a device id or a mapping file
 * that names a GPU by index then resolves from the first read, instead of being refused
 * (and counted) as naming no GPU. Allocations are the sources' last good answers. Process
 * owners are looked up when the set of pids on the host's GPUs changes, and again every
 * `processRefreshMs` (a pid reused by a new process is caught by its start time); a tick
 * uses the owners the last lookup found, so a new process has its owner a tick or two
 * after it appears. The readings given are never changed: annotated ones are copies.
 */
import type { Service } from "../../common/lifecycle.js";
import type { Logger } from "../../common/log.js";
import type { GpuOwner, GpuReading } from "../../common/types.js";
import type { AllocationSourceStatus, Allocations } from "./allocations.js";
import type { HostPidView, ProcessOwnerCounters, ProcessOwners } from "./process-owners.js";

/** How often the owners of an unchanged set of pids are looked up again. */
export const DEFAULT_PROCESS_REFRESH_MS = 30_000;

/** The owner sources' state, for the agent's metrics and `agent --once`. */
export interface OwnerStats {
  /** Each configured allocation source, in order. */
  allocations: AllocationSourceStatus[];
  /** Process owner lookups; undefined when process owners are off. */
  processes?:
    | {
        hostRoot: string;
        /** The last host-PID check; undefined before any process was looked up. */
        hostPids: HostPidView | undefined;
        counters: ProcessOwnerCounters;
      }
    | undefined;
}

export interface OwnerAnnotatorOptions {
  /** The schedulers' allocations; none when no integration is configured. */
  allocations?: Allocations | undefined;
  /** Who runs each process; none when process owners are off. */
  processOwners?: ProcessOwners | undefined;
  logger: Logger;
  processRefreshMs?: number;
  now?: () => number;
}

export class OwnerAnnotator implements Service {
  private readonly now: () => number;
  private readonly refreshMs: number;
  /** Index → uuid of the GPUs last read: the allocation sources name GPUs by index sometimes. */
  private readonly byIndex = new Map<number, string>();
  private owners: ReadonlyMap<number, GpuOwner> = new Map();
  private lookedUpKey = "";
  private lookedUpAt = -Infinity;
  private inFlight: Promise<void> | undefined;
  private readonly stopped = new AbortController();
  /** `start` was called; the allocation sources start with the first readings. */
  private wanted = false;
  private allocationsStarted = false;

  constructor(private readonly opts: OwnerAnnotatorOptions) {
    this.now = opts.now ?? Date.now;
    this.refreshMs = opts.processRefreshMs ?? DEFAULT_PROCESS_REFRESH_MS;
  }

  /** The GPUs by index as last read (for the allocation sources' `gpuByIndex`). */
  gpuByIndex = (): ReadonlyMap<number, string> => this.byIndex;

  /** Returns at once; the allocation sources start at the first `annotate` with readings. */
  start(): void {
    this.wanted = true;
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    await this.opts.allocations?.stop();
    await this.inFlight;
  }

  /**
   * Waits until every allocation source has ended its first read and the process owners
   * the last `annotate` asked for are in, or `timeoutMs` passed, whichever is first; true
   * when all came in time. For a single look at the host (`agent --once`), which annotates
   * the same readings again afterwards. Call after an `annotate` that followed `start`.
   */
  async firstAnswers(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    // Not unref()ed: the sources' timers are, so for `agent --once` this wait is what keeps the
    // process running until they answer (with nothing else pending Node would end it, exit 13).
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const all = Promise.all([
      this.allocationsStarted ? this.opts.allocations?.firstReads() : undefined,
      this.inFlight,
    ]).then(() => true);
    try {
      return await Promise.race([all, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  stats(): OwnerStats {
    const po = this.opts.processOwners;
    return {
      allocations: this.opts.allocations?.status() ?? [],
      processes:
        po === undefined
          ? undefined
          : { hostRoot: po.hostRoot, hostPids: po.lastHostPidView(), counters: po.counters() },
    };
  }

  /** The readings with `allocations` and processes' `owner` set; copies where anything was added. */
  annotate(readings: readonly GpuReading[]): GpuReading[] {
    // By index, whole GPUs only: a MIG instance shares its board's index and is allocated by
    // its own uuid, and a board in MIG mode is allocated only through its instances.
    for (const r of readings)
      if (r.parentUuid === undefined && !r.migBoard && this.byIndex.get(r.index) !== r.uuid)
        this.byIndex.set(r.index, r.uuid);
    const alloc = this.opts.allocations;
    if (this.wanted && !this.allocationsStarted && readings.length > 0 && !this.stopped.signal.aborted) {
      this.allocationsStarted = true;
      alloc?.start();
    }
    let out: GpuReading[] = alloc?.enabled ? alloc.attach(readings) : [...readings];
    if (this.opts.processOwners) {
      this.refreshProcessOwners(out);
      const owners = this.owners;
      if (owners.size > 0) {
        out = out.map((r) => {
          if (!r.processes || r.processes.length === 0) return r;
          let changed = false;
          const processes = r.processes.map((p) => {
            const owner = owners.get(p.pid);
            if (owner === undefined || p.owner === owner) return p;
            changed = true;
            return { ...p, owner };
          });
          return changed ? { ...r, processes } : r;
        });
      }
    }
    return out;
  }

  /** Starts a lookup of the owners of every listed pid when the set changed or is due again. */
  private refreshProcessOwners(readings: readonly GpuReading[]): void {
    const po = this.opts.processOwners;
    if (!po || this.inFlight || this.stopped.signal.aborted) return;
    const pids = new Set<number>();
    for (const r of readings) for (const p of r.processes ?? []) pids.add(p.pid);
    const key = [...pids].sort((a, b) => a - b).join(",");
    const now = this.now();
    if (key === this.lookedUpKey && now - this.lookedUpAt < this.refreshMs) return;
    this.lookedUpKey = key;
    this.lookedUpAt = now;
    if (pids.size === 0) {
      this.owners = new Map();
      po.retain([]);
      return;
    }
    this.inFlight = po
      .ownersOf(pids, this.stopped.signal)
      .then((found) => {
        this.owners = found;
        po.retain(pids);
      })
      .catch((err: unknown) => {
        // ProcessOwners never throws by contract; this is the last line of defence.
        this.opts.logger.warn(
          "Looking up who runs the processes on the GPUs failed; they are shown without owners until the next try.",
          { err: String(err) },
        );
      })
      .finally(() => {
        this.inFlight = undefined;
      });
  }
}
