import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import { TrueidleError } from "../../common/errors.js";
import { parseScenario } from "../sim/scenario.js";
import { prepareNvmlStub } from "../../test/helpers/nvml-stub.js";
import { AutoSource } from "./auto-source.js";
import { NvmlSource } from "./nvml/nvml-source.js";
import { SimSource } from "./sim/sim-source.js";
import type { GpuSource } from "./source.js";

const scenario = { gpus: [{ model: "NVIDIA H100 80GB HBM3", gpm: true, phases: [{ for: "1h", state: "active" }] }] };
const dir = mkdtempSync(path.join(tmpdir(), "trueidle-auto-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("--source auto", () => {
  it("uses NVML when the library loads, and says so", async () => {
    const stub = prepareNvmlStub(dir, scenario);
    Object.assign(process.env, stub.env);
    const log = recordingLogger();
    const src = new AutoSource(
      () => new NvmlSource({ libPath: stub.libPath, intervalMs: 250, logger: log }),
      () => new SimSource(parseScenario(scenario)),
      log,
    );
    try {
      expect(src.name).toBe("auto");
      await src.start();
      expect(src.name).toBe("nvml");
      expect(src.describe()).toMatch(
        /^NVML \(.*\); GPM SM activity on GPU 0 — chosen by --source auto: the NVML library loaded and initialised$/,
      );
      expect(src.sample(Date.now())[0]!.smActive).toBeCloseTo(0.72, 2);
      expect(log.lines.find((l) => l.msg === "Source chosen: NVML.")).toBeDefined();
    } finally {
      await src.stop();
    }
  });

  it("falls back when NVML cannot be used, naming why", async () => {
    const log = recordingLogger();
    const src = new AutoSource(
      () => new NvmlSource({ libPath: "/nonexistent/libnvidia-ml.so.1", intervalMs: 250, logger: log }),
      () => new SimSource(parseScenario(scenario), "s.json"),
      log,
    );
    await src.start();
    expect(src.name).toBe("sim");
    expect(src.describe()).toMatch(
      /chosen by --source auto: NVML cannot be used \(cannot load \/nonexistent\/libnvidia-ml\.so\.1: .*\), so nvidia-smi$/,
    );
    expect(src.sample(Date.now())).toHaveLength(1);
    const chosen = log.lines.find((l) => l.msg.startsWith("Source chosen: nvidia-smi"));
    expect(chosen?.fields?.["why"]).toMatch(/cannot load/);
    await src.stop();
  });

  it("does not hide other failures behind the fallback", async () => {
    const failing: GpuSource = {
      name: "nvml",
      start: async () => {
        throw new TrueidleError("internal", "boom");
      },
      sample: () => [],
      stop: async () => {},
      stats: () => ({ restarts: 0, parseErrors: 0 }),
    };
    let fellBack = false;
    const src = new AutoSource(
      () => failing,
      () => {
        fellBack = true;
        return new SimSource(parseScenario(scenario));
      },
      recordingLogger(),
    );
    await expect(src.start()).rejects.toThrow("boom");
    expect(fellBack).toBe(false);
  });
});
