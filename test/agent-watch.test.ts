/**
 * `trueidle agent --watch` through each GPU source (the fake nvidia-smi and NVML through the
 * stub library): one JSON line per GPU per tick on stdout, logs apart on stderr, the same
 * states through both sources, no collector and no transport flag, a clean exit on SIGTERM.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { GPU_SOURCES, oneGpuPerState } from "./helpers/gpu-sources.js";
import { runTrueidle, startTrueidle } from "./helpers/trueidle-process.js";

const WATCH_SCENARIO = oneGpuPerState("watch");
const EXPECTED_STATES = ["active", "busy_phantom", "held_idle", "free_idle", "unavailable"];
const KEYS = [
  "ts_ms",
  "gpu",
  "uuid",
  "parent_uuid",
  "mig_profile",
  "state",
  "real",
  "real_source",
  "util",
  "sm_active",
  "power_w",
  "floor_w",
  "mem_used_bytes",
  "processes",
  "error",
];
const TICKS = 3;
const INTERVAL_MS = 500;

type Line = Record<string, unknown>;

describe.each(GPU_SOURCES)("trueidle agent --watch through $name", (kind) => {
  const nvml = kind.name === "nvml";

  it("prints one JSON line per GPU per tick with the scenario's states, then exits 0 on SIGTERM", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-watch-"));
    try {
      const src = kind.prepare(dir, WATCH_SCENARIO);
      const p = startTrueidle(["agent", "--watch", "--interval", `${INTERVAL_MS}ms`, ...src.flags], src.env);
      let stdout = "";
      const lines: Line[] = [];
      const enough = new Promise<void>((resolve) => {
        p.child.stdout!.on("data", (b: Buffer) => {
          stdout += b.toString("utf8");
          const done = stdout.slice(0, stdout.lastIndexOf("\n") + 1);
          stdout = stdout.slice(done.length);
          for (const l of done.split("\n")) if (l !== "") lines.push(JSON.parse(l) as Line);
          if (new Set(lines.map((l) => l["ts_ms"])).size > TICKS) resolve();
        });
      });
      await Promise.race([
        enough,
        p.exited.then((code) => {
          throw new Error(`exited ${code}:\n${p.output()}`);
        }),
      ]);
      expect(await p.stop("SIGTERM"), p.output()).toBe(0);
      expect(p.output()).toMatch(
        nvml ? /Watching this host's GPUs.*NVML \(/ : /Watching this host's GPUs.*nvidia-smi \(/,
      );

      const ticks = [...new Set(lines.map((l) => l["ts_ms"] as number))].sort((a, b) => a - b);
      // Ticks on wall-clock multiples of the interval, each with a line for every GPU.
      for (const t of ticks) {
        expect(t % INTERVAL_MS).toBe(0);
        const at = lines.filter((l) => l["ts_ms"] === t);
        expect(at.map((l) => l["gpu"]).sort()).toEqual([0, 1, 2, 3, 4]);
      }
      for (const l of lines) {
        expect(Object.keys(l)).toEqual(KEYS);
        expect(l["state"], JSON.stringify(l)).toBe(EXPECTED_STATES[l["gpu"] as number]);
        // A GPU that errors from the start never told its UUID; each source names it its own way.
        expect(l["uuid"]).toMatch(l["gpu"] === 4 ? /^unknown-/ : /^GPU-[0-9a-f-]{36}$/);
      }
      const gpu = (i: number): Line[] => lines.filter((l) => l["gpu"] === i);
      // The active GPU: SM activity through GPM with NVML (the stub's 72 % for an active
      // phase), the power estimate through nvidia-smi, which cannot see SM activity.
      for (const l of gpu(0)) {
        expect(l).toMatchObject(
          nvml
            ? { real: 0.72, real_source: "sm_active", sm_active: 0.72, util: 97, processes: 2 }
            : { real_source: "power", sm_active: null, util: 97, processes: 2 },
        );
        expect(l["power_w"]).toBeGreaterThan(l["floor_w"] as number);
      }
      for (const l of gpu(1)) expect(l).toMatchObject({ util: 100, real_source: "power", sm_active: null });
      for (const l of gpu(1)) expect(l["real"]).toBeLessThan(0.1);
      for (const l of gpu(2)) expect(l).toMatchObject({ util: 0, processes: 1, error: null });
      for (const l of gpu(3))
        expect(l).toMatchObject({ util: 100, real: 0, real_source: "none", processes: 0, mem_used_bytes: 0 });
      for (const l of gpu(4)) {
        expect(l).toMatchObject({
          real: 0,
          real_source: "none",
          util: null,
          power_w: null,
          mem_used_bytes: null,
          processes: null,
        });
        expect(l["error"]).toMatch(/Unknown Error/);
      }
      if (!nvml) expect(lines.every((l) => l["sm_active"] === null)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("trueidle agent --watch flags", () => {
  it("refuses --once with --watch", async () => {
    const r = await runTrueidle([
      "agent",
      "--once",
      "--watch",
      "--source",
      "sim",
      "--scenario",
      "demo/scenarios/gpu-a01.json",
    ]);
    expect(r.code).toBe(2);
    expect(r.output).toContain("--once and --watch cannot be given together");
  });

  it("exits 1 naming the fix when the source cannot start", async () => {
    const r = await runTrueidle([
      "agent",
      "--watch",
      "--source",
      "nvidia-smi",
      "--nvidia-smi",
      "/nonexistent/nvidia-smi",
    ]);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/nvidia-smi not found at \/nonexistent\/nvidia-smi/);
  });
});
