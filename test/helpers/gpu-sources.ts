/**
 * The two ways the agent reads real GPUs, as the end-to-end tests run it: the fake
 * nvidia-smi (test/helpers/fake-nvidia-smi.ts) and NVML through the stub libnvidia-ml.so
 * (test/helpers/nvml-stub.ts), both driven by the same scenario. A test that loops over
 * GPU_SOURCES checks the same expected states through each.
 *
 * The stub is compiled with the machine's gcc; without gcc, `prepare` throws (the tests
 * fail, they do not skip).
 */
import { resolve } from "node:path";
import type { ExpositionSample } from "./exposition.js";
import { writeFakeNvidiaSmi } from "./fake-nvidia-smi.js";
import { prepareNvmlStub, type NvmlStub } from "./nvml-stub.js";

export interface PreparedSource {
  /** `--source ... --nvidia-smi PATH` or `--source nvml --nvml-lib PATH`. */
  flags: string[];
  /**
   * The same choice as TRUEIDLE_* settings for deployments that keep the default
   * `--source auto`: the chosen source is there and the other one is not, so auto picks
   * the intended one on any machine (a real driver's library or nvidia-smi included).
   */
  autoSettings: Record<string, string>;
  /** What the process needs besides (the stub's table and control file). */
  env: Record<string, string>;
  /** Set for the NVML source. */
  stub?: NvmlStub | undefined;
  /** What `agent --once` prints on its `Source:` line, and the agent logs, for this source. */
  sourceLine: RegExp;
  /** The log line of `--source auto` choosing it. */
  autoChoice: RegExp;
}

export interface GpuSourceKind {
  name: "nvidia-smi" | "nvml";
  /** Writes what the source needs for `scenario` (an object or a scenario file) into `dir`. */
  prepare(dir: string, scenario: object | string): PreparedSource;
}

export const NVIDIA_SMI_SOURCE: GpuSourceKind = {
  name: "nvidia-smi",
  prepare(dir, scenario) {
    const smi = writeFakeNvidiaSmi(dir, scenario);
    return {
      flags: ["--source", "nvidia-smi", "--nvidia-smi", smi],
      autoSettings: { TRUEIDLE_NVIDIA_SMI: smi, TRUEIDLE_NVML_LIB: resolve(dir, "no-such-libnvidia-ml.so.1") },
      env: {},
      sourceLine: /^Source: nvidia-smi \(/m,
      autoChoice: /Source chosen: nvidia-smi\b/,
    };
  },
};

export const NVML_SOURCE: GpuSourceKind = {
  name: "nvml",
  prepare(dir, scenario) {
    const stub = prepareNvmlStub(dir, scenario);
    return {
      flags: ["--source", "nvml", "--nvml-lib", stub.libPath],
      autoSettings: { TRUEIDLE_NVML_LIB: stub.libPath, TRUEIDLE_NVIDIA_SMI: resolve(dir, "no-such-nvidia-smi") },
      env: stub.env,
      stub,
      sourceLine: /^Source: NVML \(/m,
      autoChoice: /Source chosen: NVML\b/,
    };
  },
};

export const GPU_SOURCES: readonly GpuSourceKind[] = [NVIDIA_SMI_SOURCE, NVML_SOURCE];

/**
 * States of demo/scenarios/gpu-c01.json's GPUs by index, the same at every instant; GPUs 1
 * and 2 cycle (active 10 s, held_idle 20 s) and are left out.
 */
export const GPU_C01_STEADY_STATES: ReadonlyMap<number, string> = new Map([
  [0, "active"], // 7 % utilization.gpu, NVENC at 70 %
  [3, "held_idle"],
  [4, "held_idle"],
  [5, "busy_phantom"],
  [6, "free_idle"],
  [7, "free_idle"],
]);

/** GPU index → state, from `trueidle_gpu_state{...} 1` samples of a collector's /metrics for `host`. */
export function gpuStatesOf(samples: readonly ExpositionSample[], host: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const s of samples) {
    if (s.name === "trueidle_gpu_state" && s.value === 1 && s.labels["host"] === host)
      out.set(Number(s.labels["gpu"]), s.labels["state"]!);
  }
  return out;
}

/** The entries of `states` at the indexes `expected` names. */
export function pick(
  states: ReadonlyMap<number, string | undefined>,
  expected: ReadonlyMap<number, string>,
): Map<number, string | undefined> {
  return new Map([...expected.keys()].map((i) => [i, states.get(i)]));
}

/** One host's GPUs, one per state (GPU 4 unavailable); GPU 0 has GPM (SM activity through NVML), the others do not. */
export function oneGpuPerState(host: string): object {
  const h100 = "NVIDIA H100 80GB HBM3";
  return {
    host,
    driverVersion: "550.90.07",
    gpus: [
      { model: h100, gpm: true, phases: [{ for: "1h", state: "active" }] },
      { model: h100, phases: [{ for: "1h", state: "busy_phantom" }] },
      { model: h100, phases: [{ for: "1h", state: "held_idle" }] },
      { model: h100, phases: [{ for: "1h", state: "free_busy" }] },
      { model: h100, phases: [{ for: "1h", error: "Unknown Error" }] },
    ],
  };
}
