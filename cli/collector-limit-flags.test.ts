import { describe, expect, it } from "vitest";
import { parseFlags } from "./args.js";
import { collectorSpec } from "./collector-command.js";

describe("collector limit flags", () => {
  it("default to the collector's limits", () => {
    const v = parseFlags(collectorSpec, [], {});
    expect({
      agents: v["max-agents"],
      gpus: v["max-gpus"],
      perHost: v["max-gpus-per-host"],
      message: v["max-message-size"],
      batch: v["max-windows-per-batch"],
      rate: v["agent-rate-limit"],
      age: v["max-window-age"],
      future: v["max-window-future"],
    }).toEqual({
      agents: 20_000,
      gpus: 100_000,
      perHost: 64,
      message: 4 * 1024 * 1024,
      batch: 10_000,
      rate: 2_000,
      age: 7 * 86_400_000,
      future: 300_000,
    });
  });

  it("take sizes, durations and the environment", () => {
    const v = parseFlags(
      collectorSpec,
      ["--max-message-size", "16MiB", "--max-window-age", "2d", "--max-gpus", "500"],
      { TRUEIDLE_MAX_AGENTS: "300" },
    );
    expect([v["max-message-size"], v["max-window-age"], v["max-gpus"], v["max-agents"]]).toEqual([
      16 * 1024 * 1024,
      2 * 86_400_000,
      500,
      300,
    ]);
  });

  it("refuse values out of range, naming each flag", () => {
    expect(() =>
      parseFlags(collectorSpec, ["--max-message-size", "1MiB", "--max-agents", "0", "--max-window-future", "0s"], {}),
    ).toThrow(
      /--max-agents: must be at least 1 \(got 0\)\n--max-message-size: must be at least 4194304 bytes \(got 1MiB\)\n--max-window-future: must be at least 1000 ms/,
    );
  });
});
