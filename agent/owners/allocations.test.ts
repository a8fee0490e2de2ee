import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { GpuOwner, GpuReading } from "../../common/types.js";
import { eventually } from "../../test/helpers/eventually.js";
import { gpuPod, PodResourcesServer } from "../../test/helpers/pod-resources-server.js";
import { Allocations, mergeAllocations, type AllocationSource, type AllocationSourceStats } from "./allocations.js";
import { JobMappingSource } from "./job-mapping.js";
import { PodResourcesSource } from "./pod-resources.js";

const GPU0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555";
const GPU1 = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff";
const GPU2 = "GPU-13572468-1357-2468-1357-246813572468";

const pod = (p: string): GpuOwner => ({ via: "pod_resources", namespace: "ns", pod: p, container: "c" });
const job = (j: string): GpuOwner => ({ via: "job_mapping", job: j, user: "alice" });

class FixedSource implements AllocationSource {
  readonly name;
  readonly where = "a fixed map";
  isReady = true;
  started = 0;
  stopped = 0;
  constructor(
    name: AllocationSource["name"],
    private readonly map: Map<string, GpuOwner[]>,
  ) {
    this.name = name;
  }
  start(): void {
    this.started++;
  }
  async stop(): Promise<void> {
    this.stopped++;
  }
  async firstRead(): Promise<void> {}
  current(): ReadonlyMap<string, GpuOwner[]> {
    return this.isReady ? this.map : new Map();
  }
  ready(): boolean {
    return this.isReady;
  }
  stats(): AllocationSourceStats {
    return { reads: 1, failures: {}, rejected: {}, staleDrops: 0, ownersDropped: 0, lastGoodMs: 0 };
  }
}

const reading = (uuid: string, index: number): GpuReading => ({ uuid, index, model: "NVIDIA H100 80GB HBM3" });

describe("mergeAllocations", () => {
  it("keeps source order, lists a duplicate once, bounds each GPU", () => {
    const a = new Map([[GPU0, [pod("p1"), pod("p2")]]]);
    const b = new Map([
      [GPU0, [pod("p1"), job("9")]],
      [GPU1, [job("10")]],
    ]);
    expect(mergeAllocations([a, b]).byGpu).toEqual(
      new Map([
        [GPU0, [pod("p1"), pod("p2"), job("9")]],
        [GPU1, [job("10")]],
      ]),
    );
    const bounded = mergeAllocations([a, b], 2);
    expect(bounded.byGpu.get(GPU0)).toEqual([pod("p1"), pod("p2")]);
    expect(bounded.dropped).toBe(1);
  });
});

describe("Allocations", () => {
  it("with no integration on, says nothing about any GPU", () => {
    const all = new Allocations([]);
    expect(all.enabled).toBe(false);
    expect(all.attach([reading(GPU0, 0)])[0]?.allocations).toBeUndefined();
  });

  it("gives each reading its owners, [] when unallocated, and leaves the input alone", () => {
    const k8s = new FixedSource("pod_resources", new Map([[GPU0, [pod("train")]]]));
    const slurm = new FixedSource("job_mapping", new Map([[GPU1, [job("42")]]]));
    const all = new Allocations([k8s, slurm]);
    all.start();
    expect([k8s.started, slurm.started]).toEqual([1, 1]);
    const input = [reading(GPU0, 0), reading(GPU1, 1), reading(GPU2, 2)];
    const out = all.attach(input);
    expect(out.map((r) => r.allocations)).toEqual([[pod("train")], [job("42")], []]);
    expect(input.every((r) => r.allocations === undefined)).toBe(true);
    // Not ready: that source says nothing; with none ready, nothing is known.
    k8s.isReady = false;
    expect(all.attach(input).map((r) => r.allocations)).toEqual([[], [job("42")], []]);
    slurm.isReady = false;
    expect(all.attach(input).map((r) => r.allocations)).toEqual([undefined, undefined, undefined]);
  });

  it("stops every source", async () => {
    const a = new FixedSource("pod_resources", new Map());
    const b = new FixedSource("job_mapping", new Map());
    const all = new Allocations([a, b]);
    await all.stop();
    expect([a.stopped, b.stopped]).toEqual([1, 1]);
    expect(Object.keys(all.stats())).toEqual(["pod_resources", "job_mapping"]);
  });
});

describe("Allocations from a kubelet and a job mapping together", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("one GPU allocated to a pod, one to a job, one to nobody", async () => {
    const server = await PodResourcesServer.start({ pods: [gpuPod("research", "notebook-0", "jupyter", [GPU0])] });
    cleanups.push(() => server.stop());
    const dir = mkdtempSync(path.join(tmpdir(), "ti-jobmap-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(path.join(dir, "1"), "31337 1000\n");
    const gpus = new Map([
      [0, GPU0],
      [1, GPU1],
      [2, GPU2],
    ]);
    const all = new Allocations([
      new PodResourcesSource({ socketPath: server.socketPath, pollMs: 50, gpuByIndex: () => gpus }),
      new JobMappingSource({
        dir,
        pollMs: 50,
        gpuByIndex: () => gpus,
        userName: (uid) => (uid === 1000 ? "alice" : undefined),
      }),
    ]);
    cleanups.push(() => all.stop());
    all.start();
    const readings = [...gpus].map(([i, u]) => reading(u, i));
    await eventually(
      "both sources ready",
      () => (Object.values(all.stats()).every((s) => s.reads > 0) ? true : undefined),
      10_000,
      20,
    );
    expect(all.attach(readings).map((r) => r.allocations)).toEqual([
      [{ via: "pod_resources", namespace: "research", pod: "notebook-0", container: "jupyter" }],
      [{ via: "job_mapping", job: "31337", user: "alice" }],
      [],
    ]);
  });
});
