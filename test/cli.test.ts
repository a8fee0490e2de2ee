/** The `trueidle` binary as a user meets it: help, errors that name the fix, --once. */
import { describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { runTrueidle } from "./helpers/trueidle-process.js";
import { writeFakeNvidiaSmi } from "./helpers/fake-nvidia-smi.js";

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
    const r = await runTrueidle(["agent", "--once", "--nvidia-smi", "/nonexistent/nvidia-smi"]);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/nvidia-smi not found at \/nonexistent\/nvidia-smi/);
    expect(r.output).toMatch(/--nvidia-smi PATH/);
  });

  it("prints this host's GPUs with their states on --once", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-once-"));
    try {
      const smi = writeFakeNvidiaSmi(dir, {
        host: "once",
        gpus: [
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "active" }] },
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "busy_phantom" }] },
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "held_idle" }] },
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "free_busy" }] },
          { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", error: "Unknown Error" }] },
        ],
      });
      const r = await runTrueidle(["agent", "--once", "--source", "nvidia-smi", "--nvidia-smi", smi]);
      expect(r.code, r.output).toBe(0);
      const rows = r.output.split("\n").filter((l) => /^\d+ {2,}\S/.test(l));
      expect(rows).toHaveLength(5);
      expect(rows[0]).toMatch(/NVIDIA H100 80GB HBM3\s+97% \(busy\)\s+\d+% \(power\)\s+active\s/);
      expect(rows[1]).toMatch(/100% \(busy\).*busy_phantom/);
      expect(rows[2]).toMatch(/0% \(idle\).*held_idle/);
      expect(rows[3]).toMatch(/100% \(busy\).*free_idle/);
      expect(rows[4]).toMatch(/unavailable: .*Unknown Error/);
      expect(r.output).toContain("5 GPU(s): 1 active, 1 busy_phantom, 1 held_idle, 1 free_idle, 1 unavailable.");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
