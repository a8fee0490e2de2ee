import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { REQUIRED_FIELDS } from "./fields.js";
import {
  busIdKey,
  columnsFromFields,
  parseDeviceHandleError,
  parseQueryGpuLine,
  parseQueryGpuOutput,
} from "./parse-query-gpu.js";

const MiB = 1024 * 1024;
const fixture = (name: string): string =>
  readFileSync(new URL(`../../../test/fixtures/nvidia-smi/${name}`, import.meta.url), "utf8");
const MASKED_UUID = "GPU-00000000-0000-0000-0000-000000000000";

function only(name: string) {
  const out = parseQueryGpuOutput(fixture(name));
  expect(out.invalid).toEqual([]);
  expect(out.gpuErrors).toEqual([]);
  expect(out.readings).toHaveLength(1);
  return out.readings[0]!;
}

describe("--query-gpu captures", () => {
  it("reads the H200 under load (590.48.01)", () => {
    expect(only("csv/query-gpu-h200-590.48.01-load.csv")).toEqual({
      uuid: MASKED_UUID,
      index: 0,
      model: "NVIDIA H200",
      busId: "00000000:83:00.0",
      driverVersion: "590.48.01",
      util: 100,
      memUsedBytes: 32362 * MiB,
      memTotalBytes: 143771 * MiB,
      powerW: 627.4,
      powerLimitW: 700,
      idleReason: false,
      media: 0,
    });
  });

  it("keeps MIG's [N/A] utilization missing, not 0 (H100 MIG, 590.48.01)", () => {
    const r = only("csv/query-gpu-h100-mig-590.48.01-load.csv");
    expect(r.util).toBeUndefined();
    expect(r.media).toBeUndefined();
    expect(r.error).toBeUndefined();
    expect(r.memUsedBytes).toBe(11125 * MiB);
    expect(r.memTotalBytes).toBe(81559 * MiB);
    expect(r.powerW).toBe(433.78);
    expect(r.model).toBe("NVIDIA H100 80GB HBM3");
  });

  it("shows the L40S encoder load as media while util reads 9 % (595.80)", () => {
    const r = only("csv/query-gpu-l40s-595.80-load.csv");
    expect(r.util).toBe(9);
    expect(r.media).toBe(60);
    expect(r.powerW).toBe(110.23);
    expect(r.powerLimitW).toBe(350);
    expect(r.memUsedBytes).toBe(1235 * MiB);
  });

  it("reads the old clocks_throttle_reasons name on driver 471.11 (Windows)", () => {
    const r = only("csv/query-gpu-rtx-2080-super-windows-471.11.csv");
    expect(r.idleReason).toBe(true);
    expect(r.util).toBe(2);
    expect(r.powerW).toBe(32.7);
    expect(r.powerLimitW).toBe(250);
    expect(r.memTotalBytes).toBe(8192 * MiB);
    expect(r.media).toBeUndefined();
    expect(r.uuid).toBe("GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa");
  });

  it("reads the Windows 610.62 capture despite deprecated and not-found values", () => {
    const r = only("csv/query-gpu-rtx-2080-super-windows-610.62-load.csv");
    expect(r.util).toBe(7);
    expect(r.media).toBe(99);
    expect(r.powerW).toBe(97.99);
    expect(r.idleReason).toBe(false);
    expect(r.error).toBeUndefined();
  });
});

describe("partial failure", () => {
  const fields = [
    ...REQUIRED_FIELDS,
    "enforced.power.limit",
    "clocks_event_reasons.gpu_idle",
    "utilization.encoder",
    "utilization.decoder",
  ];
  const columns = columnsFromFields(fields);
  const line = (i: number, bus: string, util: string): string =>
    `2025/01/02 03:04:05.678, ${i}, GPU-${i}${i}${i}${i}0000-0000-0000-0000-000000000000, ${bus}, NVIDIA H100 80GB HBM3, 550.90.07, ${util}, 1024, 81559, 312.50, 700.00, Not Active, 0, 12`;
  const capture = [
    line(0, "00000000:1B:00.0", "100"),
    "Unable to determine the device handle for GPU 0000:3B:00.0: Unknown Error",
    line(2, "00000000:5B:00.0", "0"),
    "Unable to determine the device handle for GPU0000:DB:00.0: GPU is lost.  Reboot the system to recover this GPU",
    line(4, "00000000:E1:00.0", "[N/A]"),
    "",
  ].join("\n");

  it("makes an unreadable GPU an error and parses the others", () => {
    const out = parseQueryGpuOutput(capture, columns);
    expect(out.invalid).toEqual([]);
    expect(out.readings.map((r) => [r.index, r.util, r.busId])).toEqual([
      [0, 100, "00000000:1B:00.0"],
      [2, 0, "00000000:5B:00.0"],
      [4, undefined, "00000000:E1:00.0"],
    ]);
    expect(out.readings[0]!.media).toBe(12);
    expect(out.readings[0]!.memUsedBytes).toBe(1024 * MiB);
    expect(out.gpuErrors).toEqual([
      { busId: "0000:3B:00.0", message: "Unknown Error" },
      { busId: "0000:DB:00.0", message: "GPU is lost. Reboot the system to recover this GPU" },
    ]);
    expect(busIdKey(out.gpuErrors[0]!.busId)).toBe(busIdKey("00000000:3B:00.0"));
  });

  it("counts a malformed line instead of throwing", () => {
    const out = parseQueryGpuOutput(
      `${line(0, "00000000:1B:00.0", "5")}\n0, GPU-x, truncated\nNVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n`,
      columns,
    );
    expect(out.readings).toHaveLength(1);
    expect(out.invalid.map((i) => i.reason)).toEqual(["expected 14 values, got 3", "expected 14 values, got 1"]);
    expect(parseQueryGpuLine(columns, line(1, "00000000:1B:00.0", "5").replace(", 1,", ", x,"))).toMatchObject({
      kind: "invalid",
      reason: "no GPU index",
    });
  });

  it("marks a line whose values say the GPU is lost", () => {
    const lost = parseQueryGpuLine(columns, line(1, "00000000:1B:00.0", "[GPU is lost]"));
    expect(lost).toMatchObject({ kind: "reading", reading: { index: 1, error: "GPU is lost" } });
  });

  it("normalises bus ids across the 8- and 4-digit domain forms", () => {
    expect(busIdKey("00000000:3B:00.0")).toBe("0000:3B:00.0");
    expect(busIdKey("0000:3b:00.0")).toBe("0000:3B:00.0");
    expect(busIdKey("00001580:00:00.0")).toBe("1580:00:00.0");
    expect(busIdKey("garbage")).toBeUndefined();
    expect(parseDeviceHandleError("0, GPU-1")).toBeUndefined();
  });
});
