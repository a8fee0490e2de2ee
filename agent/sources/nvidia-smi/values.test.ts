import { describe, expect, it } from "vitest";
import {
  isMissing,
  parseActive,
  parseBytes,
  parseInteger,
  parseNumber,
  parsePercent,
  parseText,
  parseWatts,
} from "./values.js";

const MiB = 1024 * 1024;

describe("nvidia-smi values", () => {
  it.each([
    "[N/A]",
    "N/A",
    "[Not Supported]",
    "[Unknown Error]",
    "[Requested functionality has been deprecated]",
    "[Function Not Found]",
    "ERR!",
    "[GPU is lost]",
    "[Insufficient Permissions]",
    "[anything else]",
    "",
    "   ",
  ])("reads %j as missing, never 0", (raw) => {
    expect(isMissing(raw)).toBe(true);
    expect(parseNumber(raw)).toBeUndefined();
    expect(parsePercent(raw)).toBeUndefined();
    expect(parseWatts(raw)).toBeUndefined();
    expect(parseBytes(raw)).toBeUndefined();
    expect(parseActive(raw)).toBeUndefined();
    expect(parseText(raw)).toBeUndefined();
  });

  it("reads memory with or without units into bytes", () => {
    expect(parseBytes("80211 MiB")).toBe(80211 * MiB);
    expect(parseBytes("80211")).toBe(80211 * MiB);
    expect(parseBytes("2 GiB")).toBe(2 * 1024 * MiB);
    expect(parseBytes("512", "KiB")).toBe(512 * 1024);
    expect(parseBytes("0 MiB")).toBe(0);
    expect(parseBytes("12 W")).toBeUndefined();
    expect(parseBytes("-3 MiB")).toBeUndefined();
  });

  it("reads watts and percentages, rejecting the wrong unit or range", () => {
    expect(parseWatts("123.45 W")).toBe(123.45);
    expect(parseWatts("627.40")).toBe(627.4);
    expect(parseWatts("45 %")).toBeUndefined();
    expect(parsePercent("45 %")).toBe(45);
    expect(parsePercent("0")).toBe(0);
    expect(parsePercent("100 %")).toBe(100);
    expect(parsePercent("101 %")).toBeUndefined();
    expect(parsePercent("45 W")).toBeUndefined();
    expect(parsePercent("abc")).toBeUndefined();
  });

  it("reads clock event reasons as booleans", () => {
    expect(parseActive("Active")).toBe(true);
    expect(parseActive("Not Active")).toBe(false);
    expect(parseActive(" not active ")).toBe(false);
    expect(parseActive("0x0000000000000001")).toBeUndefined();
  });

  it("reads indexes and pids as non-negative integers only", () => {
    expect(parseInteger("3")).toBe(3);
    expect(parseInteger("3.5")).toBeUndefined();
    expect(parseInteger("-1")).toBeUndefined();
    expect(parseInteger("[N/A]")).toBeUndefined();
    expect(parseText(" NVIDIA H200 ")).toBe("NVIDIA H200");
  });
});
