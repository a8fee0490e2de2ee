import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
import { describe, expect, it } from "vitest";
import { GpuWindowSchema } from "../../gen/trueidle/v1/ingest_pb.js";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../../common/types.js";
import { SamplePipeline } from "../pipeline.js";
import type { GpuWindowRecord } from "../window.js";
import { encodeWindow } from "./encode-window.js";
import { windowToProto } from "./to-proto.js";

const MiB = 1024 * 1024;
const T0 = Date.UTC(2026, 11, 4, 12, 0, 0);

/** A deterministic pseudo-random number in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Windows as the pipeline makes them from readings of every kind: missing values, errors, processes, media. */
function windows(seed: number, n: number): GpuWindowRecord[] {
  const r = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const maybe = <T>(v: T): T | undefined => (r() < 0.2 ? undefined : v);
  const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
  const out: GpuWindowRecord[] = [];
  for (let t = 0; out.length < n; t++) {
    const readings: GpuReading[] = [];
    for (let g = 0; g < 4; g++) {
      const procs = Math.floor(r() * 5);
      readings.push({
        uuid: `GPU-${seed}-${g}`,
        index: g,
        model: pick(["NVIDIA H100 80GB HBM3", "Tesla T4", "NVIDIA H200 – ünïcode"]),
        driverVersion: pick(["550.90.07", "", "580.159.04"]),
        util: maybe(Math.round(r() * 100)),
        powerW: maybe(Math.round(r() * 70000) / 100),
        powerLimitW: maybe(700),
        memUsedBytes: maybe(Math.floor(r() * 80_000) * MiB),
        memTotalBytes: maybe(81_559 * MiB),
        smActive: r() < 0.5 ? r() : undefined,
        media: r() < 0.2 ? Math.round(r() * 100) : undefined,
        error:
          r() < 0.05
            ? `NVML: GPU is lost (nvmlDeviceGetMemoryInfo_v2) ${"é".repeat(Math.floor(r() * 800))}`
            : undefined,
        processes:
          r() < 0.1
            ? undefined
            : Array.from({ length: procs }, (_, i) => ({
                pid: 1000 + i,
                name: pick(["python3", "torchrun", "x".repeat(300), "训练"]),
                usedMemoryBytes: maybe(Math.floor(r() * 20_000) * MiB),
                smUtil: r() < 0.5 ? Math.round(r() * 100) : undefined,
                owner:
                  r() < 0.5
                    ? undefined
                    : {
                        via: "process" as const,
                        pid: 1000 + i,
                        user: maybe(pick(["alice", "1001", "ü".repeat(300)])),
                        command: maybe("python3"),
                        runtime: maybe("containerd"),
                        containerId: maybe("0123456789abcdef".repeat(4)),
                        podUid: maybe("6f1c2a3e-0000-4000-8000-000000000001"),
                        job: maybe(String(Math.floor(r() * 1e6))),
                      },
              })),
        allocations:
          r() < 0.3
            ? undefined
            : r() < 0.5
              ? []
              : [
                  pick([
                    {
                      via: "pod_resources" as const,
                      namespace: "ml",
                      pod: `trainer-${Math.floor(r() * 9)}`,
                      container: "main",
                    },
                    { via: "job_mapping" as const, job: String(Math.floor(r() * 1e6)), user: maybe("1001") },
                  ]),
                ],
      });
    }
    p.ingest(T0 + t * 1000, readings);
    out.push(...p.drain());
  }
  return out;
}

describe("encodeWindow", () => {
  it("writes exactly the bytes protobuf-es writes for the same window", () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      for (const w of windows(seed, 60)) {
        const expected = Buffer.from(toBinary(GpuWindowSchema, windowToProto(w)));
        expect(encodeWindow(w).equals(expected), JSON.stringify(w)).toBe(true);
      }
    }
  });

  it("keeps the edges of the encoding: -0 written, zero left out, unset optionals left out, long texts cut, many holders capped", () => {
    const [w] = windows(9, 1);
    const edge: GpuWindowRecord = {
      ...w!,
      observedS: -0,
      realBusyS: 0,
      reportedBusyS: Number.NaN,
      powerMeanW: 0,
      powerMaxW: undefined,
      memUsedMaxBytes: 0,
      memTotalBytes: 2 ** 52,
      startMs: 0,
      index: 0,
      driverVersion: "",
      last: { ...w!.last, error: "e".repeat(5000), utilPercent: 0, powerW: undefined, idleStreakS: 1e12 },
      topHolders: Array.from({ length: 100 }, (_, i) => ({
        pid: i,
        name: "n".repeat(1000),
        usedMemoryBytes: i === 0 ? undefined : i,
        smShare: i % 2 ? 0 : undefined,
      })),
    };
    expect(encodeWindow(edge).equals(Buffer.from(toBinary(GpuWindowSchema, windowToProto(edge))))).toBe(true);
  });

  it("writes every field the schema has (a field added to the proto must be added to the encoder)", () => {
    const [w] = windows(11, 1);
    const full: GpuWindowRecord = {
      ...w!,
      index: 3,
      driverVersion: "550.90.07",
      observedS: 10,
      reportedIdleS: 1,
      reportedBusyS: 2,
      realBusyS: 3,
      stateS: { unavailable: 1, free_idle: 2, active: 3, busy_phantom: 2, held_idle: 2 },
      powerMeanW: 100,
      powerMaxW: 200,
      powerFloorW: 75,
      powerLimitW: 700,
      memUsedMaxBytes: 1,
      memTotalBytes: 2,
      processesMax: 2,
      last: {
        timeMs: T0,
        state: "active",
        real: 0.5,
        realSource: "sm_active",
        utilPercent: 50,
        powerW: 300,
        memUsedBytes: 5,
        processes: 2,
        idleStreakS: 4,
        error: "x",
      },
      topHolders: [{ pid: 1, name: "python3", usedMemoryBytes: 5, smShare: 0.5 }],
      heldByS: { process: 1, memory: 2, allocation: 3 },
      owners: [
        {
          via: "process",
          namespace: "ml",
          pod: "trainer-0",
          container: "main",
          podUid: "u",
          job: "42",
          step: "0",
          user: "alice",
          runtime: "containerd",
          containerId: "c",
          pid: 7,
          command: "python3",
          observedS: 10,
          stateS: { unavailable: 1, free_idle: 2, active: 3, busy_phantom: 2, held_idle: 2 },
          reportedIdleS: 1,
          reportedBusyS: 2,
          realBusyS: 3,
        },
      ],
    };
    full.last.heldBy = 7;
    full.parentUuid = "GPU-00000000-0000-0000-0000-000000000001";
    full.migProfile = "3g.40gb";
    // Not a valid window (a board row has no profile), only every field set at once.
    full.migBoard = true;
    const back = fromBinary(GpuWindowSchema, encodeWindow(full));
    const unset = (
      msg: Parameters<typeof reflect>[1],
      schema: Parameters<typeof reflect>[0],
      prefix: string,
    ): string[] => {
      const r = reflect(schema, msg);
      return r.fields.flatMap((f) => (r.isSet(f) ? [] : [`${prefix}${f.name}`]));
    };
    expect(unset(back, GpuWindowSchema, "")).toEqual([]);
    expect(unset(back.last!, GpuWindowSchema.field.last.message!, "last.")).toEqual([]);
    expect(unset(back.topHolders[0]!, GpuWindowSchema.field.topHolders.message!, "top_holders.")).toEqual([]);
    expect(unset(back.owners[0]!, GpuWindowSchema.field.owners.message!, "owners.")).toEqual([]);
  });
});
