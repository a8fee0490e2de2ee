import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseComputeApps } from "./parse-compute-apps.js";
import {
  instanceProcesses,
  type MigBoard,
  type MigDevice,
  type MigProcess,
  parseGpuList,
  parseMigTextQ,
  parseMigXml,
} from "./parse-mig.js";

const MiB = 1024 * 1024;
const fixture = (name: string): string =>
  readFileSync(new URL(`../../../test/fixtures/nvidia-smi/${name}`, import.meta.url), "utf8");
const MASKED_UUID = "GPU-00000000-0000-0000-0000-000000000000";

const H100_LIST = "list/h100-mig-590.48.01.txt";
const H100_TEXT = "text-q/nge-h100-mig-590.48.01-load.txt";
const H100_APPS = "compute-apps/h100-mig-590.48.01-load.csv";
const A100_XML = "xml/telegraf-a100-sxm4-80gb-mig-535.54.03.xml";
const T4_XML = "xml/telegraf-tesla-t4-515.105.01.xml";
const K80_XML = "xml/pai-4x-tesla-k80-430.26.xml";
const TITAN_V_TEXT = "text-q/gpud-titan-v-560.35.03.txt";
const HGX_H100_TEXT = "text-q/gpud-8x-h100-80gb-hbm3-535.161.08.txt";

function device(
  index: number,
  gi: number,
  sm: number,
  totalMiB: number | undefined,
  usedMiB: number | undefined,
  ci = 0,
): MigDevice {
  return {
    index,
    gpuInstanceId: gi,
    computeInstanceId: ci,
    multiprocessorCount: sm,
    memoryTotalBytes: totalMiB === undefined ? undefined : totalMiB * MiB,
    memoryUsedBytes: usedMiB === undefined ? undefined : usedMiB * MiB,
  };
}

function proc(
  pid: number,
  name: string,
  type: string,
  memMiB: number | undefined,
  gi?: number,
  ci?: number,
): MigProcess {
  return {
    pid,
    name,
    type,
    gpuInstanceId: gi,
    computeInstanceId: ci,
    usedMemoryBytes: memMiB === undefined ? undefined : memMiB * MiB,
  };
}

/** Every prefix at a few hundred cut points, and the same with CRLF line ends. */
function cuts(text: string): string[] {
  const step = Math.max(1, Math.floor(text.length / 300));
  const out: string[] = [];
  for (let n = 0; n <= text.length; n += step) out.push(text.slice(0, n));
  out.push(text.replaceAll("\n", "\r\n"));
  return out;
}

const GARBAGE = [
  "",
  "\n\n\n",
  "\r\n",
  "   ",
  "garbage",
  "No devices were found",
  "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
  "<",
  "</",
  "<<<>>>",
  "<?xml",
  "<!DOCTYPE",
  "<!--",
  "<![CDATA[",
  "</gpu></nvidia_smi_log>",
  "GPU",
  "GPU 0:",
  "GPU x: y",
  "  MIG",
  "    MIG Device",
  ":::: : : :",
  "\u0000\u0001\uffff",
  "&amp;&#xFFFFFFFF;&#0;&bogus;",
  "x".repeat(100_000),
  `a${" ".repeat(50_000)}b`,
  `${" ".repeat(50_000)}x`,
  `<${" ".repeat(50_000)}`,
];

describe("all parsers", () => {
  it("read long runs of spaces in linear time (the test timeout bounds them)", () => {
    const sp = " ".repeat(100_000);
    expect(parseGpuList(`GPU 0: a${sp}(UUID:${sp}x\n  MIG${sp}a${sp}Device${sp}1:${sp}(UUID:${sp}`)).toEqual([
      { index: 0, name: `a${sp}(UUID:${sp}x`, uuid: undefined, migDevices: [] },
    ]);
    expect(parseMigTextQ(`GPU 0000:00:00.0\n    a${sp}b\n    c${sp}:${sp}d`)).toHaveLength(1);
    expect(parseMigXml(`<gpu ${"a".repeat(100_000)} id=${sp}'x'${sp}>&#${"1".repeat(100_000)};</gpu>`)).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------
// nvidia-smi -L

describe("parseGpuList on real -L output", () => {
  it("reads the H100 MIG capture (masked UUIDs), devices in printed order", () => {
    // test/fixtures/nvidia-smi/list/h100-mig-590.48.01.txt, see PROVENANCE.md.
    expect(parseGpuList(fixture(H100_LIST))).toEqual([
      {
        index: 0,
        name: "NVIDIA H100 80GB HBM3",
        uuid: MASKED_UUID,
        migDevices: [
          { profile: "3g.40gb", deviceIndex: 0, uuid: "MIG-00000000-0000-0000-0000-000000000000" },
          { profile: "2g.20gb", deviceIndex: 1, uuid: "MIG-00000001-0000-0000-0000-000000000001" },
          { profile: "1g.10gb", deviceIndex: 2, uuid: "MIG-00000002-0000-0000-0000-000000000002" },
          { profile: "1g.10gb", deviceIndex: 3, uuid: "MIG-00000003-0000-0000-0000-000000000003" },
        ],
      },
    ]);
  });

  // influxdata/telegraf issue #5812, comment by carlos-encs, 2023-08-04:
  // https://github.com/influxdata/telegraf/issues/5812
  // The same machine and day as the telegraf A100 XML capture (same board UUID).
  const TELEGRAF_5812 = `nvidia-smi -L
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-513536b6-7d19-9063-b049-1e69664bb298)
  MIG 1g.20gb     Device  0: (UUID: MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a)
  MIG 1g.20gb     Device  1: (UUID: MIG-a45882f0-9215-5733-a0c1-49286ab31cb5)
  MIG 1g.20gb     Device  2: (UUID: MIG-f00d722c-f4e1-52c9-aa31-750441ae1bfe)
  MIG 1g.20gb     Device  3: (UUID: MIG-930574a9-d43a-5d2b-95da-3e68384c8d6b)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95)
GPU 2: NVIDIA A100-SXM4-80GB (UUID: GPU-5e375e7e-b41f-155b-dcdc-534524c356fc)
GPU 3: NVIDIA A100-SXM4-80GB (UUID: GPU-69ec2344-ebac-b028-f88f-452abb3d7f11)
`;

  it("gives boards without MIG no devices (R535 form, telegraf#5812)", () => {
    const boards = parseGpuList(TELEGRAF_5812);
    expect(boards.map((b) => [b.index, b.name, b.uuid, b.migDevices.length])).toEqual([
      [0, "NVIDIA A100-SXM4-80GB", "GPU-513536b6-7d19-9063-b049-1e69664bb298", 4],
      [1, "NVIDIA A100-SXM4-80GB", "GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95", 0],
      [2, "NVIDIA A100-SXM4-80GB", "GPU-5e375e7e-b41f-155b-dcdc-534524c356fc", 0],
      [3, "NVIDIA A100-SXM4-80GB", "GPU-69ec2344-ebac-b028-f88f-452abb3d7f11", 0],
    ]);
    expect(boards[0]!.migDevices[3]).toEqual({
      profile: "1g.20gb",
      deviceIndex: 3,
      uuid: "MIG-930574a9-d43a-5d2b-95da-3e68384c8d6b",
    });
  });

  it("reads seven 1g.10gb devices (driver 535.216.01, DataDog/datadog-agent#33120)", () => {
    // https://github.com/DataDog/datadog-agent/pull/33120 (description, 2025-01-20)
    const text = `root@datadog-agent-linux-zb5fm:/# nvidia-smi -L
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16)
  MIG 1g.10gb     Device  0: (UUID: MIG-feb88891-0321-5fef-9c87-d4af3b54259e)
  MIG 1g.10gb     Device  1: (UUID: MIG-a25704ba-3a06-5299-a795-fd7cf4d13973)
  MIG 1g.10gb     Device  2: (UUID: MIG-50f1c4c9-1508-5e8d-bb06-d08145b22e01)
  MIG 1g.10gb     Device  3: (UUID: MIG-36c795f2-5cf7-55d6-af30-e535e79b7bb6)
  MIG 1g.10gb     Device  4: (UUID: MIG-3f45d38c-8cee-503e-b806-a1f1bdceedeb)
  MIG 1g.10gb     Device  5: (UUID: MIG-96655de9-9525-58f9-a62b-0e4c1cc1c265)
  MIG 1g.10gb     Device  6: (UUID: MIG-1aae4990-b962-574e-8375-119d6d9b9687)

root@datadog-agent-linux-zb5fm:/# nvidia-smi
`;
    const [board, ...rest] = parseGpuList(text);
    expect(rest).toEqual([]);
    expect(board!.migDevices.map((d) => [d.profile, d.deviceIndex])).toEqual(
      [0, 1, 2, 3, 4, 5, 6].map((i) => ["1g.10gb", i]),
    );
    expect(board!.migDevices[6]!.uuid).toBe("MIG-1aae4990-b962-574e-8375-119d6d9b9687");
    expect(board!.migDevices.every((d) => d.gpuInstanceId === undefined)).toBe(true);
  });

  it("reads 3g.40gb devices on an A100 PCIe (driver 530.30.02, NVIDIA/nvidia-container-toolkit#203)", () => {
    // https://github.com/NVIDIA/nvidia-container-toolkit/issues/203 (description, 2024-01-08)
    const text = `# nvidia-smi -L
GPU 0: NVIDIA A100 80GB PCIe (UUID: GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39)
  MIG 3g.40gb     Device  0: (UUID: MIG-0929581a-2be6-5dec-bf34-0954c6c529a6)
  MIG 3g.40gb     Device  1: (UUID: MIG-3adbed3a-d03d-549f-a016-ba1fd7359f23)
`;
    expect(parseGpuList(text)).toEqual([
      {
        index: 0,
        name: "NVIDIA A100 80GB PCIe",
        uuid: "GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39",
        migDevices: [
          { profile: "3g.40gb", deviceIndex: 0, uuid: "MIG-0929581a-2be6-5dec-bf34-0954c6c529a6" },
          { profile: "3g.40gb", deviceIndex: 1, uuid: "MIG-3adbed3a-d03d-549f-a016-ba1fd7359f23" },
        ],
      },
    ]);
  });

  it("takes GI and CI ids out of the R450/R460 MIG-GPU-<uuid>/<gi>/<ci> form", () => {
    // NVIDIA/cloud-native-docs, gpu-operator/gpu-operator-mig.rst (commit 00b4b75), the
    // `nvidia-smi -L` run in the driver container of an A100-SXM4-40GB (2021; published at
    // https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/gpu-operator-mig.html).
    // Drivers of that era print the name without "NVIDIA " and one space between the columns.
    const text = `    $ sudo docker exec 629b93e200d9eea35be35a1b30991d007e48497d52a38e18a472945e44e52a8e nvidia-smi -L
    GPU 0: A100-SXM4-40GB (UUID: GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f)
      MIG 1g.5gb Device 0: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/7/0)
      MIG 1g.5gb Device 1: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/8/0)
      MIG 1g.5gb Device 2: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/9/0)
      MIG 1g.5gb Device 3: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/11/0)
      MIG 1g.5gb Device 4: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/12/0)
      MIG 1g.5gb Device 5: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/13/0)
      MIG 1g.5gb Device 6: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/14/0)
`;
    const boards = parseGpuList(text);
    expect(boards).toHaveLength(1);
    expect(boards[0]!.name).toBe("A100-SXM4-40GB");
    expect(boards[0]!.uuid).toBe("GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f");
    expect(boards[0]!.migDevices[0]).toEqual({
      profile: "1g.5gb",
      deviceIndex: 0,
      uuid: "MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/7/0",
      gpuInstanceId: 7,
      computeInstanceId: 0,
    });
    expect(boards[0]!.migDevices.map((d) => [d.deviceIndex, d.gpuInstanceId, d.computeInstanceId])).toEqual([
      [0, 7, 0],
      [1, 8, 0],
      [2, 9, 0],
      [3, 11, 0],
      [4, 12, 0],
      [5, 13, 0],
      [6, 14, 0],
    ]);
  });
});

describe("parseGpuList on odd input", () => {
  it("keeps profile names of every documented shape", () => {
    // Constructed: profile names as the MIG User Guide ("MIG Device Names", "Supported MIG
    // Profiles") spells them, in the R470+ line layout.
    const text = [
      "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaaaaaa-0000-0000-0000-000000000000)",
      "  MIG 1c.3g.40gb   Device  0: (UUID: MIG-aaaaaaaa-0000-0000-0000-000000000001)",
      "  MIG 1g.10gb+me   Device  1: (UUID: MIG-aaaaaaaa-0000-0000-0000-000000000002)",
      "  MIG 7g.80gb      Device  2: (UUID: MIG-aaaaaaaa-0000-0000-0000-000000000003)",
    ].join("\n");
    expect(parseGpuList(text)[0]!.migDevices.map((d) => d.profile)).toEqual(["1c.3g.40gb", "1g.10gb+me", "7g.80gb"]);
  });

  it("reads CRLF, tabs and extra spaces", () => {
    const text = "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1)\r\n\t MIG  2g.20gb \t Device   1:  (UUID:  MIG-2 )  \r\n";
    expect(parseGpuList(text)).toEqual([
      {
        index: 0,
        name: "NVIDIA A100-SXM4-80GB",
        uuid: "GPU-1",
        migDevices: [{ profile: "2g.20gb", deviceIndex: 1, uuid: "MIG-2" }],
      },
    ]);
  });

  it("keeps a name with parentheses and a board line without UUID", () => {
    const text = "GPU 3: NVIDIA RTX A2000 (Laptop) (UUID: GPU-abc)\nGPU 4: Tesla K80\n";
    expect(parseGpuList(text)).toEqual([
      { index: 3, name: "NVIDIA RTX A2000 (Laptop)", uuid: "GPU-abc", migDevices: [] },
      { index: 4, name: "Tesla K80", uuid: undefined, migDevices: [] },
    ]);
  });

  it("skips MIG lines before any board, cut lines and unknown lines", () => {
    const text = [
      "  MIG 1g.10gb     Device  0: (UUID: MIG-orphan)",
      "No devices were found",
      "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)",
      "Unable to determine the device handle for gpu 0000:3B:00.0: Unknown Error",
      "GPU 00000000:3B:00.0: Unknown Error",
      "  MIG 1g.10gb     Device  0: (UUID: MIG-1)",
      "  MIG 1g.10gb     Device  1: (UUID: MIG-",
      "  MIG 1g.10gb     Device: (UUID: MIG-3)",
      "  MIG Mode: Enabled",
      "GPU 1:",
    ].join("\n");
    expect(parseGpuList(text)).toEqual([
      {
        index: 0,
        name: "NVIDIA H100 80GB HBM3",
        uuid: "GPU-1",
        migDevices: [{ profile: "1g.10gb", deviceIndex: 0, uuid: "MIG-1" }],
      },
    ]);
  });

  it("returns [] for empty or garbage input and never throws on a cut capture", () => {
    for (const g of GARBAGE) expect(parseGpuList(g)).toEqual([]);
    for (const c of cuts(fixture(H100_LIST))) expect(() => parseGpuList(c)).not.toThrow();
    expect(parseGpuList(fixture(H100_LIST).replaceAll("\n", "\r\n"))).toEqual(parseGpuList(fixture(H100_LIST)));
  });
});

// ---------------------------------------------------------------------------------------
// nvidia-smi -q -x

describe("parseMigXml on real captures", () => {
  it("reads the A100 with MIG on: four 1g.20gb devices, GI 3–6, no processes", () => {
    expect(parseMigXml(fixture(A100_XML))).toEqual<MigBoard[]>([
      {
        index: 0,
        pciBusId: "00000000:01:00.0",
        name: "NVIDIA A100-SXM4-80GB",
        uuid: "GPU-513536b6-7d19-9063-b049-1e69664bb298",
        minorNumber: 1,
        migMode: { current: "Enabled", pending: "Enabled" },
        migDevices: [
          device(0, 3, 14, 19968, 12),
          device(1, 4, 14, 19968, 12),
          device(2, 5, 14, 19968, 12),
          device(3, 6, 14, 19968, 12),
        ],
        processes: [],
      },
    ]);
  });

  it("reads a board without MIG: mode N/A, `None` devices, processes with N/A instance ids", () => {
    const [t4, ...rest] = parseMigXml(fixture(T4_XML));
    expect(rest).toEqual([]);
    expect(t4).toEqual<MigBoard>({
      index: 0,
      pciBusId: "00000000:00:1E.0",
      name: "Tesla T4",
      uuid: "GPU-d37e67a5-91dd-3774-a5cb-99096249601a",
      minorNumber: 0,
      migMode: { current: undefined, pending: undefined },
      migDevices: [],
      processes: [proc(675, "/usr/lib/xorg/Xorg", "G", 22), proc(5762, "python", "C", 1005)],
    });
    expect(instanceProcesses(t4!, 0)).toEqual([]);
  });

  it("reads a pre-MIG driver: four boards in index order, minor numbers 1,2,3,0", () => {
    const boards = parseMigXml(fixture(K80_XML));
    expect(boards.map((b) => [b.index, b.pciBusId, b.minorNumber, b.uuid])).toEqual([
      [0, "00001580:00:00.0", 1, "GPU-c3b26f7a-8dcb-619c-fa1b-8029265a4db0"],
      [1, "00002DF7:00:00.0", 2, "GPU-b01b80eb-0f18-1df0-cf88-0725bd90f1e1"],
      [2, "00004968:00:00.0", 3, "GPU-30bc2701-3bc2-5f35-0ebd-9867a077e138"],
      [3, "0000F8D6:00:00.0", 0, "GPU-3341aba2-f01d-2c1f-7dd4-e389779faec2"],
    ]);
    expect(boards.every((b) => b.migMode.current === undefined && b.migDevices.length === 0)).toBe(true);
    expect(boards.map((b) => b.processes)).toEqual([
      [proc(58813, "python", "C", 576)],
      [proc(58642, "python", "C", 576)],
      [],
      [],
    ]);
  });

  it("matches `-L` device indexes to `<mig_device>` of the same machine (telegraf#5812)", () => {
    // The -L output in telegraf#5812 and this XML come from the same A100 on 2023-08-04.
    const board = parseMigXml(fixture(A100_XML))[0]!;
    expect(board.uuid).toBe("GPU-513536b6-7d19-9063-b049-1e69664bb298");
    expect(board.migDevices.map((d) => d.index)).toEqual([0, 1, 2, 3]);
    expect(board.migDevices.every((d) => d.memoryTotalBytes === 19968 * MiB)).toBe(true);
  });
});

/** The A100 capture with processes in MIG instances added (no real XML capture has any). */
function a100WithProcesses(): string {
  const info = (gi: string, ci: string, pid: string, name: string, mem: string): string =>
    `<process_info><gpu_instance_id>${gi}</gpu_instance_id><compute_instance_id>${ci}</compute_instance_id>` +
    `<pid>${pid}</pid><type>C</type><process_name>${name}</process_name><used_memory>${mem}</used_memory></process_info>`;
  const processes = [
    info("3", "0", "4101", "python", "14195 MiB"),
    info("3", "0", "4102", "python3", "149 MiB"),
    info("5", "0", "4103", "a &amp; b &lt;c&gt;", "N/A"),
    info("6", "1", "4104", "tritonserver", "9833 MiB"),
    info("N/A", "N/A", "4105", "stray", "1 MiB"),
    info("6", "0", "N/A", "no pid", "1 MiB"),
  ].join("\n");
  const xml = fixture(A100_XML);
  expect(xml).toContain("<processes />");
  return xml.replace("<processes />", `<processes>\n${processes}\n</processes>`);
}

describe("parseMigXml processes and instanceProcesses", () => {
  const board = parseMigXml(a100WithProcesses())[0]!;

  it("reads GI/CI ids of each process; a process without pid is dropped", () => {
    expect(board.processes).toEqual([
      proc(4101, "python", "C", 14195, 3, 0),
      proc(4102, "python3", "C", 149, 3, 0),
      proc(4103, "a & b <c>", "C", undefined, 5, 0),
      proc(4104, "tritonserver", "C", 9833, 6, 1),
      proc(4105, "stray", "C", 1),
    ]);
  });

  it("picks the processes of one GPU instance, or of one compute instance in it", () => {
    expect(instanceProcesses(board, 3, 0).map((p) => p.pid)).toEqual([4101, 4102]);
    expect(instanceProcesses(board, 3).map((p) => p.pid)).toEqual([4101, 4102]);
    expect(instanceProcesses(board, 6).map((p) => p.pid)).toEqual([4104]);
    expect(instanceProcesses(board, 6, 0)).toEqual([]);
    expect(instanceProcesses(board, 4)).toEqual([]);
  });
});

describe("parseMigXml on odd input", () => {
  it("returns [] for empty or garbage input", () => {
    for (const g of GARBAGE) expect(parseMigXml(g)).toEqual([]);
  });

  it("reads the same from CRLF, tab-indented and single-line XML", () => {
    const xml = fixture(A100_XML);
    const expected = parseMigXml(xml);
    expect(parseMigXml(xml.replaceAll("\n", "\r\n"))).toEqual(expected);
    expect(parseMigXml(xml.replaceAll("    ", "\t"))).toEqual(expected);
    expect(parseMigXml(xml.replace(/>\s+</g, "><"))).toEqual(expected);
  });

  it("returns what was read before the cut of a truncated report", () => {
    const xml = fixture(A100_XML);
    const ci = "</compute_instance_id>";
    const cut = xml.slice(0, xml.indexOf(ci, xml.indexOf("<gpu_instance_id>5<")) + ci.length + 30);
    const [board, ...rest] = parseMigXml(cut);
    expect(rest).toEqual([]);
    expect(board!.migMode).toEqual({ current: "Enabled", pending: "Enabled" });
    expect(board!.migDevices).toEqual([
      device(0, 3, 14, 19968, 12),
      device(1, 4, 14, 19968, 12),
      { ...device(2, 5, 14, undefined, undefined), multiprocessorCount: undefined },
    ]);
    expect(board!.uuid).toBeUndefined();
    // Cut inside a tag, and a bare beginning of a report.
    expect(parseMigXml("<gpu><mig_devices><mig_device><index>")[0]!.migDevices).toHaveLength(1);
    expect(parseMigXml(xml.slice(0, xml.indexOf("<gpu_instance_id>") + 5))[0]!.migDevices).toEqual([
      {
        index: 0,
        gpuInstanceId: undefined,
        computeInstanceId: undefined,
        multiprocessorCount: undefined,
        memoryTotalBytes: undefined,
        memoryUsedBytes: undefined,
      },
    ]);
  });

  it("never throws on any prefix of the captures", () => {
    for (const name of [A100_XML, T4_XML]) {
      for (const c of cuts(fixture(name))) expect(() => parseMigXml(c)).not.toThrow();
    }
  });

  it("skips an embedded DTD, comments, CDATA and unknown tags; reads attributes with `>` in quotes", () => {
    const xml = `<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log [
<!-- nvidia-smi --dtd embeds the DTD; it is full of '>' and "[" -->
<!ELEMENT nvidia_smi_log (timestamp, driver_version, attached_gpus, gpu+)>
<!ATTLIST gpu id CDATA #REQUIRED>
]>
<nvidia_smi_log>
  <future_tag a="1"><nested>x</nested></future_tag>
  <gpu id="0000:3B:00.0" note="a>b">
    <uuid><![CDATA[GPU-cdata]]></uuid>
    <!-- <uuid>GPU-comment</uuid> -->
    <minor_number> 7 </minor_number>
    <mig_mode><current_mig>Disabled</current_mig><pending_mig>Enabled</pending_mig></mig_mode>
    <mig_devices>
      <mig_device>
        <index>0</index><gpu_instance_id>1</gpu_instance_id><compute_instance_id>0</compute_instance_id>
        <uuid>MIG-5c3c7e0d-0000-0000-0000-000000000001</uuid>
        <device_attributes><shared><multiprocessor_count>N/A</multiprocessor_count></shared></device_attributes>
        <fb_memory_usage><total>[N/A]</total><used>1 GiB</used></fb_memory_usage>
        <unknown_counter>5</unknown_counter>
      </mig_device>
    </mig_devices>
    <processes/>
  </gpu>
</nvidia_smi_log>`;
    expect(parseMigXml(xml)).toEqual<MigBoard[]>([
      {
        index: 0,
        pciBusId: "0000:3B:00.0",
        name: undefined,
        uuid: "GPU-cdata",
        minorNumber: 7,
        migMode: { current: "Disabled", pending: "Enabled" },
        migDevices: [
          {
            index: 0,
            uuid: "MIG-5c3c7e0d-0000-0000-0000-000000000001",
            gpuInstanceId: 1,
            computeInstanceId: 0,
            multiprocessorCount: undefined,
            memoryTotalBytes: undefined,
            memoryUsedBytes: 1024 * MiB,
          },
        ],
        processes: [],
      },
    ]);
  });

  it("ignores stray end tags and reads <gpu> elements without the log element around them", () => {
    const xml = "</nvidia_smi_log></uuid><gpu><uuid>GPU-a</uuid></minor_number></gpu><gpu><uuid>GPU-b</uuid>";
    expect(parseMigXml(xml).map((b) => [b.index, b.uuid])).toEqual([
      [0, "GPU-a"],
      [1, "GPU-b"],
    ]);
  });
});

// ---------------------------------------------------------------------------------------
// nvidia-smi -q

describe("parseMigTextQ on real captures", () => {
  it("reads the H100 with MIG on: GI 2/3/9/10, CI 0, 60/32/16/16 SMs, processes on GI 2", () => {
    expect(parseMigTextQ(fixture(H100_TEXT))).toEqual<MigBoard[]>([
      {
        index: 0,
        pciBusId: "00000000:00:09.0",
        name: "NVIDIA H100 80GB HBM3",
        uuid: MASKED_UUID,
        minorNumber: 0,
        migMode: { current: "Enabled", pending: "Enabled" },
        migDevices: [
          device(0, 2, 60, 40448, 11091),
          device(1, 3, 32, 20096, 17),
          device(2, 9, 16, 9984, 9),
          device(3, 10, 16, 9984, 9),
        ],
        processes: [
          proc(21180, "/root/tools/memhog", "C", 2296, 2, 0),
          proc(21181, "/root/tools/memhog", "C", 1272, 2, 0),
          proc(21198, "./gpu_burn", "C", 7484, 2, 0),
        ],
      },
    ]);
  });

  it("puts every process of the H100 capture in GI 2, CI 0", () => {
    const board = parseMigTextQ(fixture(H100_TEXT))[0]!;
    expect(instanceProcesses(board, 2, 0).map((p) => p.pid)).toEqual([21180, 21181, 21198]);
    for (const gi of [3, 9, 10]) expect(instanceProcesses(board, gi)).toEqual([]);
  });

  it("gives the instance of each process that --query-compute-apps lists under the board", () => {
    // compute-apps lists the same pids with the parent board's UUID and no instance.
    const apps = parseComputeApps(fixture(H100_APPS)).byUuid.get(MASKED_UUID)!;
    const board = parseMigTextQ(fixture(H100_TEXT))[0]!;
    const byPid = new Map(board.processes.map((p) => [p.pid, p]));
    expect(apps.map((a) => [a.pid, byPid.get(a.pid)?.gpuInstanceId, byPid.get(a.pid)?.usedMemoryBytes])).toEqual([
      [21180, 2, 2296 * MiB],
      [21181, 2, 1272 * MiB],
      [21198, 2, 7484 * MiB],
    ]);
  });

  it("matches `-L` devices to `MIG Device` blocks of the same machine by index", () => {
    const listed = parseGpuList(fixture(H100_LIST))[0]!;
    const board = parseMigTextQ(fixture(H100_TEXT))[0]!;
    expect(listed.uuid).toBe(board.uuid);
    const joined = listed.migDevices.map((l) => {
      const d = board.migDevices.find((m) => m.index === l.deviceIndex)!;
      return [l.profile, d.gpuInstanceId, d.multiprocessorCount, d.memoryTotalBytes! / MiB];
    });
    expect(joined).toEqual([
      ["3g.40gb", 2, 60, 40448],
      ["2g.20gb", 3, 32, 20096],
      ["1g.10gb", 9, 16, 9984],
      ["1g.10gb", 10, 16, 9984],
    ]);
  });

  it("reads a board without MIG (TITAN V): mode N/A, processes with N/A instance ids", () => {
    expect(parseMigTextQ(fixture(TITAN_V_TEXT))).toEqual<MigBoard[]>([
      {
        index: 0,
        pciBusId: "00000000:01:00.0",
        name: "NVIDIA TITAN V",
        uuid: "GPU-f4c353ff-b56c-c1de-bcb9-7dad861b589a",
        minorNumber: 0,
        migMode: { current: undefined, pending: undefined },
        migDevices: [],
        processes: [
          proc(100607, "/usr/lib/xorg/Xorg", "G", 142),
          proc(100838, "/usr/bin/gnome-shell", "G", 33),
          proc(101815, "/opt/test", "G", 111),
        ],
      },
    ]);
  });

  it("reads eight H100 boards with MIG disabled and `Processes : None`", () => {
    const boards = parseMigTextQ(fixture(HGX_H100_TEXT));
    expect(boards.map((b) => [b.index, b.pciBusId, b.minorNumber])).toEqual([
      [0, "00000000:19:00.0", 0],
      [1, "00000000:3B:00.0", 1],
      [2, "00000000:4C:00.0", 2],
      [3, "00000000:5D:00.0", 3],
      [4, "00000000:9B:00.0", 4],
      [5, "00000000:BB:00.0", 5],
      [6, "00000000:CB:00.0", 6],
      [7, "00000000:DB:00.0", 7],
    ]);
    expect(boards[0]!.uuid).toBe("GPU-ee7954ec-da95-fd7a-ddfd-c6b32cc2f8aa");
    expect(boards[7]!.uuid).toBe("GPU-b0fe4996-1f7c-91f6-0ccd-08ae3b7e23c5");
    for (const b of boards) {
      expect(b.name).toBe("NVIDIA H100 80GB HBM3");
      expect(b.migMode).toEqual({ current: "Disabled", pending: "Disabled" });
      expect(b.migDevices).toEqual([]);
      expect(b.processes).toEqual([]);
    }
  });

  it("gives the same shape from -q and -q -x", () => {
    // The repository has no -q and -q -x pair from one MIG machine, so only the shapes are compared.
    const text = parseMigTextQ(fixture(H100_TEXT))[0]!;
    const xml = parseMigXml(fixture(A100_XML))[0]!;
    expect(Object.keys(text).sort()).toEqual(Object.keys(xml).sort());
    expect(Object.keys(text.migDevices[0]!).sort()).toEqual(Object.keys(xml.migDevices[0]!).sort());
  });
});

describe("parseMigTextQ on odd input", () => {
  it("returns [] for empty or garbage input", () => {
    for (const g of GARBAGE) expect(parseMigTextQ(g)).toEqual([]);
  });

  it("reads the same from CRLF and from tab indentation", () => {
    const text = fixture(H100_TEXT);
    const expected = parseMigTextQ(text);
    expect(parseMigTextQ(text.replaceAll("\n", "\r\n"))).toEqual(expected);
    expect(parseMigTextQ(text.replaceAll("    ", "\t"))).toEqual(expected);
  });

  it("returns what was read before the cut of a truncated report", () => {
    const text = fixture(H100_TEXT);
    const cut = text.slice(0, text.indexOf("Multiprocessor count                   : 32"));
    const [board] = parseMigTextQ(cut);
    expect(board!.migDevices).toEqual([
      device(0, 2, 60, 40448, 11091),
      { ...device(1, 3, 0, undefined, undefined), multiprocessorCount: undefined },
    ]);
    expect(board!.uuid).toBeUndefined();
    expect(board!.processes).toEqual([]);
    const inProcesses = text.slice(0, text.indexOf("Process ID                        : 21198") + 20);
    expect(parseMigTextQ(inProcesses)[0]!.processes.map((p) => p.pid)).toEqual([21180, 21181]);
  });

  it("never throws on any prefix of the captures", () => {
    for (const name of [H100_TEXT, TITAN_V_TEXT]) {
      for (const c of cuts(fixture(name))) expect(() => parseMigTextQ(c)).not.toThrow();
    }
  });

  it("reads a `MIG Devices` wrapper with `FB Memory Usage`, N/A values and unknown lines", () => {
    // Constructed: no capture shows this layout. It checks that a `MIG Devices` wrapper,
    // `FB Memory Usage` in place of `Shared FB Memory Usage`, and odd values still read.
    const text = `
==============NVSMI LOG==============

Attached GPUs                             : 2
GPU 00000000:01:00.0
    Product Name                          : NVIDIA A100-SXM4-40GB
    MIG Mode
        Current                           : Enabled
        Pending                           : Disabled
    MIG Devices
        MIG Device
            Index                         : 0
            GPU Instance ID               : 1
            Compute Instance ID           : 0
            Device Attributes
                Shared
                    Multiprocessor count  : 42
            Some Future Block
                Whatever                  : 1
            FB Memory Usage
                Total                     : 19968 MiB
                Used                      : N/A
        MIG Device
            Index                         : 1
            GPU Instance ID               : N/A
            Compute Instance ID           : [Unknown Error]
    GPU UUID                              : GPU-wrapper
    Processes
        GPU instance ID                   : 1
        Compute instance ID               : 0
        Process ID                        : 77
            Type                          : C+G
            Name                          : C:\\Program Files\\app : x.exe
            Used GPU Memory               : Not available in WDDM driver model
        Process ID                        : 78
            Type                          : C
GPU 00000000:02:00.0
    MIG Devices                           : None
    Processes                             : None
`;
    const boards = parseMigTextQ(text);
    expect(boards).toHaveLength(2);
    expect(boards[0]).toEqual<MigBoard>({
      index: 0,
      pciBusId: "00000000:01:00.0",
      name: "NVIDIA A100-SXM4-40GB",
      uuid: "GPU-wrapper",
      minorNumber: undefined,
      migMode: { current: "Enabled", pending: "Disabled" },
      migDevices: [
        device(0, 1, 42, 19968, undefined),
        {
          index: 1,
          gpuInstanceId: undefined,
          computeInstanceId: undefined,
          multiprocessorCount: undefined,
          memoryTotalBytes: undefined,
          memoryUsedBytes: undefined,
        },
      ],
      processes: [
        proc(77, "C:\\Program Files\\app : x.exe", "C+G", undefined, 1, 0),
        {
          pid: 78,
          name: undefined,
          type: "C",
          gpuInstanceId: undefined,
          computeInstanceId: undefined,
          usedMemoryBytes: undefined,
        },
      ],
    });
    expect(boards[1]).toMatchObject({ index: 1, pciBusId: "00000000:02:00.0", migDevices: [], processes: [] });
  });
});
