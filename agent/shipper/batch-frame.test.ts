import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { GpuWindowSchema, StreamRequestSchema } from "../../gen/trueidle/v1/ingest_pb.js";
import { frameBatch } from "./batch-frame.js";

function window(i: number, nameLength: number) {
  return toBinary(
    GpuWindowSchema,
    create(GpuWindowSchema, {
      uuid: `GPU-${i}`,
      index: i,
      model: "NVIDIA H100 80GB HBM3",
      startMs: 1_796_396_260_000n + BigInt(i),
      durationMs: 10_000,
      observedS: 10,
      heldIdleS: 10,
      topHolders: [{ pid: 4242 + i, name: "p".repeat(nameLength), usedMemoryBytes: 2n ** 40n, smUtilRatio: 0.25 }],
    }),
  );
}

describe("frameBatch", () => {
  it("writes exactly what protobuf-es writes for the same batch, whatever the sizes", () => {
    const cases: Array<[bigint, Uint8Array[]]> = [
      [1n, [window(0, 3)]],
      [0n, [window(1, 3), window(2, 200)]],
      [127n, []],
      [128n, Array.from({ length: 64 }, (_, i) => window(i, 300))],
      [2n ** 40n, Array.from({ length: 3 }, (_, i) => window(i, 20_000))],
    ];
    for (const [seq, windows] of cases) {
      const expected = toBinary(
        StreamRequestSchema,
        create(StreamRequestSchema, {
          msg: { case: "batch", value: { seq, windows: windows.map((w) => fromBinary(GpuWindowSchema, w)) } },
        }),
      );
      const framed = frameBatch(seq, windows);
      expect(Buffer.from(framed).equals(Buffer.from(expected)), `seq ${seq}, ${windows.length} windows`).toBe(true);
      const back = fromBinary(StreamRequestSchema, framed);
      expect(back.msg.case).toBe("batch");
      if (back.msg.case === "batch")
        expect(back.msg.value.windows.map((w) => w.uuid)).toEqual(
          windows.map((w) => fromBinary(GpuWindowSchema, w).uuid),
        );
    }
  });
});
