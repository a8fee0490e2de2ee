/** Sources by name: `--source` picks one; nothing downstream knows which ran. */
import type { Logger } from "../../common/log.js";
import { TrueidleError } from "../../common/errors.js";
import type { GpuSource } from "./source.js";
import { SimSource } from "./sim/sim-source.js";
import { NvidiaSmiSource } from "./nvidia-smi/nvidia-smi-source.js";
import { loadScenario, type Scenario } from "../sim/scenario.js";

export const SOURCE_NAMES = ["nvidia-smi", "sim"] as const;
export type SourceName = (typeof SOURCE_NAMES)[number];

export interface SourceConfig {
  source: SourceName;
  intervalMs: number;
  processIntervalMs: number;
  nvidiaSmiPath: string;
  scenarioPath?: string | undefined;
  /** A scenario already parsed (the demo); wins over scenarioPath. */
  scenario?: Scenario | undefined;
  logger: Logger;
}

export function createSource(cfg: SourceConfig): GpuSource {
  switch (cfg.source) {
    case "sim": {
      const scenario = cfg.scenario ?? (cfg.scenarioPath ? loadScenario(cfg.scenarioPath) : undefined);
      if (!scenario) throw new TrueidleError("bad_config", "--source sim needs --scenario FILE (a scenario JSON file; see demo/scenarios/)");
      return new SimSource(scenario);
    }
    case "nvidia-smi":
      return new NvidiaSmiSource({
        path: cfg.nvidiaSmiPath,
        intervalMs: cfg.intervalMs,
        processIntervalMs: cfg.processIntervalMs,
        logger: cfg.logger.child({ source: "nvidia-smi" }),
      });
  }
}
