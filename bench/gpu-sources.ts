/**
 * Section (f): agent CPU per GPU-sample by how the agent reads the GPUs — NVML through
 * koffi (the stub libnvidia-ml.so), the nvidia-smi source's long-lived `--query-gpu -lms`
 * loop (the fake nvidia-smi), and, as the baseline, one nvidia-smi run per tick through the
 * same fake, as node-nvidia-smi and Telegraf-style pollers do.
 *
 * Each source runs in an agent process of its own (bench/gpu-source-child.ts), next to a
 * fourth that runs the same tick and pipeline on canned readings (the floor: timers,
 * classification, aggregation, an idle Node). The four run side by side from the same
 * scenario, warm up, then measure the same wall-clock windows, so every ratio pairs figures
 * taken under the same load. The fake is a Node script: its own CPU is shown apart and is
 * not what a real nvidia-smi costs; the agent side of each run (fork/exec, pipes, parsing)
 * is real. The stub runs inside the NVML process and counts in its CPU, standing in for
 * the driver library's own work.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildNvmlStub, hasGpm, prepareNvmlStub } from "../test/helpers/nvml-stub.js";
import { FAKE_NVIDIA_SMI_SCRIPT, writeFakeNvidiaSmi } from "../test/helpers/fake-nvidia-smi.js";
import { parseScenario } from "../agent/sim/scenario.js";
import { spread, type Spread } from "./harness.js";
import type { ChildConfig, ChildResult, WindowResult } from "./gpu-source-child.js";

/** The agent processes of the section: three sources and the floor. */
export const SOURCE_MODES = ["nvml", "nvidia-smi-loop", "spawn-per-tick", "no-source"] as const;
export type SourceMode = (typeof SOURCE_MODES)[number];

export interface GpuSourceBenchOptions {
  intervalMs: number;
  /** Measured windows, back to back, after the warm-up. */
  windows: number;
  ticksPerWindow: number;
  /** From launching the processes to the first window. */
  warmupMs: number;
}

export interface GpuSourceRow {
  mode: SourceMode;
  /** Agent CPU µs per GPU-sample (ticks × GPUs), per window. */
  agentUsPerSample: Spread;
  /** Agent CPU µs per GPU-sample above the no-source floor, paired per window. */
  aboveFloorUsPerSample: Spread;
  /** Fake nvidia-smi CPU µs per GPU-sample (a Node script: not a real nvidia-smi's cost). */
  childUsPerSample: Spread;
  /** NVML agent CPU ÷ this row's, paired per window. */
  nvmlRatio: Spread;
  readingsReceived: number;
  readingsExpected: number;
  errorReadingsAtTicks: number;
  lateTicks: number;
  spawns: number;
  spawnsSkipped: number;
  warnings: string[];
  windows: WindowResult[];
}

export interface GpuSourceBenchResult {
  gpus: number;
  gpmGpus: number;
  intervalMs: number;
  processIntervalMs: number;
  windows: number;
  ticksPerWindow: number;
  samplesPerWindow: number;
  rows: GpuSourceRow[];
  /**
   * NVML ÷ the nvidia-smi rows above the floor, as the ratio of the medians: the floor
   * scatters as much as the sources, so per-window differences can even turn negative.
   */
  nvmlToLoopAboveFloor: number;
  nvmlToSpawnAboveFloor: number;
}

const CHILD = fileURLToPath(new URL("./gpu-source-child.ts", import.meta.url));
const ROOT = resolve(dirname(CHILD), "..");
/** The agent's default; each window then holds one process-list read at most per source. */
const PROCESS_INTERVAL_MS = 5_000;
const H100 = "NVIDIA H100 80GB HBM3";

/** 8 GPUs in mixed, steady states with per-second noise; GPM on four of them. */
export const SOURCE_BENCH_SCENARIO = {
  host: "bench-sources",
  driverVersion: "550.90.07",
  gpus: [
    { model: H100, count: 2, gpm: true, phases: [{ for: "60s", state: "active", noise: 0.1 }] },
    { model: H100, gpm: true, phases: [{ for: "60s", state: "held_idle", noise: 0.1 }] },
    { model: H100, gpm: true, phases: [{ for: "60s", state: "busy_phantom", noise: 0.1 }] },
    { model: H100, gpm: false, phases: [{ for: "60s", state: "active", noise: 0.1 }] },
    { model: H100, gpm: false, phases: [{ for: "60s", state: "held_idle", noise: 0.1 }] },
    { model: H100, gpm: false, phases: [{ for: "60s", state: "free_idle", noise: 0.1 }] },
    { model: H100, gpm: false, phases: [{ for: "60s", state: "free_busy", noise: 0.1 }] },
  ],
};

/**
 * Fails, saying what to do, where the section cannot run: the fake nvidia-smi runs the
 * compiled simulator in dist/, and the stub is compiled with gcc. `npm run bench` calls it
 * first, so a missing piece stops the run before the other sections have taken a minute.
 */
export function checkGpuSourceBench(): void {
  if (!existsSync(join(ROOT, "dist", "agent", "sim", "evaluate.js"))) {
    throw new Error("section (f) runs the fake nvidia-smi, which loads dist/: run `npm run build` first");
  }
  try {
    buildNvmlStub();
  } catch (err) {
    throw new Error(`section (f) needs the stub libnvidia-ml.so, built with gcc: ${(err as Error).message}`, { cause: err });
  }
}

export async function runGpuSourceBench(opts: GpuSourceBenchOptions): Promise<GpuSourceBenchResult> {
  checkGpuSourceBench();

  const dir = mkdtempSync(join(tmpdir(), "trueidle-bench-sources-"));
  try {
    const scenarioFile = join(dir, "scenario.json");
    writeFileSync(scenarioFile, `${JSON.stringify(SOURCE_BENCH_SCENARIO, null, 2)}\n`);
    const scenario = parseScenario(SOURCE_BENCH_SCENARIO, scenarioFile);
    const stub = prepareNvmlStub(dir, scenarioFile);
    const nvidiaSmi = writeFakeNvidiaSmi(dir, scenarioFile);
    const iv = opts.intervalMs;
    // On the tick grid: a multiple of the interval plus half of it.
    const firstWindowAtMs = Math.ceil((Date.now() + opts.warmupMs) / iv) * iv + iv / 2;
    const base = {
      intervalMs: iv, processIntervalMs: PROCESS_INTERVAL_MS, firstWindowAtMs, windows: opts.windows, ticksPerWindow: opts.ticksPerWindow,
      nvidiaSmi, fakeMarker: FAKE_NVIDIA_SMI_SCRIPT, nvmlLib: stub.libPath, scenario: scenarioFile,
    };
    const running: ChildProcess[] = [];
    let results: ChildResult[];
    try {
      results = await Promise.all(SOURCE_MODES.map((mode) => runChild({ ...base, mode }, stub.env, running)));
    } catch (err) {
      // One failed: the others would measure on for nothing, and their files are about to go.
      for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
      throw err;
    }
    const by = new Map(results.map((r) => [r.mode, r]));
    const gpus = scenario.gpus.length;
    for (const r of results) {
      if (r.gpus !== gpus) throw new Error(`the ${r.mode} process saw ${r.gpus} GPUs, the scenario has ${gpus}`);
    }
    const samples = opts.ticksPerWindow * gpus;
    const agentUs = (m: SourceMode): number[] => (by.get(m) as ChildResult).windows.map((w) => w.agentCpuUs / samples);
    const floor = agentUs("no-source");
    const nvml = agentUs("nvml");
    const above = (m: SourceMode): number[] => agentUs(m).map((x, i) => x - (floor[i] as number));
    const rows: GpuSourceRow[] = SOURCE_MODES.map((mode) => {
      const r = by.get(mode) as ChildResult;
      const sum = (f: (w: WindowResult) => number): number => r.windows.reduce((a, w) => a + f(w), 0);
      const mine = agentUs(mode);
      return {
        mode,
        agentUsPerSample: spread(mine),
        aboveFloorUsPerSample: spread(above(mode)),
        childUsPerSample: spread(r.windows.map((w) => w.childCpuUs / samples)),
        nvmlRatio: spread(nvml.map((x, i) => x / (mine[i] as number))),
        readingsReceived: sum((w) => w.readingsReceived),
        readingsExpected: samples * opts.windows,
        errorReadingsAtTicks: sum((w) => w.errorReadingsAtTicks),
        lateTicks: sum((w) => w.lateTicks),
        spawns: sum((w) => w.spawns),
        spawnsSkipped: sum((w) => w.spawnsSkipped),
        warnings: r.warnings,
        windows: r.windows,
      };
    });
    const medianAbove = (m: SourceMode): number => (rows.find((x) => x.mode === m) as GpuSourceRow).aboveFloorUsPerSample.median;
    const ratioAbove = (m: SourceMode): number => medianAbove("nvml") / medianAbove(m);
    return {
      gpus,
      gpmGpus: scenario.gpus.filter(hasGpm).length,
      intervalMs: iv,
      processIntervalMs: PROCESS_INTERVAL_MS,
      windows: opts.windows,
      ticksPerWindow: opts.ticksPerWindow,
      samplesPerWindow: samples,
      rows,
      nvmlToLoopAboveFloor: ratioAbove("nvidia-smi-loop"),
      nvmlToSpawnAboveFloor: ratioAbove("spawn-per-tick"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runChild(cfg: ChildConfig, stubEnv: Record<string, string>, running: ChildProcess[]): Promise<ChildResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, JSON.stringify(cfg)], {
      cwd: ROOT,
      env: { ...process.env, ...stubEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.push(child);
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => { out += d; });
    child.stderr.setEncoding("utf8").on("data", (d: string) => { err += d; });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const line = out.trim().split("\n").pop() ?? "";
      if (code === 0 && line.startsWith("{")) {
        resolvePromise(JSON.parse(line) as ChildResult);
        return;
      }
      reject(new Error(`the ${cfg.mode} agent process of section (f) failed (${signal ?? `exit ${code}`}): ${err.trim().slice(-2000) || out.trim().slice(-2000)}`));
    });
  });
}
