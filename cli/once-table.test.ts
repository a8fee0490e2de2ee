import { describe, expect, it } from "vitest";
import { SamplePipeline } from "../agent/pipeline.js";
import { readingsAt, sourceReadingsAt } from "../agent/sim/evaluate.js";
import { parseScenario } from "../agent/sim/scenario.js";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../common/types.js";
import { renderOnceTable } from "./once-table.js";

const T0 = Date.UTC(2026, 10, 29, 12, 0, 0);

function tableOf(readings: GpuReading[]): string {
  const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
  p.ingest(T0, readings);
  return renderOnceTable(p.latest(), DEFAULT_THRESHOLDS);
}

describe("renderOnceTable", () => {
  it("lists each GPU's largest holders with their SM utilization where the source sees it", () => {
    const scenario = parseScenario({
      gpus: [
        { phases: [{ for: "1h", state: "active" }] },
        {
          phases: [
            {
              for: "1h",
              state: "held_idle",
              processes: [
                { pid: 4242, name: "python3", usedMiB: 40 * 1024, smUtil: 0 },
                { pid: 4243, name: "jupyter", usedMiB: 2 * 1024 },
              ],
            },
          ],
        },
        { phases: [{ for: "1h", state: "free_idle" }] },
      ],
    });
    const lines = tableOf(readingsAt(scenario, T0)).split("\n");
    const active = readingsAt(scenario, T0)[0]!.processes!;
    expect(lines).toContain(
      `GPU 0 holders: python3 (pid ${active[0]!.pid}) 27.9 GiB, SM 97%; torchrun (pid ${active[1]!.pid}) 27.9 GiB, SM 0%`,
    );
    expect(lines).toContain("GPU 1 holders: python3 (pid 4242) 40.0 GiB, SM 0%; jupyter (pid 4243) 2.0 GiB");
    // Nothing on GPU 2, so no line for it.
    expect(lines.filter((l) => l.startsWith("GPU 2 "))).toEqual([]);
  });

  it("shows the largest three by memory and counts the rest", () => {
    const base = readingsAt(parseScenario({ gpus: [{ phases: [{ for: "1h", state: "free_idle" }] }] }), T0)[0]!;
    const processes = [1, 5, 3, 2, 4].map((g) => ({ pid: g, name: `p${g}`, usedMemoryBytes: g * 1024 ** 3 }));
    const text = tableOf([{ ...base, memUsedBytes: 15 * 1024 ** 3, processes }]);
    expect(text).toContain("GPU 0 holders: p5 (pid 5) 5.0 GiB; p4 (pid 4) 4.0 GiB; p3 (pid 3) 3.0 GiB; 2 more\n");
  });
});

describe("renderOnceTable: MIG", () => {
  it("shows each instance as a GPU of its own, named by board and profile, reported by whether it is held", () => {
    const scenario = parseScenario({
      gpus: [
        {
          model: "NVIDIA H100 80GB HBM3",
          phases: [{ for: "1h", powerW: 190 }],
          mig: [
            { profile: "3g.40gb", gi: 2, phases: [{ for: "1h", state: "active" }] },
            { profile: "1g.10gb", gi: 9, phases: [{ for: "1h", state: "free_idle" }] },
          ],
        },
        { phases: [{ for: "1h", state: "held_idle" }] },
      ],
    });
    const text = tableOf(sourceReadingsAt(scenario, T0));
    const lines = text.split("\n");
    expect(lines.find((l) => l.startsWith("0 3g.40gb "))).toMatch(/ busy \(held\) +72% +72% sm_active +active +n\/a /);
    expect(lines.find((l) => l.startsWith("0 1g.10gb "))).toMatch(/ idle \(free\) +0% +0% none +free_idle /);
    expect(lines.find((l) => l.startsWith("1 "))).toMatch(/ 0% idle +n\/a .* held_idle /);
    // The board's own row: its power only, above its instances, counted as no GPU.
    const boardRow = lines.findIndex((l) => l.startsWith("0 board "));
    expect(lines[boardRow]).toMatch(/^0 board +H100 80GB HBM3 +- +- +- +mig board +190\/\d+ W +- +- +—$/);
    expect(lines[boardRow + 1]).toMatch(/^0 3g\.40gb /);
    expect(lines.some((l) => l.startsWith("GPU 0 3g.40gb holders: "))).toBe(true);
    expect(text).toContain("3 GPU(s): 1 active, 1 free_idle, 1 held_idle.");
    expect(text).toContain("MIG: 2 instance(s) of 1 board(s), each a GPU of its own");
    expect(text).toContain('the board\'s own row ("board") has it, and no GPU seconds');
    expect(text).toContain("busy while it is held and idle");
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(120);
  });
});

describe("renderOnceTable: HELD BY", () => {
  const H200 = { model: "NVIDIA H200", memTotalBytes: 141 * 1024 ** 3 };
  const base = readingsAt(parseScenario({ gpus: [{ phases: [{ for: "1h", state: "free_idle" }] }] }), T0)[0]!;
  const gpu = (index: number, over: Partial<GpuReading>): GpuReading => ({
    ...base,
    ...H200,
    index,
    uuid: `GPU-${index}`,
    ...over,
  });
  const rowsOf = (text: string): string[] => text.split("\n").filter((l) => /^\d+ {2,}\S/.test(l));

  it("shows a GPU's first owner in a few words with +N for the rest, cuts long text with an ellipsis, and stays within 120 columns", () => {
    const longPod = "a-pod-name-far-too-long-for-any-table-column-0123456789";
    const text = tableOf([
      gpu(0, { allocations: [{ via: "pod_resources", namespace: "ml", pod: "trainer-7", container: "main" }] }),
      gpu(1, {
        memUsedBytes: 140.5 * 1024 ** 3,
        allocations: [
          { via: "pod_resources", namespace: "serving", pod: longPod, container: "c" },
          { via: "job_mapping", job: "9" },
        ],
        processes: [{ pid: 7, name: "python3", usedMemoryBytes: 140 * 1024 ** 3 }],
      }),
      gpu(2, { allocations: [{ via: "job_mapping", job: "4242", user: "alice" }] }),
      gpu(3, {
        memUsedBytes: 20 * 1024 ** 3,
        processes: [
          {
            pid: 1234,
            name: "python",
            usedMemoryBytes: 20 * 1024 ** 3,
            owner: {
              via: "process",
              pid: 1234,
              command: "python",
              user: "bob",
              job: "88",
              step: "0",
              runtime: "containerd",
              containerId: "b4d6d161c62525d726fa",
            },
          },
        ],
      }),
      gpu(4, { memUsedBytes: 20 * 1024 ** 3, processes: [] }),
      gpu(5, { allocations: [] }),
    ]);
    const lines = text.split("\n");
    const header = lines.find((l) => l.startsWith("GPU "))!;
    const rows = rowsOf(text);
    for (const l of [header, ...rows]) expect(l.length, l).toBeLessThanOrEqual(120);
    const cells = rows.map((r) => r.slice(header.indexOf("HELD BY")));
    expect(cells[0]).toBe("pod ml/trainer-7");
    expect(cells[1]).toMatch(/^pod serving\/a-pod-name-\S+… \+2$/);
    expect(cells[2]).toBe("job 4242 (alice)");
    expect(cells[3]).toBe("bob: python (pid 1234)");
    // Held by memory with no process visible, and free: nobody known.
    expect(cells[4]).toBe("—");
    expect(cells[5]).toBe("—");
    expect(rows[0]).toMatch(/^0 +H200 /);
    expect(lines).toContain(`GPU 1 allocated to: pod serving/${longPod}, container c; job 9`);
    expect(lines).toContain("GPU 2 allocated to: job 4242, user alice");
    expect(lines).toContain("GPU 3 holders: python (pid 1234, user bob, job 88.0, containerd b4d6d161c625) 20.0 GiB");
    expect(lines.filter((l) => l.startsWith("GPU 5 "))).toEqual([]);
  });

  it("keeps the table within 120 columns beside a long model name and a long error, which goes below the table", () => {
    const text = tableOf([
      gpu(0, {
        model: "NVIDIA RTX PRO 6000 Blackwell Server Edition",
        allocations: [{ via: "job_mapping", job: "123456789012345678901234567890" }],
      }),
      gpu(1, { error: "NVML: Unknown Error (nvmlDeviceGetPciInfo_v3) while reading the GPU's PCI information" }),
    ]);
    const rows = rowsOf(text);
    for (const r of rows) expect(r.length, r).toBeLessThanOrEqual(120);
    expect(rows[0]).toMatch(/^0 +RTX PRO 6000 Blackw… /);
    expect(rows[0]).toMatch(/ job 1234\S*…$/);
    expect(rows[1]).toMatch(/ unavailable /);
    expect(text).toContain(
      "\nGPU 1 unavailable: NVML: Unknown Error (nvmlDeviceGetPciInfo_v3) while reading the GPU's PCI information\n",
    );
  });
});
