import { describe, expect, it } from "vitest";
import { AgentRegistry, hostKey, type RegisteredStream } from "./agent-registry.js";

class Stream implements RegisteredStream {
  replacedBy: string | undefined;
  replaced(by: string): void {
    this.replacedBy = by;
  }
}

describe("AgentRegistry", () => {
  it("admits up to maxAgents hosts and refuses further ones", () => {
    const r = new AgentRegistry(2);
    expect(r.admit(hostKey("a", "1"), new Stream(), "p1")).toBe("admitted");
    expect(r.admit(hostKey("b", "2"), new Stream(), "p2")).toBe("admitted");
    expect(r.admit(hostKey("c", "3"), new Stream(), "p3")).toBe("full");
    expect(r.size).toBe(2);
  });

  it("replaces a host's older stream, even when full, and tells it", () => {
    const r = new AgentRegistry(1);
    const old = new Stream();
    const key = hostKey("a", "1");
    r.admit(key, old, "10.0.0.1:5000");
    const fresh = new Stream();
    expect(r.admit(key, fresh, "10.0.0.1:5001")).toBe("replaced");
    expect(old.replacedBy).toBe("10.0.0.1:5001");
    expect(fresh.replacedBy).toBeUndefined();
    // The replaced stream leaving does not unregister its successor.
    r.leave(key, old);
    expect(r.size).toBe(1);
    expect(r.admit(hostKey("b", "2"), new Stream(), "p")).toBe("full");
    r.leave(key, fresh);
    expect(r.size).toBe(0);
  });

  it("tells hosts apart by hostname and machine id together", () => {
    const r = new AgentRegistry(10);
    expect(r.admit(hostKey("a", "1"), new Stream(), "p")).toBe("admitted");
    expect(r.admit(hostKey("a", "2"), new Stream(), "p")).toBe("admitted");
    expect(r.admit(hostKey("a", ""), new Stream(), "p")).toBe("admitted");
    expect(hostKey('a","b', "")).not.toBe(hostKey("a", 'b",'));
  });
});
