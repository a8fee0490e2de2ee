/** Sources by name: `--source` picks one; nothing downstream knows which ran. */
import type { Logger } from "../../common/log.js";
import { TrueidleError } from "../../common/errors.js";
import type { GpuSource } from "./source.js";
import { SimSource } from "./sim/sim-source.js";
import { NvidiaSmiSource } from "./nvidia-smi/nvidia-smi-source.js";
import { NvmlSource } from "./nvml/nvml-source.js";
import { AutoSource } from "./auto-source.js";
import { loadScenario, type Scenario } from "../sim/scenario.js";

export const SOURCE_NAMES = ["auto", "nvml", "nvidia-smi", "sim"] as const;
export type SourceName = (typeof SOURCE_NAMES)[number];

export interface SourceConfig {
  source: SourceName;
  intervalMs: number;
  processIntervalMs: number;
  /** How often the nvidia-smi source reads MIG instances; its default where undefined. */
  migIntervalMs?: number | undefined;
  nvidiaSmiPath: string;
  /** The NVML library: a path, or undefined for the soname the driver installs. */
  nvmlLibPath?: string | undefined;
  scenarioPath?: string | undefined;
  /** A scenario already parsed (the demo); wins over scenarioPath. */
  scenario?: Scenario | undefined;
  logger: Logger;
}

export function createSource(cfg: SourceConfig): GpuSource {
  switch (cfg.source) {
    case "sim": {
      const scenario = cfg.scenario ?? (cfg.scenarioPath ? loadScenario(cfg.scenarioPath) : undefined);
      if (!scenario)
        throw new TrueidleError(
          "bad_config",
          "--source sim needs --scenario FILE (a scenario JSON file; see demo/scenarios/)",
        );
      return new SimSource(scenario, cfg.scenarioPath);
    }
    case "nvidia-smi":
      return nvidiaSmi(cfg);
    case "nvml":
      return nvml(
        cfg,
        "install the NVIDIA driver, point --nvml-lib at its libnvidia-ml.so.1, or use --source nvidia-smi",
      );
    case "auto":
      return new AutoSource(
        () => nvml(cfg),
        () => nvidiaSmi(cfg),
        cfg.logger,
      );
  }
}

function nvidiaSmi(cfg: SourceConfig): NvidiaSmiSource {
  return new NvidiaSmiSource({
    path: cfg.nvidiaSmiPath,
    intervalMs: cfg.intervalMs,
    processIntervalMs: cfg.processIntervalMs,
    ...(cfg.migIntervalMs === undefined ? {} : { migIntervalMs: cfg.migIntervalMs }),
    logger: cfg.logger.child({ source: "nvidia-smi" }),
  });
}

function nvml(cfg: SourceConfig, failHint?: string): NvmlSource {
  return new NvmlSource({
    failHint,
    libPath: cfg.nvmlLibPath,
    intervalMs: cfg.intervalMs,
    processIntervalMs: cfg.processIntervalMs,
    logger: cfg.logger.child({ source: "nvml" }),
  });
}
