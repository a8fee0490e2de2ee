import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { GpuState, RealSource } from "../gen/trueidle/v1/ingest_pb.js";
import { promtool } from "../test/helpers/prometheus.js";
import { FleetState } from "./fleet-state.js";
import { renderMetricsText } from "./metrics-render.js";
import { METRIC_TABLE } from "./metrics-table.js";
import { escapeHelp, escapeLabelValue, formatSeconds, formatValue } from "../common/prom-text.js";
import { SelfMetrics } from "./self-metrics.js";
import { T0, boardWindow, makeWindow, phantomWindow } from "./testdata/windows.js";

const GOLDEN = fileURLToPath(new URL("./testdata/metrics.golden.prom", import.meta.url));

/**
 * A small fleet that touches every branch: missing values, a stale GPU, label-less hosts, a
 * board in MIG mode with an instance, and a stale board that could not be read. Without
 * `boards`, the same fleet without the boards' rows.
 */
function goldenFleet({ boards = true } = {}): { fleet: FleetState; self: SelfMetrics } {
  let t = T0;
  const fleet = new FleetState({ now: () => t });
  const dc1 = { hostname: "gpu-node-1", labels: { site: "dc1", pool: "train" }, windowMs: 10_000 };
  const node2 = { hostname: "gpu-node-2", labels: {}, windowMs: 10_000 };
  const instance = { uuid: "MIG-dddd-1", index: 3, parentUuid: "GPU-dddd", migProfile: "3g.40gb" };
  fleet.applyWindow(dc1, makeWindow({ uuid: "GPU-aaaa", index: 0 }));
  fleet.applyWindow(dc1, phantomWindow({ uuid: "GPU-bbbb", index: 1 }));
  fleet.applyWindow(dc1, makeWindow(instance));
  if (boards) {
    fleet.applyWindow(dc1, boardWindow({ uuid: "GPU-dddd", index: 2 }));
    fleet.applyWindow(
      node2,
      boardWindow(
        {
          uuid: "GPU-eeee",
          index: 1,
          model: "NVIDIA A30",
          unavailableS: 10,
          powerMeanW: undefined,
          powerMaxW: undefined,
          powerFloorW: undefined,
          powerLimitW: undefined,
          memTotalBytes: undefined,
        },
        { state: GpuState.UNAVAILABLE, powerW: undefined, error: "Unknown Error" },
      ),
    );
  }
  fleet.applyWindow(
    node2,
    makeWindow(
      {
        uuid: "GPU-cccc",
        model: "Tesla T4",
        driverVersion: "535.129.03",
        powerFloorW: undefined,
        freeIdleS: 0,
        heldIdleS: 2.5,
        activeS: 7.5,
        reportedIdleS: 2.5,
        reportedBusyS: 6.25,
        realBusyS: 5.5,
      },
      {
        state: GpuState.ACTIVE,
        real: 0.73,
        realSource: RealSource.MEDIA,
        utilPercent: undefined,
        powerW: undefined,
        memUsedBytes: undefined,
        processes: 2,
        idleStreakS: 0,
      },
    ),
  );
  t += 25_000;
  fleet.applyWindow(dc1, makeWindow({ uuid: "GPU-aaaa", index: 0, startMs: BigInt(T0 + 10_000) }));
  fleet.applyWindow(
    dc1,
    makeWindow({ uuid: "GPU-aaaa", index: 0, startMs: BigInt(T0 + 20_000) }, { idleStreakS: 140.5 }),
  );
  fleet.applyWindow(dc1, makeWindow({ ...instance, startMs: BigInt(T0 + 10_000) }));
  if (boards) {
    fleet.applyWindow(
      dc1,
      boardWindow({ uuid: "GPU-dddd", index: 2, startMs: BigInt(T0 + 10_000), unavailableS: 2.5 }, { powerW: 190.5 }),
    );
  }
  t += 10_000; // GPU-bbbb, GPU-cccc and the board GPU-eeee are stale now.
  const self = new SelfMetrics();
  self.agentsConnected = 2;
  self.windowsReceived = 9;
  self.reject("in_future", 3);
  self.reject("bad_number");
  return { fleet, self };
}

describe("prom-text", () => {
  it("escapes label values and help text as the exposition format says", () => {
    expect(escapeLabelValue(`${String.raw`a\b"c`}\nd`)).toBe(String.raw`a\\b\"c\nd`);
    expect(escapeLabelValue("plain é ✓")).toBe("plain é ✓");
    expect(escapeHelp(`${String.raw`a\b "c"`}\n`)).toBe(String.raw`a\\b "c"\n`);
  });

  it("formats special numbers with Prometheus' spellings", () => {
    expect([Number.NaN, Infinity, -Infinity, 0, 1.5, 1e-7, 1e21].map(formatValue)).toEqual([
      "NaN",
      "+Inf",
      "-Inf",
      "0",
      "1.5",
      "1e-7",
      "1e+21",
    ]);
  });

  it("writes seconds to the microsecond in their shortest form, without float residue", () => {
    expect(
      [
        0.9521600000000001,
        0.1 + 0.2,
        3600.0000000000005,
        1.2345674,
        1.2345676,
        2.5e-7,
        7e-7,
        -1e-9,
        1714564800.25,
        86_400,
        1e10 + 0.5,
      ].map(formatSeconds),
    ).toEqual([
      "0.95216",
      "0.3",
      "3600",
      "1.234567",
      "1.234568",
      "0",
      "0.000001",
      "0",
      "1714564800.25",
      "86400",
      "10000000000.5",
    ]);
    expect([Number.NaN, Infinity].map(formatSeconds)).toEqual(["NaN", "+Inf"]);
    // Whatever the magnitude, never more than six decimals (a double's digits run out first past 9e9).
    for (let x = 0.1, i = 0; i < 28; i++, x = x * 3.7 + 0.1)
      expect(formatSeconds(x), String(x)).toMatch(/^\d+(\.\d{1,6})?$/);
  });
});

describe("the metrics table", () => {
  it("names every metric of DESIGN.md once, with a unit suffix and _total on counters", () => {
    const names = METRIC_TABLE.map((m) => m.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names.sort()).toEqual([
      "trueidle_agents_connected",
      "trueidle_connections_open",
      "trueidle_connections_refused_total",
      "trueidle_fleet_gpus",
      "trueidle_fleet_observed_seconds_total",
      "trueidle_fleet_real_busy_seconds_total",
      "trueidle_fleet_reported_busy_seconds_total",
      "trueidle_fleet_reported_idle_seconds_total",
      "trueidle_fleet_state_seconds_total",
      "trueidle_gpu_idle_streak_seconds",
      "trueidle_gpu_info",
      "trueidle_gpu_memory_used_bytes",
      "trueidle_gpu_observed_seconds_total",
      "trueidle_gpu_owner_info",
      "trueidle_gpu_power_floor_watts",
      "trueidle_gpu_power_watts",
      "trueidle_gpu_processes",
      "trueidle_gpu_real_busy_seconds_total",
      "trueidle_gpu_real_utilization_ratio",
      "trueidle_gpu_reported_busy_seconds_total",
      "trueidle_gpu_reported_idle_seconds_total",
      "trueidle_gpu_reported_utilization_ratio",
      "trueidle_gpu_state",
      "trueidle_gpu_state_seconds_total",
      "trueidle_gpu_up",
      "trueidle_http_auth_failures_total",
      "trueidle_http_requests_refused_total",
      "trueidle_influx_points_written_total",
      "trueidle_influx_write_errors_total",
      "trueidle_metrics_cache_hits_total",
      "trueidle_metrics_exposition_bytes",
      "trueidle_metrics_render_seconds",
      "trueidle_metrics_renders_total",
      "trueidle_metrics_scrapes_aborted_total",
      "trueidle_mig_board_info",
      "trueidle_mig_board_instances",
      "trueidle_mig_board_observed_seconds_total",
      "trueidle_mig_board_power_floor_watts",
      "trueidle_mig_board_power_limit_watts",
      "trueidle_mig_board_power_watts",
      "trueidle_mig_board_unavailable_seconds_total",
      "trueidle_mig_board_up",
      "trueidle_owner_state_seconds_total",
      "trueidle_spool_bytes",
      "trueidle_spool_windows_total",
      "trueidle_streams_refused_total",
      "trueidle_windows_received_total",
      "trueidle_windows_rejected_total",
      "trueidle_windows_replayed_total",
    ]);
    for (const m of METRIC_TABLE) {
      const base = m.type === "counter" ? m.name.replace(/_total$/, "") : m.name;
      if (m.type === "counter") expect(m.name).toMatch(/_total$/);
      if (m.unit) expect(base.endsWith(`_${m.unit}`)).toBe(true);
    }
  });
});

describe("renderMetrics", () => {
  it("matches the golden file (regenerate with UPDATE_GOLDEN=1)", () => {
    const { fleet, self } = goldenFleet();
    const text = renderMetricsText(fleet, self);
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(GOLDEN, text);
    expect(existsSync(GOLDEN), `${GOLDEN} is missing; run with UPDATE_GOLDEN=1 to create it`).toBe(true);
    expect(text).toBe(readFileSync(GOLDEN, "utf8"));
  });

  it("omits missing values instead of rendering 0, and shows a stale GPU as down and unavailable", () => {
    const { fleet, self } = goldenFleet();
    const text = renderMetricsText(fleet, self);
    const t4 = (name: string): string[] =>
      text.split("\n").filter((l) => l.startsWith(`${name}{`) && l.includes('uuid="GPU-cccc"'));
    expect(t4("trueidle_gpu_power_watts")).toEqual([]);
    expect(t4("trueidle_gpu_power_floor_watts")).toEqual([]);
    expect(t4("trueidle_gpu_memory_used_bytes")).toEqual([]);
    expect(t4("trueidle_gpu_reported_utilization_ratio")).toEqual([]);
    expect(t4("trueidle_gpu_up")).toEqual([
      'trueidle_gpu_up{host="gpu-node-2",gpu="0",uuid="GPU-cccc",model="Tesla T4"} 0',
    ]);
    expect(t4("trueidle_gpu_state").filter((l) => l.endsWith(" 1"))).toEqual([
      'trueidle_gpu_state{host="gpu-node-2",gpu="0",uuid="GPU-cccc",model="Tesla T4",state="unavailable"} 1',
    ]);
    expect(t4("trueidle_gpu_real_utilization_ratio")).toEqual([
      'trueidle_gpu_real_utilization_ratio{host="gpu-node-2",gpu="0",uuid="GPU-cccc",model="Tesla T4",source="media"} 0.73',
    ]);
  });

  it("writes seconds summed from fractions without float residue", () => {
    const fleet = new FleetState({ now: () => T0 + 20_000 });
    const node = { hostname: "n", labels: {}, windowMs: 10_000 };
    // 0.1 + 0.2 is 0.30000000000000004 in binary floating point.
    fleet.applyWindow(node, makeWindow({ realBusyS: 0.1, reportedBusyS: 0.7 }));
    fleet.applyWindow(node, makeWindow({ startMs: BigInt(T0 + 10_000), realBusyS: 0.2, reportedBusyS: 0.1 }));
    const text = renderMetricsText(fleet, new SelfMetrics());
    expect(text).toMatch(/^trueidle_gpu_real_busy_seconds_total\{[^}]*\} 0\.3$/m);
    expect(text).toMatch(/^trueidle_gpu_reported_busy_seconds_total\{[^}]*\} 0\.8$/m);
    expect(text).not.toMatch(/\d\.\d{7,}/);
  });

  it("labels a MIG instance's series with its board and profile, and drops them when it becomes a whole GPU", () => {
    let t = T0;
    const fleet = new FleetState({ now: () => t });
    const node = { hostname: "n", labels: { site: "dc1" }, windowMs: 10_000 };
    fleet.applyWindow(node, makeWindow({ uuid: "MIG-1", parentUuid: "GPU-0", migProfile: "3g.40gb" }));
    fleet.applyWindow(node, makeWindow({ uuid: "GPU-2", index: 1 }));
    let text = renderMetricsText(fleet, new SelfMetrics());
    expect(text).toMatch(
      /^trueidle_gpu_observed_seconds_total\{host="n",gpu="0",uuid="MIG-1",model="[^"]+",parent_uuid="GPU-0",mig_profile="3g.40gb",site="dc1"\} 10$/m,
    );
    expect(text).toMatch(
      /^trueidle_gpu_observed_seconds_total\{host="n",gpu="1",uuid="GPU-2",model="[^"]+",site="dc1"\} 10$/m,
    );
    // Its profile changed (the instance was re-created with another): the labels follow the newest window.
    t += 10_000;
    fleet.applyWindow(
      node,
      makeWindow({ uuid: "MIG-1", parentUuid: "GPU-0", migProfile: "1g.10gb", startMs: BigInt(T0 + 10_000) }),
    );
    text = renderMetricsText(fleet, new SelfMetrics());
    expect(text).toContain('uuid="MIG-1",model=');
    expect(text).toMatch(/mig_profile="1g.10gb"/);
    expect(text).not.toMatch(/mig_profile="3g.40gb"/);
  });

  it("appends the process metrics' text once, after the collector's families", () => {
    const { fleet, self } = goldenFleet();
    const tail =
      "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds 12\n";
    const text = renderMetricsText(fleet, self, tail);
    expect(text).toBe(readFileSync(GOLDEN, "utf8") + tail);
  });

  it("passes promtool check metrics with hostile label values", async () => {
    const fleet = new FleetState({ now: () => T0 });
    const hostile = 'a\\b"c\nd}{e=",\u00e9\u2713 \\n';
    fleet.applyWindow(
      { hostname: hostile, labels: { site: hostile, pool: "\\" }, windowMs: 10_000 },
      makeWindow({ uuid: hostile, model: hostile, driverVersion: hostile }),
    );
    fleet.applyWindow(
      { hostname: hostile, labels: { site: hostile, pool: "\\" }, windowMs: 10_000 },
      boardWindow({ uuid: `${hostile}board`, model: hostile, driverVersion: hostile }),
    );
    fleet.applyWindow({ hostname: "plain", labels: {}, windowMs: 10_000 }, phantomWindow({ uuid: '"', model: "\n" }));
    const text = renderMetricsText(fleet, new SelfMetrics());
    expect(text).toContain(String.raw`host="a\\b\"c\nd}{e=\",é✓ \\n"`);
    expect(text).toMatch(/^trueidle_mig_board_info\{host="a/m);
    const r = await promtool(["check", "metrics"], text);
    expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: "" });
  });

  it("promtool notices a broken exposition, so the check above can fail", async () => {
    const r = await promtool(["check", "metrics"], 'trueidle_gpu_up{host="a\nb"} 1\n');
    expect(r.code).not.toBe(0);
  });
});

describe("--gpu-series", () => {
  const families = (text: string): string[] =>
    [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!).filter((f) => f.startsWith("trueidle_"));
  const gpuFamilies = METRIC_TABLE.filter((m) => m.scope === "gpu").map((m) => m.name);
  const boardFamilies = METRIC_TABLE.filter((m) => m.scope === "board").map((m) => m.name);
  const perGpuOrBoard = [...gpuFamilies, ...boardFamilies];
  const STATES_FAMILIES = [
    "trueidle_gpu_info",
    "trueidle_gpu_up",
    "trueidle_gpu_observed_seconds_total",
    "trueidle_gpu_state_seconds_total",
    "trueidle_gpu_reported_idle_seconds_total",
    "trueidle_gpu_reported_busy_seconds_total",
    "trueidle_gpu_real_busy_seconds_total",
    "trueidle_gpu_state",
    "trueidle_gpu_idle_streak_seconds",
  ];

  it("full writes every per-GPU family, states only the state and seconds ones, off none, both every per-board one; the rest is the same", () => {
    const { fleet, self } = goldenFleet();
    const text = {
      full: renderMetricsText(fleet, self, "", "full"),
      states: renderMetricsText(fleet, self, "", "states"),
      off: renderMetricsText(fleet, self, "", "off"),
    };
    expect(text.full).toBe(renderMetricsText(fleet, self));
    expect(families(text.full).filter((f) => gpuFamilies.includes(f))).toEqual(gpuFamilies);
    expect(families(text.states).filter((f) => gpuFamilies.includes(f))).toEqual(STATES_FAMILIES);
    expect(families(text.off).filter((f) => gpuFamilies.includes(f))).toEqual([]);
    expect(boardFamilies).toHaveLength(8);
    expect(families(text.full).filter((f) => boardFamilies.includes(f))).toEqual(boardFamilies);
    expect(families(text.states).filter((f) => boardFamilies.includes(f))).toEqual(boardFamilies);
    expect(families(text.off).filter((f) => boardFamilies.includes(f))).toEqual([]);
    expect(text.off).not.toMatch(/uuid=/);
    // What is not per GPU or board is the same in every mode.
    const rest = (t: string): string =>
      t
        .split("\n")
        .filter((l) => !perGpuOrBoard.some((f) => l.startsWith(`${f}{`) || l.includes(` ${f} `)))
        .join("\n");
    expect(rest(text.states)).toBe(rest(text.full));
    expect(rest(text.off)).toBe(rest(text.full));
    // The families states writes are those full writes, series for series.
    const lines = (t: string, f: string): string[] => t.split("\n").filter((l) => l.startsWith(`${f}{`));
    for (const f of [...STATES_FAMILIES, ...boardFamilies])
      expect(lines(text.states, f), f).toEqual(lines(text.full, f));
  });

  it("each mode passes promtool check metrics", async () => {
    const { fleet, self } = goldenFleet();
    for (const mode of ["full", "states", "off"] as const) {
      const r = await promtool(["check", "metrics"], renderMetricsText(fleet, self, "", mode));
      expect({ mode, code: r.code, out: r.stdout + r.stderr }).toEqual({ mode, code: 0, out: "" });
    }
  });
});

describe("the fleet roll-ups", () => {
  /** `name{labels} value` lines of a family, as label text → value. */
  const values = (text: string, name: string): Map<string, number> =>
    new Map(
      [...text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, "gm"))].map((m) => [m[1]!, Number(m[2])] as const),
    );
  const PAIRS = [
    ["trueidle_fleet_observed_seconds_total", "trueidle_gpu_observed_seconds_total"],
    ["trueidle_fleet_reported_idle_seconds_total", "trueidle_gpu_reported_idle_seconds_total"],
    ["trueidle_fleet_reported_busy_seconds_total", "trueidle_gpu_reported_busy_seconds_total"],
    ["trueidle_fleet_real_busy_seconds_total", "trueidle_gpu_real_busy_seconds_total"],
  ] as const;

  it("each fleet counter is the sum of its group's GPU counters, and keeps its value when the GPUs expire", () => {
    let t = T0;
    const fleet = new FleetState({ now: () => t, expireAfterMs: 60_000 });
    const a = { hostname: "a", labels: { site: "x" }, windowMs: 10_000 };
    const b = { hostname: "b", labels: { site: "x" }, windowMs: 10_000 };
    fleet.applyWindow(a, makeWindow({ uuid: "GPU-1", reportedBusyS: 1.25, realBusyS: 0.5 }));
    fleet.applyWindow(b, phantomWindow({ uuid: "GPU-2" }));
    fleet.applyWindow(a, makeWindow({ uuid: "GPU-1", startMs: BigInt(T0 + 10_000), reportedIdleS: 4 }));
    // A replay counts nowhere, in the GPU's counters or the group's.
    expect(fleet.applyWindow(a, makeWindow({ uuid: "GPU-1", reportedBusyS: 1.25, realBusyS: 0.5 }))).toBe("replayed");
    const before = renderMetricsText(fleet, new SelfMetrics());
    const group = 'model="NVIDIA H100 80GB HBM3",site="x"';
    for (const [fleetName, gpuName] of PAIRS) {
      const sum = [...values(before, gpuName).values()].reduce((x, y) => x + y, 0);
      expect(values(before, fleetName).get(group), fleetName).toBeCloseTo(sum, 9);
      expect(sum, gpuName).toBeGreaterThan(0);
    }
    t += 61_000;
    fleet.sweep();
    expect(fleet.size).toBe(0);
    const after = renderMetricsText(fleet, new SelfMetrics(), "", "off");
    for (const [fleetName] of PAIRS) expect(values(after, fleetName), fleetName).toEqual(values(before, fleetName));
  });
});

describe("boards in MIG mode", () => {
  /** `name{labels} value` lines of a family, as label text → value. */
  const values = (text: string, name: string): Map<string, number> =>
    new Map(
      [...text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, "gm"))].map((m) => [m[1]!, Number(m[2])] as const),
    );
  const BOARD = 'host="gpu-node-1",gpu="2",uuid="GPU-dddd",model="NVIDIA H100 80GB HBM3",pool="train",site="dc1"';
  const STALE_BOARD = 'host="gpu-node-2",gpu="1",uuid="GPU-eeee",model="NVIDIA A30"';

  it("a board's row changes no trueidle_fleet_* value and no trueidle_gpu_* series, in any mode", () => {
    const withBoards = goldenFleet();
    const without = goldenFleet({ boards: false });
    expect(withBoards.fleet.boardCount).toBe(2);
    expect(without.fleet.boardCount).toBe(0);
    for (const mode of ["full", "states", "off"] as const) {
      const a = renderMetricsText(withBoards.fleet, withBoards.self, "", mode);
      const b = renderMetricsText(without.fleet, without.self, "", mode);
      const gpuAndFleet = (t: string): string[] => t.split("\n").filter((l) => /trueidle_(gpu|fleet)_/.test(l));
      expect(gpuAndFleet(a).length, mode).toBeGreaterThan(mode === "off" ? 10 : 100);
      expect(gpuAndFleet(a), mode).toEqual(gpuAndFleet(b));
      // Nothing else changes either: the boards' rows are only in their own families.
      const notBoard = (t: string): string[] => t.split("\n").filter((l) => !l.includes("trueidle_mig_board_"));
      expect(notBoard(a), mode).toEqual(notBoard(b));
      expect(a.includes('uuid="GPU-dddd"'), mode).toBe(mode !== "off");
    }
  });

  it("writes each board's own figures, labelled as a whole GPU, and counts its instances that are up", () => {
    const { fleet, self } = goldenFleet();
    const text = renderMetricsText(fleet, self);
    expect(text).toContain(`trueidle_mig_board_info{${BOARD},driver="550.54.15"} 1\n`);
    expect(text).toContain(`trueidle_mig_board_info{${STALE_BOARD},driver="550.54.15"} 1\n`);
    const board = (name: string): Record<string, number | undefined> => {
      const v = values(text, name);
      return { fresh: v.get(BOARD), stale: v.get(STALE_BOARD) };
    };
    // The stale board was not read either: down; the fresh one reads.
    expect(board("trueidle_mig_board_up")).toEqual({ fresh: 1, stale: 0 });
    expect(board("trueidle_mig_board_observed_seconds_total")).toEqual({ fresh: 20, stale: 10 });
    expect(board("trueidle_mig_board_unavailable_seconds_total")).toEqual({ fresh: 2.5, stale: 10 });
    // The last reading's power, the newest window's floor and limit; absent where not reported.
    expect(board("trueidle_mig_board_power_watts")).toEqual({ fresh: 190.5, stale: undefined });
    expect(board("trueidle_mig_board_power_floor_watts")).toEqual({ fresh: 90, stale: undefined });
    expect(board("trueidle_mig_board_power_limit_watts")).toEqual({ fresh: 700, stale: undefined });
    expect(board("trueidle_mig_board_instances")).toEqual({ fresh: 1, stale: 0 });
    // No board or profile above a board; its instance names it.
    expect(text).not.toMatch(/^trueidle_mig_board_\S*\{[^}]*(parent_uuid|mig_profile)=/m);
    expect(text).toMatch(/^trueidle_gpu_up\{[^}]*uuid="MIG-dddd-1",[^}]*parent_uuid="GPU-dddd",mig_profile="3g.40gb"/m);
  });

  it("counts as a board's instances the fresh MIG instances of its own host that name it, and follows its readings", () => {
    let t = T0;
    const fleet = new FleetState({ now: () => t });
    const a = { hostname: "a", labels: {}, windowMs: 10_000 };
    const b = { hostname: "b", labels: {}, windowMs: 10_000 };
    const mig = (uuid: string, parentUuid: string, startMs = T0) =>
      makeWindow({ uuid, parentUuid, migProfile: "1g.10gb", startMs: BigInt(startMs) });
    fleet.applyWindow(a, boardWindow({ uuid: "GPU-B" }));
    fleet.applyWindow(a, mig("MIG-1", "GPU-B"));
    fleet.applyWindow(a, mig("MIG-2", "GPU-B"));
    fleet.applyWindow(a, mig("MIG-3", "GPU-X"));
    // The same board uuid on another host is another board; its instances are its own.
    fleet.applyWindow(b, boardWindow({ uuid: "GPU-B" }));
    fleet.applyWindow(b, mig("MIG-4", "GPU-B"));
    const instances = (): Map<string, number> =>
      values(renderMetricsText(fleet, new SelfMetrics()), "trueidle_mig_board_instances");
    const up = (): Map<string, number> => values(renderMetricsText(fleet, new SelfMetrics()), "trueidle_mig_board_up");
    const A = 'host="a",gpu="0",uuid="GPU-B",model="NVIDIA H100 80GB HBM3"';
    const B = 'host="b",gpu="0",uuid="GPU-B",model="NVIDIA H100 80GB HBM3"';
    expect(instances()).toEqual(
      new Map([
        [A, 2],
        [B, 1],
      ]),
    );
    // MIG-2 goes silent: stale after three window lengths, it is no longer counted.
    t += 31_000;
    fleet.applyWindow(a, boardWindow({ uuid: "GPU-B", startMs: BigInt(T0 + 10_000) }));
    fleet.applyWindow(a, mig("MIG-1", "GPU-B", T0 + 10_000));
    expect(instances()).toEqual(
      new Map([
        [A, 1],
        [B, 0],
      ]),
    );
    expect(up()).toEqual(
      new Map([
        [A, 1],
        [B, 0],
      ]),
    );
    // A window whose last reading failed: down while it is the newest, up again after a good one.
    fleet.applyWindow(
      a,
      boardWindow({ uuid: "GPU-B", startMs: BigInt(T0 + 20_000), unavailableS: 10 }, { error: "GPU is lost" }),
    );
    expect(up().get(A)).toBe(0);
    fleet.applyWindow(a, boardWindow({ uuid: "GPU-B", startMs: BigInt(T0 + 30_000) }));
    expect(up().get(A)).toBe(1);
    expect(
      values(renderMetricsText(fleet, new SelfMetrics()), "trueidle_mig_board_unavailable_seconds_total").get(A),
    ).toBe(10);
  });
});
