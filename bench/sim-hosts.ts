/**
 * The simulated 8-GPU hosts the benchmarks read from: the scenario format of agent/sim,
 * so readings come from the same code as the demo and the fake nvidia-smi.
 *
 * Each GPU cycles through every state preset, rotated by its index and with its own phase
 * lengths, plus noise, so neighbouring GPUs disagree and every value changes over time. The
 * first GPU of some templates drops out for a minute each cycle (an error line), as real
 * fleets do.
 */
import { parseScenario, type Scenario } from "../agent/sim/scenario.js";

export const GPUS_PER_HOST = 8;

/** Host templates: one model per host, as in real fleets. */
const TEMPLATES: ReadonlyArray<{ model: string; flaky: boolean }> = [
  { model: "NVIDIA H100 80GB HBM3", flaky: true },
  { model: "NVIDIA A100-SXM4-80GB", flaky: false },
  { model: "NVIDIA L40S", flaky: false },
  { model: "NVIDIA H200", flaky: true },
];

export const TEMPLATE_COUNT = TEMPLATES.length;

const PRESETS = ["active", "held_idle", "busy_phantom", "free_idle", "free_busy"] as const;
/** Phase lengths in seconds, paired with PRESETS after rotation. */
const LENGTHS_S = [420, 180, 120, 300, 60] as const;

/** The scenario of host template `template` (taken modulo the template count), named `host`. */
export function hostScenario(template: number, host: string): Scenario {
  const t = TEMPLATES[template % TEMPLATES.length] ?? TEMPLATES[0]!;
  const gpus = [];
  for (let i = 0; i < GPUS_PER_HOST; i++) {
    const phases: Array<Record<string, unknown>> = [];
    for (let p = 0; p < PRESETS.length; p++) {
      const preset = PRESETS[(p + i) % PRESETS.length];
      const lengthS = (LENGTHS_S[(p + 2 * i) % LENGTHS_S.length] ?? 60) + 15 * i;
      phases.push({ for: `${lengthS}s`, state: preset, noise: 0.15 });
    }
    if (t.flaky && i === 0) phases.push({ for: "60s", state: "unavailable", error: "Unknown Error" });
    gpus.push({ model: t.model, phases });
  }
  return parseScenario({ host, driverVersion: "550.90.07", originMs: 0, gpus }, `bench template ${template}`);
}
