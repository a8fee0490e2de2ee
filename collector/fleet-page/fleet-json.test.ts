import { describe, expect, it } from "vitest";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { GpuState, OwnerSource, RealSource, type OwnerSchema } from "../../gen/trueidle/v1/ingest_pb.js";
import { FleetState, type HostInfo } from "../fleet-state.js";
import { OWNER_LABELS, OwnerLedger, parseOwnerLabels } from "../owner-ledger.js";
import { T0, makeWindow, phantomWindow } from "../testdata/windows.js";
import { MAX_FLEET_JSON_OWNERS_PER_GPU, buildFleetJson, type FleetJson, type FleetJsonGpu } from "./fleet-json.js";

const host = (hostname: string, labels: Record<string, string> = {}): HostInfo => ({
  hostname,
  labels,
  windowMs: 10_000,
});

function clock(start = T0): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

type OwnerInit = MessageInitShape<typeof OwnerSchema>;

function heldWindow(uuid: string, index: number, idleStreakS: number, startMs = BigInt(T0), owners: OwnerInit[] = []) {
  return makeWindow(
    { uuid, index, startMs, freeIdleS: 0, heldIdleS: 10, owners },
    { state: GpuState.HELD_IDLE, idleStreakS, processes: 1 },
  );
}

/** Owners as agents send them: every field the host knew, the ones never exported included. */
const podOwner = (namespace: string, pod: string): OwnerInit => ({
  via: OwnerSource.POD_RESOURCES,
  namespace,
  pod,
  container: "main",
  podUid: "0f1e2d3c-0000-4000-8000-000000000001",
  observedS: 10,
  heldIdleS: 10,
});
const jobOwner: OwnerInit = {
  via: OwnerSource.JOB_MAPPING,
  job: "4242",
  step: "0",
  user: "alice",
  observedS: 10,
  heldIdleS: 10,
};
const processOwner: OwnerInit = {
  via: OwnerSource.PROCESS,
  namespace: "ml-team",
  pod: "trainer-7",
  container: "main",
  user: "alice",
  pid: 31337,
  command: "python3 train.py --secret-flag",
  runtime: "containerd",
  containerId: "c0ffee",
  observedS: 10,
  heldIdleS: 10,
};

const ledger = (labels: string): OwnerLedger =>
  new OwnerLedger(parseOwnerLabels(labels), { maxGroups: 100, expireAfterMs: 60_000 });

/** Every GPU of the JSON by uuid. */
const gpusOf = (j: FleetJson): Map<string, FleetJsonGpu> =>
  new Map(j.hosts.flatMap((h) => h.gpus.map((g) => [g.uuid, g] as const)));

describe("buildFleetJson", () => {
  it("lists hosts by name and GPUs by index with their current state and last readings", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    const b = host("node-b", { site: "dc2" });
    const a = host("node-a", { site: "dc1" });
    fleet.applyWindow(
      b,
      makeWindow({ uuid: "GPU-b1", index: 1, powerFloorW: undefined }, { utilPercent: undefined, powerW: undefined }),
    );
    fleet.applyWindow(b, phantomWindow({ uuid: "GPU-b0", index: 0 }));
    fleet.applyWindow(a, heldWindow("GPU-a0", 0, 42));
    const j = buildFleetJson(fleet);
    expect(j.gpus).toBe(3);
    expect(j.up).toBe(3);
    expect(j.hostCount).toBe(2);
    expect(j.hostsShown).toBe(2);
    expect(j.hostsTruncated).toBe(false);
    expect(j.byState).toEqual({ unavailable: 0, free_idle: 1, active: 0, busy_phantom: 1, held_idle: 1 });
    expect(j.hosts.map((h) => h.host)).toEqual(["node-a", "node-b"]);
    expect(j.hosts[1]!.labels).toEqual({ site: "dc2" });
    expect(j.hosts[1]!.gpus.map((g) => [g.index, g.uuid, g.state])).toEqual([
      [0, "GPU-b0", "busy_phantom"],
      [1, "GPU-b1", "free_idle"],
    ]);
    const phantom = j.hosts[1]!.gpus[0]!;
    expect(phantom).toMatchObject({
      up: true,
      real: 0.02,
      realSource: "power",
      reportedUtilization: 1,
      powerW: 80,
      processes: 1,
    });
    // Not reported: null in JSON, never 0.
    expect(j.hosts[1]!.gpus[1]).toMatchObject({ reportedUtilization: null, powerW: null, powerFloorW: null });
    expect(j.generatedAtMs).toBe(T0);
    // Round-trips through JSON unchanged (no undefined, no NaN).
    expect(JSON.parse(JSON.stringify(j))).toEqual(j);
  });

  it("gives real and reported idle since the collector started, and the hidden part", () => {
    const fleet = new FleetState({ now: clock().now });
    expect(buildFleetJson(fleet).idle).toEqual({
      span: "since_collector_start",
      observedS: 0,
      realIdleS: 0,
      reportedIdleS: 0,
      realIdleRatio: null,
      reportedIdleRatio: null,
      hiddenIdleRatio: null,
    });
    // 10 s free idle (reported idle too) + 10 s busy phantom (reported busy).
    fleet.applyWindow(host("n"), makeWindow({ uuid: "GPU-1" }));
    fleet.applyWindow(host("n"), phantomWindow({ uuid: "GPU-2", index: 1 }));
    const idle = buildFleetJson(fleet).idle;
    expect(idle).toMatchObject({
      observedS: 20,
      realIdleS: 20,
      reportedIdleS: 10,
      realIdleRatio: 1,
      reportedIdleRatio: 0.5,
    });
    expect(idle.hiddenIdleRatio).toBeCloseTo(0.5);
  });

  it("shows a stale GPU as unavailable and not up", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    fleet.applyWindow(host("n"), heldWindow("GPU-1", 0, 5));
    c.advance(31_000);
    const j = buildFleetJson(fleet);
    expect(j.hosts[0]!.gpus[0]).toMatchObject({ state: "unavailable", up: false });
    expect(j.byState.unavailable).toBe(1);
    expect(j.up).toBe(0);
    expect(j.longestHeldIdle).toEqual([]);
  });

  it("shows MIG instances under their board: same index, with their board's uuid and profile", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    fleet.applyWindow(host("n"), makeWindow({ uuid: "GPU-W", index: 1 }));
    fleet.applyWindow(host("n"), { ...heldWindow("MIG-b", 0, 5), parentUuid: "GPU-B", migProfile: "1g.10gb" });
    fleet.applyWindow(host("n"), makeWindow({ uuid: "MIG-a", index: 0, parentUuid: "GPU-B", migProfile: "3g.40gb" }));
    const j = buildFleetJson(fleet);
    expect(j.hosts[0]!.gpus.map((g) => [g.index, g.uuid, g.parentUuid, g.migProfile])).toEqual([
      [0, "MIG-a", "GPU-B", "3g.40gb"],
      [0, "MIG-b", "GPU-B", "1g.10gb"],
      [1, "GPU-W", undefined, undefined],
    ]);
    expect(j.longestHeldIdle).toEqual([
      expect.objectContaining({ uuid: "MIG-b", index: 0, parentUuid: "GPU-B", migProfile: "1g.10gb" }),
    ]);
    expect(Object.keys(j.hosts[0]!.gpus[2]!)).not.toContain("migProfile");
  });

  it("lists the GPUs held idle now, longest first, at most topHeldIdle", () => {
    const fleet = new FleetState({ now: clock().now });
    fleet.applyWindow(host("x"), heldWindow("GPU-x0", 0, 100));
    fleet.applyWindow(host("y"), heldWindow("GPU-y0", 0, 900));
    fleet.applyWindow(host("y"), heldWindow("GPU-y1", 1, 300));
    fleet.applyWindow(host("y"), phantomWindow({ uuid: "GPU-y2", index: 2 }));
    const j = buildFleetJson(fleet, { topHeldIdle: 2 });
    expect(j.longestHeldIdle).toEqual([
      { host: "y", index: 0, uuid: "GPU-y0", model: j.hosts[1]!.gpus[0]!.model, idleStreakS: 900 },
      { host: "y", index: 1, uuid: "GPU-y1", model: j.hosts[1]!.gpus[1]!.model, idleStreakS: 300 },
    ]);
  });

  it("caps the hosts listed and says so, keeping fleet totals whole", () => {
    const fleet = new FleetState({ now: clock().now });
    for (let i = 0; i < 30; i++)
      fleet.applyWindow(host(`node-${String(i).padStart(2, "0")}`), heldWindow(`GPU-${i}`, 0, i));
    const j = buildFleetJson(fleet, { maxHosts: 10, topHeldIdle: 3 });
    expect(j.hosts.map((h) => h.host)).toEqual(
      Array.from({ length: 10 }, (_, i) => `node-${String(i).padStart(2, "0")}`),
    );
    expect(j).toMatchObject({ hostCount: 30, hostsShown: 10, hostsTruncated: true, maxHosts: 10, gpus: 30 });
    expect(j.byState.held_idle).toBe(30);
    // The longest held idle cover the whole fleet, hosts left out of the grid included.
    expect(j.longestHeldIdle.map((g) => g.host)).toEqual(["node-29", "node-28", "node-27"]);
  });

  it("keeps agent-given strings as data", () => {
    const fleet = new FleetState({ now: clock().now });
    const evil = '<img src=x onerror="alert(1)">&amp;';
    fleet.applyWindow(host(evil, { site: "</script><script>alert(2)</script>" }), makeWindow({ uuid: "GPU-1" }));
    const j = buildFleetJson(fleet);
    expect(j.hosts[0]!.host).toBe(evil);
    expect(j.hosts[0]!.labels).toEqual({ site: "</script><script>alert(2)</script>" });
  });

  it("carries the owners of held GPUs with the configured fields only, and none for free or stale GPUs", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    const h = host("node-1");
    fleet.applyWindow(h, heldWindow("GPU-stale", 5, 50, BigInt(T0), [podOwner("ml-team", "old-job")]));
    c.advance(31_000);
    const start = BigInt(c.now());
    fleet.applyWindow(
      h,
      heldWindow("GPU-held", 0, 600, start, [podOwner("ml-team", "trainer-7"), jobOwner, processOwner]),
    );
    fleet.applyWindow(h, phantomWindow({ uuid: "GPU-phantom", index: 1, startMs: start, owners: [jobOwner] }));
    fleet.applyWindow(
      h,
      makeWindow(
        {
          uuid: "GPU-active",
          index: 2,
          startMs: start,
          freeIdleS: 0,
          activeS: 10,
          owners: [podOwner("ml-team", "trainer-8")],
        },
        { state: GpuState.ACTIVE, real: 0.9, realSource: RealSource.SM_ACTIVE, processes: 1 },
      ),
    );
    // A free GPU shows no owner, even where its window named one.
    fleet.applyWindow(
      h,
      makeWindow({ uuid: "GPU-free", index: 3, startMs: start, owners: [podOwner("ml-team", "leftover")] }),
    );
    fleet.applyWindow(h, heldWindow("GPU-nobody", 4, 30, start));

    const j = buildFleetJson(fleet, { owners: ledger("namespace,pod,container,job,user") });
    expect(j.ownerLabels).toEqual([...OWNER_LABELS]);
    const gpus = gpusOf(j);
    expect(gpus.get("GPU-held")).toMatchObject({
      state: "held_idle",
      owners: [
        { namespace: "ml-team", pod: "trainer-7", container: "main" },
        { job: "4242", user: "alice" },
        { namespace: "ml-team", pod: "trainer-7", container: "main", user: "alice" },
      ],
      ownersLeftOut: 0,
    });
    expect(gpus.get("GPU-phantom")).toMatchObject({
      state: "busy_phantom",
      owners: [{ job: "4242", user: "alice" }],
      ownersLeftOut: 0,
    });
    expect(gpus.get("GPU-active")).toMatchObject({
      state: "active",
      owners: [{ namespace: "ml-team", pod: "trainer-8", container: "main" }],
    });
    // Held with nobody known: an empty list, not no list.
    expect(gpus.get("GPU-nobody")).toMatchObject({ state: "held_idle", owners: [], ownersLeftOut: 0 });
    for (const uuid of ["GPU-free", "GPU-stale"]) {
      expect(gpus.get(uuid), uuid).not.toHaveProperty("owners");
      expect(gpus.get(uuid), uuid).not.toHaveProperty("ownersLeftOut");
    }
    expect(gpus.get("GPU-stale")!.state).toBe("unavailable");
    expect(j.longestHeldIdle.map((g) => [g.uuid, g.owners])).toEqual([
      ["GPU-held", gpus.get("GPU-held")!.owners],
      ["GPU-nobody", []],
    ]);
    // Fields no --owner-labels can name never leave the collector.
    const text = JSON.stringify(j);
    for (const hidden of [
      "31337",
      "python3",
      "secret-flag",
      "c0ffee",
      "containerd",
      "0f1e2d3c",
      "step",
      "leftover",
      "old-job",
    ])
      expect(text).not.toContain(hidden);
    expect(JSON.parse(text)).toEqual(j);
  });

  it("shows only the fields --owner-labels names, one entry per distinct owner, and leaves out owners with none of them", () => {
    const fleet = new FleetState({ now: clock().now });
    // The job's own mapping and its process name the same job and user: one owner on the page.
    fleet.applyWindow(
      host("n"),
      heldWindow("GPU-0", 0, 100, BigInt(T0), [podOwner("ml-team", "trainer-7"), jobOwner, processOwner]),
    );
    fleet.applyWindow(host("n"), heldWindow("GPU-1", 1, 50, BigInt(T0), [podOwner("ml-team", "trainer-8")]));
    const j = buildFleetJson(fleet, { owners: ledger("job,user") });
    expect(j.ownerLabels).toEqual(["job", "user"]);
    const gpus = gpusOf(j);
    expect(gpus.get("GPU-0")).toMatchObject({
      owners: [{ job: "4242", user: "alice" }, { user: "alice" }],
      ownersLeftOut: 0,
    });
    expect(gpus.get("GPU-1")).toMatchObject({ owners: [], ownersLeftOut: 0 });
    expect(JSON.stringify(j)).not.toMatch(/ml-team|trainer|main/);
    expect(j.heldIdleByOwner).toEqual({
      // Ties go by the owner's values, empty ones first.
      owners: [
        { owner: { user: "alice" }, gpus: 1, longestIdleS: 100 },
        { owner: { job: "4242", user: "alice" }, gpus: 1, longestIdleS: 100 },
      ],
      ownerCount: 2,
      withoutOwner: 1,
    });
  });

  it("carries no owner at all with --owner-labels none, or without an owner ledger", () => {
    const fleet = new FleetState({ now: clock().now });
    fleet.applyWindow(
      host("n"),
      heldWindow("GPU-0", 0, 100, BigInt(T0), [podOwner("ml-team", "trainer-7"), jobOwner, processOwner]),
    );
    for (const owners of [ledger("none"), undefined]) {
      const j = buildFleetJson(fleet, { owners });
      expect(j.ownerLabels).toEqual([]);
      expect(j).not.toHaveProperty("heldIdleByOwner");
      expect(j.hosts[0]!.gpus[0]).not.toHaveProperty("owners");
      expect(j.longestHeldIdle[0]).not.toHaveProperty("owners");
      expect(JSON.stringify(j)).not.toMatch(/ml-team|trainer|4242|alice/);
    }
  });

  it("lists at most a few owners per GPU and counts the rest", () => {
    const fleet = new FleetState({ now: clock().now });
    const many = Array.from({ length: 8 }, (_, i) => podOwner("ml-team", `worker-${i}`));
    fleet.applyWindow(host("n"), heldWindow("GPU-0", 0, 100, BigInt(T0), many));
    const j = buildFleetJson(fleet, { owners: ledger("namespace,pod") });
    const shown = Array.from({ length: MAX_FLEET_JSON_OWNERS_PER_GPU }, (_, i) => ({
      namespace: "ml-team",
      pod: `worker-${i}`,
    }));
    expect(MAX_FLEET_JSON_OWNERS_PER_GPU).toBe(4);
    expect(j.hosts[0]!.gpus[0]).toMatchObject({ owners: shown, ownersLeftOut: 4 });
    expect(j.longestHeldIdle[0]).toMatchObject({ owners: shown, ownersLeftOut: 4 });
    // The count by owner still counts every owner.
    expect(j.heldIdleByOwner!.ownerCount).toBe(8);
  });

  it("counts GPUs held idle by owner across the whole fleet, most first, at most topOwners", () => {
    const fleet = new FleetState({ now: clock().now });
    const a = podOwner("ml-team", "trainer-7");
    const b = podOwner("vision", "eval-1");
    // Hosts past maxHosts count too; a busy phantom GPU is held but not idle.
    fleet.applyWindow(host("node-a"), heldWindow("GPU-a0", 0, 100, BigInt(T0), [a]));
    fleet.applyWindow(host("node-a"), heldWindow("GPU-a1", 1, 700, BigInt(T0), [a, jobOwner]));
    fleet.applyWindow(host("node-z"), heldWindow("GPU-z0", 0, 300, BigInt(T0), [a]));
    fleet.applyWindow(host("node-z"), heldWindow("GPU-z1", 1, 900, BigInt(T0), [b]));
    fleet.applyWindow(host("node-z"), phantomWindow({ uuid: "GPU-z2", index: 2, owners: [b] }));
    fleet.applyWindow(host("node-z"), heldWindow("GPU-z3", 3, 20, BigInt(T0)));
    const j = buildFleetJson(fleet, { owners: ledger("namespace,pod,job,user"), maxHosts: 1, topOwners: 2 });
    expect(j.hosts.map((h) => h.host)).toEqual(["node-a"]);
    expect(j.heldIdleByOwner).toEqual({
      owners: [
        { owner: { namespace: "ml-team", pod: "trainer-7" }, gpus: 3, longestIdleS: 700 },
        { owner: { namespace: "vision", pod: "eval-1" }, gpus: 1, longestIdleS: 900 },
      ],
      ownerCount: 3,
      withoutOwner: 1,
    });
    const none = buildFleetJson(new FleetState({ now: clock().now }), { owners: ledger("namespace") });
    expect(none.heldIdleByOwner).toEqual({ owners: [], ownerCount: 0, withoutOwner: 0 });
  });

  it("keeps owner text as data", () => {
    const fleet = new FleetState({ now: clock().now });
    const evil = '<img src=x onerror="alert(1)">&amp;';
    fleet.applyWindow(
      host("n"),
      heldWindow("GPU-0", 0, 100, BigInt(T0), [
        { ...podOwner("</script><script>alert(2)</script>", evil), user: 'a"b' },
      ]),
    );
    const j = buildFleetJson(fleet, { owners: ledger("namespace,pod,user") });
    expect(j.longestHeldIdle[0]!.owners).toEqual([
      { namespace: "</script><script>alert(2)</script>", pod: evil, user: 'a"b' },
    ]);
  });
});
