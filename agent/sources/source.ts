/**
 * A sampler source: NVML, nvidia-smi and the scenario simulator implement this one
 * interface, and nothing downstream knows which one ran.
 *
 * Lifecycle: `start` returns once the GPUs are discovered (or fails with a clear error);
 * sampling then runs in the background. `sample(now)` is cheap and synchronous: it returns
 * the freshest reading of every known GPU, with `error` set on a GPU that has no valid
 * reading (lost, read error, sampler down or silent). `stop` is safe twice and before
 * `start`.
 */
import type { Service } from "../../common/lifecycle.js";
import type { GpuReading } from "../../common/types.js";

export interface SourceStats {
  /** Times the underlying sampler (process, library) was restarted. */
  restarts: number;
  /** Lines, records or values from the source that could not be used; each reads as missing. */
  parseErrors: number;
}

export interface GpuSource extends Service {
  readonly name: string;
  start(signal?: AbortSignal): Promise<void>;
  sample(nowMs: number): GpuReading[];
  stop(): Promise<void>;
  stats(): SourceStats;
  /** One line for people: what this source reads and how (shown by `agent --once`). */
  describe?(): string;
  /** Driver calls stuck past their deadline; while any is, the process cannot exit cleanly. */
  hungCalls?(): number;
}
