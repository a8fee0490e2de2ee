import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { COMPUTE_APPS_FIELDS, parseComputeApps } from "./parse-compute-apps.js";
import { columnsFromFields } from "./parse-query-gpu.js";

const MiB = 1024 * 1024;
const fixture = (name: string): string =>
  readFileSync(new URL(`../../../test/fixtures/nvidia-smi/${name}`, import.meta.url), "utf8");
const MASKED_UUID = "GPU-00000000-0000-0000-0000-000000000000";

describe("--query-compute-apps captures", () => {
  it("reads three processes on the H100 MIG host", () => {
    const out = parseComputeApps(fixture("compute-apps/h100-mig-590.48.01-load.csv"));
    expect(out.invalid).toEqual([]);
    expect(out.byUuid.get(MASKED_UUID)).toEqual([
      { pid: 21180, name: "/root/tools/memhog", usedMemoryBytes: 2296 * MiB },
      { pid: 21181, name: "/root/tools/memhog", usedMemoryBytes: 1272 * MiB },
      { pid: 21198, name: "./gpu_burn", usedMemoryBytes: 7484 * MiB },
    ]);
  });

  it("reads the L40S ffmpeg processes", () => {
    const out = parseComputeApps(fixture("compute-apps/l40s-595.80-load.csv"));
    expect(out.byUuid.get(MASKED_UUID)?.map((p) => [p.pid, p.name, p.usedMemoryBytes])).toEqual([
      [20037, "ffmpeg", 538 * MiB],
      [20038, "ffmpeg", 681 * MiB],
    ]);
  });

  it("keeps Windows paths with spaces and backslashes, and [N/A] memory as unknown", () => {
    const out = parseComputeApps(fixture("compute-apps/rtx-2080-super-windows-591.86-idle.csv"));
    expect(out.invalid).toEqual([]);
    const procs = out.byUuid.get(MASKED_UUID)!;
    expect(procs).toHaveLength(10);
    expect(procs.every((p) => p.usedMemoryBytes === undefined)).toBe(true);
    expect(procs.map((p) => p.name)).toContain("C:\\Program Files\\NZXT CAM\\NZXT CAM.exe");
    expect(procs.find((p) => p.pid === 4680)?.name).toBe(
      "C:\\Program Files\\NVIDIA Corporation\\NVIDIA GeForce Experience\\NVIDIA Share.exe",
    );
  });
});

describe("the sampler's own query", () => {
  const columns = columnsFromFields(COMPUTE_APPS_FIELDS);

  it("takes a name with commas from between the known columns", () => {
    const out = parseComputeApps(
      [
        "GPU-a, 101, python3 train.py --tags a, b, c, 2048",
        "GPU-a, 102, /opt/x, 16",
        "GPU-b, 201, C:\\Program Files\\A, B\\app.exe, [N/A]",
        "",
      ].join("\n"),
      columns,
    );
    expect(out.invalid).toEqual([]);
    expect(out.byUuid.get("GPU-a")).toEqual([
      { pid: 101, name: "python3 train.py --tags a, b, c", usedMemoryBytes: 2048 * MiB },
      { pid: 102, name: "/opt/x", usedMemoryBytes: 16 * MiB },
    ]);
    expect(out.byUuid.get("GPU-b")).toEqual([
      { pid: 201, name: "C:\\Program Files\\A, B\\app.exe", usedMemoryBytes: undefined },
    ]);
  });

  it("gives no processes for empty output, and counts malformed lines", () => {
    expect(parseComputeApps("", columns).byUuid.size).toBe(0);
    expect(parseComputeApps("No running processes found\n", columns).invalid).toEqual([]);
    const bad = parseComputeApps(
      "GPU-a, notapid, x, 5\nGPU-a\nUnable to determine the device handle for GPU 0000:3B:00.0: Unknown Error\n",
      columns,
    );
    expect(bad.invalid.map((i) => i.reason)).toEqual(["no process id", "expected 4 values, got 1"]);
    expect(bad.gpuErrors).toEqual([{ busId: "0000:3B:00.0", message: "Unknown Error" }]);
  });
});
