import { describe, expect, it } from "vitest";
import { recordingLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { Agent } from "./agent.js";
import type { GpuSource } from "./sources/source.js";

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
      source: silentSource, host: { hostname: "h", machineId: "m", labels: {} }, collectors: ["127.0.0.1:1"],
      intervalMs: 1000, windowMs: 10_000, thresholds: DEFAULT_THRESHOLDS, logger,
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
