import { describe, expect, it } from "vitest";
import { parseFlags, UsageError, type CommandSpec } from "./args.js";

const spec: CommandSpec = {
  name: "t",
  summary: "t",
  usage: "t",
  flags: [{ name: "max-size", type: "size", default: "256MiB", min: 1024 * 1024, help: "A bound." }],
};

describe("size flags", () => {
  it("take binary and decimal units, from the command line or the environment", () => {
    expect(parseFlags(spec, [], {})["max-size"]).toBe(256 * 1024 * 1024);
    expect(parseFlags(spec, ["--max-size", "1GiB"], {})["max-size"]).toBe(1024 ** 3);
    expect(parseFlags(spec, ["--max-size=500MB"], {})["max-size"]).toBe(500_000_000);
    expect(parseFlags(spec, [], { TRUEIDLE_MAX_SIZE: "2MiB" })["max-size"]).toBe(2 * 1024 * 1024);
  });

  it("name the flag and the accepted forms when the value is bad or below the minimum", () => {
    expect(() => parseFlags(spec, ["--max-size", "lots"], {})).toThrow(UsageError);
    expect(() => parseFlags(spec, ["--max-size", "lots"], {})).toThrow(
      /--max-size: "lots" is not a size; use forms like/,
    );
    expect(() => parseFlags(spec, ["--max-size", "1KiB"], {})).toThrow(
      /--max-size: must be at least 1048576 bytes \(got 1KiB\)/,
    );
  });
});
