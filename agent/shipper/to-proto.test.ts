import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { GpuWindowSchema } from "../../gen/trueidle/v1/ingest_pb.js";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../../common/types.js";
import { cutText } from "../../common/wire-limits.js";
import { DEFAULT_WINDOW_LIMITS, validateWindow } from "../../collector/validate.js";
import { SamplePipeline } from "../pipeline.js";
import { windowToProto } from "./to-proto.js";

const MiB = 1024 * 1024;
const T0 = Date.UTC(2026, 10, 29, 12, 0, 0);

function reading(over: Partial<GpuReading>): GpuReading {
  return {
    uuid: "GPU-a",
    index: 0,
    model: "NVIDIA H100 80GB HBM3",
    driverVersion: "550.90.07",
    util: 0,
    powerW: 70,
    powerLimitW: 700,
    memUsedBytes: 0,
    memTotalBytes: 80 * 1024 * MiB,
    processes: [],
    ...over,
  };
}

describe("windowToProto", () => {
  it("cuts long process names and error texts so the collector still accepts the window", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const longName = `/opt/venv/bin/python3 ${"x".repeat(2000)}`;
    const procs = Array.from({ length: 80 }, (_, i) => ({ pid: 100 + i, name: longName, usedMemoryBytes: 100 * MiB }));
    p.ingest(T0, [reading({ memUsedBytes: 8000 * MiB, processes: procs })]);
    p.ingest(T0 + 1000, [
      reading({
        error: `Unable to determine the device handle: ${"e".repeat(5000)}`,
        util: undefined,
        powerW: undefined,
        memUsedBytes: undefined,
        processes: undefined,
      }),
    ]);
    p.ingest(T0 + 10_000, [reading({})]);
    const [rec] = p.drain();
    const w = windowToProto(rec!);
    expect(w.topHolders.length).toBeLessThanOrEqual(64);
    expect(w.topHolders[0]!.name).toHaveLength(256);
    expect(w.last!.error).toHaveLength(1024);
    expect(validateWindow(w, 0, DEFAULT_WINDOW_LIMITS, T0 + 11_000)).toBeUndefined();
  });

  it("carries each holder's SM share, and leaves it unset where the source could not see it", () => {
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    const procs = [
      { pid: 11, name: "python3", usedMemoryBytes: 30_000 * MiB, smUtil: 0 },
      { pid: 12, name: "torchrun", usedMemoryBytes: 20_000 * MiB, smUtil: 95 },
      { pid: 13, name: "nvidia-smi-visible", usedMemoryBytes: 10_000 * MiB },
    ];
    for (let s = 0; s < 10; s++)
      p.ingest(T0 + s * 1000, [reading({ util: 95, powerW: 650, memUsedBytes: 60_000 * MiB, processes: procs })]);
    const [rec] = p.flushAll();
    const w = windowToProto(rec!);
    expect(w.topHolders.map((h) => [h.pid, h.smUtilRatio])).toEqual([
      [11, 0],
      [12, 0.95],
      [13, undefined],
    ]);
    // Through the wire, as the shipper buffers and sends it: 0 stays 0, unset stays unset.
    const back = fromBinary(GpuWindowSchema, toBinary(GpuWindowSchema, w));
    expect(back.topHolders.map((h) => [h.pid, h.smUtilRatio])).toEqual([
      [11, 0],
      [12, 0.95],
      [13, undefined],
    ]);
    expect(validateWindow(w, 0, DEFAULT_WINDOW_LIMITS, T0 + 11_000)).toBeUndefined();
  });

  it("never cuts a surrogate pair in half", () => {
    expect(cutText("ab😀", 3)).toBe("ab");
    expect(cutText("ab😀", 4)).toBe("ab😀");
    expect(cutText("abc", 10)).toBe("abc");
  });
});
