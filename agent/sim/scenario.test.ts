/**
 * Scenario files: validation that names every bad field, deterministic readings whose
 * phases cycle from `originMs`, and presets that the idle model classifies as intended.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TrueidleError } from "../../common/errors.js";
import { DEFAULT_THRESHOLDS, type GpuState } from "../../common/types.js";
import { classify, nextBaseline, type GpuBaseline } from "../model/idle-model.js";
import { phaseAt, readingsAt } from "./evaluate.js";
import { fakeUuid, loadScenario, parseScenario, PHASE_PRESETS, type PhasePreset, type Scenario } from "./scenario.js";

const T = DEFAULT_THRESHOLDS;

function problemsOf(json: unknown): string {
  try {
    parseScenario(json, "s.json");
  } catch (err) {
    expect(err).toBeInstanceOf(TrueidleError);
    expect((err as TrueidleError).code).toBe("bad_scenario");
    return (err as Error).message;
  }
  throw new Error("parseScenario accepted an invalid scenario");
}

describe("parseScenario errors", () => {
  it("lists every bad field at once, by path", () => {
    const message = problemsOf({
      host: 7,
      driverVersion: false,
      originMs: -1,
      exitAfter: "soon",
      gpus: [
        {
          model: 5,
          count: 0,
          powerLimitW: "lots",
          phases: [
            { for: "ten seconds", state: "asleep", util: 150, bogus: 1 },
            { for: 0, smActive: 2, media: -1, processes: "many", noise: 0.9, memUsedMiB: "x" },
            { for: "5s", powerW: 9000, error: 42 },
          ],
        },
        { phases: [] },
        "not an object",
      ],
    });
    const expected = [
      "s.json.host must be a string",
      "s.json.driverVersion must be a string",
      "s.json.originMs must be a number",
      "s.json.exitAfter:",
      "s.json.gpus[0].model must be a string",
      "s.json.gpus[0].count must be a number from 1 to 64",
      "s.json.gpus[0].powerLimitW must be a number",
      "s.json.gpus[0].phases[0].for:",
      "s.json.gpus[0].phases[0].state must be one of unavailable, free_idle, active, busy_phantom, held_idle, free_busy",
      "s.json.gpus[0].phases[0].util must be a number from 0 to 100",
      's.json.gpus[0].phases[0]: unknown key "bogus"',
      "s.json.gpus[0].phases[1].for must be a positive duration",
      "s.json.gpus[0].phases[1].smActive must be a number from 0 to 1",
      "s.json.gpus[0].phases[1].media must be a number from 0 to 100",
      "s.json.gpus[0].phases[1].processes must be a count or a list",
      "s.json.gpus[0].phases[1].noise must be a number from 0 to 0.5",
      "s.json.gpus[0].phases[1].memUsedMiB must be a number",
      "s.json.gpus[0].phases[2].powerW must be a number from 0 to 5000",
      "s.json.gpus[0].phases[2].error must be a string",
      "s.json.gpus[1].phases must be a non-empty array",
      "s.json.gpus[2] must be an object",
    ];
    for (const e of expected) expect(message).toContain(e);
    expect(message.startsWith("invalid scenario: ")).toBe(true);
  });

  it.each<[string, unknown, string]>([
    ["not an object", [], "s.json must be an object"],
    ["no gpus", {}, 's.json: "gpus" must be a non-empty array'],
    ["empty gpus", { gpus: [] }, 's.json: "gpus" must be a non-empty array'],
    ["a phase that is not an object", { gpus: [{ phases: [3] }] }, "s.json.gpus[0].phases[0] must be an object"],
  ])("%s", (_name, json, problem) => {
    expect(problemsOf(json)).toContain(problem);
  });

  it("accepts null to mean a signal is missing", () => {
    const s = parseScenario({ gpus: [{ phases: [{ for: "1s", state: "held_idle", util: null, powerW: null }] }] });
    const [r] = readingsAt(s, 0);
    expect(r!.util).toBeUndefined();
    expect(r!.powerW).toBeUndefined();
    expect(r!.memUsedBytes).toBeGreaterThan(0);
  });

  it("names an explicit process's smUtil out of range", () => {
    const message = problemsOf({
      gpus: [
        {
          phases: [
            {
              for: "1s",
              processes: [
                { pid: 7, name: "a", smUtil: 101 },
                { pid: 8, name: "b", smUtil: "busy" },
                { pid: 9, name: "c", smUtil: 50 },
              ],
            },
          ],
        },
      ],
    });
    expect(message).toContain("s.json.gpus[0].phases[0].processes[0].smUtil must be a number from 0 to 100");
    expect(message).toContain("s.json.gpus[0].phases[0].processes[1].smUtil must be a number from 0 to 100");
    expect(message).not.toContain("processes[2]");
  });
});

describe("loadScenario", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "trueidle-scenario-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads a file", () => {
    const file = path.join(dir, "ok.json");
    writeFileSync(
      file,
      JSON.stringify({
        host: "sim-a",
        gpus: [{ model: "NVIDIA L40S", count: 2, phases: [{ for: "10s", state: "active" }] }],
      }),
    );
    const s = loadScenario(file);
    expect(s.host).toBe("sim-a");
    expect(s.gpus.map((g) => g.index)).toEqual([0, 1]);
  });

  it("names the file when it cannot be read or is not JSON", () => {
    const missing = path.join(dir, "missing.json");
    expect(() => loadScenario(missing)).toThrow(`cannot read scenario file ${missing}`);
    const broken = path.join(dir, "broken.json");
    writeFileSync(broken, "{ gpus: ");
    expect(() => loadScenario(broken)).toThrow(`scenario file ${broken} is not valid JSON`);
  });

  it("names the file in validation errors", () => {
    const bad = path.join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ gpus: [{ phases: [{ for: "1s", util: 101 }] }] }));
    expect(() => loadScenario(bad)).toThrow(`${bad}.gpus[0].phases[0].util must be a number from 0 to 100`);
  });
});

describe("parseScenario defaults", () => {
  it("expands count into GPUs with stable, distinct UUIDs and bus ids", () => {
    const s = parseScenario({
      host: "h",
      gpus: [
        { model: "NVIDIA H100 80GB HBM3", count: 2, phases: [{ for: "1s" }] },
        { model: "Tesla T4", phases: [{ for: "1s" }] },
      ],
    });
    expect(s.gpus.map((g) => [g.index, g.model, g.uuid, g.busId])).toEqual([
      [0, "NVIDIA H100 80GB HBM3", fakeUuid("h", 0), "00000000:10:00.0"],
      [1, "NVIDIA H100 80GB HBM3", fakeUuid("h", 1), "00000000:20:00.0"],
      [2, "Tesla T4", fakeUuid("h", 2), "00000000:30:00.0"],
    ]);
    expect(new Set(s.gpus.map((g) => g.uuid)).size).toBe(3);
    for (const g of s.gpus)
      expect(g.uuid).toMatch(/^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(s.gpus[2]!).toMatchObject({ powerLimitW: 70, idlePowerW: 26, memTotalMiB: 15360 });
    expect(s).toMatchObject({ driverVersion: "550.90.07", originMs: 0 });
  });

  it("parses durations and the cycle length", () => {
    const s = parseScenario({ exitAfter: "3s", gpus: [{ phases: [{ for: "1m" }, { for: 30 }, { for: "500ms" }] }] });
    expect(s.gpus[0]!.phases.map((p) => p.durationMs)).toEqual([60_000, 30_000, 500]);
    expect(s.gpus[0]!.cycleMs).toBe(90_500);
    expect(s.exitAfterMs).toBe(3000);
  });
});

describe("readingsAt", () => {
  const json = {
    host: "sim-a",
    originMs: 1_000_000,
    gpus: [
      {
        model: "NVIDIA H100 80GB HBM3",
        count: 2,
        phases: [
          { for: "10s", state: "active", noise: 0.2 },
          { for: "5s", state: "free_idle" },
        ],
      },
      { model: "NVIDIA L40S", phases: [{ for: "7s", state: "busy_phantom", noise: 0.1 }] },
    ],
  };

  it("is deterministic: same scenario and time, same readings, from separately parsed files", () => {
    const a = parseScenario(json);
    const b = parseScenario(structuredClone(json));
    for (const t of [0, 999, 1_000_000, 1_003_500, 1_012_345, 5_000_000_123]) {
      expect(readingsAt(a, t)).toEqual(readingsAt(b, t));
      expect(readingsAt(a, t)).toEqual(readingsAt(a, t));
    }
  });

  it("noise varies with time but stays within its bounds", () => {
    const s = parseScenario(json);
    const utils = new Set<number>();
    for (let t = 1_000_000; t < 1_010_000; t += 1000) {
      const r = readingsAt(s, t)[0]!;
      utils.add(r.util!);
      expect(r.util!).toBeGreaterThanOrEqual(Math.round(97 * 0.8));
      expect(r.util!).toBeLessThanOrEqual(100);
    }
    expect(utils.size).toBeGreaterThan(1);
  });

  it.each<[string, number, PhasePreset]>([
    ["at originMs", 1_000_000, "active"],
    ["just before the first phase ends", 1_009_999, "active"],
    ["when the second phase starts", 1_010_000, "free_idle"],
    ["at the end of the cycle", 1_014_999, "free_idle"],
    ["one cycle later", 1_015_000, "active"],
    ["a thousand cycles later", 1_000_000 + 1000 * 15_000 + 10_000, "free_idle"],
    ["just before originMs (end of the previous cycle)", 999_999, "free_idle"],
    ["5 s before originMs", 995_000, "free_idle"],
    ["just over 5 s before originMs", 994_999, "active"],
  ])("cycles from originMs: %s → %s", (_name, t, state) => {
    const s = parseScenario(json);
    expect(phaseAt(s.gpus[0]!, t, s.originMs).state).toBe(state);
    expect(phaseAt(s.gpus[2]!, t, s.originMs).state).toBe("busy_phantom");
  });

  it("gives every GPU its identity", () => {
    const s = parseScenario(json);
    const rs = readingsAt(s, 1_000_000);
    expect(rs.map((r) => [r.index, r.uuid, r.model, r.driverVersion])).toEqual(
      s.gpus.map((g) => [g.index, g.uuid, g.model, "550.90.07"]),
    );
  });

  it("explicit signals override the preset", () => {
    const s = parseScenario({
      gpus: [
        {
          model: "NVIDIA H100 80GB HBM3",
          phases: [
            {
              for: "1s",
              state: "held_idle",
              util: 100,
              media: 70,
              processes: [{ pid: 7, name: "ffmpeg", usedMiB: 512 }],
            },
          ],
        },
      ],
    });
    const r = readingsAt(s, 0)[0]!;
    expect(r).toMatchObject({
      util: 100,
      media: 70,
      processes: [{ pid: 7, name: "ffmpeg", usedMemoryBytes: 512 * 1024 * 1024 }],
    });
    expect(classify(r, {}, T)).toMatchObject({ state: "active", source: "media" });
  });

  it("gives generated processes an SM utilization: the first the GPU's util after noise, the others 0", () => {
    const s = parseScenario(json);
    for (let t = 1_000_000; t < 1_010_000; t += 1000) {
      const [active, , phantom] = readingsAt(s, t);
      expect(active!.processes!.map((p) => p.smUtil)).toEqual([active!.util, 0]);
      expect(phantom!.processes!.map((p) => p.smUtil)).toEqual([100]);
    }
    const held = parseScenario({ gpus: [{ phases: [{ for: "1s", state: "held_idle" }] }] });
    expect(readingsAt(held, 0)[0]!.processes!.map((p) => p.smUtil)).toEqual([0]);
    // A GPU whose util is unknown says nothing of its processes either.
    const blind = parseScenario({ gpus: [{ phases: [{ for: "1s", state: "active", util: null }] }] });
    expect(readingsAt(blind, 0)[0]!.processes!.map((p) => p.smUtil)).toEqual([undefined, undefined]);
  });

  it("takes an explicit process's smUtil, and leaves it unknown where not given", () => {
    const s = parseScenario({
      gpus: [
        {
          phases: [
            {
              for: "1s",
              state: "active",
              processes: [
                { pid: 7, name: "trainer", usedMiB: 30_000, smUtil: 88.5 },
                { pid: 8, name: "jupyter", usedMiB: 40_000, smUtil: 0 },
                { pid: 9, name: "other", usedMiB: 1_000 },
              ],
            },
          ],
        },
      ],
    });
    const r = readingsAt(s, 0)[0]!;
    expect(r.processes!.map((p) => [p.pid, p.smUtil])).toEqual([
      [7, 88.5],
      [8, 0],
      [9, undefined],
    ]);
  });

  it("an error phase gives a reading with the error and no signals", () => {
    const s = parseScenario({ gpus: [{ phases: [{ for: "1s", error: "Unknown Error", util: 50 }] }] });
    const r = readingsAt(s, 0)[0]!;
    expect(r.error).toBe("Unknown Error");
    expect(r.util).toBeUndefined();
  });
});

describe("presets through classify", () => {
  const expected: Record<PhasePreset, GpuState> = {
    unavailable: "unavailable",
    free_idle: "free_idle",
    held_idle: "held_idle",
    busy_phantom: "busy_phantom",
    active: "active",
    free_busy: "free_idle",
  };
  const models = [
    "NVIDIA H200",
    "NVIDIA H100 80GB HBM3",
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA L40S",
    "Tesla T4",
    "NVIDIA GeForce RTX 3080",
  ];

  function scenarioOf(model: string, noise: number): Scenario {
    return parseScenario({
      gpus: [{ model, phases: PHASE_PRESETS.map((state) => ({ for: "3s", state, ...(noise > 0 ? { noise } : {}) })) }],
    });
  }

  it.each(models)("each preset of %s is classified as intended on a fresh baseline", (model) => {
    const s = scenarioOf(model, 0);
    PHASE_PRESETS.forEach((preset, i) => {
      const r = readingsAt(s, i * 3000)[0]!;
      expect(classify(r, {}, T).state, `${model} ${preset}`).toBe(expected[preset]);
    });
  });

  it.each(models)("each preset of %s stays as intended with a learned baseline and noise, over two cycles", (model) => {
    const s = scenarioOf(model, 0.1);
    let baseline: GpuBaseline = {};
    const seen: string[] = [];
    for (let t = 0; t < 2 * s.gpus[0]!.cycleMs; t += 1000) {
      const r = readingsAt(s, t)[0]!;
      const c = classify(r, baseline, T);
      baseline = nextBaseline(r, c, baseline, t);
      const preset = phaseAt(s.gpus[0]!, t, s.originMs).state!;
      seen.push(`${t / 1000}s ${preset}: ${c.state}`);
      expect(c.state, `${model} at ${t} ms (${preset}); so far:\n${seen.join("\n")}`).toBe(expected[preset]);
    }
    expect(baseline.learnedFloorW).toBeDefined();
  });

  it("free_busy reads util 100 with nothing on the GPU", () => {
    const s = parseScenario({ gpus: [{ phases: [{ for: "1s", state: "free_busy" }] }] });
    const r = readingsAt(s, 0)[0]!;
    expect(r).toMatchObject({ util: 100, processes: [], memUsedBytes: 0 });
    expect(classify(r, {}, T)).toMatchObject({ state: "free_idle", real: 0, reportedIdle: false });
  });
});
