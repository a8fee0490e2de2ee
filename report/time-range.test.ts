import { describe, expect, it } from "vitest";
import { parseTimeArg, partialHourOf, resolveRange } from "./time-range.js";

const NOW = Date.UTC(2024, 4, 10, 10, 30, 15);

describe("report time range", () => {
  it("reads durations ago, now, RFC 3339 times and bare dates", () => {
    expect(parseTimeArg("90d", NOW)).toBe(NOW - 90 * 86_400_000);
    expect(parseTimeArg("36h", NOW)).toBe(NOW - 36 * 3_600_000);
    expect(parseTimeArg("now", NOW)).toBe(NOW);
    expect(parseTimeArg("2024-05-01T00:00:00Z", NOW)).toBe(Date.UTC(2024, 4, 1));
    expect(parseTimeArg("2024-05-01T02:30:00+02:00", NOW)).toBe(Date.UTC(2024, 4, 1, 0, 30));
    expect(parseTimeArg("2024-05-01", NOW)).toBe(Date.UTC(2024, 4, 1));
  });

  it("refuses times without a zone and other text, naming the accepted forms", () => {
    expect(() => parseTimeArg("2024-05-01T00:00:00", NOW)).toThrow(/neither a duration ago .* nor an RFC 3339 time/);
    expect(() => parseTimeArg("last week", NOW, "--until")).toThrow(/^--until "last week"/);
  });

  it("rounds the start down to the hour, and an end of now includes the hour in progress, marked partial", () => {
    expect(resolveRange("2d", undefined, NOW)).toEqual({ startMs: Date.UTC(2024, 4, 8, 10), endMs: NOW });
    expect(resolveRange("2d", "now", NOW)).toEqual({ startMs: Date.UTC(2024, 4, 8, 10), endMs: NOW });
    expect(partialHourOf(resolveRange("2d", undefined, NOW))).toBe(Date.UTC(2024, 4, 10, 10));
    // Right after an install: the hour in progress alone.
    expect(resolveRange("20m", undefined, NOW)).toEqual({ startMs: Date.UTC(2024, 4, 10, 10), endMs: NOW });
    // An end given as a duration ago or a time is rounded down: whole hours, nothing partial.
    const whole = resolveRange("2d", "1h", NOW);
    expect(whole).toEqual({ startMs: Date.UTC(2024, 4, 8, 10), endMs: Date.UTC(2024, 4, 10, 9) });
    expect(partialHourOf(whole)).toBeNull();
    expect(() => resolveRange("20m", "5m", NOW)).toThrow(/hold no whole hour/);
  });

  it("names an --until before --since as such, and takes an --until ahead of now", () => {
    expect(() => resolveRange("2024-05-02", "2024-05-01", NOW)).toThrow(
      /^--until 2024-05-01 \(2024-05-01T00:00:00Z\) is before --since 2024-05-02 \(2024-05-02T00:00:00Z\)/,
    );
    expect(resolveRange("2024-05-10T10:00:00Z", "2024-05-10T11:00:00Z", NOW)).toEqual({
      startMs: Date.UTC(2024, 4, 10, 10),
      endMs: Date.UTC(2024, 4, 10, 11),
    });
  });
});
