import { describe, expect, it } from "vitest";
import { GPU_LABEL_BYTES, gpuLabelProblem } from "./series-budget.js";

const NVIDIA_UUID = "GPU-8b5a9a5e-1f3c-4a8d-9b2e-7c6d5e4f3a21";
const MIG_UUID = "MIG-0f6a2c1e-9d8b-5a4c-b3e2-1d0c9b8a7f65";

describe("gpuLabelProblem", () => {
  it("passes a whole GPU and a MIG instance as NVIDIA names them", () => {
    expect(gpuLabelProblem(0, NVIDIA_UUID, "NVIDIA H100 80GB HBM3", "590.48.01")).toBeUndefined();
    expect(
      gpuLabelProblem(3, MIG_UUID, "NVIDIA H100 80GB HBM3", "590.48.01", NVIDIA_UUID, "1g.10gb+me"),
    ).toBeUndefined();
  });

  it("counts a MIG instance's board uuid and profile in the budget, naming the longest field", () => {
    const parent = `GPU-${"p".repeat(GPU_LABEL_BYTES)}`;
    expect(gpuLabelProblem(0, MIG_UUID, "m", "d")).toBeUndefined();
    expect(gpuLabelProblem(0, MIG_UUID, "m", "d", parent, "1g.10gb")).toBe("parent_uuid");
    expect(gpuLabelProblem(0, "G".repeat(GPU_LABEL_BYTES), "m", "d", NVIDIA_UUID, "1g.10gb")).toBe("uuid");
  });
});
