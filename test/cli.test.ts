/**
 * The `trueidle` binary as a user meets it: help, errors that name the fix, --once through
 * each GPU source (the fake nvidia-smi and NVML through the stub library), and how
 * `--source auto` chooses between them and says why.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { runTrueidle } from "./helpers/trueidle-process.js";
import { GPU_SOURCES, NVIDIA_SMI_SOURCE, NVML_SOURCE, oneGpuPerState } from "./helpers/gpu-sources.js";
import { FakeHostRoot } from "./helpers/host-root.js";

describe("trueidle CLI", () => {
  it("lists its commands", async () => {
    const r = await runTrueidle(["--help"]);
    expect(r.code).toBe(0);
    for (const c of ["agent", "collector", "demo", "report"]) expect(r.output).toMatch(new RegExp(`^  ${c} `, "m"));
  });

  it.each(["agent", "collector", "demo", "report"])("has --help on %s", async (cmd) => {
    const r = await runTrueidle([cmd, "--help"]);
    expect(r.code).toBe(0);
    expect(r.output).toContain(`Usage: trueidle ${cmd}`);
    expect(r.output).toContain(cmd === "report" ? "--influx-url" : "--log-level");
  });

  it("names the bad flags and exits 2", async () => {
    const r = await runTrueidle(["agent", "--window", "3s", "--interval", "2s", "--label", "Bad Key=x", "--bogus"]);
    expect(r.code).toBe(2);
    expect(r.output).toContain("unknown flag --bogus");
    expect(r.output).toContain('label key "Bad Key"');
  });

  it("refuses a window that is not a whole number of intervals", async () => {
    const r = await runTrueidle(["agent", "--window", "3s", "--interval", "2s"]);
    expect(r.code).toBe(2);
    expect(r.output).toContain("--window (3000 ms) must be a whole multiple of --interval (2000 ms)");
  });

  it("says how to fix a missing nvidia-smi", async () => {
    // --source nvidia-smi: under auto a machine with a driver would read its GPUs through NVML.
    const r = await runTrueidle([
      "agent",
      "--once",
      "--source",
      "nvidia-smi",
      "--nvidia-smi",
      "/nonexistent/nvidia-smi",
    ]);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/nvidia-smi not found at \/nonexistent\/nvidia-smi/);
    expect(r.output).toMatch(/--nvidia-smi PATH/);
  });
});

const ONCE_SCENARIO = oneGpuPerState("once");

/** The rows of the --once table (GPU index first). */
const tableRows = (output: string): string[] => output.split("\n").filter((l) => /^\d+ {2,}\S/.test(l));

// The same scenario and the same expected states through the fake nvidia-smi and through
// NVML (the stub library); only what NVML sees beyond nvidia-smi differs: SM activity
// through GPM and the holders' SM utilization.
describe.each(GPU_SOURCES)("trueidle agent --once through $name", (kind) => {
  const nvml = kind.name === "nvml";

  it("prints this host's GPUs with their states and the source", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-once-"));
    // A host root with no processes: the scenario's pids must not name this machine's.
    const host = await FakeHostRoot.create();
    try {
      const src = kind.prepare(dir, ONCE_SCENARIO);
      const r = await runTrueidle(["agent", "--once", ...src.flags, "--host-root", host.root], src.env);
      expect(r.code, r.output).toBe(0);
      expect(r.output).toMatch(src.sourceLine);
      expect(r.output).toMatch(
        /^GPU +MODEL +REPORTED +SM +REAL \(SOURCE\) +STATE +POWER\/FLOOR +MEMORY +PROCS +HELD BY$/m,
      );
      const rows = tableRows(r.output);
      expect(rows).toHaveLength(5);
      for (const row of rows) expect(row.length, row).toBeLessThanOrEqual(120);
      // GPM on GPU 0 only: its SM activity (the stub's 72 % for an active phase) is the real
      // utilization; nvidia-smi cannot see it, so the power estimate stands in.
      expect(rows[0]).toMatch(
        nvml
          ? /H100 80GB HBM3\s+97% busy\s+72%\s+72% sm_active\s+active\s/
          : /H100 80GB HBM3\s+97% busy\s+n\/a\s+\d+% power\s+active\s/,
      );
      expect(rows[1]).toMatch(/100% busy\s+n\/a\s+\d+% power\s+busy_phantom/);
      expect(rows[2]).toMatch(/0% idle\s+n\/a\s.*held_idle/);
      expect(rows[3]).toMatch(/100% busy\s+n\/a\s.*free_idle\s.*—$/);
      expect(rows[4]).toMatch(/ unavailable /);
      expect(r.output).toMatch(/^GPU 4 unavailable: .*Unknown Error/m);
      expect(r.output).toContain("5 GPU(s): 1 active, 1 busy_phantom, 1 held_idle, 1 free_idle, 1 unavailable.");
      if (nvml) {
        expect(r.output).toMatch(
          /^Source: NVML \(\S+\/libnvidia-ml\.so\.1, driver 550\.90\.07\); GPM SM activity on GPU 0$/m,
        );
        // Holders by memory with their SM utilization: the held-idle GPU's holder does nothing,
        // the active GPU's second process idles beside the busy one.
        expect(r.output).toMatch(
          /^GPU 0 holders: python3 \(pid \d+\) [\d.]+ GiB, SM 97%; torchrun \(pid \d+\) [\d.]+ GiB, SM 0%$/m,
        );
        expect(r.output).toMatch(/^GPU 2 holders: python3 \(pid \d+\) [\d.]+ GiB, SM 0%$/m);
      } else {
        expect(r.output).toMatch(/^Source: nvidia-smi \(.*no SM activity\)$/m);
        // Holders by memory; nvidia-smi cannot see their SM utilization, so none is shown.
        expect(r.output).toMatch(/^GPU 2 holders: python3 \(pid \d+\) [\d.]+ GiB$/m);
        expect(r.output).not.toContain(", SM ");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await host.cleanup();
    }
  });
});

describe("choosing the source", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "trueidle-choice-"));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("--source nvml with a library that is not there exits 1 and names --nvml-lib and --source nvidia-smi", async () => {
    const r = await runTrueidle([
      "agent",
      "--once",
      "--source",
      "nvml",
      "--nvml-lib",
      "/nonexistent/libnvidia-ml.so.1",
    ]);
    expect(r.code).toBe(1);
    expect(r.output).toContain("cannot load /nonexistent/libnvidia-ml.so.1");
    expect(r.output).toContain("--nvml-lib");
    expect(r.output).toContain("--source nvidia-smi");
  });

  it("auto (the default) takes NVML when TRUEIDLE_NVML_LIB loads, and says why", async () => {
    const src = NVML_SOURCE.prepare(mkdtempSync(path.join(dir, "nvml-")), ONCE_SCENARIO);
    // No --source: auto. nvidia-smi is not there at all, and is not needed.
    const r = await runTrueidle(["agent", "--once"], { ...src.env, ...src.autoSettings });
    expect(r.code, r.output).toBe(0);
    const line = r.output.split("\n").find((l) => l.startsWith("Source: "));
    expect(line).toMatch(
      /^Source: NVML \(.*\); GPM SM activity on GPU 0 — chosen by --source auto: the NVML library loaded and initialised$/,
    );
    expect(line).toContain(src.stub!.libPath);
    expect(r.output).toMatch(src.autoChoice);
    expect(tableRows(r.output)).toHaveLength(5);
    expect(r.output).toContain("5 GPU(s): 1 active, 1 busy_phantom, 1 held_idle, 1 free_idle, 1 unavailable.");
  });

  it("auto falls back to nvidia-smi when the NVML library does not load, and says why", async () => {
    const src = NVIDIA_SMI_SOURCE.prepare(mkdtempSync(path.join(dir, "smi-")), ONCE_SCENARIO);
    const r = await runTrueidle(["agent", "--once"], src.autoSettings);
    expect(r.code, r.output).toBe(0);
    const line = r.output.split("\n").find((l) => l.startsWith("Source: "));
    expect(line).toMatch(
      /^Source: nvidia-smi \([^)]*\) — chosen by --source auto: NVML cannot be used \(cannot load \S*no-such-libnvidia-ml\.so\.1: .*\), so nvidia-smi$/,
    );
    expect(r.output).toMatch(src.autoChoice);
    expect(r.output).toContain("5 GPU(s): 1 active, 1 busy_phantom, 1 held_idle, 1 free_idle, 1 unavailable.");
  });

  it("--nvml-lib with --source nvidia-smi is a usage error", async () => {
    const r = await runTrueidle(["agent", "--once", "--source", "nvidia-smi", "--nvml-lib", "/x/libnvidia-ml.so.1"]);
    expect(r.code).toBe(2);
    expect(r.output).toContain("--nvml-lib applies to --source nvml or auto");
  });
});
