/**
 * The NvidiaSmiSource on a host with a board in MIG mode, against the fake nvidia-smi: it
 * shows each instance as a GPU of its own, as the simulator does (evaluate.ts:
 * migReadingsOf), follows instances destroyed and re-created, and falls back to the board's
 * row when MIG cannot be read. Waits are for conditions, never for fixed times.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createLogger, type Logger } from "../../../common/log.js";
import type { GpuReading } from "../../../common/types.js";
import { migReadingsOf, migUuid, readingsAt } from "../../sim/evaluate.js";
import { parseScenario, type Scenario } from "../../sim/scenario.js";
import { writeFakeNvidiaSmi } from "../../../test/helpers/fake-nvidia-smi.js";
import { MIG_INTERVAL_MS, NvidiaSmiSource, type NvidiaSmiSourceOptions } from "./nvidia-smi-source.js";
import { SamplePipeline } from "../../pipeline.js";
import { DEFAULT_THRESHOLDS } from "../../../common/types.js";

const MINUTE = 60_000;

function captureLogger(): { logger: Logger; messages: () => string[] } {
  const out: string[] = [];
  return {
    logger: createLogger({ level: "debug", write: (l) => void out.push(l) }),
    messages: () => out.map((l) => String((JSON.parse(l) as Record<string, unknown>)["msg"])),
  };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A MIG board with four instances of three profiles (one active with processes, one held by
 * a named process, one idle, one destroyed for the second hour of every two) beside a whole
 * L40S. `minutes`: how far into the two-hour cycle the file puts now.
 */
function raw(minutes: number): object {
  return {
    host: "smi-mig",
    driverVersion: "590.48.01",
    originMs: Math.max(0, Date.now() - minutes * MINUTE),
    gpus: [
      {
        model: "NVIDIA H100 80GB HBM3",
        phases: [{ for: "1h", powerW: 190 }],
        mig: [
          { profile: "3g.40gb", gi: 2, phases: [{ for: "1h", state: "active" }] },
          {
            profile: "2g.20gb",
            gi: 3,
            phases: [{ for: "1h", state: "held_idle", processes: [{ pid: 777, name: "python3", usedMiB: 6000 }] }],
          },
          { profile: "1g.10gb", gi: 9, phases: [{ for: "1h", state: "free_idle" }] },
          {
            profile: "1g.10gb",
            gi: 10,
            phases: [
              { for: "1h", state: "held_idle" },
              { for: "1h", absent: true },
            ],
          },
        ],
      },
      { model: "NVIDIA L40S", phases: [{ for: "1h", state: "active" }] },
    ],
  };
}

/** What an instance reading says that nvidia-smi can tell: identity, memory, processes. */
function seen(r: GpuReading): object {
  return {
    uuid: r.uuid,
    index: r.index,
    model: r.model,
    parentUuid: r.parentUuid,
    migProfile: r.migProfile,
    busId: r.busId,
    driverVersion: r.driverVersion,
    memUsedBytes: r.memUsedBytes,
    memTotalBytes: r.memTotalBytes,
    processes: r.processes,
    error: r.error,
  };
}

/** The source's sample against the scenario at the same instant. */
function expectLikeSimulator(got: GpuReading[], scenario: Scenario, now: number): void {
  const board = scenario.gpus[0]!;
  const instances = got.filter((r) => r.parentUuid !== undefined);
  expect(instances.map(seen)).toEqual(migReadingsOf(scenario, board, now).map(seen));
  // No utilization.gpu, no power (the board's) and no SM activity through nvidia-smi.
  for (const r of instances)
    expect([r.util, r.powerW, r.powerLimitW, r.smActive]).toEqual([undefined, undefined, undefined, undefined]);
  // The board only as its board row: power and limit, first, and no GPU's figures.
  expect(got.filter((r) => r.uuid === board.uuid)).toEqual([
    {
      uuid: board.uuid,
      index: 0,
      model: board.model,
      busId: board.busId,
      driverVersion: scenario.driverVersion,
      migBoard: true,
      powerW: readingsAt(scenario, now)[0]!.powerW,
      powerLimitW: board.powerLimitW,
      error: undefined,
    },
  ]);
  expect(got[0]!.uuid).toBe(board.uuid);
  // The whole GPU beside it as before.
  const whole = got.find((r) => r.parentUuid === undefined && !r.migBoard)!;
  const want = readingsAt(scenario, now)[1]!;
  expect(whole).toMatchObject({
    uuid: want.uuid,
    index: 1,
    util: want.util,
    memUsedBytes: want.memUsedBytes,
    powerW: want.powerW,
  });
  expect(whole.processes).toEqual(want.processes?.map(({ smUtil: _, ...p }) => p));
  expect(got.map((r) => r.index)).toEqual([0, ...instances.map(() => 0), 1]);
}

describe("NvidiaSmiSource on a board in MIG mode", () => {
  let dir: string;
  const sources: NvidiaSmiSource[] = [];
  const make = (opts: Partial<NvidiaSmiSourceOptions> & { path: string }): NvidiaSmiSource => {
    const s = new NvidiaSmiSource({
      intervalMs: 200,
      processIntervalMs: 300,
      migIntervalMs: 300,
      logger: createLogger({ level: "error", write: () => {} }),
      ...opts,
    });
    sources.push(s);
    return s;
  };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "trueidle-smi-mig-"));
  });
  afterEach(async () => {
    await Promise.all(sources.splice(0).map((s) => s.stop()));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("shows each instance as the simulator does, follows one destroyed and re-created, and says what it cannot see", async () => {
    const sub = mkdtempSync(join(dir, "life-"));
    const path = writeFakeNvidiaSmi(sub, raw(10));
    const log = captureLogger();
    const s = make({ path, logger: log.logger });
    await s.start();
    // Right after start, as `agent --once` samples.
    let scenario = parseScenario(raw(10));
    const board = scenario.gpus[0]!;
    const first = s.sample(Date.now());
    expect(first.filter((r) => r.parentUuid !== undefined).map((r) => r.migProfile)).toEqual([
      "3g.40gb",
      "2g.20gb",
      "1g.10gb",
      "1g.10gb",
    ]);
    expectLikeSimulator(first, scenario, Date.now());
    expect(first.find((r) => r.migProfile === "2g.20gb")!.processes).toEqual([
      { pid: 777 + 4000, name: "python3", usedMemoryBytes: 6000 * 1024 * 1024 },
    ]);
    expect(first.find((r) => r.uuid === migUuid(board.uuid, 9, 0, 0))!.processes).toEqual([]);
    // The board's row, not a GPU reading, gives its power.
    expect(first.filter((r) => r.migBoard)).toMatchObject([{ uuid: board.uuid, powerW: 190, migBoard: true }]);
    expect(s.limitations()).toEqual([
      "MIG instances read by nvidia-smi -L and -q -x every 0.3 s: no SM activity per instance (NVML has it, with GPM), so a held instance's real use is bounded from its board's power only, and one idle beside a busy one reads active; memory and processes only as fresh as that read; no utilization.gpu",
    ]);
    expect(s.describe()).toBe(
      `nvidia-smi (${path}, one long-lived --query-gpu loop; no SM activity); ${s.limitations()[0]}`,
    );

    // Destroyed: gone at the next MIG read.
    const gone = migUuid(board.uuid, 10, 0, 0);
    writeFileSync(join(sub, "scenario.json"), JSON.stringify(raw(70)));
    await waitFor("the destroyed instance to go", () => !s.sample(Date.now()).some((r) => r.uuid === gone));
    scenario = parseScenario(raw(70));
    expectLikeSimulator(s.sample(Date.now()), scenario, Date.now());
    expect(s.sample(Date.now()).filter((r) => r.parentUuid !== undefined)).toHaveLength(3);

    // Re-created: a new instance, with a uuid of its own.
    const reborn = migUuid(board.uuid, 10, 0, 1);
    writeFileSync(join(sub, "scenario.json"), JSON.stringify(raw(130)));
    await waitFor("the re-created instance", () => s.sample(Date.now()).some((r) => r.uuid === reborn));
    scenario = parseScenario(raw(130));
    expectLikeSimulator(s.sample(Date.now()), scenario, Date.now());
    expect(s.stats()).toEqual({ restarts: 0, parseErrors: 0 });
    // (A file rewritten between -L and -q -x may leave the board unsettled for one read.)
    expect(log.messages().filter((m) => /Cannot read MIG/.test(m))).toEqual([]);
  });

  it("gives every instance the board's error when the board cannot be read", async () => {
    const path = writeFakeNvidiaSmi(mkdtempSync(join(dir, "stale-")), raw(10));
    const s = make({ path, staleAfterMs: 1_000 });
    await s.start();
    // Ten seconds on with nothing new: the board row is stale, and so is each instance.
    const later = s.sample(Date.now() + 10_000).filter((r) => r.parentUuid !== undefined);
    expect(later).toHaveLength(4);
    for (const r of later) expect(r.error).toMatch(/went silent|sampler down/);
  });

  it("falls back to the board's row when -q -x fails, logs that once a spell, counts what it cannot parse, and recovers", async () => {
    const sub = mkdtempSync(join(dir, "broken-"));
    const fake = writeFakeNvidiaSmi(sub, raw(10));
    const fixed = join(sub, "fixed");
    // -q -x prints something no XML reader can use until the `fixed` file exists.
    const path = join(sub, "stand-in");
    writeFileSync(
      path,
      `#!/bin/sh\ncase "$*" in "-q -x") if [ ! -e '${fixed}' ]; then echo "NVIDIA-SMI is busy"; exit 0; fi;; esac\nexec '${fake}' "$@"\n`,
    );
    chmodSync(path, 0o755);
    const log = captureLogger();
    const s = make({ path, logger: log.logger });
    await s.start();
    const scenario = parseScenario(raw(10));
    const board = scenario.gpus[0]!;
    const rows = s.sample(Date.now());
    expect(rows.map((r) => r.uuid)).toEqual([board.uuid, scenario.gpus[1]!.uuid]);
    // The board as --query-gpu and --query-compute-apps give it: no util, its instances' memory and processes.
    expect(rows[0]).toMatchObject({ util: undefined, powerW: 190 });
    expect(rows[0]!.processes!.length).toBe(4);
    expect(rows.filter((r) => r.migBoard)).toEqual([]);
    expect(s.limitations()).toEqual([]);
    await waitFor("three failed MIG reads", () => s.stats().parseErrors >= 3);
    expect(log.messages().filter((m) => /Cannot read MIG instances/.test(m))).toEqual([
      "Cannot read MIG instances (nvidia-smi -q -x); boards in MIG mode show as whole boards, once what was read grows stale, until it works again.",
    ]);
    expect(s.stats().restarts).toBe(0);

    writeFileSync(fixed, "");
    await waitFor("the instances", () => s.sample(Date.now()).some((r) => r.parentUuid === board.uuid));
    expectLikeSimulator(s.sample(Date.now()), scenario, Date.now());
    expect(log.messages()).toContain("nvidia-smi reads MIG instances again.");

    // Failing again: what was read stays until it grows stale, then the board's row is back.
    rmSync(fixed);
    const errors = s.stats().parseErrors;
    await waitFor("two more failed MIG reads", () => s.stats().parseErrors >= errors + 2);
    expect(s.sample(Date.now()).filter((r) => r.parentUuid === board.uuid)).toHaveLength(4);
    expect(s.sample(Date.now() + 40_000).map((r) => r.uuid)).toEqual([board.uuid, scenario.gpus[1]!.uuid]);
    expect(log.messages().filter((m) => /Cannot read MIG instances/.test(m))).toHaveLength(2);
  });

  it("reads the real H100 captures' -L and -q text where -q -x gives nothing: four instances, gpu_burn and the memhogs on GI 2", async () => {
    const fixture = (name: string): string =>
      new URL(`../../../test/fixtures/nvidia-smi/${name}`, import.meta.url).pathname;
    const sub = mkdtempSync(join(dir, "captures-"));
    // The captured board (its masked uuid) as the fake's --query-gpu row, under load: utilization [N/A], as in MIG mode.
    const BOARD = "GPU-00000000-0000-0000-0000-000000000000";
    const fake = writeFakeNvidiaSmi(sub, {
      host: "captured",
      driverVersion: "590.48.01",
      gpus: [{ uuid: BOARD, model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", powerW: 420, util: null }] }],
    });
    const path = join(sub, "stand-in");
    writeFileSync(
      path,
      [
        "#!/bin/sh",
        'case "$*" in',
        `  "-L") exec cat '${fixture("list/h100-mig-590.48.01.txt")}';;`,
        '  "-q -x") echo "-x is not supported by this build"; exit 0;;',
        `  "-q") exec cat '${fixture("text-q/nge-h100-mig-590.48.01-load.txt")}';;`,
        "esac",
        `exec '${fake}' "$@"`,
        "",
      ].join("\n"),
    );
    chmodSync(path, 0o755);
    const s = make({ path });
    await s.start();
    await waitFor("the captured instances", () => s.sample(Date.now()).some((r) => r.parentUuid === BOARD));
    const got = s.sample(Date.now());
    expect(got.map((r) => [r.uuid, r.migProfile ?? (r.migBoard ? "board" : "")])).toEqual([
      [BOARD, "board"],
      ["MIG-00000000-0000-0000-0000-000000000000", "3g.40gb"],
      ["MIG-00000001-0000-0000-0000-000000000001", "2g.20gb"],
      ["MIG-00000002-0000-0000-0000-000000000002", "1g.10gb"],
      ["MIG-00000003-0000-0000-0000-000000000003", "1g.10gb"],
    ]);
    expect(got[0]).toMatchObject({ migBoard: true, powerW: 420 });
    // GI 2 is the 3g.40gb instance: gpu_burn and two memhogs, as the capture lists them.
    expect(got[1]!.processes!.map((p) => p.name).sort()).toEqual([
      "./gpu_burn",
      "/root/tools/memhog",
      "/root/tools/memhog",
    ]);
    for (const r of got.slice(2)) expect(r.processes).toEqual([]);
    expect(got[1]!.memTotalBytes).toBeGreaterThan(got[2]!.memTotalBytes!);
    expect(s.stats().parseErrors).toBe(0);
    // Classified: gpu_burn's instance is not called idle (the board draws 420 W), the others are free.
    const p = new SamplePipeline({ windowMs: 10_000, intervalMs: 1000, thresholds: DEFAULT_THRESHOLDS });
    p.ingest(Date.now(), got);
    expect(
      p.latest().map((x) => [x.reading.migProfile ?? "board", x.classification.state, x.classification.source]),
    ).toEqual([
      ["board", "free_idle", "none"],
      ["3g.40gb", "active", "power"],
      ["2g.20gb", "free_idle", "none"],
      ["1g.10gb", "free_idle", "none"],
      ["1g.10gb", "free_idle", "none"],
    ]);
  });

  it("reads MIG every 15 s by default, and never on a host whose boards all show utilization", async () => {
    expect(MIG_INTERVAL_MS).toBe(15_000);
    const calls = join(dir, "calls");
    writeFileSync(calls, "");
    const fake = writeFakeNvidiaSmi(mkdtempSync(join(dir, "plain-")), {
      host: "plain",
      gpus: [{ model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "held_idle" }] }],
    });
    const path = join(dir, "counting");
    writeFileSync(path, `#!/bin/sh\necho "$*" >> '${calls}'\nexec '${fake}' "$@"\n`);
    chmodSync(path, 0o755);
    const s = make({ path, migIntervalMs: 100, processIntervalMs: 100 });
    await s.start();
    const ran = (): string[] => readFileSync(calls, "utf8").split("\n");
    await waitFor("a few process reads", () => ran().filter((l) => l.startsWith("--query-compute-apps")).length >= 4);
    expect(ran().filter((l) => l === "-L" || l.startsWith("-q"))).toEqual([]);
    expect(s.describe()).not.toContain("MIG");
  });
});
