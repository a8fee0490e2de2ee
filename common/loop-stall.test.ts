import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { LoopStallClock, stallAwareTimeout } from "./loop-stall.js";

/** Holds the event loop, as a swamped process does. */
function block(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy
  }
}

/** Runs `f` in a timer callback, so what it schedules with two setImmediates runs after the next turn's timers. */
function inTimerPhase(f: () => void): Promise<void> {
  return new Promise((resolve) => setTimeout(() => resolve(f()), 0));
}

describe("stallAwareTimeout", () => {
  it("expires after its time when the loop is responsive", async () => {
    let expired = 0;
    const t0 = performance.now();
    let at = 0;
    stallAwareTimeout(150, () => {
      expired++;
      at = performance.now() - t0;
    });
    await sleep(600);
    expect(expired).toBe(1);
    expect(at).toBeGreaterThanOrEqual(149);
  });

  it("does not expire in the first turn after the loop stalled past it: what arrived meanwhile is handled first", async () => {
    let expired = 0;
    let spoke = false;
    await inTimerPhase(() => {
      const timer = stallAwareTimeout(200, () => expired++);
      // The loop is held past the deadline; the client's answer is handled in the turn after
      // the one whose timers phase finds the deadline overdue (a plain setTimeout expires there).
      block(500);
      setImmediate(() =>
        setImmediate(() => {
          spoke = true;
          timer.clear();
        }),
      );
    });
    await sleep(1_500);
    expect(spoke).toBe(true);
    expect(expired).toBe(0);
  });

  it("a plain timer in the same situation does expire (what the stall-aware one guards against)", async () => {
    let expired = 0;
    await inTimerPhase(() => {
      const timer = setTimeout(() => expired++, 200);
      block(500);
      setImmediate(() => setImmediate(() => clearTimeout(timer)));
    });
    await sleep(800);
    expect(expired).toBe(1);
  });

  it("still expires once the client stays silent after a stall", async () => {
    let expired = 0;
    await inTimerPhase(() => {
      stallAwareTimeout(200, () => expired++);
      block(400);
    });
    await sleep(2_000);
    expect(expired).toBe(1);
  });

  it("extends to at most maxExtensionFactor times its length", async () => {
    let expired = 0;
    await inTimerPhase(() => {
      stallAwareTimeout(100, () => expired++, { maxExtensionFactor: 3 });
      // Past 3 × 100 ms already when it first fires: no extension left.
      block(700);
      setImmediate(() => setImmediate(() => expect(expired).toBe(1)));
    });
    await sleep(100);
    expect(expired).toBe(1);
  });

  it("arms nothing for 0", async () => {
    let expired = 0;
    stallAwareTimeout(0, () => expired++);
    await sleep(50);
    expect(expired).toBe(0);
  });
});

describe("LoopStallClock", () => {
  it("counts how long the loop came round late while held, and nothing when released", async () => {
    const clock = new LoopStallClock();
    expect(clock.stalledMs()).toBe(0);
    const release = clock.hold();
    await sleep(300);
    const before = clock.stalledMs();
    block(800);
    // The tick that is overdue now counts already.
    expect(clock.stalledMs() - before).toBeGreaterThan(400);
    await sleep(400);
    expect(clock.stalledMs() - before).toBeGreaterThan(400);
    release();
    release();
    expect(clock.stalledMs()).toBe(0);
  });
});
