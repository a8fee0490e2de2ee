/**
 * The join of `nvidia-smi -L` and the `-q`/`-q -x` report into MIG instances, on real
 * captures of one H100 in MIG mode and on the races between the two runs.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { GpuReading } from "../../../common/types.js";
import { instanceReadings, joinMig, listsMigDevices, type MigInstance } from "./mig-instances.js";
import { parseGpuList, parseMigTextQ, parseMigXml, type ListedGpu, type MigBoard } from "./parse-mig.js";

const MiB = 1024 * 1024;
const fixture = (name: string): string =>
  readFileSync(new URL(`../../../test/fixtures/nvidia-smi/${name}`, import.meta.url), "utf8");

/** `-L` and `-q` of the same H100 (masked uuids), under load: gpu_burn and two memhogs on GI 2. */
const H100_LIST = parseGpuList(fixture("list/h100-mig-590.48.01.txt"));
const H100_REPORT = parseMigTextQ(fixture("text-q/nge-h100-mig-590.48.01-load.txt"));
const BOARD = "GPU-00000000-0000-0000-0000-000000000000";

describe("joinMig on the H100 captures", () => {
  it("gives each instance its uuid and profile from -L, its ids, SMs and memory from the report", () => {
    expect(listsMigDevices(H100_LIST)).toBe(true);
    const joined = joinMig(H100_LIST, H100_REPORT);
    expect(joined.unsettled).toEqual([]);
    expect(joined.invalidDevices).toBe(0);
    const instances = joined.instances.get(BOARD)!;
    expect(
      instances.map((m) => [
        m.deviceIndex,
        m.uuid,
        m.profile,
        m.gpuInstanceId,
        m.computeInstanceId,
        m.multiprocessorCount,
        m.memTotalBytes! / MiB,
        m.memUsedBytes! / MiB,
      ]),
    ).toEqual([
      [0, "MIG-00000000-0000-0000-0000-000000000000", "3g.40gb", 2, 0, 60, 40448, 11091],
      [1, "MIG-00000001-0000-0000-0000-000000000001", "2g.20gb", 3, 0, 32, 20096, 17],
      [2, "MIG-00000002-0000-0000-0000-000000000002", "1g.10gb", 9, 0, 16, 9984, 9],
      [3, "MIG-00000003-0000-0000-0000-000000000003", "1g.10gb", 10, 0, 16, 9984, 9],
    ]);
  });

  it("puts each process in its instance, as --query-compute-apps cannot", () => {
    const instances = joinMig(H100_LIST, H100_REPORT).instances.get(BOARD)!;
    expect(instances[0]!.processes).toEqual([
      { pid: 21180, name: "/root/tools/memhog", usedMemoryBytes: 2296 * MiB },
      { pid: 21181, name: "/root/tools/memhog", usedMemoryBytes: 1272 * MiB },
      { pid: 21198, name: "./gpu_burn", usedMemoryBytes: 7484 * MiB },
    ]);
    expect(instances.slice(1).map((m) => m.processes)).toEqual([[], [], []]);
  });

  it("finds nothing on boards without MIG devices", () => {
    const list = parseGpuList("GPU 0: NVIDIA H200 (UUID: GPU-1)\n");
    expect(listsMigDevices(list)).toBe(false);
    expect(joinMig(list, parseMigXml(fixture("xml/telegraf-tesla-t4-515.105.01.xml")))).toEqual({
      instances: new Map(),
      unsettled: [],
      invalidDevices: 0,
    });
  });
});

describe("joinMig when the two runs disagree", () => {
  const report = (): MigBoard[] => structuredClone(H100_REPORT);
  const list = (): ListedGpu[] => structuredClone(H100_LIST);

  it("leaves a board unsettled when an instance was destroyed between the runs", () => {
    const r = report();
    r[0]!.migDevices.splice(1, 1);
    r[0]!.migDevices.forEach((d, i) => {
      d.index = i;
    });
    expect(joinMig(list(), r)).toMatchObject({ instances: new Map(), unsettled: [BOARD] });
  });

  it("leaves a board unsettled when an instance was created between the runs", () => {
    const r = report();
    r[0]!.migDevices.push({ ...r[0]!.migDevices[3]!, index: 4, gpuInstanceId: 11 });
    expect(joinMig(list(), r).unsettled).toEqual([BOARD]);
    // Or the board's first instance, after a -L that listed none.
    const l = list();
    l[0]!.migDevices = [];
    expect(joinMig(l, report())).toMatchObject({ instances: new Map(), unsettled: [BOARD] });
  });

  it("leaves a board unsettled when the R450 uuid names other ids than the report", () => {
    const l = parseGpuList(
      [
        `GPU 0: A100-SXM4-40GB (UUID: ${BOARD})`,
        `  MIG 3g.40gb Device 0: (UUID: MIG-${BOARD}/2/0)`,
        `  MIG 2g.20gb Device 1: (UUID: MIG-${BOARD}/3/0)`,
        `  MIG 1g.10gb Device 2: (UUID: MIG-${BOARD}/9/0)`,
        `  MIG 1g.10gb Device 3: (UUID: MIG-${BOARD}/10/0)`,
      ].join("\n"),
    );
    expect(
      joinMig(l, report())
        .instances.get(BOARD)!
        .map((m) => m.uuid),
    ).toEqual(l[0]!.migDevices.map((d) => d.uuid));
    l[0]!.migDevices[3]!.gpuInstanceId = 11;
    expect(joinMig(l, report()).unsettled).toEqual([BOARD]);
  });

  it("joins on a report that prints each device's uuid, and leaves the board unsettled when one names another", () => {
    const l = list();
    const r = report();
    for (const [i, d] of r[0]!.migDevices.entries()) d.uuid = l[0]!.migDevices[i]!.uuid;
    expect(joinMig(l, r).instances.get(BOARD)).toHaveLength(4);
    r[0]!.migDevices[1]!.uuid = "MIG-ffffffff-ffff-ffff-ffff-ffffffffffff";
    expect(joinMig(l, r).unsettled).toEqual([BOARD]);
  });

  it("counts report devices without index or GPU instance id and leaves their board unsettled", () => {
    const r = report();
    r[0]!.migDevices[2]!.gpuInstanceId = undefined;
    expect(joinMig(list(), r)).toMatchObject({ instances: new Map(), unsettled: [BOARD], invalidDevices: 1 });
  });

  it("leaves a board the report does not have unsettled", () => {
    expect(joinMig(list(), [])).toMatchObject({ instances: new Map(), unsettled: [BOARD] });
  });
});

describe("instanceReadings", () => {
  const board: GpuReading = {
    uuid: BOARD,
    index: 3,
    model: "NVIDIA H100 80GB HBM3",
    busId: "00000000:00:09.0",
    driverVersion: "590.48.01",
    memUsedBytes: 11125 * MiB,
    memTotalBytes: 81559 * MiB,
    powerW: 433.78,
    powerLimitW: 700,
    processes: [],
  };
  const instances: MigInstance[] = joinMig(H100_LIST, H100_REPORT).instances.get(BOARD)!;

  it("makes each instance a GPU of its own: the board's identity, its own memory and processes, nothing else", () => {
    const rs = instanceReadings(board, instances);
    expect(rs[0]).toEqual({
      uuid: "MIG-00000000-0000-0000-0000-000000000000",
      index: 3,
      model: "NVIDIA H100 80GB HBM3",
      parentUuid: BOARD,
      migProfile: "3g.40gb",
      busId: "00000000:00:09.0",
      driverVersion: "590.48.01",
      memUsedBytes: 11091 * MiB,
      memTotalBytes: 40448 * MiB,
      processes: instances[0]!.processes,
    });
    expect(rs.map((r) => [r.util, r.powerW, r.powerLimitW, r.smActive])).toEqual(
      rs.map(() => [undefined, undefined, undefined, undefined]),
    );
  });

  it("gives the board's error to every instance, and an error to an instance without memory", () => {
    expect(instanceReadings({ ...board, error: "GPU is lost" }, instances).map((r) => [r.migProfile, r.error])).toEqual(
      [
        ["3g.40gb", "GPU is lost"],
        ["2g.20gb", "GPU is lost"],
        ["1g.10gb", "GPU is lost"],
        ["1g.10gb", "GPU is lost"],
      ],
    );
    const [r] = instanceReadings(board, [{ ...instances[1]!, memTotalBytes: undefined, memUsedBytes: undefined }]);
    expect(r).toMatchObject({ migProfile: "2g.20gb", error: "nvidia-smi gave no memory value for this MIG instance" });
    expect(r!.processes).toBeUndefined();
  });
});
