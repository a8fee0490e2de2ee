/**
 * The latest line of every GPU nvidia-smi has shown, with its arrival time: what
 * `sample(now)` answers from.
 *
 * Contracts: a GPU is known once seen, keyed by uuid, and stays known. Error lines name a
 * GPU by PCI bus id only; they are matched to the uuid last seen on that bus, and a bus
 * never seen with a uuid (a GPU lost before the sampler started) gets a placeholder
 * `unknown-<bus id>` so it still counts as unavailable capacity. A snapshot never reads
 * a stale or failed GPU as zeros: it carries `error` and no signals.
 */
import type { GpuProcess, GpuReading } from "../../../common/types.js";
import { busIdKey } from "./parse-query-gpu.js";

interface GpuEntry {
  /** The latest valid reading, without processes. */
  reading: GpuReading;
  /** Arrival of the GPU's latest line, valid or not. */
  at: number;
  /** Set when that latest line was an error. */
  error?: string | undefined;
}

export class LatestReadings {
  private readonly gpus = new Map<string, GpuEntry>();
  private readonly uuidByBus = new Map<string, string>();

  get size(): number {
    return this.gpus.size;
  }

  /** A parsed line with a uuid; `reading.error` set means it was no valid reading. */
  record(reading: GpuReading, at: number): void {
    const key = reading.busId !== undefined ? busIdKey(reading.busId) : undefined;
    if (key !== undefined) {
      const placeholder = placeholderUuid(key);
      if (reading.uuid !== placeholder) this.gpus.delete(placeholder);
      this.uuidByBus.set(key, reading.uuid);
    }
    if (reading.error !== undefined) {
      const { error, ...rest } = reading;
      this.gpus.set(reading.uuid, { reading: this.gpus.get(reading.uuid)?.reading ?? rest, at, error });
      return;
    }
    this.gpus.set(reading.uuid, { reading, at });
  }

  /**
   * An error line for a bus id. `position` is the line's place in a whole snapshot
   * (nvidia-smi lists GPUs in index order), the index for a GPU never seen.
   */
  recordError(busId: string, message: string, at: number, position?: number): void {
    const key = busIdKey(busId) ?? busId;
    const uuid = this.uuidByBus.get(key);
    const prev = uuid !== undefined ? this.gpus.get(uuid) : undefined;
    if (uuid !== undefined && prev) {
      this.gpus.set(uuid, { reading: prev.reading, at, error: message });
      return;
    }
    const placeholder = placeholderUuid(key);
    const index = this.gpus.get(placeholder)?.reading.index ?? position ?? this.nextIndex();
    this.uuidByBus.set(key, placeholder);
    this.gpus.set(placeholder, { reading: { uuid: placeholder, index, model: "unknown", busId }, at, error: message });
  }

  /**
   * Every known GPU ordered by index. A GPU whose latest line is older than
   * `staleAfterMs` gets `staleError(ageMs)`; `processes` per uuid when the process list is
   * known (a GPU without an entry has none), undefined when it is not.
   */
  snapshot(
    nowMs: number,
    staleAfterMs: number,
    staleError: (ageMs: number) => string,
    processes: ReadonlyMap<string, GpuProcess[]> | undefined,
  ): GpuReading[] {
    const out: GpuReading[] = [];
    for (const e of this.gpus.values()) {
      const r = e.reading;
      const identity: GpuReading = {
        uuid: r.uuid,
        index: r.index,
        model: r.model,
        busId: r.busId,
        driverVersion: r.driverVersion,
      };
      if (e.error !== undefined) out.push({ ...identity, error: e.error });
      else if (nowMs - e.at > staleAfterMs) out.push({ ...identity, error: staleError(nowMs - e.at) });
      else
        out.push({
          ...r,
          processes: processes === undefined ? undefined : (processes.get(r.uuid) ?? []).map((p) => ({ ...p })),
        });
    }
    return out.sort((a, b) => a.index - b.index);
  }

  private nextIndex(): number {
    let max = -1;
    for (const e of this.gpus.values()) max = Math.max(max, e.reading.index);
    return max + 1;
  }
}

function placeholderUuid(busKey: string): string {
  return `unknown-${busKey}`;
}
