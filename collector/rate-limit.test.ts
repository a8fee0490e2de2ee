import { describe, expect, it } from "vitest";
import {
  AGENT_BATCHES_IN_FLIGHT,
  AgentRateLimiter,
  DEFAULT_AGENT_RATE_LIMITS,
  MAX_DEBT_MS,
  TokenBucket,
  burstFor,
  rateLimitsProblem,
  type AgentRateLimits,
} from "./rate-limit.js";

function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

describe("TokenBucket", () => {
  it("gives the burst at once, then owes tokens as time until the balance is back to zero", () => {
    const c = fakeClock();
    const b = new TokenBucket(10, 20, c.now);
    expect(b.take(20)).toBe(0);
    expect(b.take(5)).toBe(500);
    expect(b.take(5)).toBe(1_000);
    c.advance(400);
    expect(b.debtMs()).toBe(1_000); // not refilled until asked
    expect(b.balance()).toBeCloseTo(-6);
    expect(b.debtMs()).toBeCloseTo(600);
  });

  it("refills at its rate up to the burst, and ignores a clock that steps back", () => {
    const c = fakeClock();
    const b = new TokenBucket(100, 50, c.now);
    b.take(50);
    c.advance(200);
    expect(b.balance()).toBeCloseTo(20);
    c.advance(10_000);
    expect(b.balance()).toBe(50);
    c.advance(-5_000);
    expect(b.take(10)).toBe(0);
    expect(b.balance()).toBe(40);
  });

  it("refuses a rate or burst that is not positive", () => {
    expect(() => new TokenBucket(0, 1, Date.now)).toThrow(RangeError);
    expect(() => new TokenBucket(1, Number.NaN, Date.now)).toThrow(RangeError);
  });
});

describe("AgentRateLimiter", () => {
  const limits: AgentRateLimits = {
    windowsPerS: 100,
    windowBurst: 1_000,
    messagesPerS: 5,
    messageBurst: 10,
    maxDebtMs: 20_000,
  };

  it("lets an agent within its rate through without delay", () => {
    const c = fakeClock();
    const l = new AgentRateLimiter(limits, c.now);
    for (let i = 0; i < 100; i++) {
      expect(l.batch(50)).toEqual({ kind: "pace", delayMs: 0 });
      c.advance(1_000);
    }
  });

  it("holds acks of a well-behaved agent over its rate, so it drains at the rate and is never refused", () => {
    // The agent keeps 4 batches of 400 in flight and sends the next once an ack arrives.
    const c = fakeClock();
    const l = new AgentRateLimiter(limits, c.now);
    const releases: number[] = [];
    for (let i = 0; i < AGENT_BATCHES_IN_FLIGHT; i++) {
      const d = l.batch(400);
      expect(d.kind).toBe("pace");
      if (d.kind === "pace") releases.push(c.now() + d.delayMs);
    }
    let sent = AGENT_BATCHES_IN_FLIGHT * 400;
    for (let i = 0; i < 200; i++) {
      const next = releases.shift() as number;
      c.advance(Math.max(0, next - c.now()));
      const d = l.batch(400);
      expect(d.kind).toBe("pace");
      if (d.kind !== "pace") return;
      expect(d.delayMs).toBeLessThanOrEqual(limits.maxDebtMs);
      // Acks are never released earlier than the one before.
      expect(c.now() + d.delayMs).toBeGreaterThanOrEqual(releases.at(-1) ?? 0);
      releases.push(c.now() + d.delayMs);
      sent += 400;
    }
    // Over the whole run, the agent got no more than burst + rate × time.
    const elapsedS = ((releases.at(-1) as number) - 1_000) / 1_000;
    expect(sent).toBeLessThanOrEqual(limits.windowBurst + limits.windowsPerS * elapsedS + 1);
  });

  it("refuses a stream that does not wait, once its debt passes the bound, with the debt as retry delay", () => {
    const c = fakeClock();
    const l = new AgentRateLimiter(limits, c.now);
    let decision = l.batch(100);
    let batches = 1;
    while (decision.kind === "pace") {
      decision = l.batch(100);
      batches++;
    }
    // Burst 1,000 + 20 s × 100/s = 3,000 windows admitted; the batch beyond is refused.
    expect(batches).toBe(31);
    expect(decision.retryAfterMs).toBeGreaterThan(MAX_DEBT_MS);
    expect(decision.retryAfterMs).toBeLessThanOrEqual(MAX_DEBT_MS + 1_000);
  });

  it("stops a flood of empty batches with the message bucket", () => {
    const c = fakeClock();
    const l = new AgentRateLimiter(limits, c.now);
    let admitted = 0;
    while (l.batch(0).kind === "pace") admitted++;
    // Burst 10 + 20 s × 5/s.
    expect(admitted).toBe(110);
  });
});

describe("rateLimitsProblem", () => {
  it("accepts the defaults with the default batch bound", () => {
    expect(rateLimitsProblem(DEFAULT_AGENT_RATE_LIMITS, 10_000)).toBeUndefined();
    expect(burstFor(DEFAULT_AGENT_RATE_LIMITS.windowsPerS)).toBe(DEFAULT_AGENT_RATE_LIMITS.windowBurst);
  });

  it("refuses a rate at which an agent's in-flight batches could not be acknowledged within the debt bound", () => {
    const slow = { ...DEFAULT_AGENT_RATE_LIMITS, windowsPerS: 100, windowBurst: burstFor(100) };
    expect(rateLimitsProblem(slow, 10_000)).toBe(
      "agentRateLimit 100 windows/s is too low for maxWindowsPerBatch 10000: an agent keeps 4 batches (40000 windows) in flight, " +
        "and at this rate the last one's ack would be held 400 s, more than 20 s; raise the rate to at least 2000 or lower maxWindowsPerBatch",
    );
    expect(rateLimitsProblem(slow, 500)).toBeUndefined();
    expect(rateLimitsProblem(slow, 501)).toBeDefined();
  });
});
