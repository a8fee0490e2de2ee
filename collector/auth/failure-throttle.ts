/**
 * Slows down guessing: every failed authentication (a wrong basic-auth password, a wrong
 * or missing agent token) takes a token from its source address's bucket; an address whose
 * bucket is empty is refused without its credentials being checked — HTTP 429 with
 * `Retry-After`, gRPC RESOURCE_EXHAUSTED with `trueidle-retry-after-ms` — until the bucket
 * holds a token again. While refused, right credentials are refused too: otherwise every
 * refusal would still tell a guesser whether its guess was right.
 *
 * A bucket holds `burst` failures and refills at `perMinute` a minute, so a guesser gets
 * `perMinute` guesses a minute instead of thousands a second. Successes cost nothing, and
 * so does a credential that already failed from the address lately (the caller passes a
 * digest of it): a misconfigured agent or scraper that keeps sending the same wrong token
 * or password is refused with 401/UNAUTHENTICATED as before, and never throttles the
 * honest clients that share its address (a NAT, a proxy) — only distinct guesses do.
 * Addresses are remembered up to a bound; the one unseen longest is forgotten first (a
 * forgotten address starts with a full bucket, which only ever lets a guesser through
 * `burst` more times).
 */
import { createHash } from "node:crypto";

/** A short digest of a presented credential, for FailureThrottle.failed. */
export function credentialDigest(presented: string): string {
  return createHash("sha256").update(presented, "utf8").digest("base64url").slice(0, 16);
}

export interface FailureThrottleOptions {
  /** Failures an address may have in a row before it is refused (default 10). */
  burst?: number;
  /** Failures per minute an address earns back (default 10). */
  perMinute?: number;
  /** Addresses remembered at most (default 10,000). */
  maxAddresses?: number;
  /** Monotonic clock, ms (default performance.now). */
  clock?: () => number;
}

export const DEFAULT_AUTH_FAILURE_BURST = 10;
export const DEFAULT_AUTH_FAILURES_PER_MINUTE = 10;
const DEFAULT_MAX_ADDRESSES = 10_000;

/** Failed credentials remembered per address, newest last. */
const RECENT_FAILURES = 8;

interface Bucket {
  tokens: number;
  at: number;
  /** Digests of the credentials that failed lately. */
  recent: string[];
}

export class FailureThrottle {
  private readonly burst: number;
  private readonly perMs: number;
  private readonly maxAddresses: number;
  private readonly clock: () => number;
  /** In order of last use: a re-used address is moved to the end. */
  private readonly buckets = new Map<string, Bucket>();

  constructor(opts: FailureThrottleOptions = {}) {
    this.burst = opts.burst ?? DEFAULT_AUTH_FAILURE_BURST;
    this.perMs = (opts.perMinute ?? DEFAULT_AUTH_FAILURES_PER_MINUTE) / 60_000;
    this.maxAddresses = opts.maxAddresses ?? DEFAULT_MAX_ADDRESSES;
    this.clock = opts.clock ?? (() => performance.now());
  }

  /** Milliseconds `address` must wait before its credentials are checked again; 0 when they may be checked now. */
  retryAfterMs(address: string): number {
    const b = this.refill(address);
    if (!b || b.tokens >= 1) return 0;
    return Math.ceil((1 - b.tokens) / this.perMs);
  }

  /**
   * Records a failed authentication from `address`; `credential` identifies what was
   * presented (a digest, never the secret itself): a repeat of a recent one costs nothing.
   */
  failed(address: string, credential?: string): void {
    const b = this.refill(address) ?? this.add(address);
    if (credential !== undefined) {
      if (b.recent.includes(credential)) return;
      b.recent.push(credential);
      if (b.recent.length > RECENT_FAILURES) b.recent.shift();
    }
    b.tokens = Math.max(0, b.tokens - 1);
  }

  private refill(address: string): Bucket | undefined {
    const b = this.buckets.get(address);
    if (!b) return undefined;
    const now = this.clock();
    if (now > b.at) b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs);
    b.at = Math.max(b.at, now);
    if (b.tokens >= this.burst && b.recent.length === 0) {
      this.buckets.delete(address);
      return undefined;
    }
    this.buckets.delete(address);
    this.buckets.set(address, b);
    return b;
  }

  private add(address: string): Bucket {
    if (this.buckets.size >= this.maxAddresses) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    const b: Bucket = { tokens: this.burst, at: this.clock(), recent: [] };
    this.buckets.set(address, b);
    return b;
  }
}
