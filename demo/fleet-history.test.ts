import { describe, expect, it } from "vitest";
import { classify, nextBaseline, type GpuBaseline } from "../agent/model/idle-model.js";
import { DEFAULT_THRESHOLDS, type GpuState } from "../common/types.js";
import {
  FleetHistoryModel,
  HISTORY_FLEET,
  historyFleet,
  IDLE_SITE,
  localTime,
  PHANTOM_MODEL,
  rhythm,
  uuidFor,
  type Activity,
} from "./fleet-history.js";

const HOUR = 3_600_000;
/** Monday 2024-03-04 00:00 UTC. */
const MONDAY = Date.UTC(2024, 2, 4);

/** The state the idle model must give each activity (spinning only happens on hosts that spin). */
const EXPECTED: Record<Activity, GpuState> = {
  working: "active",
  holding: "held_idle",
  spinning: "busy_phantom",
  free: "free_idle",
  lost: "unavailable",
};

describe("FleetHistoryModel", () => {
  it("is a fleet of 8-GPU hosts in at least two sites and two models, with the idle site and the phantom model in it", () => {
    expect(HISTORY_FLEET.every((h) => h.gpus === 8)).toBe(true);
    const sites = new Set(HISTORY_FLEET.map((h) => h.labels.site));
    const models = new Set(HISTORY_FLEET.map((h) => h.model.name));
    expect(sites.size).toBeGreaterThanOrEqual(2);
    expect(models.size).toBeGreaterThanOrEqual(2);
    expect(sites).toContain(IDLE_SITE);
    expect(models).toContain(PHANTOM_MODEL);
    const m = new FleetHistoryModel();
    const uuids = HISTORY_FLEET.flatMap((_, i) => m.uuids(i));
    expect(new Set(uuids).size).toBe(64);
    for (const u of uuids) expect(u).toMatch(/^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it("scales to more hosts of the same shapes, with distinct names and GPUs", () => {
    const big = historyFleet(125);
    expect(big).toHaveLength(125);
    expect(big.slice(0, 8)).toEqual(HISTORY_FLEET);
    expect(big[8]!.hostname).toBe("gpu-use-t01-2");
    expect(new Set(big.map((h) => h.hostname)).size).toBe(125);
    const m = new FleetHistoryModel(big);
    expect(m.gpuCount).toBe(1000);
    expect(new Set(big.flatMap((_, i) => m.uuids(i))).size).toBe(1000);
  });

  it("gives the same readings for the same seed and instant, and others for another seed", () => {
    const a = new FleetHistoryModel(HISTORY_FLEET, 7);
    const b = new FleetHistoryModel(HISTORY_FLEET, 7);
    const c = new FleetHistoryModel(HISTORY_FLEET, 8);
    let differs = 0;
    for (let t = MONDAY; t < MONDAY + 48 * HOUR; t += 17 * 60_000) {
      for (let h = 0; h < HISTORY_FLEET.length; h++) {
        expect(a.readings(h, t)).toEqual(b.readings(h, t));
        if (JSON.stringify(a.readings(h, t)) !== JSON.stringify(c.readings(h, t))) differs++;
      }
    }
    expect(differs).toBeGreaterThan(0);
    expect(uuidFor("gpu-use-t01", 3)).toBe(a.uuids(0)[3]);
  });

  it("keeps a GPU's activity for its hour and varies utilization and power within it", () => {
    const m = new FleetHistoryModel();
    const t0 = MONDAY + 14 * HOUR;
    for (let g = 0; g < 8; g++) {
      const acts = new Set<Activity>();
      for (let t = t0; t < t0 + HOUR; t += 60_000) acts.add(m.activity(0, g, t));
      expect(acts.size).toBe(1);
    }
    const powers = new Set<number | undefined>();
    for (let t = t0; t < t0 + HOUR; t += 60_000)
      for (const r of m.readings(0, t)) if (r.processes?.length) powers.add(r.powerW);
    expect(powers.size).toBeGreaterThan(10);
  });

  it("yields readings the idle model classifies as intended, whatever came before (no history dependence)", () => {
    const m = new FleetHistoryModel();
    const seen = new Set<GpuState>();
    for (let h = 0; h < HISTORY_FLEET.length; h++) {
      const baselines = new Map<string, GpuBaseline>();
      for (let t = MONDAY; t < MONDAY + 7 * 24 * HOUR; t += 20 * 60_000) {
        for (const r of m.readings(h, t)) {
          const expected = EXPECTED[m.activity(h, r.index, t)];
          // With a learned baseline, and with none (the first sample of a backfill).
          const learned = baselines.get(r.uuid) ?? {};
          const c1 = classify(r, learned, DEFAULT_THRESHOLDS);
          const c2 = classify(r, {}, DEFAULT_THRESHOLDS);
          expect(c1.state, `${HISTORY_FLEET[h]!.hostname} GPU ${r.index} at ${new Date(t).toISOString()}`).toBe(
            expected,
          );
          expect(c2.state).toBe(expected);
          expect(c1.real).toBe(c2.real);
          expect(c1.floorW).toBe(c2.floorW);
          baselines.set(r.uuid, nextBaseline(r, c1, learned, t));
          seen.add(c1.state);
        }
      }
    }
    expect([...seen].sort()).toEqual(["active", "busy_phantom", "free_idle", "held_idle", "unavailable"]);
  });

  it("misses power (not 0) on a lost GPU", () => {
    const m = new FleetHistoryModel();
    let lost = 0;
    for (let t = MONDAY; t < MONDAY + 14 * 24 * HOUR && lost === 0; t += HOUR) {
      for (let h = 0; h < HISTORY_FLEET.length; h++) {
        for (const r of m.readings(h, t)) {
          if (r.error === undefined) continue;
          lost++;
          expect(r.powerW).toBeUndefined();
          expect(r.util).toBeUndefined();
        }
      }
    }
    expect(lost).toBeGreaterThan(0);
  });
});

describe("rhythm and local time", () => {
  it("is busiest in weekday office hours, quiet at night and at weekends", () => {
    expect(rhythm(10, 2)).toBe(1);
    expect(rhythm(3, 2)).toBeLessThan(0.2);
    expect(rhythm(10, 6)).toBeLessThan(0.2);
    expect(rhythm(10, 0)).toBeLessThan(0.2);
    expect(rhythm(19, 3)).toBeGreaterThan(rhythm(23, 3));
  });

  it("turns a UTC instant into the site's hour and weekday", () => {
    // Monday 00:00 UTC is Sunday 19:00 in UTC-5 and Monday 05:30 in UTC+5:30.
    expect(localTime(MONDAY, 0)).toEqual({ hour: 0, weekday: 1 });
    expect(localTime(MONDAY, -5)).toEqual({ hour: 19, weekday: 0 });
    expect(localTime(MONDAY, 5.5)).toEqual({ hour: 5, weekday: 1 });
    expect(localTime(Date.UTC(2024, 2, 9, 12), 0)).toEqual({ hour: 12, weekday: 6 });
  });
});
