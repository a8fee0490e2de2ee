/**
 * Section (f): what the agent costs a GPU node, measured as a node pays it. Real
 * `trueidle agent` processes (bin/trueidle.js, the built dist/) at the default 1 s interval
 * and 10 s window stream to a real collector over gRPC on loopback, side by side, each
 * reading the same 8-GPU scenario its own way:
 *
 * * `--source nvml` on the stub libnvidia-ml.so, whose calls burn what they cost on a real
 *   H200 (test/helpers/nvml-call-cost.ts), so the driver's share of the agent's CPU is there;
 * * `--source nvidia-smi` on the fake nvidia-smi (its long-lived `-lms` loop): the agent,
 *   and apart from it the fake's own processes, a Node script and not what a real nvidia-smi
 *   costs;
 * * `--source sim`, the simulator: the agent with no driver at all;
 * * the baseline: a bare Node process with a 1 s timer and nothing else.
 *
 * After a warm-up the same wall-clock windows are measured in every process. The warm-up is
 * long (five minutes) because V8 compiles the agent's code to optimised code only as each
 * function grows hot, which at one tick a second takes minutes, and every agent process,
 * running the same code at the same pace, compiles in the same seconds: measured any
 * sooner, the figure is the compiler's. The first minute after start is measured and shown
 * apart; the steady state, what a node pays over days, is the figure. CPU is whole-process, from /proc (scripts/gpu-truth/proc-cpu.mjs): every
 * thread (the NVML worker and the driver's work on it included), children counted apart.
 * Per GPU-sample = CPU ÷ (ticks × GPUs). Memory: resident set at the end and its peak.
 *
 * Self-checks (a failure makes the run exit non-zero, never a time): every GPU of every agent
 * spends at least 95 % of its observed seconds in the state its scenario says, the collector
 * received windows covering the measurement, GPM GPUs read through NVML take `real` from
 * SM activity, and each agent's own `process_cpu_seconds_total` agrees with /proc.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseScenario } from "../agent/sim/scenario.js";
import { buildNvmlStub, hasGpm, prepareNvmlStub } from "../test/helpers/nvml-stub.js";
import { writeFakeNvidiaSmi } from "../test/helpers/fake-nvidia-smi.js";
import { H200_CALL_COST_SOURCE } from "../test/helpers/nvml-call-cost.js";
import { parseExposition, sumOf, type ExpositionSample } from "../test/helpers/exposition.js";
import { freePort } from "../test/helpers/ports.js";
import { startTrueidle } from "../test/helpers/trueidle-process.js";
import { readProcessCpu, type ProcessCpu } from "../scripts/gpu-truth/proc-cpu.mjs";
import { spread, type Spread } from "./harness.js";
import { errorMessage } from "../common/errors.js";

export const PROCESS_MODES = ["nvml", "nvidia-smi", "sim", "bare-node"] as const;
export type ProcessMode = (typeof PROCESS_MODES)[number];

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const H100 = "NVIDIA H100 80GB HBM3";

/** 8 GPUs in mixed, steady states with per-second noise; GPM on four of them. */
export const AGENT_BENCH_SCENARIO = {
  host: "bench-agent",
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
/** The state each scenario preset must read as (free_busy: 100 % util, nobody holds it). */
const EXPECTED_STATE: Record<string, string> = {
  active: "active",
  held_idle: "held_idle",
  busy_phantom: "busy_phantom",
  free_idle: "free_idle",
  free_busy: "free_idle",
};

export interface AgentProcessBenchOptions {
  /** From the processes' start to the first measured window. */
  warmupMs: number;
  windows: number;
  /** A measured window: a multiple of the agents' 10 s window, so each holds the same flushes. */
  windowMs: number;
}

export interface AgentProcessRow {
  mode: ProcessMode;
  /** Own CPU µs per GPU-sample over the first minute after start (15 s to 75 s), when measured. */
  firstMinuteUsPerSample?: number | undefined;
  /** The process's own CPU µs per GPU-sample, per window. */
  usPerSample: Spread;
  /** The same, window by window, in order. */
  windowsUsPerSample: number[];
  /** The same minus the bare Node process's in the same window. */
  aboveBareUsPerSample: Spread;
  /** Its descendants' CPU (the fake nvidia-smi), µs per GPU-sample. */
  childUsPerSample: Spread;
  /** Share of one core, own CPU, median window. */
  coreShare: number;
  rssMiB: number;
  peakRssMiB: number;
  /** `process_cpu_seconds_total` from the agent's /metrics at the end ÷ its CPU from /proc. */
  selfReportRatio?: number | undefined;
  notes: string[];
}

export interface AgentProcessBenchResult {
  gpus: number;
  gpmGpus: number;
  intervalMs: number;
  warmupMs: number;
  windowMs: number;
  windows: number;
  samplesPerWindow: number;
  callCost: string;
  rows: AgentProcessRow[];
  /** Per agent: the share of GPU-seconds in their expected state. */
  expectedStateShare: Record<string, number>;
  problems: string[];
}

const INTERVAL_MS = 1_000;
const FIRST_MINUTE_FROM_MS = 15_000;
const FIRST_MINUTE_TO_MS = 75_000;

/** Fails, saying what to do, where the section cannot run: it runs dist/ and a gcc-built stub. */
export function checkAgentProcessBench(): void {
  if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) {
    throw new Error("section (f) runs the built agent (bin/trueidle.js loads dist/): run `npm run build` first");
  }
  try {
    buildNvmlStub();
  } catch (err) {
    throw new Error(`section (f) needs the stub libnvidia-ml.so, built with gcc: ${errorMessage(err)}`, { cause: err });
  }
}

interface Running {
  mode: ProcessMode | "collector";
  child: ChildProcess;
  output: () => string;
  stop: () => Promise<unknown>;
  httpPort?: number | undefined;
}

/** A trueidle command, as the tests run it (test/helpers/trueidle-process.ts). */
function startCommand(mode: Running["mode"], args: string[], env: NodeJS.ProcessEnv, httpPort?: number): Running {
  const p = startTrueidle(args, env);
  return { mode, child: p.child, output: p.output, stop: () => p.stop(), httpPort };
}

/** The baseline: a Node process with a 1 s timer and nothing else. */
function startBareNode(): Running {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000);"], { stdio: "ignore" });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    mode: "bare-node",
    child,
    output: () => "",
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

async function waitFor<T>(
  what: string,
  f: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  procs: Running[],
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    for (const p of procs) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) {
        throw new Error(
          `section (f): the ${p.mode} process exited (${p.child.signalCode ?? p.child.exitCode}) while waiting for ${what}:\n${p.output().slice(-3000)}`,
        );
      }
    }
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`section (f): ${what} did not happen within ${timeoutMs} ms`);
    await sleep(200);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function scrape(port: number): Promise<ExpositionSample[] | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    return res.ok ? parseExposition(await res.text()) : undefined;
  } catch {
    return undefined;
  }
}

export async function runAgentProcessBench(opts: AgentProcessBenchOptions): Promise<AgentProcessBenchResult> {
  checkAgentProcessBench();
  const dir = mkdtempSync(join(tmpdir(), "trueidle-bench-agent-"));
  const procs: Running[] = [];
  try {
    const scenarioFile = join(dir, "scenario.json");
    writeFileSync(scenarioFile, `${JSON.stringify(AGENT_BENCH_SCENARIO, null, 2)}\n`);
    const scenario = parseScenario(AGENT_BENCH_SCENARIO, scenarioFile);
    const stub = prepareNvmlStub(dir, scenarioFile);
    const nvidiaSmi = writeFakeNvidiaSmi(dir, scenarioFile);
    const gpus = scenario.gpus.length;

    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const collector = startCommand(
      "collector",
      [
        "collector",
        "--plaintext",
        "--grpc-listen",
        `127.0.0.1:${grpcPort}`,
        "--http-listen",
        `127.0.0.1:${httpPort}`,
        "--log-level",
        "warn",
      ],
      {},
    );
    procs.push(collector);
    await waitFor(
      "the collector's /healthz",
      async () => {
        try {
          return (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).ok ? true : undefined;
        } catch {
          return undefined;
        }
      },
      30_000,
      procs,
    );

    const sourceArgs: Record<Exclude<ProcessMode, "bare-node">, string[]> = {
      nvml: ["--source", "nvml", "--nvml-lib", stub.libPath],
      "nvidia-smi": ["--source", "nvidia-smi", "--nvidia-smi", nvidiaSmi],
      sim: ["--source", "sim", "--scenario", scenarioFile],
    };
    const byMode = new Map<ProcessMode, Running>();
    for (const mode of PROCESS_MODES) {
      if (mode === "bare-node") {
        byMode.set(mode, startBareNode());
        continue;
      }
      const port = await freePort();
      byMode.set(
        mode,
        startCommand(
          mode,
          [
            "agent",
            ...sourceArgs[mode],
            "--plaintext",
            "--collector",
            `127.0.0.1:${grpcPort}`,
            "--hostname",
            `bench-${mode}`,
            "--http-listen",
            `127.0.0.1:${port}`,
            "--log-level",
            "info",
          ],
          stub.env,
          port,
        ),
      );
    }
    procs.push(...byMode.values());
    const agents = [...byMode.values()].filter((p) => p.mode !== "bare-node");
    await waitFor(
      "every agent connected",
      () => (agents.every((a) => /Connected to the collector/.test(a.output())) ? true : undefined),
      60_000,
      procs,
    );

    // Windows begin half a second after a multiple of 10 s: each holds whole ticks and the same window flushes.
    const startedAt = Date.now();
    const firstAt = Math.ceil((startedAt + opts.warmupMs) / 10_000) * 10_000 + 500;
    const order = PROCESS_MODES.map((m) => byMode.get(m)!);
    const pids = order.map((p) => p.child.pid!);
    const edges: ProcessCpu[][] = [];
    // The first minute after start, apart, when the warm-up is long enough to hold it.
    const early: ProcessCpu[][] = [];
    if (opts.warmupMs >= FIRST_MINUTE_TO_MS) {
      for (const at of [startedAt + FIRST_MINUTE_FROM_MS, startedAt + FIRST_MINUTE_TO_MS]) {
        await waitFor("the first minute", () => (Date.now() >= at ? true : undefined), at - Date.now() + 30_000, procs);
        early.push(readProcessCpu(pids));
      }
    }
    for (let w = 0; w <= opts.windows; w++) {
      const at = firstAt + w * opts.windowMs;
      await waitFor(
        "the next window edge",
        () => (Date.now() >= at ? true : undefined),
        at - Date.now() + 30_000,
        procs,
      );
      edges.push(readProcessCpu(pids));
    }

    const problems: string[] = [];
    const samplesPerWindow = (opts.windowMs / INTERVAL_MS) * gpus;
    const perWindow = (i: number, f: (c: ProcessCpu) => number): number[] =>
      edges.slice(1).map((e, w) => (f(e[i]!) - f(edges[w]![i]!)) / 1000 / samplesPerWindow);
    const bare = perWindow(PROCESS_MODES.indexOf("bare-node"), (c) => c.selfNs);
    const rows: AgentProcessRow[] = PROCESS_MODES.map((mode, i) => {
      const own = perWindow(i, (c) => c.selfNs);
      const notes: string[] = [];
      const threadChanges = edges
        .slice(1)
        .filter((e, w) => e[i]!.threads.join() !== edges[w]![i]!.threads.join()).length;
      if (threadChanges > 0) notes.push(`threads came or went in ${threadChanges} window(s): their CPU may be short`);
      if (!edges.every((e) => e[i]!.precise)) notes.push("CPU from clock ticks (10 ms), not schedstat");
      if (!edges[edges.length - 1]![i]!.alive) problems.push(`the ${mode} process died during the measurement`);
      const last = edges[edges.length - 1]![i]!;
      const earlySamples = ((FIRST_MINUTE_TO_MS - FIRST_MINUTE_FROM_MS) / INTERVAL_MS) * gpus;
      return {
        mode,
        firstMinuteUsPerSample:
          early.length === 2 ? (early[1]![i]!.selfNs - early[0]![i]!.selfNs) / 1000 / earlySamples : undefined,
        usPerSample: spread(own),
        windowsUsPerSample: own,
        aboveBareUsPerSample: spread(own.map((x, w) => x - bare[w]!)),
        childUsPerSample: spread(perWindow(i, (c) => c.childrenNs)),
        coreShare: (spread(own).median * samplesPerWindow) / (opts.windowMs * 1000),
        rssMiB: (last.rssKiB ?? 0) / 1024,
        peakRssMiB: (last.hwmKiB ?? 0) / 1024,
        notes,
      };
    });

    // The agents' own account of their CPU, against /proc over their whole life.
    for (const row of rows) {
      const p = byMode.get(row.mode)!;
      if (p.httpPort === undefined) continue;
      const m = await scrape(p.httpPort);
      const reported = m ? sumOf(m, "process_cpu_seconds_total") : Number.NaN;
      const proc = readProcessCpu([p.child.pid!])[0]!;
      row.selfReportRatio = reported / (proc.selfNs / 1e9);
      if (!(row.selfReportRatio > 0.9 && row.selfReportRatio < 1.1)) {
        problems.push(
          `${row.mode}: process_cpu_seconds_total ${reported} s, /proc says ${(proc.selfNs / 1e9).toFixed(3)} s`,
        );
      }
    }

    // States: every GPU of every agent in the state its scenario gives it, through the collector.
    const m = await scrape(httpPort);
    if (!m) throw new Error("section (f): the collector's /metrics did not answer");
    const expectedStateShare: Record<string, number> = {};
    const measuredS = (opts.windows * opts.windowMs) / 1000;
    for (const mode of PROCESS_MODES) {
      if (mode === "bare-node") continue;
      const host = `bench-${mode}`;
      let inState = 0;
      let observed = 0;
      for (const g of scenario.gpus) {
        const want = EXPECTED_STATE[g.phases[0]!.state ?? "free_idle"]!;
        const labels = { host, gpu: String(g.index) };
        const obs = sumOf(m, "trueidle_gpu_observed_seconds_total", labels);
        const ok = sumOf(m, "trueidle_gpu_state_seconds_total", { ...labels, state: want });
        inState += ok;
        observed += obs;
        if (obs < measuredS)
          problems.push(
            `${host} GPU ${g.index}: the collector has ${obs} observed seconds, fewer than the ${measuredS} s measured`,
          );
        if (!(ok >= 0.95 * obs)) problems.push(`${host} GPU ${g.index}: ${ok} of ${obs} s in ${want}`);
        if (mode === "nvml" && hasGpm(g) && want !== "free_idle") {
          const real = m.find(
            (s) =>
              s.name === "trueidle_gpu_real_utilization_ratio" &&
              s.labels["host"] === host &&
              s.labels["gpu"] === String(g.index),
          );
          if (real?.labels["source"] !== "sm_active")
            problems.push(
              `${host} GPU ${g.index}: real comes from ${real?.labels["source"] ?? "nowhere"}, not GPM SM activity`,
            );
        }
      }
      expectedStateShare[mode] = observed > 0 ? inState / observed : 0;
    }

    return {
      gpus,
      gpmGpus: scenario.gpus.filter(hasGpm).length,
      intervalMs: INTERVAL_MS,
      warmupMs: opts.warmupMs,
      windowMs: opts.windowMs,
      windows: opts.windows,
      samplesPerWindow,
      callCost: H200_CALL_COST_SOURCE,
      rows,
      expectedStateShare,
      problems,
    };
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}

const ROW_NAMES: Readonly<Record<ProcessMode, string>> = {
  nvml: "trueidle agent --source nvml (stub, H200 call costs)",
  "nvidia-smi": "trueidle agent --source nvidia-smi (fake -lms loop)",
  sim: "trueidle agent --source sim",
  "bare-node": "baseline: bare Node, one 1 s timer",
};

/** `npm run bench`: five minutes of warm-up (the first minute measured apart), then 6 windows of 20 s. */
export const AGENT_PROCESS_FULL: AgentProcessBenchOptions = { warmupMs: 300_000, windows: 6, windowMs: 20_000 };
/** `--quick`: a smoke test of the section; figures include V8 still compiling. */
export const AGENT_PROCESS_QUICK: AgentProcessBenchOptions = { warmupMs: 15_000, windows: 3, windowMs: 10_000 };

/** Targets of the design (DESIGN.md "Cost": 0.2 % of a core on an 8-GPU node), reported, never asserted. */
export const AGENT_PROCESS_TARGETS: Readonly<Partial<Record<ProcessMode, number>>> = { nvml: 250, sim: 100 };

export function agentProcessLines(r: AgentProcessBenchResult, table: (rows: string[][]) => string): string[] {
  const us = (x: number): string => x.toFixed(0);
  const range = (s: Spread): string => `[${us(s.min)}–${us(s.max)}]`;
  const out = [
    `(f) The agent's whole process, as a GPU node pays it: ${r.gpus} GPUs (GPM on ${r.gpmGpus}), a sample every ${r.intervalMs / 1000} s, ` +
      `10 s windows streamed to a collector; after ${r.warmupMs / 1000} s, ${r.windows} windows of ${r.windowMs / 1000} s (${r.samplesPerWindow} GPU-samples each) measured in every process side by side`,
    table([
      [
        "process",
        "CPU µs per GPU-sample",
        "range",
        "above bare Node",
        "share of a core",
        "first minute",
        "children µs/sample",
        "RSS MiB (peak)",
        "target",
      ],
      ...r.rows.map((x) => {
        const target = AGENT_PROCESS_TARGETS[x.mode];
        return [
          ROW_NAMES[x.mode],
          us(x.usPerSample.median),
          range(x.usPerSample),
          x.mode === "bare-node" ? "" : us(x.aboveBareUsPerSample.median),
          `${(x.coreShare * 100).toFixed(3)}%`,
          x.firstMinuteUsPerSample === undefined ? "" : us(x.firstMinuteUsPerSample),
          x.mode === "nvidia-smi" ? us(x.childUsPerSample.median) : "",
          `${x.rssMiB.toFixed(0)} (${x.peakRssMiB.toFixed(0)})`,
          target === undefined ? "" : `≤ ${target}: ${x.usPerSample.median <= target ? "met" : "NOT met"}`,
        ];
      }),
    ]),
    `  CPU: every thread of the process from /proc (schedstat), the driver stub's work included; the stub's calls cost what they cost on a real driver: ${r.callCost}.`,
    "  Children: the fake nvidia-smi is a Node script, so its column is not what a real nvidia-smi costs. Share of a core: own CPU ÷ wall time.",
    "  First minute: own CPU from 15 s to 75 s after start, while V8 still compiles the agent's hot code (shown when the warm-up holds it).",
    `  States: ${Object.entries(r.expectedStateShare)
      .map(([m, s]) => `${m} ${(s * 100).toFixed(1)}%`)
      .join(", ")} of GPU-seconds in the state the scenario gives (self-check ≥ 95% per GPU).`,
  ];
  for (const x of r.rows) {
    if (x.selfReportRatio !== undefined)
      out.push(`  ${x.mode}: its own process_cpu_seconds_total ÷ /proc = ${x.selfReportRatio.toFixed(3)}`);
    for (const n of x.notes) out.push(`  ${x.mode}: ${n}`);
  }
  for (const p of r.problems) out.push(`  SELF-CHECK FAILED: ${p}`);
  return out;
}

async function main(): Promise<void> {
  const quick = process.argv.includes("--quick");
  const { textTable } = await import("./harness.js");
  const r = await runAgentProcessBench(quick ? AGENT_PROCESS_QUICK : AGENT_PROCESS_FULL);
  for (const line of agentProcessLines(r, textTable)) console.log(line);
  if (r.problems.length > 0) process.exitCode = 1;
}

// Also runs alone: node --import tsx bench/agent-process.ts [--quick]
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
