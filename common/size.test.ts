import { describe, expect, it } from "vitest";
import { formatSize, parseSize } from "./size.js";

describe("parseSize", () => {
  it("reads bytes, binary and decimal units", () => {
    expect(parseSize("4096")).toBe(4096);
    expect(parseSize("4096B")).toBe(4096);
    expect(parseSize("64k")).toBe(65_536);
    expect(parseSize("64KiB")).toBe(65_536);
    expect(parseSize("256MiB")).toBe(268_435_456);
    expect(parseSize("256mib")).toBe(268_435_456);
    expect(parseSize("1GiB")).toBe(1_073_741_824);
    expect(parseSize("1G")).toBe(1_073_741_824);
    expect(parseSize("1.5GiB")).toBe(1_610_612_736);
    expect(parseSize("500MB")).toBe(500_000_000);
    expect(parseSize(" 2 TB ")).toBe(2_000_000_000_000);
  });

  it("refuses what is not a size, naming the accepted forms", () => {
    for (const bad of ["", "MiB", "-1MiB", "12 parsecs", "1e3", "0x10"]) {
      expect(() => parseSize(bad)).toThrow(/is not a size; use forms like/);
    }
    expect(() => parseSize("99999999TiB")).toThrow(/too large/);
  });

  it("formats back to the shortest exact binary unit", () => {
    expect(formatSize(268_435_456)).toBe("256MiB");
    expect(formatSize(1_073_741_824)).toBe("1GiB");
    expect(formatSize(1536)).toBe("1536B");
    expect(formatSize(2048)).toBe("2KiB");
    expect(formatSize(1000)).toBe("1000B");
  });
});
