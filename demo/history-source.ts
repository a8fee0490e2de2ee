/**
 * One host of the history fleet as a live sampler source, so that after a backfill the
 * demo goes on with the same fleet in real time: the readings for "now" come from the
 * same model as the backfilled ones.
 */
import type { GpuReading } from "../common/types.js";
import type { GpuSource, SourceStats } from "../agent/sources/source.js";
import type { FleetHistoryModel } from "./fleet-history.js";

export class FleetHistorySource implements GpuSource {
  readonly name = "sim";
  private started = false;

  constructor(
    private readonly model: FleetHistoryModel,
    private readonly hostIndex: number,
  ) {
    if (!model.hosts[hostIndex]) throw new RangeError(`the history fleet has no host ${hostIndex}`);
  }

  async start(): Promise<void> {
    this.started = true;
  }

  sample(nowMs: number): GpuReading[] {
    return this.started ? this.model.readings(this.hostIndex, nowMs) : [];
  }

  async stop(): Promise<void> {
    this.started = false;
  }

  stats(): SourceStats {
    return { restarts: 0, parseErrors: 0 };
  }
}
