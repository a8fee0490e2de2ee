import { describe, expect, it } from "vitest";
import { SamplePipeline } from "../agent/pipeline.js";
import { parseScenario } from "../agent/sim/scenario.js";
import { sourceReadingsAt } from "../agent/sim/evaluate.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { watchLine } from "./agent-watch.js";

describe("watchLine on a board in MIG mode", () => {
  it("names each instance's board and profile, and shows the board's own row as mig_board with its power only", () => {
    const scenario = parseScenario({
      gpus: [
        {
          model: "NVIDIA H100 80GB HBM3",
          phases: [{ for: "1h", powerW: 190 }],
          mig: [{ profile: "3g.40gb", gi: 2, phases: [{ for: "1h", state: "active" }] }],
        },
      ],
    });
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const t = Date.UTC(2026, 11, 5);
    p.ingest(t, sourceReadingsAt(scenario, t));
    const [board, instance] = p.latest().map(watchLine);
    const g = scenario.gpus[0]!;
    expect(board).toMatchObject({ uuid: g.uuid, parent_uuid: null, mig_profile: null, state: "mig_board" });
    expect(board).toMatchObject({ power_w: 190, util: null, sm_active: null, processes: null, error: null });
    expect(instance).toMatchObject({ parent_uuid: g.uuid, mig_profile: "3g.40gb", state: "active", power_w: null });
  });
});
