import { describe, expect, it } from "vitest";
import { credentialDigest, FailureThrottle } from "./failure-throttle.js";

describe("FailureThrottle", () => {
  it("refuses an address after `burst` distinct failures until it earns one back, and forgets it once whole again", () => {
    let t = 0;
    const th = new FailureThrottle({ burst: 3, perMinute: 6, clock: () => t });
    for (let i = 0; i < 3; i++) {
      expect(th.retryAfterMs("10.0.0.1")).toBe(0);
      th.failed("10.0.0.1", credentialDigest(`guess-${i}`));
    }
    // One failure a 10 s earned back.
    expect(th.retryAfterMs("10.0.0.1")).toBe(10_000);
    expect(th.retryAfterMs("10.0.0.2")).toBe(0);
    t = 4_000;
    expect(th.retryAfterMs("10.0.0.1")).toBe(6_000);
    t = 10_000;
    expect(th.retryAfterMs("10.0.0.1")).toBe(0);
  });

  it("charges a credential that keeps failing from one address once, so a misconfigured client never throttles its neighbours", () => {
    const th = new FailureThrottle({ burst: 3, perMinute: 1, clock: () => 0 });
    const wrong = credentialDigest("Bearer stale-token-of-one-node");
    for (let i = 0; i < 100; i++) th.failed("10.0.0.1", wrong);
    expect(th.retryAfterMs("10.0.0.1")).toBe(0);
    th.failed("10.0.0.1", credentialDigest("Bearer guess-1"));
    th.failed("10.0.0.1", credentialDigest("Bearer guess-2"));
    expect(th.retryAfterMs("10.0.0.1")).toBeGreaterThan(0);
  });

  it("remembers at most maxAddresses addresses, the longest unseen forgotten first", () => {
    const th = new FailureThrottle({ burst: 1, perMinute: 1, maxAddresses: 2, clock: () => 0 });
    th.failed("a");
    th.failed("b");
    th.failed("c");
    expect(th.retryAfterMs("a")).toBe(0);
    expect(th.retryAfterMs("b")).toBeGreaterThan(0);
    expect(th.retryAfterMs("c")).toBeGreaterThan(0);
  });
});
