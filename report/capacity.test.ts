import { describe, expect, it } from "vitest";
import {
  computeReport,
  emptySums,
  nearestRankPercentile,
  reclaimableGpus,
  type DayGroupSums,
  type HourGroupIdle,
  type Sums,
} from "./capacity.js";

const H = 3_600_000;
const T0 = Date.UTC(2024, 4, 1);

function sums(s: Partial<Sums>): Sums {
  const out = { ...emptySums(), ...s };
  out.observed_s = out.free_idle_s + out.held_idle_s + out.busy_phantom_s + out.active_s + out.unavailable_s;
  return out;
}

describe("nearestRankPercentile", () => {
  it("takes the value at rank ceil(p/100 * n), so at least 95% of values are >= the 5th percentile", () => {
    expect(nearestRankPercentile([], 5)).toBe(0);
    expect(nearestRankPercentile([7], 5)).toBe(7);
    // n = 20: rank 1 — the lowest value; 19 of 20 (95 %) are at or above it.
    expect(
      nearestRankPercentile(
        Array.from({ length: 20 }, (_, i) => 20 - i),
        5,
      ),
    ).toBe(1);
    // n = 21: rank ceil(1.05) = 2.
    expect(
      nearestRankPercentile(
        Array.from({ length: 21 }, (_, i) => i),
        5,
      ),
    ).toBe(1);
    // n = 48: rank ceil(2.4) = 3.
    expect(nearestRankPercentile([5, 1, 2, 3, ...Array<number>(44).fill(9)], 5)).toBe(3);
    expect(nearestRankPercentile([4, 2, 8, 6], 100)).toBe(8);
  });

  it("reclaimable GPUs are the 5th percentile of hourly real-idle GPU-equivalents", () => {
    expect(reclaimableGpus([1, 2, 0.5, 2, 2])).toBe(0.5);
  });
});

describe("computeReport", () => {
  it("leaves hours without data out of a group's percentile but not the fleet's hours with other data", () => {
    const hours: HourGroupIdle[] = [];
    const days: DayGroupSums[] = [];
    for (let i = 0; i < 4; i++) {
      hours.push({ hourMs: T0 + i * H, key: ["a"], realIdleS: 3600 });
      days.push({ dayMs: T0, key: ["a"], sums: sums({ free_idle_s: 3600 }) });
      if (i !== 2) {
        hours.push({ hourMs: T0 + i * H, key: ["b"], realIdleS: 1800 });
        days.push({ dayMs: T0, key: ["b"], sums: sums({ held_idle_s: 1800, active_s: 1800, real_busy_s: 900 }) });
      }
    }
    const r = computeReport({
      range: { startMs: T0, endMs: T0 + 4 * H },
      by: ["site"],
      measurement: "gpu_hour",
      measurementReason: "test",
      days,
      hours,
      gpus: [
        { key: ["a"], uuid: "A" },
        { key: ["b"], uuid: "B" },
        { key: ["b"], uuid: "B" },
      ],
    });
    expect(r.groups.map((g) => g.key)).toEqual([{ site: "a" }, { site: "b" }]);
    const b = r.groups[1]!;
    expect(b.gpus).toBe(1);
    expect(b.hoursWithData).toBe(3);
    expect(b.coveragePct).toBe(75);
    expect(b.reclaimableGpus).toBe(0.5);
    expect(b.unusedCapacityPct).toBe(100 * (1 - 900 / 3600));
    expect(b.idleCost).toBeNull();
    // Fleet hours: 1.5, 1.5, 1 (b missing), 1.5 → the lowest is 1.
    expect(r.total.reclaimableGpus).toBe(1);
    expect(r.total.hoursWithData).toBe(4);
    expect(r.total.gpus).toBe(2);
    expect(r.total.coveragePct).toBe((100 * 7) / 8);
  });

  it("ignores hours outside the range and prices real-idle GPU-hours", () => {
    const r = computeReport({
      range: { startMs: T0, endMs: T0 + H },
      by: ["model"],
      measurement: "gpu_window",
      measurementReason: "test",
      pricePerGpuHour: 3,
      days: [{ dayMs: T0, key: ["H100"], sums: sums({ busy_phantom_s: 1200, active_s: 2400, real_busy_s: 2000 }) }],
      hours: [
        { hourMs: T0, key: ["H100"], realIdleS: 1200 },
        { hourMs: T0 + H, key: ["H100"], realIdleS: 3600 },
      ],
      gpus: [{ key: ["H100"], uuid: "u" }],
    });
    expect(r.total.gpuHoursObserved).toBe(1);
    expect(r.total.phantomBusyGpuHours).toBeCloseTo(1 / 3, 12);
    expect(r.total.idleCost).toBeCloseTo(1, 12);
    expect(r.total.hiddenIdlePct).toBeCloseTo(100 / 3, 12);
    expect(r.total.reclaimableGpus).toBeCloseTo(1 / 3, 12);
    expect(r.total.hoursWithData).toBe(1);
    expect(r.daily.days).toEqual([T0]);
  });
});
