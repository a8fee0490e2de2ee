import { describe, expect, it } from "vitest";
import { GpuState } from "../../gen/trueidle/v1/ingest_pb.js";
import { FleetState, type HostInfo } from "../fleet-state.js";
import { T0, makeWindow, phantomWindow } from "../testdata/windows.js";
import { buildFleetJson } from "./fleet-json.js";

const host = (hostname: string, labels: Record<string, string> = {}): HostInfo => ({ hostname, labels, windowMs: 10_000 });

function clock(start = T0): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

function heldWindow(uuid: string, index: number, idleStreakS: number, startMs = BigInt(T0)) {
  return makeWindow(
    { uuid, index, startMs, freeIdleS: 0, heldIdleS: 10 },
    { state: GpuState.HELD_IDLE, idleStreakS, processes: 1 },
  );
}

describe("buildFleetJson", () => {
  it("lists hosts by name and GPUs by index with their current state and last readings", () => {
    const c = clock();
    const fleet = new FleetState({ now: c.now });
    const b = host("node-b", { site: "dc2" });
    const a = host("node-a", { site: "dc1" });
    fleet.applyWindow(b, makeWindow({ uuid: "GPU-b1", index: 1, powerFloorW: undefined }, { utilPercent: undefined, powerW: undefined }));
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
    expect(j.hosts[1]!.gpus.map((g) => [g.index, g.uuid, g.state])).toEqual([[0, "GPU-b0", "busy_phantom"], [1, "GPU-b1", "free_idle"]]);
    const phantom = j.hosts[1]!.gpus[0]!;
    expect(phantom).toMatchObject({ up: true, real: 0.02, realSource: "power", reportedUtilization: 1, powerW: 80, processes: 1 });
    // Not reported: null in JSON, never 0.
    expect(j.hosts[1]!.gpus[1]).toMatchObject({ reportedUtilization: null, powerW: null, powerFloorW: null });
    expect(j.generatedAtMs).toBe(T0);
    // Round-trips through JSON unchanged (no undefined, no NaN).
    expect(JSON.parse(JSON.stringify(j))).toEqual(j);
  });

  it("gives real and reported idle since the collector started, and the hidden part", () => {
    const fleet = new FleetState({ now: clock().now });
    expect(buildFleetJson(fleet).idle).toEqual({
      span: "since_collector_start", observedS: 0, realIdleS: 0, reportedIdleS: 0, realIdleRatio: null, reportedIdleRatio: null, hiddenIdleRatio: null,
    });
    // 10 s free idle (reported idle too) + 10 s busy phantom (reported busy).
    fleet.applyWindow(host("n"), makeWindow({ uuid: "GPU-1" }));
    fleet.applyWindow(host("n"), phantomWindow({ uuid: "GPU-2", index: 1 }));
    const idle = buildFleetJson(fleet).idle;
    expect(idle).toMatchObject({ observedS: 20, realIdleS: 20, reportedIdleS: 10, realIdleRatio: 1, reportedIdleRatio: 0.5 });
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
    for (let i = 0; i < 30; i++) fleet.applyWindow(host(`node-${String(i).padStart(2, "0")}`), heldWindow(`GPU-${i}`, 0, i));
    const j = buildFleetJson(fleet, { maxHosts: 10, topHeldIdle: 3 });
    expect(j.hosts.map((h) => h.host)).toEqual(Array.from({ length: 10 }, (_, i) => `node-${String(i).padStart(2, "0")}`));
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
});
