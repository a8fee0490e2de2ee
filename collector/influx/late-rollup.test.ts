import { describe, expect, it } from "vitest";
import { silentLogger } from "../../common/log.js";
import { LateRollup } from "./late-rollup.js";

const H = 3_600_000;
const T = Date.UTC(2024, 2, 1, 10); // 10:00

function late(nowMs: number): LateRollup {
  return new LateRollup({
    target: { baseUrl: "http://127.0.0.1:9", database: "d" },
    logger: silentLogger,
    now: () => nowMs,
  });
}

describe("LateRollup.note", () => {
  it("leaves to the continuous query the hours its next run covers", () => {
    const l = late(T + 30 * 60_000); // 10:30: the next run, by 10:40, covers 09:00–11:00
    l.note(T - H + 5 * 60_000);
    l.note(T + 20 * 60_000);
    l.note(T + H + 60_000);
    expect(l.pendingHours()).toEqual([]);
  });

  it("keeps older hours for an explicit roll-up, once each", () => {
    const l = late(T + 30 * 60_000);
    l.note(T - 2 * H + 1);
    l.note(T - 2 * H + 50 * 60_000);
    l.note(T - 5 * H);
    expect(l.pendingHours()).toEqual([T - 5 * H, T - 2 * H]);
  });

  it("near the end of an hour, counts the previous hour as late: the next run may fall in the next hour", () => {
    const l = late(T + 55 * 60_000); // 10:55: the next run may be at 11:05, covering 10:00–12:00
    l.note(T - H + 60_000);
    expect(l.pendingHours()).toEqual([T - H]);
  });
});
