import { describe, expect, it } from "vitest";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../../common/types.js";
import { cutText } from "../../common/wire-limits.js";
import { DEFAULT_WINDOW_LIMITS, validateWindow } from "../../collector/validate.js";
import { SamplePipeline } from "../pipeline.js";
import { windowToProto } from "./to-proto.js";

const MiB = 1024 * 1024;
const T0 = Date.UTC(2026, 10, 29, 12, 0, 0);

function reading(over: Partial<GpuReading>): GpuReading {
  return {
    uuid: "GPU-a", index: 0, model: "NVIDIA H100 80GB HBM3", driverVersion: "550.90.07",
    util: 0, powerW: 70, powerLimitW: 700, memUsedBytes: 0, memTotalBytes: 80 * 1024 * MiB, processes: [],
    ...over,
  };
}

describe("windowToProto", () => {
  it("cuts long process names and error texts so the collector still accepts the window", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const longName = "/opt/venv/bin/python3 " + "x".repeat(2000);
    const procs = Array.from({ length: 80 }, (_, i) => ({ pid: 100 + i, name: longName, usedMemoryBytes: 100 * MiB }));
    p.ingest(T0, [reading({ memUsedBytes: 8000 * MiB, processes: procs })]);
    p.ingest(T0 + 1000, [reading({ error: "Unable to determine the device handle: " + "e".repeat(5000), util: undefined, powerW: undefined, memUsedBytes: undefined, processes: undefined })]);
    p.ingest(T0 + 10_000, [reading({})]);
    const [rec] = p.drain();
    const w = windowToProto(rec!);
    expect(w.topHolders.length).toBeLessThanOrEqual(64);
    expect(w.topHolders[0]!.name).toHaveLength(256);
    expect(w.last!.error).toHaveLength(1024);
    expect(validateWindow(w, 0, DEFAULT_WINDOW_LIMITS, T0 + 11_000)).toBeUndefined();
  });

  it("never cuts a surrogate pair in half", () => {
    expect(cutText("ab😀", 3)).toBe("ab");
    expect(cutText("ab😀", 4)).toBe("ab😀");
    expect(cutText("abc", 10)).toBe("abc");
  });
});
