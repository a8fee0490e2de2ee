/**
 * The fake nvidia-smi on a board in MIG mode: what it prints has the layout of the real
 * captures (test/fixtures/nvidia-smi), and reads back through the source's own parsers to
 * what the scenario says, instance for instance (evaluate.ts: migReadingsOf, migUuid).
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseScenario } from "../../agent/sim/scenario.js";
import { migReadingsOf, migUuid, readingsAt } from "../../agent/sim/evaluate.js";
import { COMPUTE_APPS_FIELDS, parseComputeApps } from "../../agent/sources/nvidia-smi/parse-compute-apps.js";
import { instanceProcesses, parseGpuList, parseMigXml } from "../../agent/sources/nvidia-smi/parse-mig.js";
import { columnsFromFields, parseQueryGpuOutput } from "../../agent/sources/nvidia-smi/parse-query-gpu.js";
import { writeFakeNvidiaSmi } from "../helpers/fake-nvidia-smi.js";

const MiB = 1024 * 1024;
const fixture = (name: string): string =>
  readFileSync(new URL(`../fixtures/nvidia-smi/${name}`, import.meta.url), "utf8");

function run(file: string, args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 20_000 }, (err, stdout) => {
      const code = err ? Number((err as NodeJS.ErrnoException).code ?? 1) : 0;
      resolve({ code, stdout });
    });
  });
}

/**
 * A MIG board and a whole GPU. Instances are listed out of gi order, so NVIDIA's numbering
 * (by GPU instance id) differs from the file's; one runs two processes, one is idle, one is
 * held by a named process, and the last is destroyed for the second hour of every two.
 */
const HOUR = 3_600_000;
const raw = (originMs: number): object => ({
  host: "fake-mig",
  driverVersion: "590.48.01",
  originMs,
  gpus: [
    {
      model: "NVIDIA H100 80GB HBM3",
      phases: [{ for: "1h", powerW: 190 }],
      mig: [
        { profile: "2g.20gb", gi: 3, phases: [{ for: "1h", state: "held_idle" }] },
        { profile: "3g.40gb", gi: 2, phases: [{ for: "1h", state: "active" }] },
        { profile: "1g.10gb", gi: 9, phases: [{ for: "1h", state: "free_idle" }] },
        {
          profile: "1g.10gb",
          gi: 10,
          phases: [
            {
              for: "1h",
              state: "held_idle",
              processes: [{ pid: 4242, name: "/opt/serve & <tool>", usedMiB: 3000 }],
            },
            { for: "1h", absent: true },
          ],
        },
      ],
    },
    { model: "NVIDIA L40S", phases: [{ for: "1h", state: "active" }] },
  ],
});

describe("fake nvidia-smi on a board in MIG mode", () => {
  let dir: string;
  // Ten minutes into the first hour: every instance present, the last in its first life.
  const origin = Math.max(0, Date.now() - 10 * 60_000);
  const scenario = parseScenario(raw(origin));
  const board = scenario.gpus[0]!;
  let smi: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "trueidle-fake-smi-mig-"));
    smi = writeFakeNvidiaSmi(dir, raw(origin));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("lists the board's instances under it with -L, numbered by GPU instance id, in the real layout", async () => {
    const r = await run(smi, ["-L"]);
    expect(r.code).toBe(0);
    const want = migReadingsOf(scenario, board, Date.now());
    const byGi = (gi: number): string => want.find((w) => w.uuid === migUuid(board.uuid, gi, 0, 0))!.uuid;
    expect(r.stdout).toBe(
      [
        `GPU 0: NVIDIA H100 80GB HBM3 (UUID: ${board.uuid})`,
        `  MIG 3g.40gb     Device  0: (UUID: ${byGi(2)})`,
        `  MIG 2g.20gb     Device  1: (UUID: ${byGi(3)})`,
        `  MIG 1g.10gb     Device  2: (UUID: ${byGi(9)})`,
        `  MIG 1g.10gb     Device  3: (UUID: ${byGi(10)})`,
        `GPU 1: NVIDIA L40S (UUID: ${scenario.gpus[1]!.uuid})`,
        "",
      ].join("\n"),
    );
    // Column for column as the real capture prints its MIG lines (masked uuids aside).
    const shape = (line: string): string => line.replace(/MIG-[0-9a-f-]+\)/, "MIG-…)");
    const real = fixture("list/h100-mig-590.48.01.txt").split("\n").slice(1, 5).map(shape);
    expect(r.stdout.split("\n").slice(1, 5).map(shape)).toEqual(real);
    expect(parseGpuList(r.stdout)[0]!.migDevices.map((d) => [d.deviceIndex, d.profile])).toEqual([
      [0, "3g.40gb"],
      [1, "2g.20gb"],
      [2, "1g.10gb"],
      [3, "1g.10gb"],
    ]);
  });

  it("gives -q -x whose MIG devices and processes read back to the scenario's instances", async () => {
    const r = await run(smi, ["-q", "-x"]);
    expect(r.code).toBe(0);
    const [mig, whole, ...rest] = parseMigXml(r.stdout);
    expect(rest).toEqual([]);
    expect(mig).toMatchObject({ uuid: board.uuid, name: board.model, pciBusId: board.busId, minorNumber: 0 });
    expect(mig!.migMode).toEqual({ current: "Enabled", pending: "Enabled" });
    expect(whole).toMatchObject({ uuid: scenario.gpus[1]!.uuid, migMode: { current: "Disabled" }, migDevices: [] });
    // Whole-GPU processes carry N/A instance ids.
    expect(whole!.processes.length).toBeGreaterThan(0);
    expect(whole!.processes.every((p) => p.gpuInstanceId === undefined && p.computeInstanceId === undefined)).toBe(
      true,
    );

    const want = migReadingsOf(scenario, board, Date.now());
    const list = parseGpuList((await run(smi, ["-L"])).stdout)[0]!;
    expect(mig!.migDevices.map((d) => [d.index, d.gpuInstanceId, d.computeInstanceId, d.multiprocessorCount])).toEqual([
      [0, 2, 0, 60],
      [1, 3, 0, 32],
      [2, 9, 0, 16],
      [3, 10, 0, 16],
    ]);
    for (const d of mig!.migDevices) {
      const uuid = list.migDevices.find((l) => l.deviceIndex === d.index)!.uuid;
      expect(uuid).toBe(migUuid(board.uuid, d.gpuInstanceId!, 0, 0));
      const w = want.find((x) => x.uuid === uuid)!;
      expect([d.memoryTotalBytes, d.memoryUsedBytes]).toEqual([w.memTotalBytes, w.memUsedBytes]);
      const procs = instanceProcesses(mig!, d.gpuInstanceId!, d.computeInstanceId).map((p) => ({
        pid: p.pid,
        name: p.name,
        usedMemoryBytes: p.usedMemoryBytes,
      }));
      expect(procs, `processes of GI ${d.gpuInstanceId}`).toEqual(w.processes);
    }
    // Two processes in the active 3g, one each in the held ones (the named one escaped), none in the idle 1g.
    expect(mig!.processes.map((p) => p.gpuInstanceId)).toEqual([2, 2, 3, 10]);
    expect(mig!.processes.at(-1)).toMatchObject({ pid: 4242 + 11_000, name: "/opt/serve & <tool>" });
  });

  it("lays -q -x out as the real captures: the same elements at the same depth, units and N/A", async () => {
    const r = await run(smi, ["-q", "-x"]);
    const known = elementsOf(fixture("xml/telegraf-a100-sxm4-80gb-mig-535.54.03.xml"));
    for (const [path, e] of elementsOf(fixture("xml/telegraf-tesla-t4-515.105.01.xml"))) {
      const a100 = known.get(path);
      if (a100 === undefined) known.set(path, e);
      else a100.values.push(...e.values);
    }
    const lines = r.stdout.split("\n");
    expect(lines.slice(0, 3)).toEqual([
      '<?xml version="1.0" ?>',
      '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">',
      "<nvidia_smi_log>",
    ]);
    const got = elementsOf(r.stdout);
    for (const [path, e] of got) {
      const real = known.get(path);
      expect(real, `<${path}> is in a real capture`).toBeDefined();
      expect(e.indent, `indentation of <${path}>`).toBe(real!.indent);
      const unit = real!.values.map((v) => / (MiB|W|%)$/.exec(v)?.[1]).find((u) => u !== undefined);
      if (unit !== undefined)
        for (const v of e.values) expect(v, `<${path}>`).toMatch(new RegExp(`^(\\d+(\\.\\d+)? ${unit}|N/A)$`));
    }
    // A board in MIG mode shows no utilization; its devices and processes as the captures do.
    expect(got.get("nvidia_smi_log/gpu/utilization/gpu_util")!.values).toEqual(["N/A", expect.stringMatching(/ %$/)]);
    expect(r.stdout).toContain("        <mig_devices>\n            None\n        </mig_devices>\n");
    expect(got.get("nvidia_smi_log/gpu/mig_devices/mig_device/fb_memory_usage/total")!.values).toEqual([
      "40960 MiB",
      "20480 MiB",
      "10240 MiB",
      "10240 MiB",
    ]);
  });

  it("keeps --query-gpu per board: utilization N/A, the board's power, its instances' memory", async () => {
    const fields = [
      "index",
      "uuid",
      "name",
      "utilization.gpu",
      "utilization.memory",
      "utilization.encoder",
      "utilization.decoder",
      "memory.used",
      "memory.total",
      "power.draw",
      "mig.mode.current",
    ];
    const r = await run(smi, [`--query-gpu=${fields.join(",")}`, "--format=csv"]);
    expect(r.code).toBe(0);
    const row = r.stdout.split("\n")[1]!.split(", ");
    // As the real MIG capture: every utilization.* [N/A].
    expect(row.slice(3, 7)).toEqual(["[N/A]", "[N/A]", "[N/A]", "[N/A]"]);
    expect(row[10]).toBe("Enabled");
    const out = parseQueryGpuOutput(r.stdout);
    expect(out.invalid).toEqual([]);
    const instances = migReadingsOf(scenario, board, Date.now());
    expect(out.readings[0]).toMatchObject({
      uuid: board.uuid,
      util: undefined,
      media: undefined,
      powerW: 190,
      memTotalBytes: board.memTotalMiB * MiB,
      memUsedBytes: instances.reduce((s, x) => s + x.memUsedBytes!, 0),
    });
    expect(out.readings[1]).toMatchObject({
      uuid: scenario.gpus[1]!.uuid,
      util: readingsAt(scenario, Date.now())[1]!.util,
    });
  });

  it("lists the instances' processes under the board with --query-compute-apps, as the real one", async () => {
    const r = await run(smi, [
      `--query-compute-apps=${COMPUTE_APPS_FIELDS.join(",")}`,
      "--format=csv,noheader,nounits",
    ]);
    const out = parseComputeApps(r.stdout, columnsFromFields(COMPUTE_APPS_FIELDS));
    expect(out.invalid).toEqual([]);
    const instances = migReadingsOf(scenario, board, Date.now());
    const byPid = (a: { pid: number }, b: { pid: number }): number => a.pid - b.pid;
    expect([...out.byUuid.get(board.uuid)!].sort(byPid)).toEqual(instances.flatMap((x) => x.processes!).sort(byPid));
    expect(out.byUuid.has(scenario.gpus[1]!.uuid)).toBe(true);
    expect([...out.byUuid.keys()].some((u) => u.startsWith("MIG-"))).toBe(false);
  });

  it("leaves a destroyed instance out, and shows it re-created under a new uuid", async () => {
    const gone = parseScenario(raw(Math.max(0, Date.now() - 70 * 60_000)));
    const again = parseScenario(raw(Math.max(0, Date.now() - 2 * HOUR - 10 * 60_000)));
    const goneSmi = writeFakeNvidiaSmi(mkdtempSync(join(dir, "gone-")), raw(gone.originMs));
    const againSmi = writeFakeNvidiaSmi(mkdtempSync(join(dir, "again-")), raw(again.originMs));

    const g = parseGpuList((await run(goneSmi, ["-L"])).stdout)[0]!;
    expect(g.migDevices.map((d) => [d.deviceIndex, d.profile])).toEqual([
      [0, "3g.40gb"],
      [1, "2g.20gb"],
      [2, "1g.10gb"],
    ]);
    const gx = parseMigXml((await run(goneSmi, ["-q", "-x"])).stdout)[0]!;
    expect(gx.migDevices.map((d) => d.gpuInstanceId)).toEqual([2, 3, 9]);
    expect(gx.processes.some((p) => p.gpuInstanceId === 10)).toBe(false);

    const a = parseGpuList((await run(againSmi, ["-L"])).stdout)[0]!;
    expect(a.migDevices[3]!.uuid).toBe(migUuid(board.uuid, 10, 0, 1));
    expect(a.migDevices.map((d) => d.uuid).sort()).toEqual(
      migReadingsOf(again, again.gpus[0]!, Date.now())
        .map((x) => x.uuid)
        .sort(),
    );
  });
});

/** Each element of an nvidia-smi XML report by its path: its indentation and its text values. */
function elementsOf(xml: string): Map<string, { indent: number; values: string[] }> {
  const out = new Map<string, { indent: number; values: string[] }>();
  const stack: string[] = [];
  for (const line of xml.split("\n")) {
    const m = /^( *)<(\/?)([a-z_0-9]+)([^>]*?)(\/?)>(?:(.*)<\/\3>)?$/.exec(line);
    if (!m) continue;
    const [, spaces, closing, name, , selfClosing, text] = m;
    if (closing) {
      stack.pop();
      continue;
    }
    const path = [...stack, name].join("/");
    const e = out.get(path) ?? { indent: spaces!.length, values: [] };
    if (text !== undefined) e.values.push(text);
    out.set(path, e);
    if (text === undefined && !selfClosing) stack.push(name!);
  }
  return out;
}
