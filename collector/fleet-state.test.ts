import { describe, expect, it } from "vitest";
import { createLogger } from "../common/log.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { GpuState, OwnerSource, RealSource, type OwnerSchema } from "../gen/trueidle/v1/ingest_pb.js";
import { buildFleetJson } from "./fleet-page/fleet-json.js";
import { FleetState, MAX_COVERED_SPANS, type BoardRecord, type GpuRecord, type HostInfo } from "./fleet-state.js";
import { BOARD_UUID, T0, boardWindow, makeWindow, phantomWindow } from "./testdata/windows.js";

const HOST: HostInfo = { hostname: "gpu-node-1", labels: { site: "dc1" }, windowMs: 10_000 };
const UUID_A = "GPU-aaaaaaaa";
const UUID_B = "GPU-bbbbbbbb";

function clock(start = T0): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

function only(fleet: FleetState): GpuRecord {
  const recs = [...fleet.gpus()];
  expect(recs).toHaveLength(1);
  return recs[0] as GpuRecord;
}

describe("FleetState", () => {
  it("accumulates counters and keeps the last window's gauges", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    expect(fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A }))).toBe("applied");
    expect(
      fleet.applyWindow(HOST, phantomWindow({ uuid: UUID_A, startMs: BigInt(T0 + 10_000), powerFloorW: undefined })),
    ).toBe("applied");
    const rec = only(fleet);
    expect(rec.observedS).toBe(20);
    expect(rec.stateS).toEqual({ unavailable: 0, free_idle: 10, active: 0, busy_phantom: 10, held_idle: 0 });
    expect(rec.reportedIdleS).toBe(10);
    expect(rec.reportedBusyS).toBe(10);
    expect(rec.realBusyS).toBeCloseTo(0.2);
    expect(rec.state).toBe("busy_phantom");
    expect(rec.real).toBe(0.02);
    expect(rec.realSource).toBe("power");
    expect(rec.reportedUtilization).toBe(1);
    expect(rec.processes).toBe(1);
    expect(rec.powerW).toBe(80);
    expect(rec.memUsedBytes).toBe(1_073_741_824);
    // Not reported in the last window: missing, not 0 and not the older value.
    expect(rec.powerFloorW).toBeUndefined();
  });

  it("acknowledges a re-sent window without counting it again", () => {
    const fleet = new FleetState({ now: clock().now });
    const w1 = makeWindow({ uuid: UUID_A });
    const w2 = makeWindow({ uuid: UUID_A, startMs: BigInt(T0 + 10_000) });
    expect(fleet.applyWindow(HOST, w1)).toBe("applied");
    expect(fleet.applyWindow(HOST, w2)).toBe("applied");
    expect(fleet.applyWindow(HOST, w1)).toBe("replayed");
    expect(fleet.applyWindow(HOST, w2)).toBe("replayed");
    expect(only(fleet).observedS).toBe(20);
    expect(fleet.summary().totals.observedS).toBe(20);
    // The same uuid on another host is another GPU record.
    expect(fleet.applyWindow({ ...HOST, hostname: "gpu-node-2" }, w1)).toBe("applied");
    expect(fleet.size).toBe(2);
  });

  describe("covered time", () => {
    /** A free-idle window of UUID_A at T0 + `offsetS` seconds, `lengthS` long. */
    const at = (offsetS: number, lengthS = 10) =>
      makeWindow({
        uuid: UUID_A,
        startMs: BigInt(T0 + offsetS * 1000),
        durationMs: lengthS * 1000,
        observedS: lengthS,
        freeIdleS: lengthS,
        reportedIdleS: lengthS,
      });
    const spans = (rec: GpuRecord): number[][] => {
      const out: number[][] = [];
      for (let i = 0; i < rec.covered.length; i += 2)
        out.push([(rec.covered[i]! - T0) / 1000, (rec.covered[i + 1]! - T0) / 1000]);
      return out;
    };

    it("counts the windows a future-stamped window skipped over, each once, and acknowledges their replays", () => {
      const fleet = new FleetState({ now: clock().now });
      expect(fleet.applyWindow(HOST, at(0))).toBe("applied");
      // The agent's clock ran 4m50s ahead for one window, then stepped back.
      expect(fleet.applyWindow(HOST, at(290))).toBe("applied");
      for (let k = 1; k < 29; k++) expect(fleet.applyWindow(HOST, at(k * 10)), `window ${k}`).toBe("applied");
      const rec = only(fleet);
      expect(rec.observedS).toBe(300);
      expect(rec.stateS.free_idle).toBe(300);
      expect(fleet.summary().totals.observedS).toBe(300);
      // The gap is filled: one span again.
      expect(spans(rec)).toEqual([[0, 300]]);
      for (let k = 0; k < 30; k++) expect(fleet.applyWindow(HOST, at(k * 10))).toBe("replayed");
      expect(rec.observedS).toBe(300);
      // Past the future window the GPU goes on as before.
      expect(fleet.applyWindow(HOST, at(300))).toBe("applied");
      expect(spans(rec)).toEqual([[0, 310]]);
    });

    it("merges adjacent windows into one span and keeps gaps as spans of their own", () => {
      const fleet = new FleetState({ now: clock().now });
      fleet.applyWindow(HOST, at(0));
      fleet.applyWindow(HOST, at(10));
      const rec = only(fleet);
      expect(spans(rec)).toEqual([[0, 20]]);
      fleet.applyWindow(HOST, at(50));
      fleet.applyWindow(HOST, at(30));
      expect(spans(rec)).toEqual([
        [0, 20],
        [30, 40],
        [50, 60],
      ]);
      // A window joining two spans makes them one; a shorter one inside covered time is a replay.
      expect(fleet.applyWindow(HOST, at(40))).toBe("applied");
      expect(spans(rec)).toEqual([
        [0, 20],
        [30, 60],
      ]);
      expect(fleet.applyWindow(HOST, at(20))).toBe("applied");
      expect(spans(rec)).toEqual([[0, 60]]);
      expect(fleet.applyWindow(HOST, at(12, 5))).toBe("replayed");
      expect(rec.observedS).toBe(60);
    });

    it("refuses a window that partly overlaps covered time, changes nothing, and warns once a minute naming host, GPU and overlap", () => {
      const c = clock();
      const logs: string[] = [];
      const fleet = new FleetState({ now: c.now, logger: createLogger({ write: (l) => void logs.push(l) }) });
      fleet.applyWindow(HOST, at(0));
      fleet.applyWindow(HOST, at(10));
      fleet.applyWindow(HOST, at(40));
      const rec = only(fleet);
      const before = { observedS: rec.observedS, spans: spans(rec), state: rec.state, lastStartMs: rec.lastStartMs };
      // Over the end of a span, into a gap; over a gap and both its edges; a longer window from a span's start.
      expect(fleet.applyWindow(HOST, at(15, 10))).toBe("overlap");
      expect(fleet.applyWindow(HOST, at(10, 60))).toBe("overlap");
      expect(fleet.applyWindow(HOST, at(40, 20))).toBe("overlap");
      expect(fleet.applyWindow(HOST, at(35, 10))).toBe("overlap");
      expect({ observedS: rec.observedS, spans: spans(rec), state: rec.state, lastStartMs: rec.lastStartMs }).toEqual(
        before,
      );
      const warns = logs
        .map((l) => JSON.parse(l) as { level: string; msg: string; host?: string; uuid?: string; covered?: string[] })
        .filter((l) => l.level === "warn");
      expect(warns).toHaveLength(1);
      expect(warns[0]).toMatchObject({
        host: HOST.hostname,
        uuid: UUID_A,
        covered: [
          "2024-03-01T00:00:00.000Z/2024-03-01T00:00:20.000Z",
          "2024-03-01T00:00:40.000Z/2024-03-01T00:00:50.000Z",
        ],
      });
      expect(warns[0]?.msg).toMatch(
        /^A window of GPU GPU-aaaaaaaa of gpu-node-1 from 2024-03-01T00:00:15\.000Z to 2024-03-01T00:00:25\.000Z partly overlaps time the GPU's windows already covered \(2024-03-01T00:00:00\.000Z to 2024-03-01T00:00:20\.000Z\): it is refused as overlap/,
      );
      c.advance(60_000);
      expect(fleet.applyWindow(HOST, at(15, 10))).toBe("overlap");
      expect(logs.filter((l) => l.includes('"level":"warn"'))).toHaveLength(2);
      // The gap's own time is still open.
      expect(fleet.applyWindow(HOST, at(20, 20))).toBe("applied");
      expect(spans(rec)).toEqual([[0, 50]]);
    });

    it(`keeps at most ${MAX_COVERED_SPANS} spans: the oldest goes, and time before its end counts as covered`, () => {
      const fleet = new FleetState({ now: clock().now });
      // Spans [0,10), [20,30), ..., one more than the bound.
      for (let k = 0; k <= MAX_COVERED_SPANS; k++) expect(fleet.applyWindow(HOST, at(k * 20))).toBe("applied");
      const rec = only(fleet);
      expect(spans(rec)).toHaveLength(MAX_COVERED_SPANS);
      expect(spans(rec)[0]).toEqual([20, 30]);
      expect(rec.coveredFloorMs).toBe(T0 + 10_000);
      expect(rec.covered.length).toBe(2 * MAX_COVERED_SPANS);
      // Before the floor gaps cannot be told from covered time any more: a window there is taken
      // for a replay (the forgotten window itself), one across the floor is refused.
      expect(fleet.applyWindow(HOST, at(0))).toBe("replayed");
      expect(fleet.applyWindow(HOST, at(-30))).toBe("replayed");
      expect(fleet.applyWindow(HOST, at(5, 10))).toBe("overlap");
      // From the floor on, gaps still fill, and filling one frees a span.
      expect(fleet.applyWindow(HOST, at(10))).toBe("applied");
      expect(spans(rec)[0]).toEqual([10, 30]);
      expect(fleet.applyWindow(HOST, at(30))).toBe("applied");
      expect(spans(rec)).toHaveLength(MAX_COVERED_SPANS - 1);
      expect(rec.observedS).toBe(10 * (MAX_COVERED_SPANS + 3));
    });

    it("keeps the current state and identity of the newest window while an older one fills a gap", () => {
      const c = clock();
      const fleet = new FleetState({ now: c.now });
      fleet.applyWindow(HOST, at(0));
      // The newest window: busy_phantom, driver 560.
      expect(
        fleet.applyWindow(
          HOST,
          phantomWindow({ uuid: UUID_A, startMs: BigInt(T0 + 290_000), driverVersion: "560.28.03" }),
        ),
      ).toBe("applied");
      const rec = only(fleet);
      const freshAt = rec.freshAt;
      c.advance(10_000);
      // An older window of another state, driver and host labels arrives later.
      const older = makeWindow(
        { uuid: UUID_A, startMs: BigInt(T0 + 10_000), driverVersion: "550.54.15", powerFloorW: 1 },
        { state: GpuState.ACTIVE, real: 0.9, powerW: 500, idleStreakS: 0 },
      );
      expect(fleet.applyWindow({ ...HOST, labels: { site: "dc9" } }, older)).toBe("applied");
      expect(rec.observedS).toBe(30);
      expect(rec.stateS).toEqual({ unavailable: 0, free_idle: 20, active: 0, busy_phantom: 10, held_idle: 0 });
      expect([
        rec.state,
        rec.real,
        rec.powerW,
        rec.powerFloorW,
        rec.driver,
        rec.labels,
        rec.freshAt,
        rec.lastStartMs,
      ]).toEqual(["busy_phantom", 0.02, 80, 68, "560.28.03", [["site", "dc1"]], freshAt, T0 + 290_000]);
      // A window after the newest one takes over the current state again.
      expect(fleet.applyWindow(HOST, at(300))).toBe("applied");
      expect([rec.state, rec.freshAt, rec.lastStartMs]).toEqual(["free_idle", c.now(), T0 + 300_000]);
    });
  });

  it("marks a GPU down after three window lengths without a window, and unavailable", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    fleet.applyWindow(HOST, phantomWindow({ uuid: UUID_A }));
    const rec = only(fleet);
    c.advance(30_000);
    expect(fleet.isUp(rec)).toBe(true);
    expect(fleet.currentState(rec)).toBe("busy_phantom");
    c.advance(1);
    expect(fleet.isUp(rec)).toBe(false);
    expect(fleet.currentState(rec)).toBe("unavailable");
    expect(fleet.summary()).toMatchObject({ gpus: 1, up: 0, byState: { unavailable: 1, busy_phantom: 0 } });
    // A fresh window brings it back.
    fleet.applyWindow(HOST, phantomWindow({ uuid: UUID_A, startMs: BigInt(T0 + 40_000) }));
    expect(fleet.isUp(rec)).toBe(true);
  });

  it("uses the longer of the host's and the window's length for staleness", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now, staleAfterWindows: 2 });
    fleet.applyWindow({ ...HOST, windowMs: 60_000 }, makeWindow({ uuid: UUID_A }));
    c.advance(120_000);
    expect(fleet.isUp(only(fleet))).toBe(true);
    c.advance(1);
    expect(fleet.isUp(only(fleet))).toBe(false);
  });

  it("removes a GPU's record after expireAfterMs, but keeps the fleet counters until the group expires too", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now, expireAfterMs: 60_000 });
    fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A }));
    fleet.applyWindow(HOST, makeWindow({ uuid: UUID_B, index: 1 }));
    c.advance(30_000);
    fleet.applyWindow(HOST, makeWindow({ uuid: UUID_B, index: 1, startMs: BigInt(T0 + 10_000) }));
    c.advance(30_001);
    expect(fleet.sweep()).toBe(1);
    expect([...fleet.gpus()].map((r) => r.uuid)).toEqual([UUID_B]);
    const [group] = [...fleet.groups()];
    expect(group?.stateS.free_idle).toBe(30);
    expect(group?.gpuCount).toBe(1);
    c.advance(30_000);
    expect(fleet.sweep()).toBe(1);
    expect(fleet.size).toBe(0);
    expect([...fleet.groups()]).toHaveLength(1);
    c.advance(60_000);
    fleet.sweep();
    expect([...fleet.groups()]).toHaveLength(1);
    c.advance(1);
    fleet.sweep();
    expect([...fleet.groups()]).toHaveLength(0);
    // Cumulative totals survive expiry.
    expect(fleet.summary()).toMatchObject({ gpus: 0, up: 0, totals: { observedS: 30 } });
  });

  it("refuses new GPUs of a host beyond maxGpusPerHost, but keeps serving the known ones", () => {
    const fleet = new FleetState({ now: clock().now, maxGpusPerHost: 2 });
    expect(fleet.applyWindow(HOST, makeWindow({ uuid: "GPU-1" }))).toBe("applied");
    expect(fleet.applyWindow(HOST, makeWindow({ uuid: "GPU-2" }))).toBe("applied");
    expect(fleet.applyWindow(HOST, makeWindow({ uuid: "GPU-3" }))).toBe("too_many_gpus");
    expect(fleet.applyWindow(HOST, makeWindow({ uuid: "GPU-1", startMs: BigInt(T0 + 10_000) }))).toBe("applied");
    expect(fleet.applyWindow({ ...HOST, hostname: "other" }, makeWindow({ uuid: "GPU-3" }))).toBe("applied");
  });

  describe("series cap (maxGpus)", () => {
    const host = (i: number): HostInfo => ({ ...HOST, hostname: `node-${i}` });

    it("refuses new GPUs beyond the cap without creating anything, keeps the known ones, and frees places on expiry", () => {
      const c = clock();
      const logs: string[] = [];
      const fleet = new FleetState({
        now: c.now,
        maxGpus: 3,
        expireAfterMs: 60_000,
        logger: createLogger({ write: (l) => void logs.push(l) }),
      });
      for (let i = 0; i < 3; i++) expect(fleet.applyWindow(host(i), makeWindow({ uuid: `GPU-${i}` }))).toBe("applied");
      // A flood of new hosts and GPUs: each refused, and no host entry is left behind.
      for (let i = 3; i < 1_000; i++)
        expect(fleet.applyWindow(host(i), makeWindow({ uuid: `GPU-${i}` }))).toBe("series_limit");
      expect(fleet.applyWindow(host(0), makeWindow({ uuid: "GPU-new-on-a-known-host" }))).toBe("series_limit");
      expect([fleet.size, fleet.hostCount, [...fleet.groups()].length]).toEqual([3, 3, 1]);
      // Known GPUs go on.
      c.advance(30_000);
      expect(fleet.applyWindow(host(0), makeWindow({ uuid: "GPU-0", startMs: BigInt(T0 + 10_000) }))).toBe("applied");
      // Logged once (a minute apart at most), naming the limit and the first GPU refused.
      const warns = logs.map((l) => JSON.parse(l) as { level: string; msg: string }).filter((l) => l.level === "warn");
      expect(warns).toHaveLength(1);
      expect(warns[0]?.msg).toMatch(
        /^The collector holds 3 GPUs, its limit \(--max-gpus\): windows of new GPUs are refused as series_limit .* GPU GPU-3 of node-3\./,
      );
      // GPU-1 and GPU-2 expire; their places are free again.
      c.advance(31_000);
      expect(fleet.sweep()).toBe(2);
      expect(fleet.hostCount).toBe(1);
      expect(fleet.applyWindow(host(7), makeWindow({ uuid: "GPU-7" }))).toBe("applied");
      expect(fleet.applyWindow(host(8), makeWindow({ uuid: "GPU-8" }))).toBe("applied");
      expect(fleet.applyWindow(host(9), makeWindow({ uuid: "GPU-9" }))).toBe("series_limit");
      // 61 s after the first warning: logged again; 10 s later not.
      expect(logs.filter((l) => l.includes('"level":"warn"'))).toHaveLength(2);
      c.advance(10_000);
      fleet.applyWindow(host(10), makeWindow({ uuid: "GPU-10" }));
      expect(logs.filter((l) => l.includes('"level":"warn"'))).toHaveLength(2);
    });

    it("caps roll-up groups too: a GPU whose model keeps changing cannot mint series", () => {
      const c = clock();
      const fleet = new FleetState({ now: c.now, maxGpus: 2 });
      expect(fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, model: "m0" }))).toBe("applied");
      expect(fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, model: "m1", startMs: BigInt(T0 + 10_000) }))).toBe(
        "applied",
      );
      // m0's group is empty but kept until it expires: a third group is beyond the cap.
      expect(fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, model: "m2", startMs: BigInt(T0 + 20_000) }))).toBe(
        "series_limit",
      );
      expect(fleet.applyWindow(HOST, makeWindow({ uuid: UUID_B, model: "m3" }))).toBe("series_limit");
      const rec = only(fleet);
      expect([rec.model, rec.group.model, rec.observedS]).toEqual(["m1", "m1", 20]);
      expect([...fleet.groups()].map((g) => g.model)).toEqual(["m0", "m1"]);
      // A window with the GPU's own model still counts.
      expect(fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, model: "m1", startMs: BigInt(T0 + 30_000) }))).toBe(
        "applied",
      );
    });
  });

  it("rolls GPUs up by model and configured labels, counting stale GPUs as unavailable", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    const dc2: HostInfo = { hostname: "gpu-node-9", labels: { site: "dc2" }, windowMs: 10_000 };
    fleet.applyWindow(HOST, makeWindow({ uuid: "GPU-1" }));
    fleet.applyWindow(HOST, phantomWindow({ uuid: "GPU-2" }));
    fleet.applyWindow(HOST, makeWindow({ uuid: "GPU-3", model: "NVIDIA A100-SXM4-80GB" }));
    fleet.applyWindow(
      dc2,
      makeWindow(
        { uuid: "GPU-4", freeIdleS: 0, activeS: 10, reportedIdleS: 0, reportedBusyS: 10, realBusyS: 9 },
        { state: GpuState.ACTIVE, real: 0.9, realSource: RealSource.SM_ACTIVE },
      ),
    );
    c.advance(20_000);
    fleet.applyWindow(HOST, makeWindow({ uuid: "GPU-1", startMs: BigInt(T0 + 20_000) }));
    c.advance(15_000); // GPU-2, GPU-3 and GPU-4 are now stale; GPU-1 is not.

    const counts = new Map(
      [...fleet.groupStateCounts()].map(([g, s]) => [`${g.model}|${g.labels.map((l) => l.join("=")).join(",")}`, s]),
    );
    expect(Object.fromEntries(counts)).toEqual({
      "NVIDIA H100 80GB HBM3|site=dc1": { unavailable: 1, free_idle: 1, active: 0, busy_phantom: 0, held_idle: 0 },
      "NVIDIA A100-SXM4-80GB|site=dc1": { unavailable: 1, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 0 },
      "NVIDIA H100 80GB HBM3|site=dc2": { unavailable: 1, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 0 },
    });
    const h100dc1 = [...fleet.groups()].find((g) => g.model === "NVIDIA H100 80GB HBM3" && g.labels[0]?.[1] === "dc1");
    expect(h100dc1?.stateS).toEqual({ unavailable: 0, free_idle: 20, active: 0, busy_phantom: 10, held_idle: 0 });

    expect(fleet.summary()).toEqual({
      gpus: 4,
      up: 1,
      byState: { unavailable: 3, free_idle: 1, active: 0, busy_phantom: 0, held_idle: 0 },
      totals: {
        observedS: 50,
        realIdleS: 40,
        reportedIdleS: 30,
        stateS: { unavailable: 0, free_idle: 30, active: 10, busy_phantom: 10, held_idle: 0 },
      },
    });
  });

  it("moves a GPU to its host's new labels, clearing the cached label string", () => {
    const fleet = new FleetState({ now: clock().now });
    fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A }));
    const rec = only(fleet);
    rec.promLabels = "cached";
    fleet.applyWindow({ ...HOST, labels: { site: "dc3" } }, makeWindow({ uuid: UUID_A, startMs: BigInt(T0 + 10_000) }));
    expect(rec.promLabels).toBeUndefined();
    expect(rec.labels).toEqual([["site", "dc3"]]);
    expect(rec.group.labels).toEqual([["site", "dc3"]]);
    expect(rec.observedS).toBe(20);
    const groups = [...fleet.groups()];
    expect(groups.map((g) => g.gpuCount)).toEqual([0, 1]);
  });

  it("keeps of a window's owners their label fields only, the same objects while they do not change", () => {
    const fleet = new FleetState({ now: clock().now });
    const pod = (p: string): MessageInitShape<typeof OwnerSchema> => ({
      via: OwnerSource.POD_RESOURCES,
      namespace: "ml-team",
      pod: p,
      container: "main",
      podUid: "0f1e2d3c-0000-4000-8000-000000000001",
      observedS: 10,
      heldIdleS: 10,
    });
    const proc = { via: OwnerSource.PROCESS, pid: 4242, user: "alice", command: "python train.py", observedS: 10 };
    const held = (k: number, owners: MessageInitShape<typeof OwnerSchema>[]) =>
      makeWindow(
        { uuid: UUID_A, startMs: BigInt(T0 + k * 10_000), freeIdleS: 0, heldIdleS: 10, owners },
        { state: GpuState.HELD_IDLE, processes: 1 },
      );
    fleet.applyWindow(HOST, held(0, [pod("trainer-1"), proc]));
    const rec = only(fleet);
    const first = rec.owners;
    expect(first).toEqual([
      { namespace: "ml-team", pod: "trainer-1", container: "main", job: "", user: "" },
      { namespace: "", pod: "", container: "", job: "", user: "alice" },
    ]);
    expect(Object.isFrozen(first) && first.every((o) => Object.isFrozen(o))).toBe(true);
    // The same owners again (other seconds): the record keeps what it has.
    fleet.applyWindow(HOST, held(1, [pod("trainer-1"), { ...proc, command: "python eval.py" }]));
    expect(rec.owners).toBe(first);
    // One owner changes: a new list, the unchanged owner the same object.
    fleet.applyWindow(HOST, held(2, [pod("trainer-1"), { ...proc, user: "bob" }]));
    expect(rec.owners).not.toBe(first);
    expect(rec.owners[0]).toBe(first[0]);
    expect(rec.owners[1]).toEqual({ namespace: "", pod: "", container: "", job: "", user: "bob" });
    // An older window filling a gap leaves the newest window's owners alone; a free GPU has none.
    fleet.applyWindow(HOST, held(10, []));
    expect(rec.owners).toEqual([]);
    fleet.applyWindow(HOST, held(5, [pod("trainer-2")]));
    expect(rec.owners).toEqual([]);
  });

  it("shares one copy of a driver version and of a label set among the GPUs that have them", () => {
    const fleet = new FleetState({ now: clock().now });
    // Each window and Hello arrives with its own copies of the strings.
    const copy = (s: string): string => Buffer.from(s).toString();
    const hostB: HostInfo = { ...HOST, hostname: "gpu-node-2", labels: { [copy("site")]: copy("dc1") } };
    fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, driverVersion: copy("550.54.15") }));
    fleet.applyWindow(hostB, makeWindow({ uuid: UUID_B, driverVersion: copy("550.54.15") }));
    const [a, b] = [...fleet.gpus()] as [GpuRecord, GpuRecord];
    expect(b.driver).toBe(a.driver);
    expect(b.labels).toBe(a.labels);
    expect(b.model).toBe(b.group.model);
    // Another host's labels are its own.
    fleet.applyWindow({ ...hostB, hostname: "gpu-node-3", labels: { site: "dc2" } }, makeWindow({ uuid: UUID_A }));
    expect([...fleet.gpus()][2]?.labels).toEqual([["site", "dc2"]]);
  });

  it("sweeps on an unref'd timer from start() until stop(), which is safe twice and before start()", async () => {
    let t = T0;
    const fleet = new FleetState({ now: () => t, expireAfterMs: 1_000 });
    await fleet.stop();
    const stale = (): void => {
      fleet.applyWindow(
        { ...HOST, windowMs: 1_000 },
        makeWindow({ uuid: UUID_A, durationMs: 1_000, observedS: 1, freeIdleS: 1, reportedIdleS: 1 }),
      );
      t += 5_000;
    };
    stale();
    fleet.start(5);
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (fleet.size === 0) {
          clearInterval(poll);
          resolve();
        }
      }, 5);
    });
    await Promise.all([fleet.stop(), fleet.stop()]);
    // The timer is gone: an expired record stays until someone sweeps.
    t = T0;
    stale();
    await new Promise((r) => setTimeout(r, 50));
    expect(fleet.size).toBe(1);
  });
});

describe("FleetState: the rows of boards in MIG mode", () => {
  /** A MIG instance of BOARD_UUID, free and idle for ten seconds. */
  const instance = (uuid: string, startMs = T0) =>
    makeWindow({ uuid, index: 0, parentUuid: BOARD_UUID, migProfile: "3g.40gb", startMs: BigInt(startMs) });
  const board = (init: Parameters<typeof boardWindow>[0] = {}, last: Parameters<typeof boardWindow>[1] = {}) =>
    boardWindow({ index: 0, ...init }, last);
  const onlyBoard = (fleet: FleetState): BoardRecord => {
    const boards = [...fleet.boards()];
    expect(boards).toHaveLength(1);
    return boards[0] as BoardRecord;
  };

  it("keeps a board's row apart: in no GPU count, roll-up, summary or fleet page", () => {
    const c = clock();
    const withBoard = new FleetState({ now: c.now });
    const without = new FleetState({ now: c.now });
    for (const fleet of [withBoard, without]) {
      fleet.applyWindow(HOST, instance("MIG-1"));
      fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, index: 1 }));
    }
    expect(withBoard.applyWindow(HOST, board({ unavailableS: 3 }))).toBe("applied");
    c.advance(5_000);
    expect(withBoard.size).toBe(2);
    expect(withBoard.boardCount).toBe(1);
    expect([...withBoard.gpus()].map((r) => r.uuid)).toEqual(["MIG-1", UUID_A]);
    expect(withBoard.hostCount).toBe(1);
    expect(withBoard.summary()).toEqual(without.summary());
    expect([...withBoard.groupStateCounts().values()]).toEqual([...without.groupStateCounts().values()]);
    expect([...withBoard.groups()]).toEqual([...without.groups()]);
    expect(buildFleetJson(withBoard)).toEqual(buildFleetJson(without));
    // Its own record holds its figures.
    expect(onlyBoard(withBoard)).toMatchObject({
      host: HOST.hostname,
      uuid: BOARD_UUID,
      index: 0,
      model: "NVIDIA H100 80GB HBM3",
      driver: "550.54.15",
      labels: [["site", "dc1"]],
      observedS: 10,
      unavailableS: 3,
      readable: true,
      powerW: 182,
      powerFloorW: 90,
      powerLimitW: 700,
    });
    expect(withBoard.boardInstanceCounts().get(onlyBoard(withBoard))).toBe(1);
  });

  it("counts a board's windows once: a replay is acknowledged, a partial overlap refused", () => {
    const fleet = new FleetState({ now: clock().now });
    const w1 = board({ unavailableS: 1 });
    const w2 = board({ startMs: BigInt(T0 + 10_000), unavailableS: 2 });
    expect(fleet.applyWindow(HOST, w1)).toBe("applied");
    expect(fleet.applyWindow(HOST, w2)).toBe("applied");
    expect(fleet.applyWindow(HOST, w1)).toBe("replayed");
    expect(fleet.applyWindow(HOST, board({ startMs: BigInt(T0 + 15_000) }))).toBe("overlap");
    expect(onlyBoard(fleet)).toMatchObject({ observedS: 20, unavailableS: 3, covered: [T0, T0 + 20_000] });
    // A window filling a gap counts, and leaves the newest window's figures alone.
    expect(fleet.applyWindow(HOST, board({ startMs: BigInt(T0 + 30_000) }, { powerW: 200 }))).toBe("applied");
    expect(fleet.applyWindow(HOST, board({ startMs: BigInt(T0 + 20_000) }, { powerW: 100, error: "x" }))).toBe(
      "applied",
    );
    expect(onlyBoard(fleet)).toMatchObject({ observedS: 40, powerW: 200, readable: true });
    // The same uuid on another host is another board; none of it is a GPU.
    expect(fleet.applyWindow({ ...HOST, hostname: "gpu-node-2" }, w1)).toBe("applied");
    expect([fleet.boardCount, fleet.size]).toEqual([2, 0]);
  });

  it("is down after three window lengths without a window, or while its last reading failed, and expires like a GPU", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now, expireAfterMs: 60_000 });
    fleet.applyWindow(HOST, board());
    fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, index: 1 }));
    const b = onlyBoard(fleet);
    c.advance(30_000);
    expect(fleet.boardUp(b)).toBe(true);
    c.advance(1);
    expect(fleet.boardUp(b)).toBe(false);
    fleet.applyWindow(HOST, board({ startMs: BigInt(T0 + 30_000), unavailableS: 10 }, { error: "Unknown Error" }));
    expect([fleet.isUp(b), fleet.boardUp(b), b.powerW]).toEqual([true, false, 182]);
    fleet.applyWindow(HOST, board({ startMs: BigInt(T0 + 40_000) }));
    expect(fleet.boardUp(b)).toBe(true);
    // 60 s after its last window the board goes, as a GPU does; the sweep counts GPUs only.
    const generation = fleet.generation;
    c.advance(60_001);
    expect(fleet.sweep()).toBe(1);
    expect([fleet.boardCount, fleet.size]).toEqual([0, 0]);
    expect(fleet.generation).toBe(generation + 2);
    // A new row starts from nothing.
    fleet.applyWindow(HOST, board({ startMs: BigInt(T0 + 100_000) }));
    expect(onlyBoard(fleet)).not.toBe(b);
    expect(onlyBoard(fleet).observedS).toBe(10);
  });

  it("has caps of its own, by --max-gpus-per-host and --max-gpus: boards never take a GPU's place", () => {
    const c = clock();
    const logs: string[] = [];
    const fleet = new FleetState({
      now: c.now,
      maxGpusPerHost: 2,
      maxGpus: 3,
      expireAfterMs: 60_000,
      logger: createLogger({ write: (l) => void logs.push(l) }),
    });
    const host = (i: number): HostInfo => ({ ...HOST, hostname: `node-${i}` });
    // Two GPUs and two boards on one host: each within its own per-host cap.
    expect(fleet.applyWindow(host(0), makeWindow({ uuid: "GPU-1" }))).toBe("applied");
    expect(fleet.applyWindow(host(0), makeWindow({ uuid: "GPU-2" }))).toBe("applied");
    expect(fleet.applyWindow(host(0), board({ uuid: "GPU-b1" }))).toBe("applied");
    expect(fleet.applyWindow(host(0), board({ uuid: "GPU-b2" }))).toBe("applied");
    expect(fleet.applyWindow(host(0), board({ uuid: "GPU-b3" }))).toBe("too_many_gpus");
    expect(fleet.applyWindow(host(1), makeWindow({ uuid: "GPU-3" }))).toBe("applied");
    // Three GPUs, the cap: a fourth is refused, a board is not.
    expect(fleet.applyWindow(host(2), makeWindow({ uuid: "GPU-4" }))).toBe("series_limit");
    expect(fleet.applyWindow(host(1), board({ uuid: "GPU-b4" }))).toBe("applied");
    // Three boards, their cap: a fourth is refused, and a GPU's place is not taken.
    expect(fleet.applyWindow(host(2), board({ uuid: "GPU-b5" }))).toBe("series_limit");
    expect([fleet.size, fleet.boardCount, fleet.hostCount]).toEqual([3, 3, 2]);
    const warns = logs.map((l) => JSON.parse(l) as { level: string; msg: string }).filter((l) => l.level === "warn");
    expect(warns.map((w) => w.msg)).toEqual([expect.stringMatching(/^The collector holds 3 GPUs, its limit/)]);
    // A minute later the next refusal is logged, naming boards.
    c.advance(60_000);
    expect(fleet.applyWindow(host(3), board({ uuid: "GPU-b6" }))).toBe("series_limit");
    expect(logs.filter((l) => l.includes('"level":"warn"')).at(-1)).toMatch(
      /The collector holds 3 MIG boards, its limit \(--max-gpus\): windows of new MIG boards are refused as series_limit .* MIG board GPU-b6 of node-3\./,
    );
    // Known boards go on; expired ones free their places.
    expect(fleet.applyWindow(host(0), board({ uuid: "GPU-b1", startMs: BigInt(T0 + 10_000) }))).toBe("applied");
    c.advance(1);
    fleet.sweep();
    expect([...fleet.boards()].map((b) => b.uuid)).toEqual(["GPU-b1"]);
    expect(fleet.applyWindow(host(3), board({ uuid: "GPU-b6" }))).toBe("applied");
  });

  it("follows its host's labels and the newest window's identity, clearing the cached label string", () => {
    const fleet = new FleetState({ now: clock().now });
    fleet.applyWindow(HOST, board());
    const b = onlyBoard(fleet);
    b.promLabels = "cached";
    fleet.applyWindow(HOST, board({ startMs: BigInt(T0 + 10_000) }));
    expect(b.promLabels).toBe("cached");
    fleet.applyWindow({ ...HOST, labels: { site: "dc2" } }, board({ startMs: BigInt(T0 + 20_000), index: 4 }));
    expect([b.labels, b.index, b.promLabels]).toEqual([[["site", "dc2"]], 4, undefined]);
  });

  it("counts as a board's instances those up on its own host, in one pass over the GPUs", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    fleet.applyWindow(HOST, board());
    fleet.applyWindow(HOST, instance("MIG-1"));
    fleet.applyWindow(HOST, instance("MIG-2"));
    fleet.applyWindow({ ...HOST, hostname: "other" }, instance("MIG-3"));
    fleet.applyWindow(HOST, makeWindow({ uuid: UUID_A, index: 1 }));
    const b = onlyBoard(fleet);
    expect(fleet.boardInstanceCounts().get(b)).toBe(2);
    c.advance(25_000);
    fleet.applyWindow(HOST, instance("MIG-1", T0 + 10_000));
    c.advance(6_000);
    // MIG-2 is stale now.
    expect(fleet.boardInstanceCounts().get(b)).toBe(1);
    c.advance(30_000);
    expect(fleet.boardInstanceCounts().has(b)).toBe(false);
  });

  it("keeps a board that leaves MIG mode apart from the whole GPU it becomes, until its row expires", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now, expireAfterMs: 60_000 });
    fleet.applyWindow(HOST, board());
    // The same uuid, now a whole GPU: a GPU record of its own, its windows counted from nothing.
    expect(fleet.applyWindow(HOST, makeWindow({ uuid: BOARD_UUID, startMs: BigInt(T0 + 10_000) }))).toBe("applied");
    expect(only(fleet).observedS).toBe(10);
    expect(onlyBoard(fleet).observedS).toBe(10);
    c.advance(60_001);
    fleet.applyWindow(HOST, makeWindow({ uuid: BOARD_UUID, startMs: BigInt(T0 + 20_000) }));
    fleet.sweep();
    expect([fleet.size, fleet.boardCount]).toEqual([1, 0]);
  });
});
