/**
 * The fake nvidia-smi, run as a real subprocess through the wrapper tests use, answers
 * like the real one and its output round-trips through the sampler's own parsers.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseScenario } from "../../agent/sim/scenario.js";
import { readingsAt } from "../../agent/sim/evaluate.js";
import { chooseQueryFields, parseHelpQueryGpu } from "../../agent/sources/nvidia-smi/fields.js";
import { COMPUTE_APPS_FIELDS, parseComputeApps } from "../../agent/sources/nvidia-smi/parse-compute-apps.js";
import { busIdKey, columnsFromFields, parseQueryGpuOutput } from "../../agent/sources/nvidia-smi/parse-query-gpu.js";
import { writeFakeNvidiaSmi } from "../helpers/fake-nvidia-smi.js";

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}
function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Result> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as NodeJS.ErrnoException).code === "number"
          ? (err as unknown as { code: number }).code
          : null
        : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const fixture = (name: string): string =>
  readFileSync(new URL(`../fixtures/nvidia-smi/${name}`, import.meta.url), "utf8");

const SCENARIO = {
  host: "fake-test",
  driverVersion: "550.90.07",
  gpus: [
    { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "active" }] },
    { model: "NVIDIA L40S", phases: [{ for: "1h", state: "held_idle", media: 70 }] },
    { model: "NVIDIA H200", phases: [{ for: "1h", error: "Unknown Error" }] },
    { model: "NVIDIA A100-SXM4-80GB", phases: [{ for: "1h", state: "free_idle" }] },
    {
      model: "NVIDIA GeForce RTX 2080 SUPER",
      phases: [
        {
          for: "1h",
          util: 3,
          powerW: null,
          processes: [{ pid: 4680, name: "C:\\Program Files\\NVIDIA Corporation\\NVIDIA Share.exe" }],
        },
      ],
    },
  ],
};
const scenario = parseScenario(SCENARIO);

describe("fake nvidia-smi", () => {
  let dir: string;
  let smi: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "trueidle-fake-smi-"));
    smi = writeFakeNvidiaSmi(dir, SCENARIO);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("prints the captured help of a new or an old driver", async () => {
    const fresh = await run(smi, ["--help-query-gpu"]);
    expect(fresh.code).toBe(0);
    expect(fresh.stdout).toBe(fixture("help-query-gpu.txt"));
    const old = writeFakeNvidiaSmi(mkdtempSync(join(dir, "old-")), { ...SCENARIO, driverVersion: "470.57.02" });
    expect((await run(old, ["--help-query-gpu"])).stdout).toBe(fixture("help-query-gpu-465.27.txt"));
  });

  it("answers a query with header and units that the sampler's parser reads back", async () => {
    const fields = chooseQueryFields(parseHelpQueryGpu(fixture("help-query-gpu.txt")));
    const r = await run(smi, [`--query-gpu=${fields.join(",")}`, "--format=csv"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toContain("memory.used [MiB], memory.total [MiB], power.draw [W]");
    expect(r.stdout).toMatch(/, \d+ MiB, /);
    const out = parseQueryGpuOutput(r.stdout);
    expect(out.invalid).toEqual([]);
    const expected = readingsAt(scenario, Date.now());
    expect(out.readings.map((x) => x.index)).toEqual([0, 1, 3, 4]);
    for (const got of out.readings) {
      const want = expected[got.index]!;
      expect(got).toMatchObject({
        uuid: want.uuid,
        model: want.model,
        busId: want.busId,
        driverVersion: "550.90.07",
        util: want.util,
        memUsedBytes: want.memUsedBytes,
        memTotalBytes: want.memTotalBytes,
        powerW: want.powerW,
        powerLimitW: want.powerLimitW,
        media: want.media ?? 0,
      });
    }
    expect(out.readings.find((x) => x.index === 4)!.powerW).toBeUndefined();
    expect(out.readings.find((x) => x.index === 1)!.media).toBe(70);
    expect(out.readings.find((x) => x.index === 3)!.idleReason).toBe(true);
    expect(out.gpuErrors).toEqual([{ busId: "0000:30:00.0", message: "Unknown Error" }]);
    expect(busIdKey(out.gpuErrors[0]!.busId)).toBe(busIdKey(expected[2]!.busId!));
  });

  it("answers noheader,nounits with bare values", async () => {
    const fields = ["index", "memory.used", "power.draw", "utilization.gpu"];
    const r = await run(smi, [`--query-gpu=${fields.join(",")}`, "--format=csv,noheader,nounits"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    const want = readingsAt(scenario, Date.now())[0]!;
    expect(lines[0]).toBe(`0, ${want.memUsedBytes! / 1024 / 1024}, ${want.powerW!.toFixed(2)}, ${want.util}`);
    expect(lines[2]).toBe("Unable to determine the device handle for GPU 0000:30:00.0: Unknown Error");
    expect(lines[4]).toBe(`4, ${readingsAt(scenario, Date.now())[4]!.memUsedBytes! / 1024 / 1024}, [N/A], 3`);
  });

  it("rejects a field the driver does not know, like the real one", async () => {
    const r = await run(smi, ["--query-gpu=index,no.such.field", "--format=csv"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain('Field "no.such.field" is not a valid field to query.');
    const old = writeFakeNvidiaSmi(mkdtempSync(join(dir, "old-")), { ...SCENARIO, driverVersion: "470.57.02" });
    const o = await run(old, ["--query-gpu=index,clocks_event_reasons.gpu_idle", "--format=csv"]);
    expect(o.code).toBe(2);
    expect(o.stdout).toContain('Field "clocks_event_reasons.gpu_idle" is not a valid field to query.');
    expect(
      (await run(old, ["--query-gpu=index,clocks_throttle_reasons.gpu_idle", "--format=csv,noheader"])).stdout,
    ).toMatch(/^0, Not Active\n/);
  });

  it("lists compute processes of GPUs without error, and nothing when there are none", async () => {
    const r = await run(smi, [
      `--query-compute-apps=${COMPUTE_APPS_FIELDS.join(",")}`,
      "--format=csv,noheader,nounits",
    ]);
    expect(r.code).toBe(0);
    const out = parseComputeApps(r.stdout, columnsFromFields(COMPUTE_APPS_FIELDS));
    expect(out.invalid).toEqual([]);
    // nvidia-smi has no per-process SM utilization: what it lists is the rest.
    const expected = readingsAt(scenario, Date.now()).map((r) => ({
      ...r,
      processes: r.processes?.map(({ smUtil: _, ...p }) => p),
    }));
    for (const want of expected) {
      if (want.error !== undefined || want.processes!.length === 0) expect(out.byUuid.has(want.uuid)).toBe(false);
      else expect(out.byUuid.get(want.uuid)).toEqual(want.processes);
    }
    expect(out.byUuid.get(expected[4]!.uuid)![0]!.name).toBe("C:\\Program Files\\NVIDIA Corporation\\NVIDIA Share.exe");
    expect(out.byUuid.get(expected[4]!.uuid)![0]!.usedMemoryBytes).toBeUndefined();

    const idle = writeFakeNvidiaSmi(mkdtempSync(join(dir, "idle-")), {
      gpus: [{ phases: [{ for: "1h", state: "free_idle" }] }],
    });
    const none = await run(idle, ["--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"]);
    expect(none).toMatchObject({ code: 0, stdout: "" });
    const withHeader = await run(smi, [
      "--query-compute-apps=timestamp,gpu_name,gpu_bus_id,gpu_serial,gpu_uuid,pid,process_name,used_gpu_memory",
      "--format=csv",
    ]);
    expect(withHeader.stdout.split("\n")[0]).toBe(
      "timestamp, gpu_name, gpu_bus_id, gpu_serial, gpu_uuid, pid, process_name, used_gpu_memory [MiB]",
    );
    expect(parseComputeApps(withHeader.stdout).byUuid.get(expected[0]!.uuid)).toEqual(expected[0]!.processes);
  });

  it("loops with -lms and exits after the scenario's exitAfter", async () => {
    const looping = writeFakeNvidiaSmi(mkdtempSync(join(dir, "loop-")), { ...SCENARIO, exitAfter: "700ms" });
    const r = await run(looping, ["--query-gpu=index,uuid", "--format=csv,noheader", "-lms", "100"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    // At least the first tick and one more, each a line per GPU.
    expect(lines.length).toBeGreaterThanOrEqual(10);
    expect(lines.length % 5).toBe(0);
    expect(lines.slice(0, 5)).toEqual(lines.slice(5, 10));
  });

  it("answers -L and --version", async () => {
    const l = await run(smi, ["-L"]);
    expect(l.stdout.split("\n")[0]).toBe(`GPU 0: NVIDIA H100 80GB HBM3 (UUID: ${scenario.gpus[0]!.uuid})`);
    const v = await run(smi, ["--version"]);
    expect(v.stdout).toContain("DRIVER version      : 550.90.07");
  });

  it("fails like stand-ins without --help-query-gpu when asked to", async () => {
    const r = await run(smi, ["--help-query-gpu"], { ...process.env, FAKE_NVIDIA_SMI_NO_HELP: "1" });
    expect(r.code).toBe(2);
    expect(r.stdout).toContain("Invalid combination of input arguments");
  });
});
