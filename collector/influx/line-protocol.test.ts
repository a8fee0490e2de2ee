import { describe, expect, it } from "vitest";
import { TrueidleError } from "../../common/errors.js";
import { OwnerSource } from "../../gen/trueidle/v1/ingest_pb.js";
import { BOARD_UUID, boardWindow, makeWindow, phantomWindow, T0 } from "../testdata/windows.js";
import { escapeMeasurement, escapeTag, HostLineEncoder, tagValueProblem, windowToLine } from "./line-protocol.js";

describe("windowToLine", () => {
  it("writes tags sorted by key, every field, integers with i, and the window start in ms", () => {
    const line = windowToLine("gpu-node-1", { site: "dc1", pool: "training" }, phantomWindow());
    expect(line).toBe(
      "gpu_window,gpu=0,host=gpu-node-1,model=NVIDIA\\ H100\\ 80GB\\ HBM3,pool=training,site=dc1,uuid=GPU-11111111-2222-3333-4444-555555555555 " +
        "observed_s=10,free_idle_s=0,held_idle_s=0,busy_phantom_s=10,active_s=0,unavailable_s=0," +
        "reported_idle_s=0,reported_busy_s=10,real_busy_s=0.2,power_w=70,power_max_w=72," +
        `mem_used_max_bytes=1073741824i,processes_max=1i ${T0}`,
    );
  });

  it("omits fields the agent did not have instead of writing 0", () => {
    const line = windowToLine(
      "h",
      {},
      makeWindow({ powerMeanW: undefined, powerMaxW: undefined, memUsedMaxBytes: undefined }),
    );
    expect(line).not.toMatch(/power_w|power_max_w|mem_used_max_bytes/);
    expect(line).toMatch(/,processes_max=0i \d+$/);
  });

  it("keeps floats exact in JavaScript's shortest round-trip form", () => {
    const line = windowToLine("h", {}, makeWindow({ realBusyS: 1e-7, reportedBusyS: 0.1 + 0.2 }));
    expect(line).toContain("real_busy_s=1e-7");
    expect(line).toContain(`reported_busy_s=${0.1 + 0.2}`);
  });

  it("tags a MIG instance with its board's uuid and its profile, in key order; a whole GPU has neither", () => {
    const line = windowToLine(
      "h",
      { site: "dc1" },
      makeWindow({ uuid: "MIG-1", parentUuid: "GPU-0", migProfile: "3g.40gb", model: "NVIDIA H100" }),
    );
    expect(line.slice(0, line.indexOf(" observed_s="))).toBe(
      "gpu_window,gpu=0,host=h,mig_profile=3g.40gb,model=NVIDIA\\ H100,parent_uuid=GPU-0,site=dc1,uuid=MIG-1",
    );
    // Cached per identity: the same encoder gives the whole GPU no MIG tags after an instance.
    const enc = new HostLineEncoder("h", {});
    expect(enc.line(makeWindow({ uuid: "MIG-1", parentUuid: "GPU-0", migProfile: "1g.10gb" }))).toContain(
      "mig_profile=1g.10gb",
    );
    expect(enc.line(makeWindow({ uuid: "MIG-1" }))).not.toMatch(/mig_profile|parent_uuid/);
  });

  it("omits an empty model tag (InfluxDB reads a missing tag as empty)", () => {
    expect(windowToLine("h", {}, makeWindow({ model: "" }))).not.toContain("model=");
  });

  it("is the same line every time for the same window (a replay is the same point)", () => {
    const enc = new HostLineEncoder("h", { site: "a b" });
    const w = phantomWindow();
    expect(enc.line(w)).toBe(enc.line(w));
    expect(enc.line(w)).toBe(windowToLine("h", { site: "a b" }, w));
  });

  it("escapes comma, equals and space in tag values and leaves quotes, backslashes and non-ASCII alone", () => {
    const line = windowToLine("h", { site: 'a,b=c d"e\\f ü 🚀' }, makeWindow());
    expect(line).toContain('site=a\\,b\\=c\\ d"e\\f\\ ü\\ 🚀,');
  });

  it("refuses values line protocol cannot carry exactly", () => {
    expect(() => windowToLine("h", { site: "a\nb" }, makeWindow())).toThrow(TrueidleError);
    expect(() => windowToLine("h", { site: "ends\\" }, makeWindow())).toThrow(/backslash/);
    expect(() => windowToLine("h\\", {}, makeWindow())).toThrow(/tag host/);
    expect(() => windowToLine("h", { host: "x" }, makeWindow())).toThrow(/replace/);
    expect(() => windowToLine("h", {}, makeWindow({ observedS: Number.NaN }))).toThrow(/observed_s/);
  });

  it("names the window field that cannot be a tag", () => {
    expect(HostLineEncoder.windowProblem(makeWindow({ model: "odd\\" }))).toBe("model");
    expect(HostLineEncoder.windowProblem(makeWindow({ uuid: "GPU-1\\" }))).toBe("uuid");
    expect(HostLineEncoder.windowProblem(makeWindow())).toBeUndefined();
  });
});

describe("escaping helpers", () => {
  it("escapes tags and measurements as InfluxDB 1.x parses them", () => {
    expect(escapeTag("a b,c=d")).toBe("a\\ b\\,c\\=d");
    expect(escapeTag("plain")).toBe("plain");
    expect(escapeMeasurement("m m,x=y")).toBe("m\\ m\\,x=y");
  });

  it("says why a tag value cannot be stored", () => {
    expect(tagValueProblem("")).toMatch(/empty/);
    expect(tagValueProblem("a\rb")).toMatch(/control/);
    expect(tagValueProblem("a\\")).toMatch(/backslash/);
    expect(tagValueProblem("a\\b")).toBeUndefined();
  });
});

describe("owner lines", () => {
  const pod = { via: OwnerSource.POD_RESOURCES, namespace: "ml team", pod: "trainer-0", container: "main" };
  const podProcess = {
    via: OwnerSource.PROCESS,
    namespace: "ml team",
    pod: "trainer-0",
    container: "main",
    user: "alice",
    pid: 7,
  };
  const held = (
    owners: NonNullable<NonNullable<Parameters<typeof makeWindow>[0]>["owners"]>,
  ): ReturnType<typeof makeWindow> =>
    makeWindow({ freeIdleS: 0, heldIdleS: 6, activeS: 4, reportedIdleS: 6, reportedBusyS: 2, realBusyS: 1.5, owners });

  it("writes one gpu_owner_window point per owner: the window's tags, the owner fields that are set, its seconds", () => {
    const enc = new HostLineEncoder("gpu-node-1", { site: "dc1" }, ["namespace", "pod", "container", "job", "user"]);
    const w = held([
      { ...pod, observedS: 10, heldIdleS: 6, activeS: 4, reportedIdleS: 6, reportedBusyS: 2, realBusyS: 1.5 },
      {
        via: OwnerSource.JOB_MAPPING,
        job: "4242",
        user: "1001",
        observedS: 4,
        activeS: 4,
        reportedBusyS: 2,
        realBusyS: 1.5,
      },
    ]);
    const out: string[] = [];
    expect(enc.ownerLines(w, out)).toBe(2);
    expect(out).toEqual([
      "gpu_owner_window,container=main,gpu=0,host=gpu-node-1,model=NVIDIA\\ H100\\ 80GB\\ HBM3,namespace=ml\\ team,pod=trainer-0,site=dc1," +
        "uuid=GPU-11111111-2222-3333-4444-555555555555 observed_s=10,free_idle_s=0,held_idle_s=6,busy_phantom_s=0,active_s=4,unavailable_s=0," +
        `reported_idle_s=6,reported_busy_s=2,real_busy_s=1.5 ${T0}`,
      "gpu_owner_window,gpu=0,host=gpu-node-1,job=4242,model=NVIDIA\\ H100\\ 80GB\\ HBM3,site=dc1,user=1001," +
        "uuid=GPU-11111111-2222-3333-4444-555555555555 observed_s=4,free_idle_s=0,held_idle_s=0,busy_phantom_s=0,active_s=4,unavailable_s=0," +
        `reported_idle_s=0,reported_busy_s=2,real_busy_s=1.5 ${T0}`,
    ]);
  });

  it("tags only the configured owner fields, merges owners they make one, and writes none without owner fields", () => {
    const enc = new HostLineEncoder("h", {}, ["namespace"]);
    // A pod's allocation and its process, each 10 s; and a second pod of the namespace 4 s of them.
    const w = held([
      { ...pod, observedS: 10, heldIdleS: 6, activeS: 4, reportedIdleS: 6, reportedBusyS: 2, realBusyS: 1.5 },
      { ...podProcess, observedS: 10, heldIdleS: 6, activeS: 4, reportedIdleS: 6, reportedBusyS: 2, realBusyS: 1.5 },
      { ...pod, pod: "trainer-1", observedS: 4, activeS: 4, reportedBusyS: 2, realBusyS: 1.5 },
      { via: OwnerSource.JOB_MAPPING, job: "4242", observedS: 10, heldIdleS: 6, activeS: 4 },
    ]);
    const out: string[] = [];
    expect(enc.ownerLines(w, out)).toBe(1);
    expect(out[0]).toMatch(
      /^gpu_owner_window,gpu=0,host=h,model=.+?,namespace=ml\\ team,uuid=\S+ observed_s=10,free_idle_s=0,held_idle_s=6,busy_phantom_s=0,active_s=4,/,
    );
    expect(out[0]).toContain("reported_idle_s=6,reported_busy_s=2,real_busy_s=1.5 ");
    const none: string[] = [];
    expect(new HostLineEncoder("h", {}).ownerLines(w, none)).toBe(0);
    expect(new HostLineEncoder("h", {}, ["namespace"]).ownerLines(makeWindow(), none)).toBe(0);
    expect(none).toEqual([]);
  });

  it("merged owners never hold the GPU longer than the window, whatever their order", () => {
    const enc = new HostLineEncoder("h", {}, ["namespace"]);
    // Two pods of one namespace, one after the other: 5 s held idle, then 5 s active.
    const a = { ...pod, observedS: 5, heldIdleS: 5, reportedIdleS: 5 };
    const b = { ...pod, pod: "trainer-1", observedS: 5, activeS: 5, reportedBusyS: 4, realBusyS: 3 };
    for (const owners of [
      [a, b],
      [b, a],
    ]) {
      const out: string[] = [];
      enc.ownerLines(held(owners), out);
      expect(out[0]).toContain(
        " observed_s=10,free_idle_s=0,held_idle_s=5,busy_phantom_s=0,active_s=5,unavailable_s=0,reported_idle_s=5,reported_busy_s=4,real_busy_s=3 ",
      );
    }
  });
});

describe("board rows", () => {
  it("writes a board's row as a mig_board_window point: a whole GPU's tags, the board's own fields, the window start", () => {
    const line = windowToLine("gpu-node-1", { site: "dc1", pool: "training" }, boardWindow({ unavailableS: 2.5 }));
    expect(line).toBe(
      `mig_board_window,gpu=0,host=gpu-node-1,model=NVIDIA\\ H100\\ 80GB\\ HBM3,pool=training,site=dc1,uuid=${BOARD_UUID} ` +
        `observed_s=10,unavailable_s=2.5,power_w=180,power_max_w=195,power_floor_w=90,power_limit_w=700,mem_total_bytes=85520809984i ${T0}`,
    );
  });

  it("omits the fields the board did not report instead of writing 0", () => {
    const line = windowToLine(
      "h",
      {},
      boardWindow({
        unavailableS: 10,
        powerMeanW: undefined,
        powerMaxW: undefined,
        powerFloorW: undefined,
        powerLimitW: undefined,
        memTotalBytes: undefined,
      }),
    );
    expect(line).toBe(
      `mig_board_window,gpu=0,host=h,model=NVIDIA\\ H100\\ 80GB\\ HBM3,uuid=${BOARD_UUID} observed_s=10,unavailable_s=10 ${T0}`,
    );
  });

  it("never writes a gpu_window or gpu_owner_window point for a board's row, and is the same line for the same window", () => {
    const enc = new HostLineEncoder("h", { site: "dc1" }, ["namespace", "pod"]);
    const board = boardWindow();
    // Its uuid as a whole GPU's, before and after (a board that leaves MIG mode): each keeps its measurement.
    expect(enc.line(makeWindow({ uuid: BOARD_UUID }))).toMatch(/^gpu_window,/);
    expect(enc.line(board)).toMatch(/^mig_board_window,/);
    expect(enc.line(board)).toBe(enc.line(board));
    expect(enc.line(board)).toBe(windowToLine("h", { site: "dc1" }, board));
    expect(enc.line(makeWindow({ uuid: BOARD_UUID }))).toMatch(/^gpu_window,/);
    expect(enc.line(board)).not.toMatch(/parent_uuid|mig_profile|free_idle_s|processes_max|mem_used_max_bytes/);
    // Even with owners (validation refuses them), no owner point.
    const out: string[] = [];
    const withOwners = boardWindow({
      owners: [{ via: OwnerSource.POD_RESOURCES, namespace: "ml", pod: "p", observedS: 10 }],
    });
    expect(enc.ownerLines(withOwners, out)).toBe(0);
    expect(out).toEqual([]);
  });

  it("refuses values line protocol cannot carry, as for a GPU", () => {
    expect(() => windowToLine("h", {}, boardWindow({ powerMeanW: Number.NaN }))).toThrow(/power_w/);
    expect(() => windowToLine("h", {}, boardWindow({ model: "odd\n" }))).toThrow(/tag model/);
    expect(HostLineEncoder.windowProblem(boardWindow({ uuid: "GPU-1\\" }))).toBe("uuid");
  });
});
