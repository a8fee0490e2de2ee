/**
 * Per-stream rate limits of agents: token buckets that may go into debt, so an agent over
 * its rate is first slowed down and only then pushed back.
 *
 * A stream takes one message token and one token per window for every batch. While the
 * buckets hold enough, the batch is acknowledged at once. Beyond that the stream owes
 * tokens: the batch's ack is held until the debt is paid back (`delayMs`). An agent keeps
 * only a few batches in flight and waits for acks, so held acks slow it to the configured
 * rate. A client that does not wait runs its debt up; past `maxDebtMs` the stream is ended
 * with RESOURCE_EXHAUSTED and a retry delay (`refuse`). Clocks are injected: the buckets
 * run on a monotonic clock, never on the wall clock windows are checked against.
 */
import { COLLECTOR_SETTINGS } from "./settings.js";

/** A token bucket that may go into debt. Tokens refill at `ratePerS` up to `burst`. */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    readonly ratePerS: number,
    readonly burst: number,
    private readonly clock: () => number,
  ) {
    if (!(ratePerS > 0) || !(burst > 0))
      throw new RangeError(`a token bucket needs a positive rate and burst (got ${ratePerS}/s, ${burst})`);
    this.tokens = burst;
    this.at = clock();
  }

  /** Takes `n` tokens, going into debt when the bucket holds fewer; returns the debt in ms (0 when none). */
  take(n: number): number {
    this.refill();
    this.tokens -= n;
    return this.debtMs();
  }

  /** Time until the bucket is back to zero tokens, in ms; 0 when it holds any. */
  debtMs(): number {
    return this.tokens >= 0 ? 0 : (-this.tokens / this.ratePerS) * 1000;
  }

  /** Tokens now held (negative while in debt). */
  balance(): number {
    this.refill();
    return this.tokens;
  }

  private refill(): void {
    const now = this.clock();
    // A clock that stepped back refills nothing rather than draining the bucket.
    if (now > this.at) this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.ratePerS);
    this.at = Math.max(this.at, now);
  }
}

export interface AgentRateLimits {
  /** Windows per second one stream may send on average. */
  windowsPerS: number;
  /** Windows a stream may send at once before it is slowed down. */
  windowBurst: number;
  /** Messages (batches) per second one stream may send on average. */
  messagesPerS: number;
  messageBurst: number;
  /** Debt beyond which the stream is ended with RESOURCE_EXHAUSTED rather than slowed down. */
  maxDebtMs: number;
}

/**
 * Batches an agent keeps unacknowledged at most: agent/shipper/shipper.ts, maxBatchesInFlight.
 * Acks of a well-behaved agent are held for at most this many batches' worth of debt.
 */
export const AGENT_BATCHES_IN_FLIGHT = 4;

/**
 * The debt bound. An agent counts a batch without an ack for 30 s as a broken stream
 * (shipper responseTimeoutMs), so held acks must come well before that: 20 s.
 */
export const MAX_DEBT_MS = 20_000;

/** Window burst for a windows-per-second rate: 10 s of it. */
export const burstFor = (windowsPerS: number): number => Math.ceil(windowsPerS * 10);

/**
 * Defaults: 2,000 windows/s (COLLECTOR_SETTINGS.agentRateLimit) drains the backlog of a
 * 64-GPU host with 10 s windows 300× faster than it grows (an hour of backlog in 12 s), with
 * a burst of 10 s of that; 50 batches/s (burst 200) is 100× what a live agent sends, and
 * stops a flood of tiny batches.
 */
export const DEFAULT_AGENT_RATE_LIMITS: Readonly<AgentRateLimits> = Object.freeze({
  windowsPerS: COLLECTOR_SETTINGS.agentRateLimit.default,
  windowBurst: burstFor(COLLECTOR_SETTINGS.agentRateLimit.default),
  messagesPerS: 50,
  messageBurst: 200,
  maxDebtMs: MAX_DEBT_MS,
});

/**
 * Why these limits would hold back a well-behaved agent, or undefined. An agent keeps
 * AGENT_BATCHES_IN_FLIGHT batches in flight and sends the next when an ack arrives; at
 * its limit the bucket is empty and the newest batch waits for all of them, so its ack
 * is held in-flight windows ÷ rate. With batches of `maxWindowsPerBatch` that must stay
 * within `maxDebtMs`, or the agent would be ended for sending what the protocol allows.
 */
export function rateLimitsProblem(l: Readonly<AgentRateLimits>, maxWindowsPerBatch: number): string | undefined {
  const windows = AGENT_BATCHES_IN_FLIGHT * maxWindowsPerBatch;
  if (windows <= (l.windowsPerS * l.maxDebtMs) / 1000) return undefined;
  return (
    `agentRateLimit ${l.windowsPerS} windows/s is too low for maxWindowsPerBatch ${maxWindowsPerBatch}: an agent keeps ` +
    `${AGENT_BATCHES_IN_FLIGHT} batches (${windows} windows) in flight, and at this rate the last one's ack would be held ` +
    `${Math.ceil(windows / l.windowsPerS)} s, more than ${l.maxDebtMs / 1000} s; raise the rate to at least ` +
    `${Math.ceil((windows * 1000) / l.maxDebtMs)} or lower maxWindowsPerBatch`
  );
}

export type PaceDecision = { kind: "pace"; delayMs: number } | { kind: "refuse"; retryAfterMs: number };

/** The limits of one stream. */
export class AgentRateLimiter {
  private readonly windows: TokenBucket;
  private readonly messages: TokenBucket;

  constructor(
    private readonly limits: Readonly<AgentRateLimits>,
    clock: () => number,
  ) {
    this.windows = new TokenBucket(limits.windowsPerS, limits.windowBurst, clock);
    this.messages = new TokenBucket(limits.messagesPerS, limits.messageBurst, clock);
  }

  /**
   * Accounts one batch of `windows` windows: hold its ack `delayMs` (0: at once), or end the
   * stream and have the agent come back after `retryAfterMs`. The delays of successive
   * batches never decrease, so acks held in batch order lose nothing.
   */
  batch(windows: number): PaceDecision {
    const debt = Math.max(this.messages.take(1), this.windows.take(windows));
    if (debt > this.limits.maxDebtMs) return { kind: "refuse", retryAfterMs: Math.ceil(debt) };
    return { kind: "pace", delayMs: Math.ceil(debt) };
  }
}
