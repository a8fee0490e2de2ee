import { describe, expect, it } from "vitest";
import {
  classifyWrite,
  droppedPoints,
  influxErrorText,
  parseRetryAfter,
  retryDelayMs,
  type WriteResponse,
} from "./retry.js";

const res = (status: number, body = ""): WriteResponse => ({ kind: "response", status, body });

describe("classifyWrite", () => {
  it.each([
    [res(204), "ok"],
    [res(200), "ok"],
    [res(413, '{"error":"Request Entity Too Large"}'), "split"],
    [res(429), "retry"],
    [res(401, '{"error":"authorization failed"}'), "retry"],
    [res(403), "retry"],
    [res(404, '{"error":"database not found: \\"trueidle\\""}'), "schema"],
    [res(500, '{"error":"retention policy not found: gpu_window"}'), "schema"],
    [res(400, '{"error":"partial write: field type conflict: input field \\"v\\" ... dropped=1"}'), "partial"],
    [res(400, '{"error":"unable to parse \'x\': missing fields"}'), "drop"],
    [res(404, "not found"), "drop"],
    [res(500), "retry"],
    [res(503), "retry"],
    [{ kind: "network", error: "ECONNREFUSED" } as WriteResponse, "retry"],
    [res(302), "drop"],
  ])("%o → %s", (r, action) => {
    expect(classifyWrite(r).action).toBe(action);
  });
});

describe("InfluxDB error text", () => {
  it("reads the JSON error and the dropped count", () => {
    const text = influxErrorText('{"error":"partial write: field type conflict: x dropped=3"}\n');
    expect(text).toBe("partial write: field type conflict: x dropped=3");
    expect(droppedPoints(text)).toBe(3);
    expect(droppedPoints("unable to parse")).toBeUndefined();
    expect(influxErrorText("<html>bad gateway</html>")).toBe("<html>bad gateway</html>");
  });
});

describe("retry delays", () => {
  const opts = { initialMs: 100, maxMs: 1_000 };
  it("doubles from initial up to max, with half of it random", () => {
    expect(retryDelayMs(0, opts, undefined, () => 0)).toBe(50);
    expect(retryDelayMs(0, opts, undefined, () => 1)).toBe(100);
    expect(retryDelayMs(3, opts, undefined, () => 1)).toBe(800);
    expect(retryDelayMs(10, opts, undefined, () => 1)).toBe(1_000);
    expect(retryDelayMs(10, opts, undefined, () => 0)).toBe(500);
  });

  it("waits as long as Retry-After asks when that is longer, up to five minutes", () => {
    expect(retryDelayMs(0, opts, 7_000, () => 1)).toBe(7_000);
    expect(retryDelayMs(5, opts, 10, () => 1)).toBe(1_000);
    expect(retryDelayMs(0, opts, 3_600_000, () => 1)).toBe(300_000);
  });

  it("reads Retry-After as seconds or an HTTP date", () => {
    const now = Date.UTC(2024, 0, 1, 0, 0, 0);
    expect(parseRetryAfter("3", now)).toBe(3_000);
    expect(parseRetryAfter("Mon, 01 Jan 2024 00:00:10 GMT", now)).toBe(10_000);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});
