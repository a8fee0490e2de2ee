/**
 * The simulator source: GPUs from a scenario file, computed for the instant asked. Used by
 * the demo, by backfill with a simulated clock, and by tests.
 */
import type { GpuReading } from "../../../common/types.js";
import type { GpuSource, SourceStats } from "../source.js";
import { sourceReadingsAt } from "../../sim/evaluate.js";
import type { Scenario } from "../../sim/scenario.js";

export class SimSource implements GpuSource {
  readonly name = "sim";
  private started = false;

  constructor(
    private readonly scenario: Scenario,
    private readonly scenarioPath?: string | undefined,
  ) {}

  describe(): string {
    const mig = this.scenario.gpus.reduce((n, g) => n + (g.mig?.length ?? 0), 0);
    const gpus = `${this.scenario.gpus.length} GPUs${mig > 0 ? `, ${mig} MIG instances` : ""}`;
    return `the simulator (${this.scenarioPath ?? "a built-in scenario"}, ${gpus})`;
  }

  async start(): Promise<void> {
    this.started = true;
  }

  sample(nowMs: number): GpuReading[] {
    if (!this.started) return [];
    return sourceReadingsAt(this.scenario, nowMs);
  }

  async stop(): Promise<void> {
    this.started = false;
  }

  stats(): SourceStats {
    return { restarts: 0, parseErrors: 0 };
  }
}
