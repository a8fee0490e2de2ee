/**
 * The kit that checks trueidle against a real GPU (scripts/gpu-truth/), run end to end here
 * in its dry-run mode: the stub libnvidia-ml.so and the fake nvidia-smi stand in for the
 * driver, dry-run.ts for loads.py and truth.py, all from one scenario with loads.py's seven
 * phases (3 s each). The table must say what the scenario makes true: through the stub
 * every phase is in its expected state and `real` is the GPM SM activity the truth read;
 * through nvidia-smi there is no SM activity and `real` is the power estimate.
 * And compare.mjs on its own: a GPU without GPM, a source that printed nothing.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/trueidle-process.js";

const run = promisify(execFile);
const RUN_SH = path.join(REPO_ROOT, "scripts", "gpu-truth", "run.sh");
const COMPARE = path.join(REPO_ROOT, "scripts", "gpu-truth", "compare.mjs");

/** loads.py's phases with the SM activity (percent) dry-run.ts gives each. */
const PHASES: ReadonlyArray<[string, string[], number]> = [
  ["free", ["free_idle"], 0],
  ["held", ["held_idle"], 0],
  ["spin", ["busy_phantom"], 0.8],
  ["matmul", ["active"], 93],
  ["memcopy", ["active"], 55],
  ["batch1", ["held_idle", "busy_phantom", "active"], 6],
  ["emptied", ["held_idle"], 0],
];

interface SourceFigures {
  samples: number;
  seconds: number;
  inExpected: number;
  share: number | null;
  realMean: number | null;
  realSources: Array<[string, number]>;
  smMean: number | null;
  states: Array<[string, number]>;
}
interface Comparison {
  gpu: number;
  settleS: number;
  sources: Array<{ name: string; intervalS: number; lines: number }>;
  phases: Array<{
    phase: string;
    expect: string[];
    truth: { rows: number; utilMean: number | null; smMean: number | null };
    sources: Record<string, SourceFigures>;
  }>;
  overall: Record<string, { samples: number; share: number | null; realVsTruthSmPp: number | null }>;
}

/** The table's rows as cells, header and separator left out. */
function tableRows(md: string): string[][] {
  return md
    .split("\n")
    .filter((l) => l.startsWith("| ") && !l.startsWith("| Phase ") && !l.startsWith("| ---"))
    .map((l) =>
      l
        .trim()
        .slice(1, -1)
        .split("|")
        .map((cell) => cell.trim()),
    );
}

describe("scripts/gpu-truth/run.sh --dry-run", () => {
  let out: string;
  let result: { stdout: string; stderr: string };
  let c: Comparison;
  let md: string;

  beforeAll(async () => {
    out = mkdtempSync(path.join(tmpdir(), "trueidle-gpu-truth-"));
    result = await run(
      "bash",
      [
        RUN_SH,
        "--dry-run",
        "--seconds",
        "3",
        "--settle-s",
        "1.5",
        "--interval-ms",
        "500",
        "--cpu-warmup-s",
        "3",
        "--cpu-s",
        "4",
        "--out",
        out,
      ],
      { cwd: REPO_ROOT, timeout: 110_000, maxBuffer: 16 << 20 },
    );
    c = JSON.parse(readFileSync(path.join(out, "gpu-truth.json"), "utf8")) as Comparison;
    md = readFileSync(path.join(out, "gpu-truth.md"), "utf8");
  }, 140_000);

  afterAll(() => {
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it("writes the table and the raw files, and prints the table", () => {
    for (const f of [
      "gpu-truth.md",
      "gpu-truth.json",
      "phases.jsonl",
      "truth.csv",
      "nvml.jsonl",
      "smi.jsonl",
      "logs.txt",
      "agent-cpu.md",
      "agent-cpu.json",
      "nvml-probe.txt",
    ]) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    expect(result.stdout).toContain("| Phase | Expected | Truth: util | Truth: SM active | Source |");
    expect(md).toMatch(/^- Machine: DRY RUN, no GPU/m);
    const phases = readFileSync(path.join(out, "phases.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { phase: string; expect: string });
    expect(phases.map((p) => [p.phase, p.expect.split("|")])).toEqual(PHASES.map(([p, e]) => [p, e]));
    expect(readFileSync(path.join(out, "truth.csv"), "utf8")).toMatch(
      /^ts_ms,gpu,util,power_w,mem_used_mib,procs,sm_active_pct,sm_occupancy_pct,tensor_pct\n/,
    );
    // Both agents ran through their own source and said so in their logs.
    const logs = readFileSync(path.join(out, "logs.txt"), "utf8");
    expect(logs).toMatch(/"msg":"NVML source started\."/);
    expect(logs).toMatch(/"msg":"nvidia-smi source started\."/);
  });

  it("measures the agents' whole-process CPU beside a bare nvidia-smi loop and a bare Node", () => {
    const cpu = JSON.parse(readFileSync(path.join(out, "agent-cpu.json"), "utf8")) as {
      gpus: number;
      spanS: number;
      rows: Array<{
        process: string;
        alive: boolean;
        usPerGpuSample: number;
        childUsPerGpuSample: number;
        rssMiB: number;
      }>;
      selfReported: Array<number | undefined>;
    };
    // The dry run's scenario has GPU 0 and a second GPU; every process lived through the span.
    expect(cpu.gpus).toBe(2);
    expect(cpu.spanS).toBeGreaterThanOrEqual(4);
    expect(cpu.rows.map((r) => [r.process, r.alive])).toEqual([
      ["trueidle agent --source nvml", true],
      ["trueidle agent --source nvidia-smi (with its nvidia-smi)", true],
      ["bare nvidia-smi --query-gpu=… -lms 500", true],
      ["bare Node, one timer at the interval", true],
    ]);
    for (const r of cpu.rows) {
      expect(r.usPerGpuSample, r.process).toBeGreaterThan(0);
      expect(r.rssMiB, r.process).toBeGreaterThan(10);
    }
    // The nvidia-smi agent's child is the fake nvidia-smi: its CPU is counted, apart too.
    expect(cpu.rows[1]!.childUsPerGpuSample).toBeGreaterThan(0);
    expect(cpu.rows[0]!.childUsPerGpuSample).toBe(0);
    // Each agent's own process_cpu_seconds_total was read.
    expect(cpu.selfReported.slice(0, 2).every((x) => typeof x === "number" && x > 0)).toBe(true);
    expect(readFileSync(path.join(out, "agent-cpu.md"), "utf8")).toMatch(
      /^\| trueidle agent --source nvml \| \d+ \| 0 \|/m,
    );
  });

  it("times each NVML call through ctypes and reads the driver's sample buffer (the stub's cost model and ring here)", () => {
    const probe = readFileSync(path.join(out, "nvml-probe.txt"), "utf8");
    const cpu = (call: string): number => {
      const m = new RegExp(`^${call.replace(/[()]/g, "\\$&")}\\s+cpu\\s+([\\d.]+) us`, "m").exec(probe);
      if (!m) throw new Error(`no ${call} in:\n${probe}`);
      return Number(m[1]);
    };
    // The stub burns what the H200 measured: 2.5 ms a sample read, about 1 µs a power read.
    expect(cpu("nvmlDeviceGetSamples (from 0)")).toBeGreaterThan(2_400);
    expect(cpu("nvmlDeviceGetPowerUsage")).toBeLessThan(100);
    expect(cpu("nvmlGpmSampleGet")).toBeGreaterThan(35);
    expect(probe).toMatch(/^utilization sample buffer: 120 samples, one every 166\.7 ms, 19\.8 s back$/m);
  });

  it("reads GPU 0 only, at the agents' interval, with the truth's SM activity per phase", () => {
    expect(c.gpu).toBe(0);
    expect(c.sources.map((s) => [s.name, s.intervalS])).toEqual([
      ["NVML", 0.5],
      ["nvidia-smi", 0.5],
    ]);
    expect(c.phases.map((p) => p.phase)).toEqual(PHASES.map(([p]) => p));
    c.phases.forEach((p, i) => {
      expect(p.truth.rows, p.phase).toBeGreaterThanOrEqual(2);
      expect(p.truth.smMean, p.phase).toBeCloseTo(PHASES[i]![2], 6);
    });
  });

  it("through the stub: every counted second in the expected state, real = GPM SM activity = the truth", () => {
    for (const p of c.phases) {
      const f = p.sources["NVML"]!;
      // 1.5 s of each 3 s phase at 500 ms: the ticks at +1.5, +2 and +2.5 s (a tick the
      // event loop ran more than an interval late on a loaded machine is skipped, not invented).
      expect(f.samples, p.phase).toBeGreaterThanOrEqual(2);
      expect(f.samples, p.phase).toBeLessThanOrEqual(3);
      expect(f.seconds, p.phase).toBe(f.samples * 0.5);
      expect(f.share, p.phase).toBe(1);
      expect(f.smMean, p.phase).toBeCloseTo(p.truth.smMean!, 6);
      if (p.phase !== "free") {
        expect(f.realMean, p.phase).toBeCloseTo(p.truth.smMean!, 6);
        expect(f.realSources, p.phase).toEqual([["sm_active", f.samples]]);
      }
    }
    // batch1 through GPM: 6 % SM activity at 45 % utilization.gpu is a phantom.
    expect(c.phases[5]!.sources["NVML"]!.states.map(([s]) => s)).toEqual(["busy_phantom"]);
    expect(c.overall["NVML"]!.share).toBe(1);
    expect(c.overall["NVML"]!.realVsTruthSmPp).toBeCloseTo(0, 6);
  });

  it("through nvidia-smi: no SM activity, real from power, the same states where power tells them apart", () => {
    for (const p of c.phases) {
      const f = p.sources["nvidia-smi"]!;
      expect(f.samples, p.phase).toBeGreaterThanOrEqual(2);
      expect(f.smMean, p.phase).toBeNull();
      expect(f.share, p.phase).toBe(1);
      if (p.phase !== "free") expect(f.realSources, p.phase).toEqual([["power", f.samples]]);
    }
    // batch1's power (140 W over a 76 W floor) reads as just past 10 %: active, where GPM says phantom.
    expect(c.phases[5]!.sources["nvidia-smi"]!.states.map(([s]) => s)).toEqual(["active"]);
    expect(c.overall["nvidia-smi"]!.realVsTruthSmPp).toBeGreaterThan(1);
  });

  it("shows the same in the Markdown table", () => {
    const rows = tableRows(md);
    expect(rows).toHaveLength(PHASES.length * 2 + 2);
    for (const r of rows) expect(r).toHaveLength(10);
    const nvml = rows.filter((r) => r[4] === "NVML" && r[0] !== "all phases");
    const smi = rows.filter((r) => r[4] === "nvidia-smi" && r[0] !== "all phases");
    expect(nvml.map((r) => r[0])).toEqual(PHASES.map(([p]) => p));
    expect(nvml.map((r) => r[6])).toEqual(PHASES.map(() => "100%"));
    expect(smi.map((r) => r[8])).toEqual(PHASES.map(() => "n/a"));
    const matmul = nvml[3]!;
    const n = c.phases[3]!.sources["NVML"]!.samples;
    expect(matmul).toEqual([
      "matmul",
      "active",
      "100.0%",
      "93.0%",
      "NVML",
      String(n * 0.5),
      "100%",
      "93.0% (sm_active)",
      "93.0%",
      `active ${n}`,
    ]);
    expect(smi[3]![7]).toMatch(/^\d+\.\d% \(power\)$/);
    expect(rows.filter((r) => r[0] === "all phases").map((r) => [r[4], r[6]])).toEqual([
      ["NVML", "100%"],
      ["nvidia-smi", "100%"],
    ]);
  });
});

describe("scripts/gpu-truth/compare.mjs", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "trueidle-compare-"));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("says n/a where the GPU has no GPM and 'no samples' for a source that printed nothing", async () => {
    const t0 = 1_700_000_000_000;
    writeFileSync(
      path.join(dir, "phases.jsonl"),
      "a warning line\n" +
        JSON.stringify({ phase: "held", start_ms: t0, end_ms: t0 + 10_000, expect: "held_idle" }) +
        "\n",
    );
    const truth = ["ts_ms,gpu,util,power_w,mem_used_mib,procs,sm_active_pct,sm_occupancy_pct,tensor_pct"];
    const watch: string[] = [];
    for (let s = 0; s < 10; s++) {
      truth.push(`${t0 + s * 1000},0,0,80.0,20000,1,,,`);
      watch.push(
        JSON.stringify({
          ts_ms: t0 + s * 1000,
          gpu: 0,
          state: s < 8 ? "held_idle" : "busy_phantom",
          real: 0.02,
          real_source: "power",
          sm_active: null,
        }),
      );
      watch.push(
        JSON.stringify({
          ts_ms: t0 + s * 1000,
          gpu: 1,
          state: "active",
          real: 0.9,
          real_source: "power",
          sm_active: null,
        }),
      );
    }
    writeFileSync(path.join(dir, "truth.csv"), `${truth.join("\n")}\n`);
    writeFileSync(path.join(dir, "smi.jsonl"), `${watch.join("\n")}\n{"ts_ms":`);
    const { stdout } = await run(process.execPath, [
      COMPARE,
      "--phases",
      path.join(dir, "phases.jsonl"),
      "--truth",
      path.join(dir, "truth.csv"),
      "--source",
      `NVML=${path.join(dir, "missing.jsonl")}`,
      "--source",
      `nvidia-smi=${path.join(dir, "smi.jsonl")}`,
      "--settle-s",
      "2",
    ]);
    const rows = tableRows(stdout);
    // Seconds 2–9 count: 6 held_idle of 8 samples.
    expect(rows[0]).toEqual(["held", "held_idle", "0.0%", "n/a", "NVML", "0", "n/a", "n/a", "n/a", "no samples"]);
    expect(rows[1]).toEqual([
      "held",
      "held_idle",
      "0.0%",
      "n/a",
      "nvidia-smi",
      "8",
      "75%",
      "2.0% (power)",
      "n/a",
      "held_idle 6, busy_phantom 2",
    ]);
    expect(rows[3]).toEqual(["all phases", "", "", "", "nvidia-smi", "8", "75%", "n/a", "", ""]);
  });

  it("exits 1 when no phase finished", async () => {
    writeFileSync(path.join(dir, "empty.jsonl"), "");
    const err = await run(process.execPath, [
      COMPARE,
      "--phases",
      path.join(dir, "empty.jsonl"),
      "--source",
      `NVML=${path.join(dir, "empty.jsonl")}`,
    ]).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/no phases in .*empty\.jsonl; the loads did not run/);
  });
});
