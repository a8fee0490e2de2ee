import { describe, expect, it } from "vitest";
import { SamplePipeline } from "../agent/pipeline.js";
import { readingsAt } from "../agent/sim/evaluate.js";
import { parseScenario } from "../agent/sim/scenario.js";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../common/types.js";
import { renderOnceTable } from "./once-table.js";

const T0 = Date.UTC(2026, 10, 29, 12, 0, 0);

function tableOf(readings: GpuReading[]): string {
  const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
  p.ingest(T0, readings);
  return renderOnceTable(p.latest(), DEFAULT_THRESHOLDS);
}

describe("renderOnceTable", () => {
  it("lists each GPU's largest holders with their SM utilization where the source sees it", () => {
    const scenario = parseScenario({
      gpus: [
        { phases: [{ for: "1h", state: "active" }] },
        { phases: [{ for: "1h", state: "held_idle", processes: [
          { pid: 4242, name: "python3", usedMiB: 40 * 1024, smUtil: 0 },
          { pid: 4243, name: "jupyter", usedMiB: 2 * 1024 },
        ] }] },
        { phases: [{ for: "1h", state: "free_idle" }] },
      ],
    });
    const lines = tableOf(readingsAt(scenario, T0)).split("\n");
    const active = readingsAt(scenario, T0)[0]!.processes!;
    expect(lines).toContain(
      `GPU 0 holders: python3 (pid ${active[0]!.pid}) 27.9 GiB, SM 97%; torchrun (pid ${active[1]!.pid}) 27.9 GiB, SM 0%`,
    );
    expect(lines).toContain("GPU 1 holders: python3 (pid 4242) 40.0 GiB, SM 0%; jupyter (pid 4243) 2.0 GiB");
    // Nothing on GPU 2, so no line for it.
    expect(lines.filter((l) => l.startsWith("GPU 2 "))).toEqual([]);
  });

  it("shows the largest three by memory and counts the rest", () => {
    const base = readingsAt(parseScenario({ gpus: [{ phases: [{ for: "1h", state: "free_idle" }] }] }), T0)[0]!;
    const processes = [1, 5, 3, 2, 4].map((g) => ({ pid: g, name: `p${g}`, usedMemoryBytes: g * 1024 ** 3 }));
    const text = tableOf([{ ...base, memUsedBytes: 15 * 1024 ** 3, processes }]);
    expect(text).toContain("GPU 0 holders: p5 (pid 5) 5.0 GiB; p4 (pid 4) 4.0 GiB; p3 (pid 3) 3.0 GiB; 2 more\n");
  });
});
