/**
 * Per-model idle power floor caps: the most specific name wins, names match whole words
 * only, and an unknown model gets 10 % of its power limit.
 */
import { describe, expect, it } from "vitest";
import { defaultPowerFloor, UNKNOWN_MODEL_FLOOR_SHARE } from "./power-floors.js";

describe("defaultPowerFloor", () => {
  // Product names as nvidia-smi prints them (see the captures under test fixtures).
  it.each<[string, number]>([
    ["NVIDIA H200", 80],
    ["NVIDIA GH200 480GB", 90],
    ["NVIDIA B200", 120],
    ["NVIDIA GB200", 120],
    ["NVIDIA H100 80GB HBM3", 75],
    ["NVIDIA H100 PCIe", 75],
    ["NVIDIA H20", 70],
    ["NVIDIA A100-SXM4-80GB", 60],
    ["NVIDIA A100 80GB PCIe", 60],
    ["NVIDIA A10", 30],
    ["NVIDIA A10G", 30],
    ["NVIDIA A2", 15],
    ["NVIDIA L40S", 30],
    ["NVIDIA L40", 35],
    ["NVIDIA L4", 18],
    ["Tesla T4", 27],
    ["Tesla V100-SXM3-32GB", 45],
    ["Tesla K80", 30],
    ["Tesla P4", 20],
    ["Tesla P40", 30],
    ["Tesla P100-PCIE-16GB", 35],
    ["NVIDIA GeForce RTX 4090", 30],
    ["NVIDIA RTX A5000", 25],
    ["NVIDIA RTX A6000", 30],
    ["NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", 35],
    ["nvidia h100 80gb hbm3", 75],
  ])("%s → %d W", (model, watts) => {
    expect(defaultPowerFloor(model, 700)).toBe(watts);
  });

  // A shorter name must not match inside a longer one (or the other way round).
  it.each<[string, string, number]>([
    ["A10 is not A100", "NVIDIA A100-SXM4-40GB", 60],
    ["A100 is not A10", "NVIDIA A10", 30],
    ["L4 is not L40", "NVIDIA L40", 35],
    ["L4 is not L40S", "NVIDIA L40S", 30],
    ["L40S is not L40", "NVIDIA L40S", 30],
    ["L40S is not L4", "NVIDIA L4", 18],
    ["T4 is not RTX 4090", "NVIDIA GeForce RTX 4090", 30],
    ["H20 is not H200", "NVIDIA H200", 80],
    ["H200 is not GH200", "NVIDIA GH200 480GB", 90],
    ["B200 is not GB200", "NVIDIA GB200", 120],
    ["P4 is not P40", "Tesla P40", 30],
    ["P4 is not P100", "Tesla P100-PCIE-16GB", 35],
    ["A2 is not A2000", "NVIDIA RTX A2000", 70],
    ["A10 is not A1000", "NVIDIA RTX A1000", 70],
    ["RTX 6000 is not RTX PRO 6000", "NVIDIA RTX PRO 6000 Blackwell Server Edition", 35],
  ])("%s (%s → %d W with a 700 W limit)", (_name, model, watts) => {
    expect(defaultPowerFloor(model, 700)).toBe(watts);
  });

  it.each<[string, number | undefined, number | undefined]>([
    ["NVIDIA GeForce GT 1030", 30, 3],
    ["NVIDIA RTX 4000 SFF Ada Generation", 70, 7],
    ["Graphics Device", 250, 25],
    ["", 400, 40],
    ["Graphics Device", undefined, undefined],
    ["Graphics Device", 0, undefined],
  ])("unknown model %j with limit %s W → %s W", (model, limit, watts) => {
    const got = defaultPowerFloor(model, limit);
    if (watts === undefined) expect(got).toBeUndefined();
    else expect(got).toBeCloseTo(watts, 12);
  });

  it("uses 10 % of the limit for unknown models", () => {
    expect(UNKNOWN_MODEL_FLOOR_SHARE).toBe(0.1);
  });

  it("a known model ignores the limit", () => {
    expect(defaultPowerFloor("NVIDIA H100 80GB HBM3", undefined)).toBe(75);
    expect(defaultPowerFloor("NVIDIA H100 80GB HBM3", 350)).toBe(75);
  });
});
