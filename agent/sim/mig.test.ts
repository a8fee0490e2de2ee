/**
 * MIG boards in scenarios: parsing, and what the simulator source shows of their instances.
 */
import { describe, expect, it } from "vitest";
import { TrueidleError } from "../../common/errors.js";
import { DEFAULT_THRESHOLDS } from "../../common/types.js";
import { classify, reportedUtil } from "../model/idle-model.js";
import { migReadingsOf, migUuid, readingsAt, sourceReadingsAt } from "./evaluate.js";
import { parseScenario } from "./scenario.js";

const board = (mig: unknown[], extra: Record<string, unknown> = {}) => ({
  gpus: [{ model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1m", powerW: 190 }], mig, ...extra }],
});

const SCENARIO = parseScenario(
  board([
    { profile: "3g.40gb", gi: 2, phases: [{ for: "1m", state: "active" }] },
    { profile: "2g.20gb", gi: 3, phases: [{ for: "1m", state: "held_idle" }] },
    { profile: "1g.10gb", gi: 9, phases: [{ for: "1m", state: "free_idle" }] },
    {
      profile: "1g.10gb",
      gi: 10,
      phases: [
        { for: "40s", state: "held_idle" },
        { for: "20s", absent: true },
      ],
    },
  ]),
);

describe("MIG in scenarios", () => {
  it("parses instances with their ids, profile memory and phases", () => {
    const mig = SCENARIO.gpus[0]!.mig!;
    expect(mig.map((m) => [m.profile, m.gpuInstanceId, m.computeInstanceId, m.memTotalMiB, m.cycleMs])).toEqual([
      ["3g.40gb", 2, 0, 40_960, 60_000],
      ["2g.20gb", 3, 0, 20_480, 60_000],
      ["1g.10gb", 9, 0, 10_240, 60_000],
      ["1g.10gb", 10, 0, 10_240, 60_000],
    ]);
  });

  it.each([
    ["a missing gi", [{ profile: "1g.10gb", phases: [{ for: "1m" }] }], /mig\[0\]\.gi .*required/],
    [
      "two instances with the same ids",
      [
        { profile: "1g.10gb", gi: 9, phases: [{ for: "1m" }] },
        { profile: "1g.10gb", gi: 9, phases: [{ for: "1m" }] },
      ],
      /another instance has gi 9 and ci 0/,
    ],
    [
      "a profile with a space",
      [{ profile: "1g 10gb", gi: 9, phases: [{ for: "1m" }] }],
      /profile must be a MIG profile/,
    ],
    [
      "eight instances",
      Array.from({ length: 8 }, (_, i) => ({ profile: "1g.10gb", gi: i, phases: [{ for: "1m" }] })),
      /1 to 7 instances/,
    ],
    ["an unknown key", [{ profile: "1g.10gb", gi: 9, util: 5, phases: [{ for: "1m" }] }], /unknown key "util"/],
    [
      "absent not a boolean",
      [{ profile: "1g.10gb", gi: 9, phases: [{ for: "1m", absent: "yes" }] }],
      /absent must be true or false/,
    ],
  ])("refuses %s, naming the field", (_name, mig, message) => {
    expect(() => parseScenario(board(mig as unknown[]))).toThrow(TrueidleError);
    expect(() => parseScenario(board(mig as unknown[]))).toThrow(message);
  });

  it("refuses an absent phase on a whole GPU", () => {
    expect(() => parseScenario({ gpus: [{ phases: [{ for: "1m", absent: true }] }] })).toThrow(
      /gpus\[0\]\.phases\[0\]\.absent: only a MIG instance's phase may be absent/,
    );
  });
});

describe("what the simulator source shows of a MIG board", () => {
  const g = SCENARIO.gpus[0]!;

  it("each instance present as a GPU of its own: its MIG uuid, its board and profile, no util and no power", () => {
    const at = 10_000;
    const [row, ...rs] = sourceReadingsAt(SCENARIO, at);
    // First the board's row: only its power and limit.
    const whole = readingsAt(SCENARIO, at)[0]!;
    expect(row).toEqual({
      uuid: g.uuid,
      index: 0,
      model: g.model,
      busId: g.busId,
      driverVersion: SCENARIO.driverVersion,
      migBoard: true,
      powerW: whole.powerW,
      powerLimitW: g.powerLimitW,
      error: undefined,
    });
    expect(rs).toHaveLength(4);
    for (const r of rs) {
      expect(r.uuid).toMatch(/^MIG-[0-9a-f]{8}-/);
      expect(r).toMatchObject({ index: 0, parentUuid: g.uuid });
      expect([r.util, r.powerW]).toEqual([undefined, undefined]);
    }
    expect(rs.map((r) => r.migProfile)).toEqual(["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]);
    expect(rs.map((r) => r.smActive)).toEqual([0.72, 0, 0, 0]);
    expect(rs.map((r) => r.memTotalBytes)).toEqual([40, 20, 10, 10].map((x) => x * 2 ** 30));
    // nvidia-smi's --query-gpu rows stay per board.
    expect(readingsAt(SCENARIO, at).map((r) => r.uuid)).toEqual([g.uuid]);
  });

  it("classifies each instance in the state its phase gives, reported by whether it is held", () => {
    const states = sourceReadingsAt(SCENARIO, 10_000)
      .slice(1)
      .map((r) => {
        const c = classify(r, {}, DEFAULT_THRESHOLDS);
        return [c.state, reportedUtil(r, c)];
      });
    expect(states).toEqual([
      ["active", 100],
      ["held_idle", 100],
      ["free_idle", 0],
      ["held_idle", 100],
    ]);
  });

  it("a destroyed instance is gone; re-created, it is a new instance with a uuid of its own", () => {
    const before = migReadingsOf(SCENARIO, g, 30_000).find((r) => r.uuid === migUuid(g.uuid, 10, 0, 0));
    expect(before).toBeDefined();
    expect(migReadingsOf(SCENARIO, g, 50_000).map((r) => r.migProfile)).toEqual(["3g.40gb", "2g.20gb", "1g.10gb"]);
    const after = migReadingsOf(SCENARIO, g, 70_000);
    expect(after).toHaveLength(4);
    expect(after[3]!.uuid).toBe(migUuid(g.uuid, 10, 0, 1));
    expect(after[3]!.uuid).not.toBe(before!.uuid);
    // The same instant, the same answer.
    expect(migReadingsOf(SCENARIO, g, 70_000)).toEqual(after);
  });

  it("leaves SM activity out where the board has no GPM", () => {
    const noGpm = parseScenario(
      board([{ profile: "1g.10gb", gi: 9, phases: [{ for: "1m", state: "active" }] }], { gpm: false }),
    );
    expect(sourceReadingsAt(noGpm, 0)[1]!.smActive).toBeUndefined();
  });
});
