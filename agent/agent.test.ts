import { afterEach, describe, expect, it, vi } from "vitest";
import { recordingLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS, type GpuReading } from "../common/types.js";
import { Agent } from "./agent.js";
import type { GpuSource } from "./sources/source.js";
import type { GpuWindowRecord } from "./window.js";

const silentSource: GpuSource = {
  name: "test",
  start: async () => {},
  sample: () => [],
  stop: async () => {},
  stats: () => ({ restarts: 0, parseErrors: 0 }),
};

describe("Agent ticks", () => {
  it("counts sampling instants skipped by a late tick and warns once a minute", () => {
    const logger = recordingLogger();
    const agent = new Agent({
      source: silentSource,
      host: { hostname: "h", machineId: "m", labels: {} },
      collectors: ["127.0.0.1:1"],
      intervalMs: 1000,
      windowMs: 10_000,
      thresholds: DEFAULT_THRESHOLDS,
      logger,
    });
    // The tick loop runs privately; drive it directly as its timer would.
    const tick = (t: number): void => {
      (agent as unknown as { running: boolean }).running = true;
      (agent as unknown as { tick(t: number): void }).tick(t);
      (agent as unknown as { running: boolean }).running = false;
    };
    const T0 = Date.UTC(2026, 10, 29, 12, 0, 0);
    tick(T0);
    tick(T0 + 1000);
    expect(agent.stats().ticksMissed).toBe(0);
    tick(T0 + 5000); // 2 s, 3 s and 4 s were skipped
    expect(agent.stats().ticksMissed).toBe(3);
    tick(T0 + 7000); // 6 s skipped, within the minute: counted, not logged again
    expect(agent.stats().ticksMissed).toBe(4);
    const warns = logger.lines.filter((l) => l.level === "warn" && /skipped/.test(l.msg));
    expect(warns).toHaveLength(1);
    expect(warns[0]!.fields).toMatchObject({ missed: 3 });
    expect(agent.stats().ticks).toBe(4);
  });
});

describe("Agent and a wall clock that steps back", () => {
  afterEach(() => void vi.useRealTimers());

  it("keeps sampling at the stepped-back instants, drops what its windows covered already, counts it and warns once", () => {
    vi.useFakeTimers();
    const T0 = Date.UTC(2026, 10, 29, 12, 0, 0);
    let wall = T0 - 10_000;
    const reading: GpuReading = {
      uuid: "GPU-a",
      index: 0,
      model: "NVIDIA H100 80GB HBM3",
      util: 0,
      powerW: 70,
      powerLimitW: 700,
      memUsedBytes: 0,
      memTotalBytes: 1,
      processes: [],
    };
    const source: GpuSource = { ...silentSource, sample: () => [reading] };
    const logger = recordingLogger();
    const windows: GpuWindowRecord[] = [];
    const agent = new Agent({
      source,
      host: { hostname: "h", machineId: "m", labels: {} },
      collectors: ["127.0.0.1:1"],
      intervalMs: 1000,
      windowMs: 10_000,
      thresholds: DEFAULT_THRESHOLDS,
      logger,
      now: () => wall,
      onWindows: (ws) => void windows.push(...ws),
    });
    const internals = agent as unknown as {
      running: boolean;
      schedule(): void;
      pipeline: { flushAll(): GpuWindowRecord[] };
    };
    internals.running = true;
    internals.schedule();
    /** One second passes on the timers, and `wallStepMs` on the wall clock besides. */
    const second = (wallStepMs = 0): void => {
      wall += 1000 + wallStepMs;
      vi.advanceTimersByTime(1000);
    };
    for (let s = 0; s < 15; s++) second(); // samples at T0 - 9 s … T0 + 5 s
    second(-30_000); // the clock steps back 30 s; the tick already due samples T0 + 6 s, the next T0 - 23 s
    for (let s = 0; s < 40; s++) second();
    internals.running = false;
    windows.push(...internals.pipeline.flushAll());

    const stats = agent.stats();
    // Ticks went on each second: none were skipped, none stalled.
    expect(stats.ticks).toBe(56);
    expect(stats.ticksMissed).toBe(0);
    // From T0 - 23 s to T0 + 6 s the instants had been sampled already: 30 samples dropped.
    expect(stats.samplesDropped).toBe(30);
    const warns = logger.lines.filter((l) => l.level === "warn");
    expect(warns.map((l) => l.msg)).toEqual([
      "The wall clock stepped back by 30 s, to 2026-11-29T11:59:37.000Z. The windows sent already cover the time until " +
        "2026-11-29T12:00:06.000Z, so samples until the clock is back there are dropped rather than sent twice " +
        "(counted in trueidle_agent_samples_dropped_total).",
    ]);
    // Every window once, every second in at most one window.
    const starts = windows.map((w) => (w.startMs - T0) / 1000);
    expect(starts).toEqual([-10, 0, 10]);
    expect(windows.reduce((sum, w) => sum + w.observedS, 0)).toBe(56 - 30);
  });
});
