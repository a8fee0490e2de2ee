/**
 * Owners on readings, end to end through the agent's own parts: a kubelet pod-resources
 * server on a real unix socket allocates one GPU to a pod, a job mapping directory gives
 * another to a Slurm job, and a host root holds the process on a third; the windows the
 * pipeline makes say who held each GPU, in which state, for how long.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../../common/types.js";
import { FakeHostRoot } from "../../test/helpers/host-root.js";
import { gpuPod, PodResourcesServer } from "../../test/helpers/pod-resources-server.js";
import { SamplePipeline } from "../pipeline.js";
import { Allocations } from "./allocations.js";
import { JobMappingSource } from "./job-mapping.js";
import { OwnerAnnotator } from "./owner-annotator.js";
import { PodResourcesSource } from "./pod-resources.js";
import { ProcessOwners } from "./process-owners.js";

const T0 = Date.UTC(2026, 11, 4, 12, 0, 0);
const MiB = 1024 * 1024;
const GPU = [
  "GPU-aaaaaaaa-0000-0000-0000-000000000000",
  "GPU-bbbbbbbb-0000-0000-0000-000000000001",
  "GPU-cccccccc-0000-0000-0000-000000000002",
];

function reading(index: number, over: Partial<GpuReading> = {}): GpuReading {
  return {
    uuid: GPU[index]!,
    index,
    model: "NVIDIA H100 80GB HBM3",
    util: 0,
    powerW: 70,
    powerLimitW: 700,
    memUsedBytes: 0,
    memTotalBytes: 80 * 1024 * MiB,
    processes: [],
    ...over,
  };
}

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function until<T>(what: string, read: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = read();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("OwnerAnnotator: MIG", () => {
  it("gives a pod's nvidia.com/mig-* allocation to the instance of that uuid; an instance never takes its board's index", async () => {
    const MIG = "MIG-0f6a2c1e-9d8b-5a4c-b3e2-1d0c9b8a7f65";
    const kubelet = await PodResourcesServer.start({
      pods: [gpuPod("infer", "llm-0", "server", [MIG], "nvidia.com/mig-1g.10gb")],
    });
    cleanups.push(() => kubelet.stop());
    const logger = recordingLogger();
    let annotator: OwnerAnnotator | undefined;
    const gpuByIndex = (): ReadonlyMap<number, string> => annotator?.gpuByIndex() ?? new Map();
    const allocations = new Allocations([
      new PodResourcesSource({ socketPath: kubelet.socketPath, configured: true, pollMs: 200, gpuByIndex, logger }),
    ]);
    annotator = new OwnerAnnotator({ allocations, logger });
    cleanups.push(() => annotator!.stop());
    annotator.start();
    const instance = (uuid: string, migProfile: string): GpuReading =>
      reading(0, { uuid, parentUuid: GPU[0]!, migProfile, util: undefined, powerW: undefined });
    const sample = (): GpuReading[] => [
      instance(MIG, "1g.10gb"),
      instance("MIG-11111111-0000-0000-0000-000000000000", "3g.40gb"),
      reading(1),
    ];
    const out = await until("the pod on the instance", () => {
      const r = annotator!.annotate(sample());
      return r[0]!.allocations?.length ? r : undefined;
    });
    expect(out[0]!.allocations).toEqual([
      { via: "pod_resources", namespace: "infer", pod: "llm-0", container: "server" },
    ]);
    expect(out[1]!.allocations).toEqual([]);
    expect([...annotator.gpuByIndex()]).toEqual([[1, GPU[1]]]);
  });
});

describe("OwnerAnnotator", () => {
  it("puts the pod, the job and the process owner on the readings, and the windows count their seconds", async () => {
    const kubelet = await PodResourcesServer.start({ pods: [gpuPod("ml", "trainer-0", "main", [GPU[0]!])] });
    cleanups.push(() => kubelet.stop());
    const jobs = await mkdtemp(join(tmpdir(), "trueidle-jobs-"));
    cleanups.push(() => rm(jobs, { recursive: true, force: true }));
    await writeFile(join(jobs, "1"), "77 1001\n");
    const host = await FakeHostRoot.create();
    cleanups.push(() => host.cleanup());
    await host.addProcess({
      pid: 4242,
      uid: 1000,
      comm: "python3",
      cgroup: "0::/system.slice/slurmstepd.scope/job_88/step_0/user/task_0\n",
    });

    const logger = recordingLogger();
    let annotator: OwnerAnnotator | undefined;
    const gpuByIndex = (): ReadonlyMap<number, string> => annotator?.gpuByIndex() ?? new Map();
    const processOwners = new ProcessOwners({ hostRoot: host.root, logger });
    const allocations = new Allocations([
      new PodResourcesSource({ socketPath: kubelet.socketPath, configured: true, pollMs: 200, gpuByIndex, logger }),
      new JobMappingSource({
        dir: jobs,
        pollMs: 200,
        gpuByIndex,
        logger,
        userName: (uid) => processOwners.userNameOf(uid),
      }),
    ]);
    annotator = new OwnerAnnotator({ allocations, processOwners, logger });
    cleanups.push(() => annotator!.stop());
    annotator.start();

    const proc = { pid: 4242, name: "python3", usedMemoryBytes: 20_000 * MiB };
    const sample = (): GpuReading[] => [
      reading(0),
      reading(1),
      reading(2, { memUsedBytes: 20_000 * MiB, processes: [proc] }),
    ];
    // Both schedulers have answered and the process's owner is looked up.
    const ready = await until("owners on every GPU", () => {
      const out = annotator!.annotate(sample());
      return out[0]!.allocations?.length && out[1]!.allocations?.length && out[2]!.processes?.[0]?.owner
        ? out
        : undefined;
    });
    expect(ready[0]!.allocations).toEqual([
      { via: "pod_resources", namespace: "ml", pod: "trainer-0", container: "main" },
    ]);
    expect(ready[1]!.allocations).toEqual([{ via: "job_mapping", job: "77", user: "bob" }]);
    expect(ready[2]!.allocations).toEqual([]);
    expect(ready[2]!.processes?.[0]?.owner).toMatchObject({
      via: "process",
      pid: 4242,
      command: "python3",
      user: "alice",
      job: "88",
      step: "0",
    });

    const pipeline = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    for (let s = 0; s < 10; s++) pipeline.ingest(T0 + s * 1000, annotator.annotate(sample()));
    pipeline.ingest(T0 + 10_000, sample());
    const windows = pipeline.drain();
    const byGpu = new Map(windows.map((w) => [w.uuid, w]));
    // Allocated and empty: held idle, never free idle.
    expect(byGpu.get(GPU[0]!)!.stateS).toMatchObject({ held_idle: 10, free_idle: 0 });
    expect(byGpu.get(GPU[0]!)!.owners?.map((o) => [o.pod, o.stateS.held_idle])).toEqual([["trainer-0", 10]]);
    expect(byGpu.get(GPU[1]!)!.owners?.map((o) => [o.job, o.user, o.stateS.held_idle])).toEqual([["77", "bob", 10]]);
    expect(byGpu.get(GPU[2]!)!.owners?.map((o) => [o.via, o.user, o.job, o.observedS])).toEqual([
      ["process", "alice", "88", 10],
    ]);
    expect(byGpu.get(GPU[2]!)!.heldByS).toEqual({ process: 10, memory: 10, allocation: 0 });

    // The pod goes away: its GPU is free again once the kubelet says so.
    kubelet.setPods([]);
    await until("the pod's GPU unallocated", () =>
      annotator!.annotate(sample())[0]!.allocations?.length === 0 ? true : undefined,
    );
  });

  it("starts the allocation sources with the first readings, so a GPU named by index resolves at the first read; firstAnswers waits for it", async () => {
    const kubelet = await PodResourcesServer.start({ pods: [gpuPod("ml", "by-index", "main", ["1"])] });
    cleanups.push(() => kubelet.stop());
    const jobs = await mkdtemp(join(tmpdir(), "trueidle-jobs-"));
    cleanups.push(() => rm(jobs, { recursive: true, force: true }));
    await writeFile(join(jobs, "2"), "99\n");
    const logger = recordingLogger();
    let annotator: OwnerAnnotator | undefined;
    const gpuByIndex = (): ReadonlyMap<number, string> => annotator?.gpuByIndex() ?? new Map();
    // One read each in this test: the next would come a minute later.
    const pods = new PodResourcesSource({
      socketPath: kubelet.socketPath,
      configured: true,
      pollMs: 60_000,
      gpuByIndex,
      logger,
    });
    const mapping = new JobMappingSource({ dir: jobs, pollMs: 60_000, gpuByIndex, logger });
    annotator = new OwnerAnnotator({ allocations: new Allocations([pods, mapping]), logger });
    cleanups.push(() => annotator!.stop());
    annotator.start();
    // Nothing is read before the GPUs are known.
    expect(await annotator.firstAnswers(50)).toBe(true);
    expect(kubelet.calls.list).toBe(0);
    const sample = [reading(0), reading(1), reading(2)];
    expect(annotator.annotate(sample).map((r) => r.allocations)).toEqual([undefined, undefined, undefined]);
    expect(await annotator.firstAnswers(10_000)).toBe(true);
    expect(annotator.annotate(sample).map((r) => r.allocations?.map((o) => o.pod ?? o.job))).toEqual([
      [],
      ["by-index"],
      ["99"],
    ]);
    const stats = annotator.stats();
    expect(stats.allocations.map((a) => [a.name, a.ready, a.stats.reads, a.stats.rejected])).toEqual([
      ["pod_resources", true, 1, {}],
      ["job_mapping", true, 1, {}],
    ]);
    expect(stats.processes).toBeUndefined();
    expect(logger.lines.filter((l) => l.level === "warn")).toEqual([]);
  });

  it("firstAnswers gives up on a kubelet that does not answer, and says so", async () => {
    const kubelet = await PodResourcesServer.start({ mode: "hang" });
    cleanups.push(() => kubelet.stop());
    const logger = recordingLogger();
    const annotator = new OwnerAnnotator({
      allocations: new Allocations([
        new PodResourcesSource({ socketPath: kubelet.socketPath, configured: true, deadlineMs: 60_000, logger }),
      ]),
      logger,
    });
    cleanups.push(() => annotator.stop());
    annotator.start();
    annotator.annotate([reading(0)]);
    expect(await annotator.firstAnswers(100)).toBe(false);
    expect(annotator.stats().allocations[0]).toMatchObject({
      name: "pod_resources",
      ready: false,
      stats: { reads: 0, failures: {} },
    });
  });

  it("leaves readings without owners when nothing is configured or known, and never changes the readings it is given", () => {
    const logger = recordingLogger();
    const annotator = new OwnerAnnotator({ allocations: new Allocations([]), logger });
    const input = [reading(0)];
    const out = annotator.annotate(input);
    expect(out[0]!.allocations).toBeUndefined();
    expect(out[0]).toEqual(input[0]);
    expect(annotator.gpuByIndex().get(0)).toBe(GPU[0]);
  });
});
