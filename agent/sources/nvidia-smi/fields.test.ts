import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  CONSERVATIVE_FIELDS,
  REQUIRED_FIELDS,
  chooseQueryFields,
  parseHelpQueryGpu,
  rejectedField,
  withoutRejectedField,
} from "./fields.js";

const fixture = (name: string): string =>
  readFileSync(new URL(`../../../test/fixtures/nvidia-smi/${name}`, import.meta.url), "utf8");

describe("--help-query-gpu", () => {
  const newHelp = parseHelpQueryGpu(fixture("help-query-gpu.txt"));
  const oldHelp = parseHelpQueryGpu(fixture("help-query-gpu-465.27.txt"));

  it("lists field names and their aliases, not quoted text in descriptions", () => {
    for (const f of [
      "timestamp",
      "name",
      "gpu_name",
      "pci.bus_id",
      "gpu_bus_id",
      "clocks_event_reasons.gpu_idle",
      "clocks_throttle_reasons.gpu_idle",
      "utilization.jpeg",
      "utilization.ofa",
      "enforced.power.limit",
    ]) {
      expect(newHelp.has(f), f).toBe(true);
    }
    expect([...newHelp].some((f) => f.includes(":") || f.includes(" "))).toBe(false);
    expect(newHelp.size).toBeGreaterThan(240);
    expect(oldHelp.has("clocks_throttle_reasons.gpu_idle")).toBe(true);
    expect(oldHelp.has("clocks_event_reasons.gpu_idle")).toBe(false);
    expect(oldHelp.has("utilization.encoder")).toBe(false);
  });

  it("chooses the gpu_idle reason by driver: clocks_event_reasons when listed, else the throttle name", () => {
    const fresh = chooseQueryFields(newHelp);
    expect(fresh).toEqual([
      ...REQUIRED_FIELDS,
      "enforced.power.limit",
      "clocks_event_reasons.gpu_idle",
      "utilization.encoder",
      "utilization.decoder",
      "utilization.jpeg",
      "utilization.ofa",
    ]);
    const old = chooseQueryFields(oldHelp);
    expect(old).toEqual([...REQUIRED_FIELDS, "enforced.power.limit", "clocks_throttle_reasons.gpu_idle"]);
  });

  it("falls back to power.limit when enforced.power.limit is not listed", () => {
    const help = new Set([...REQUIRED_FIELDS, "power.limit"]);
    expect(chooseQueryFields(help)).toEqual([...REQUIRED_FIELDS, "power.limit"]);
  });

  it("uses the conservative list when the help is unreadable", () => {
    expect(chooseQueryFields(undefined)).toEqual([...CONSERVATIVE_FIELDS]);
    expect(parseHelpQueryGpu("Invalid combination of input arguments.\n").size).toBe(0);
  });
});

describe("fields rejected at run time", () => {
  it("reads the field from nvidia-smi's message", () => {
    expect(rejectedField('Field "utilization.jpeg" is not a valid field to query.\n\n')).toBe("utilization.jpeg");
    expect(rejectedField("0, GPU-1, 45 %")).toBeUndefined();
  });

  it("swaps a renamed field for its other name once, then drops it", () => {
    const tried = new Set<string>();
    const a = withoutRejectedField(CONSERVATIVE_FIELDS, "clocks_throttle_reasons.gpu_idle", tried);
    expect(a).toContain("clocks_event_reasons.gpu_idle");
    expect(a).not.toContain("clocks_throttle_reasons.gpu_idle");
    const b = withoutRejectedField(a!, "clocks_event_reasons.gpu_idle", tried);
    expect(b!.some((f) => f.includes("gpu_idle"))).toBe(false);
  });

  it("replaces enforced.power.limit by power.limit and drops media fields", () => {
    const tried = new Set<string>();
    const a = withoutRejectedField(CONSERVATIVE_FIELDS, "enforced.power.limit", tried)!;
    expect(a).toContain("power.limit");
    const b = withoutRejectedField(a, "utilization.encoder", tried)!;
    expect(b).not.toContain("utilization.encoder");
    expect(b).toHaveLength(a.length - 1);
  });

  it("gives up on a required field or one not asked for", () => {
    expect(withoutRejectedField(CONSERVATIVE_FIELDS, "utilization.gpu", new Set())).toBeUndefined();
    expect(withoutRejectedField(CONSERVATIVE_FIELDS, "fan.speed", new Set())).toBeUndefined();
  });
});
