/**
 * The agent's pod-resources client against a real grpc-js server that speaks the kubelet's
 * v1 API on a real unix socket (test/helpers/pod-resources-server.ts), including the ways
 * a kubelet fails: hung, garbage, gone, restarted, too old for GetAllocatableResources.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import { eventually } from "../../test/helpers/eventually.js";
import { gpuPod, PodResourcesServer } from "../../test/helpers/pod-resources-server.js";
import { PodResourcesSource, classifyFailure, type PodResourcesOptions } from "./pod-resources.js";

const GPU0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555";
const GPU1 = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff";
const GPU2 = "GPU-13572468-1357-2468-1357-246813572468";
const MIG_A = "MIG-12345678-abcd-ef01-2345-6789abcdef01";
const MIG_B = "MIG-87654321-abcd-ef01-2345-6789abcdef01";

/** Fast rhythm for tests: the defaults are 10 s polls, 2 s deadline, 60 s staleness. */
const FAST: PodResourcesOptions = {
  pollMs: 80,
  deadlineMs: 300,
  staleAfterMs: 1_500,
  backoffInitialMs: 50,
  backoffMaxMs: 200,
};

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(opts: Parameters<typeof PodResourcesServer.start>[0] = {}): Promise<PodResourcesServer> {
  const s = await PodResourcesServer.start(opts);
  cleanups.push(() => s.stop());
  return s;
}

function source(socketPath: string, opts: PodResourcesOptions = {}) {
  const logger = recordingLogger();
  const src = new PodResourcesSource({ ...FAST, socketPath, logger, ...opts });
  cleanups.push(() => src.stop());
  return { src, logger };
}

const owners = (src: PodResourcesSource, uuid: string) =>
  src
    .current()
    .get(uuid)
    ?.map((o) => `${o.namespace}/${o.pod}/${o.container}`);

describe("PodResourcesSource", () => {
  it("lists each GPU's pod containers from List, and what the kubelet can allocate", async () => {
    const server = await serve({
      pods: [
        gpuPod("ml", "train-0", "trainer", [GPU0, GPU1]),
        {
          namespace: "ml",
          name: "cpu-only",
          containers: [{ name: "c", devices: [{ resourceName: "example.com/nic", deviceIds: ["eth9"] }] }],
        },
      ],
      allocatable: [{ resourceName: "nvidia.com/gpu", deviceIds: [GPU0, GPU1, GPU2] }],
    });
    const { src, logger } = source(server.socketPath);
    expect(src.ready()).toBe(false);
    expect(src.current().size).toBe(0);
    src.start();
    await eventually("an answer", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(src.current().get(GPU0)).toEqual([
      { via: "pod_resources", namespace: "ml", pod: "train-0", container: "trainer" },
    ]);
    expect(owners(src, GPU1)).toEqual(["ml/train-0/trainer"]);
    expect(src.current().has(GPU2)).toBe(false);
    expect(src.current().size).toBe(2);
    await eventually("allocatable", () => src.allocatableUuids(), 10_000, 20);
    expect([...(src.allocatableUuids() ?? [])].sort()).toEqual([GPU0, GPU1, GPU2].sort());
    expect(src.stats()).toMatchObject({
      pods: 2,
      allocatableGpus: 3,
      allocatableSupported: true,
      matched: { uuid: expect.any(Number) },
    });
    expect(logger.lines.filter((l) => l.level === "warn")).toEqual([]);

    // The pod ends and another takes GPU2: the next poll says so.
    server.setPods([gpuPod("infer", "api-7f", "server", [GPU2])]);
    await eventually(
      "the new allocation",
      () => (src.current().has(GPU2) && !src.current().has(GPU0) ? true : undefined),
      10_000,
      20,
    );
    expect(owners(src, GPU2)).toEqual(["infer/api-7f/server"]);
  });

  it("gives a time-sliced GPU every pod that holds a replica, once each", async () => {
    const server = await serve({
      pods: [
        gpuPod("a", "p1", "c", [`${GPU0}::0`, `${GPU0}::1`], "nvidia.com/gpu.shared"),
        gpuPod("b", "p2", "c", [`${GPU0}::2`]),
        gpuPod("c", "p3", "c", [`${GPU1}::0`]),
      ],
    });
    const { src } = source(server.socketPath);
    src.start();
    await eventually("an answer", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(owners(src, GPU0)).toEqual(["a/p1/c", "b/p2/c"]);
    expect(owners(src, GPU1)).toEqual(["c/p3/c"]);
    expect(src.stats().matched.time_sliced).toBeGreaterThanOrEqual(4);
  });

  it("keys MIG instances by their own uuid, whatever MIG resource names them", async () => {
    const server = await serve({
      pods: [
        gpuPod("ml", "small", "c", [MIG_A], "nvidia.com/mig-1g.10gb"),
        gpuPod("ml", "big", "c", [MIG_B], "nvidia.com/mig-3g.40gb"),
      ],
    });
    const { src } = source(server.socketPath);
    src.start();
    await eventually("an answer", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(owners(src, MIG_A)).toEqual(["ml/small/c"]);
    expect(owners(src, MIG_B)).toEqual(["ml/big/c"]);
    expect(src.stats().matched.mig_uuid).toBeGreaterThanOrEqual(2);
  });

  it("matches indexes through the host's GPU list, and counts forms it cannot match, logging each form once", async () => {
    const server = await serve({
      pods: [
        gpuPod("ml", "by-index", "c", ["1", "nvidia0"]),
        gpuPod("ml", "odd", "c", ["0:1", "nvidia0/gi2", "9", "something-else"]),
      ],
    });
    const { src, logger } = source(server.socketPath, {
      gpuByIndex: () =>
        new Map([
          [0, GPU0],
          [1, GPU1],
        ]),
    });
    src.start();
    await eventually("three answers", () => (src.stats().reads >= 3 ? true : undefined), 10_000, 20);
    expect(owners(src, GPU1)).toEqual(["ml/by-index/c"]);
    expect(owners(src, GPU0)).toEqual(["ml/by-index/c"]);
    const s = src.stats();
    for (const form of ["mig_index", "gke_mig", "index_unknown", "unknown"])
      expect(s.rejected[form], form).toBeGreaterThanOrEqual(3);
    const warned = logger.lines.filter((l) => l.level === "warn").map((l) => l.fields?.["form"]);
    expect(warned.sort()).toEqual(["gke_mig", "index_unknown", "mig_index", "unknown"]);
    expect(logger.lines.find((l) => l.fields?.["form"] === "unknown")?.fields?.["example"]).toBe(
      'nvidia.com/gpu "something-else"',
    );
  });

  it("a hung kubelet: calls time out, current() answers at once, the last answer is kept for its bound and then dropped", async () => {
    const server = await serve({ pods: [gpuPod("ml", "train-0", "c", [GPU0])] });
    const { src, logger } = source(server.socketPath);
    src.start();
    await eventually("an answer", () => (src.ready() ? true : undefined), 10_000, 20);
    const answeredAt = src.stats().lastGoodMs ?? 0;
    await server.setMode("hang");
    await eventually(
      "a call past its deadline",
      () => ((src.stats().failures["deadline"] ?? 0) >= 1 ? true : undefined),
      10_000,
      20,
    );
    // While a call hangs, the agent-facing side answers from memory (synchronously: no call can block it).
    for (let i = 0; i < 1000; i++) expect(owners(src, GPU0)).toEqual(["ml/train-0/c"]);
    await eventually("the stale answer dropped", () => (src.ready() ? undefined : true), 10_000, 20);
    expect(Date.now() - answeredAt).toBeGreaterThanOrEqual(1_400);
    expect(src.current().size).toBe(0);
    // The drop is counted (and logged, once) when the poll that found it stale ends.
    await eventually("the drop counted", () => (src.stats().staleDrops === 1 ? true : undefined), 10_000, 20);
    expect(logger.lines.filter((l) => l.msg.includes("last allocations are dropped"))).toHaveLength(1);
    // List's failure, once. (GetAllocatableResources, called right after List answered, may
    // also have met the hang: that is noted apart, at info, and is not this line.)
    expect(
      logger.lines.filter(
        (l) => l.level === "warn" && l.fields?.["reason"] === "deadline" && l.msg.includes("gave no answer"),
      ),
    ).toHaveLength(1);
    await server.setMode("ok");
    await eventually("answers again", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(owners(src, GPU0)).toEqual(["ml/train-0/c"]);
    expect(logger.lines.some((l) => l.msg.includes("answers again"))).toBe(true);
  });

  it("a socket that accepts and never speaks times out like a hung kubelet", async () => {
    const server = await serve({ mode: "silent" });
    const { src } = source(server.socketPath);
    src.start();
    await eventually(
      "a timed-out call",
      () => ((src.stats().failures["deadline"] ?? 0) >= 2 ? true : undefined),
      10_000,
      20,
    );
    expect(src.ready()).toBe(false);
    expect(server.calls.connections).toBeGreaterThanOrEqual(1);
  });

  it("garbage on the socket, or a message that does not decode, is counted and survived", async () => {
    const server = await serve({ mode: "garbage_bytes", pods: [gpuPod("ml", "p", "c", [GPU0])] });
    const { src, logger } = source(server.socketPath);
    src.start();
    // grpc-js reads bytes that are no HTTP/2 as a protocol error: UNAVAILABLE.
    await eventually(
      "failed reads",
      () => ((src.stats().failures["unavailable"] ?? 0) >= 3 ? true : undefined),
      10_000,
      20,
    );
    expect(src.ready()).toBe(false);
    await server.setMode("garbage_message");
    await eventually(
      "an undecodable answer",
      () => ((src.stats().failures["bad_answer"] ?? 0) >= 2 ? true : undefined),
      10_000,
      20,
    );
    expect(src.ready()).toBe(false);
    await server.setMode("ok");
    await eventually("an answer", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(owners(src, GPU0)).toEqual(["ml/p/c"]);
    // Each reason is logged once however often it happened.
    const reasons = logger.lines.filter((l) => l.level === "warn").map((l) => l.fields?.["reason"]);
    expect(new Set(reasons).size).toBe(reasons.length);
  });

  it("a socket missing at start is noted once at info, then used when it appears", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "ti-kubelet-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const socketPath = path.join(dir, "kubelet.sock");
    const { src, logger } = source(socketPath);
    src.start();
    await eventually(
      "missing noted",
      () => ((src.stats().failures["socket_missing"] ?? 0) >= 3 ? true : undefined),
      10_000,
      20,
    );
    expect(src.ready()).toBe(false);
    expect(logger.lines.filter((l) => l.fields?.["reason"] === "socket_missing").map((l) => l.level)).toEqual(["info"]);
    await serve({ socketPath, pods: [gpuPod("ml", "late", "c", [GPU1])] });
    await eventually("an answer", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(owners(src, GPU1)).toEqual(["ml/late/c"]);
    expect(logger.lines.filter((l) => l.level === "warn")).toEqual([]);
  });

  it("follows a kubelet restart that replaces the socket", async () => {
    const server = await serve({ pods: [gpuPod("ml", "before", "c", [GPU0])] });
    const { src, logger } = source(server.socketPath);
    src.start();
    await eventually("an answer", () => (owners(src, GPU0) ? true : undefined), 10_000, 20);
    server.setPods([gpuPod("ml", "after", "c", [GPU1])]);
    await server.restart();
    await eventually("the new kubelet's answer", () => (owners(src, GPU1) ? true : undefined), 10_000, 20);
    expect(src.current().has(GPU0)).toBe(false);
    expect(src.stats().socketReplaced).toBeGreaterThanOrEqual(1);
    expect(logger.lines.some((l) => l.msg.includes("was replaced"))).toBe(true);
    // And a kubelet that is away for a while: allocations stay for the bound, then come back.
    await server.remove();
    await eventually(
      "missing noted",
      () => ((src.stats().failures["socket_missing"] ?? 0) >= 1 ? true : undefined),
      10_000,
      20,
    );
    expect(owners(src, GPU1)).toEqual(["ml/after/c"]);
    const readsWhileAway = src.stats().reads;
    await server.listenAgain();
    await eventually("answers again", () => (src.stats().reads > readsWhileAway ? true : undefined), 10_000, 20);
    expect(owners(src, GPU1)).toEqual(["ml/after/c"]);
  });

  it("asks an older kubelet for allocatable resources once, and lists allocations all the same", async () => {
    const server = await serve({ getAllocatable: "unimplemented", pods: [gpuPod("ml", "p", "c", [GPU0])] });
    const { src, logger } = source(server.socketPath, { allocatableEveryMs: 0 });
    src.start();
    await eventually("five answers", () => (src.stats().reads >= 5 ? true : undefined), 10_000, 20);
    expect(owners(src, GPU0)).toEqual(["ml/p/c"]);
    expect(server.calls.getAllocatableResources).toBe(1);
    expect(src.allocatableUuids()).toBeUndefined();
    expect(src.stats().allocatableSupported).toBe(false);
    expect(logger.lines.filter((l) => l.msg.includes("GetAllocatableResources"))).toHaveLength(1);
    expect(logger.lines.filter((l) => l.level === "warn")).toEqual([]);
    // An upgraded kubelet (a new socket) is asked again.
    server.setGetAllocatable("ok");
    await server.restart();
    await eventually("allocatable from the new kubelet", () => src.allocatableUuids(), 10_000, 20);
    expect([...(src.allocatableUuids() ?? [])]).toEqual([GPU0]);
    expect(src.stats().allocatableSupported).toBe(true);
  });

  it("bounds the owners of one GPU", async () => {
    const pods = Array.from({ length: 6 }, (_, i) => gpuPod("ns", `p${i}`, "c", [`${GPU0}::${i}`]));
    const server = await serve({ pods });
    const { src } = source(server.socketPath, { maxOwnersPerGpu: 4 });
    src.start();
    await eventually("an answer", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(src.current().get(GPU0)).toHaveLength(4);
    expect(src.stats().ownersDropped).toBeGreaterThanOrEqual(2);
  });

  it("stop is safe before start, twice, and while a call hangs", async () => {
    await new PodResourcesSource({ socketPath: "/nonexistent/kubelet.sock" }).stop();
    const server = await serve({ mode: "hang" });
    const { src } = source(server.socketPath, { deadlineMs: 5_000 });
    src.start();
    await eventually("a call in flight", () => (server.calls.list >= 1 ? true : undefined), 10_000, 20);
    const t0 = performance.now();
    await src.stop();
    await src.stop();
    // It did not wait for the hung call's 5 s deadline.
    expect(performance.now() - t0).toBeLessThan(4_000);
    src.start();
    const calls = server.calls.list;
    await new Promise((r) => setTimeout(r, 300));
    expect(server.calls.list).toBe(calls);
  });
});

describe("classifyFailure", () => {
  it.each([
    [{ code: 4 }, "deadline"],
    [{ code: 14 }, "unavailable"],
    [{ code: 13 }, "bad_answer"],
    [{ code: 8 }, "too_large"],
    [{ code: 12 }, "unimplemented"],
    [{ code: 7 }, "permission_denied"],
    [{ code: 2 }, "error"],
    [{ code: "ENOENT" }, "socket_missing"],
    [{ code: "EACCES" }, "permission_denied"],
    [new Error("x"), "error"],
    [null, "error"],
  ])("%j is %s", (err, reason) => {
    expect(classifyFailure(err)).toBe(reason);
  });
});
