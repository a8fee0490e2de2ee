import { describe, expect, it } from "vitest";
import {
  MEMORY_V1,
  MEMORY_V2,
  NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
  NVML_ERROR_FUNCTION_NOT_FOUND,
  NVML_ERROR_NOT_FOUND,
  NVML_ERROR_NOT_SUPPORTED,
  NVML_SUCCESS,
} from "./bindings.js";
import type { Driver } from "./driver.js";
import { MemoryReader } from "./read-memory.js";
import { F, emptyReading } from "./readings-board.js";

const GiB = 1024 ** 3;

/** A driver whose two memory calls answer as told, counting the calls; every value plausible. */
function driver(v2rc: number) {
  const calls = { v2: 0, v1: 0 };
  const v2 = (_h: bigint, buf: Buffer): number => {
    calls.v2++;
    if (v2rc !== NVML_SUCCESS) return v2rc;
    buf.writeBigUInt64LE(BigInt(80 * GiB), MEMORY_V2.total);
    buf.writeBigUInt64LE(BigInt(2 * GiB), MEMORY_V2.used);
    return NVML_SUCCESS;
  };
  const v1 = (_h: bigint, buf: Buffer): number => {
    calls.v1++;
    buf.writeBigUInt64LE(BigInt(10 * GiB), MEMORY_V1.total);
    buf.writeBigUInt64LE(BigInt(3 * GiB), MEMORY_V1.used);
    return NVML_SUCCESS;
  };
  const d = {
    fn: { nvmlDeviceGetMemoryInfo_v2: v2, nvmlDeviceGetMemoryInfo: v1 },
    dcall: (_name: string, f: (...a: unknown[]) => number, ...args: unknown[]) => f(...args),
    plausible: (_gpu: number, _what: string, v: number) => v,
  } as unknown as Driver;
  return { d, calls };
}

describe("MemoryReader", () => {
  it("reads _v2 where the driver answers it", () => {
    const { d, calls } = driver(NVML_SUCCESS);
    const out = emptyReading();
    expect(new MemoryReader(d, 1n, 0).read(out)).toBe(NVML_SUCCESS);
    expect([out[F.memTotalBytes], out[F.memUsedBytes], calls.v1]).toEqual([80 * GiB, 2 * GiB, 0]);
  });

  it.each([
    ["a version it refuses", NVML_ERROR_ARGUMENT_VERSION_MISMATCH],
    ["not supported", NVML_ERROR_NOT_SUPPORTED],
    ["not found in the library", NVML_ERROR_FUNCTION_NOT_FOUND],
  ])("falls back to the first version for good where _v2 says %s", (_what, rc) => {
    const { d, calls } = driver(rc);
    const r = new MemoryReader(d, 1n, 0);
    const out = emptyReading();
    expect(r.read(out)).toBe(NVML_SUCCESS);
    expect(r.read(out)).toBe(NVML_SUCCESS);
    expect([out[F.memTotalBytes], out[F.memUsedBytes]]).toEqual([10 * GiB, 3 * GiB]);
    expect(calls).toEqual({ v2: 1, v1: 2 });
  });

  it("passes NOT_FOUND through (a MIG instance gone), and keeps to _v2", () => {
    const { d, calls } = driver(NVML_ERROR_NOT_FOUND);
    const r = new MemoryReader(d, 1n, 0);
    expect(r.read(emptyReading())).toBe(NVML_ERROR_NOT_FOUND);
    expect(r.read(emptyReading())).toBe(NVML_ERROR_NOT_FOUND);
    expect(calls).toEqual({ v2: 2, v1: 0 });
  });
});
