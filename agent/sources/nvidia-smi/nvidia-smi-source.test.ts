/**
 * The real NvidiaSmiSource against real subprocesses: the fake nvidia-smi (driven by
 * scenario files) and small sh stand-ins. Waits are for conditions, never for fixed times.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TrueidleError } from "../../../common/errors.js";
import { createLogger, type Logger } from "../../../common/log.js";
import type { GpuReading } from "../../../common/types.js";
import { readingsAt } from "../../sim/evaluate.js";
import { parseScenario } from "../../sim/scenario.js";
import { writeFakeNvidiaSmi } from "../../../test/helpers/fake-nvidia-smi.js";
import { NvidiaSmiSource, type NvidiaSmiSourceOptions } from "./nvidia-smi-source.js";

const H200_CSV = fileURLToPath(
  new URL("../../../test/fixtures/nvidia-smi/csv/query-gpu-h200-590.48.01-load.csv", import.meta.url),
);

function captureLogger(): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const out: string[] = [];
  return {
    logger: createLogger({ level: "debug", write: (l) => void out.push(l) }),
    lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function script(dir: string, name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

/** The signals the fake prints, as the source should read them back. */
function expectMatches(
  got: GpuReading,
  want: GpuReading,
  opts: { media?: number } = { media: want.media ?? 0 },
  why?: string,
): void {
  expect(got.error, why).toBeUndefined();
  expect(got, why).toMatchObject({
    uuid: want.uuid,
    index: want.index,
    model: want.model,
    busId: want.busId,
    driverVersion: want.driverVersion,
    util: want.util,
    memUsedBytes: want.memUsedBytes,
    memTotalBytes: want.memTotalBytes,
    powerW: want.powerW,
    powerLimitW: want.powerLimitW,
    media: opts.media,
  });
  // nvidia-smi cannot see per-process SM utilization: the source leaves it unknown.
  expect(got.processes, why).toEqual(want.processes?.map(({ smUtil: _, ...p }) => p));
}

describe("NvidiaSmiSource", () => {
  let dir: string;
  const sources: NvidiaSmiSource[] = [];
  const make = (opts: Partial<NvidiaSmiSourceOptions> & { path: string }): NvidiaSmiSource => {
    const s = new NvidiaSmiSource({
      intervalMs: 200,
      processIntervalMs: 300,
      logger: createLogger({ level: "error", write: () => {} }),
      ...opts,
    });
    sources.push(s);
    return s;
  };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "trueidle-smi-source-"));
  });
  afterEach(async () => {
    await Promise.all(sources.splice(0).map((s) => s.stop()));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads every state of the scenario through a real nvidia-smi loop", async () => {
    const raw = {
      host: "states",
      gpus: [
        { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "free_idle" }] },
        { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "held_idle" }] },
        { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "busy_phantom" }] },
        { model: "NVIDIA L40S", phases: [{ for: "1h", state: "active", media: 40 }] },
        { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "unavailable" }] },
      ],
    };
    const scenario = parseScenario(raw);
    const log = captureLogger();
    const s = make({ path: writeFakeNvidiaSmi(join(dir), raw), logger: log.logger });
    expect(s.sample(Date.now())).toEqual([]);
    await s.start();
    const got = s.sample(Date.now());
    const want = readingsAt(scenario, Date.now());
    // What the source logged, should anything below fail.
    const logged = JSON.stringify(log.lines().filter((l) => l["level"] !== "debug"));
    expect(
      got.map((r) => r.index),
      logged,
    ).toEqual([0, 1, 2, 3, 4]);
    for (const i of [0, 1, 2, 3]) expectMatches(got[i]!, want[i]!, { media: want[i]!.media ?? 0 }, logged);
    expect(got[3]!.media).toBe(40);
    expect(got[0]!.idleReason).toBe(true);
    expect(got[2]!.idleReason).toBe(false);
    // Lost before the source started: no uuid to be had, still counted as unavailable.
    expect(got[4]).toMatchObject({ index: 4, error: "GPU is lost" });
    expect(s.stats(), logged).toEqual({ restarts: 0, parseErrors: 0 });
    // Nothing fresh for a minute: every GPU reads as unavailable, none as 0.
    for (const r of s.sample(Date.now() + 60_000)) expect(r.error).toMatch(/went silent|sampler down|GPU is lost/);
  });

  it("keeps reading the other GPUs when one starts failing, and restarts a child that exits", async () => {
    const good = {
      host: "flaky",
      exitAfter: "800ms",
      gpus: [
        { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "active" }] },
        { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "held_idle" }] },
        { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "free_idle" }] },
      ],
    };
    const sub = join(dir, "flaky");
    rmSync(sub, { recursive: true, force: true });
    mkdirSync(sub);
    const path = writeFakeNvidiaSmi(sub, good);
    const s = make({ path });
    await s.start();
    const before = s.sample(Date.now());
    expect(before.every((r) => r.error === undefined)).toBe(true);
    // From now on GPU 1 cannot be read. Whichever child reads the new file, the source
    // already knows GPU 1's uuid from the start-up snapshot.
    const bad = {
      ...good,
      gpus: good.gpus.map((g, i) => (i === 1 ? { ...g, phases: [{ for: "1h", error: "Unknown Error" }] } : g)),
    };
    writeFileSync(join(sub, "scenario.json"), JSON.stringify(bad));
    await waitFor("GPU 1 to fail", () => s.sample(Date.now())[1]?.error === "Unknown Error");
    // The child exits every 800 ms (exitAfter) and is restarted each time.
    await waitFor("a restart", () => s.stats().restarts >= 1);
    const now = Date.now();
    const got = s.sample(now);
    const want = readingsAt(parseScenario(bad), now);
    expect(got[1]).toEqual({
      uuid: before[1]!.uuid,
      index: 1,
      model: before[1]!.model,
      busId: before[1]!.busId,
      driverVersion: before[1]!.driverVersion,
      error: "Unknown Error",
    });
    expectMatches(got[0]!, want[0]!);
    expectMatches(got[2]!, want[2]!);
  });

  it("restarts a child that goes silent and counts it", async () => {
    const line =
      "2025/01/01 00:00:00.000, 0, GPU-5117e47-0000-0000-0000-000000000000, 00000000:01:00.0, Tesla T4, 535.104.05, 0, 0, 15360, 27.50, 70.00, Active, 0, 0";
    const path = script(
      dir,
      "silent-smi",
      [
        'case "$*" in *--help-query-gpu*) exit 2;; *--query-compute-apps*) exit 0;; esac',
        `echo "${line}"`,
        'case "$*" in *-lms*) exec sleep 600;; esac',
      ].join("\n"),
    );
    const log = captureLogger();
    const s = make({ path, staleAfterMs: 800, logger: log.logger });
    await s.start();
    expect(s.sample(Date.now())[0]).toMatchObject({
      model: "Tesla T4",
      util: 0,
      powerW: 27.5,
      idleReason: true,
      processes: [],
    });
    await waitFor("a restart", () => s.stats().restarts >= 1);
    expect(log.lines().some((l) => typeof l["msg"] === "string" && /went silent/.test(l["msg"]))).toBe(true);
    expect(log.lines().some((l) => /conservative set of fields/.test(String(l["msg"])))).toBe(true);
  });

  it("polls a stand-in that prints one snapshot and exits", async () => {
    const counter = join(dir, "calls");
    writeFileSync(counter, "");
    // The dumbest stand-in: the same captured CSV for every question, help included.
    const path = script(dir, "one-shot-smi", `echo x >> '${counter}'\ncat '${H200_CSV}'`);
    const log = captureLogger();
    const s = make({ path, logger: log.logger });
    await s.start();
    const calls = (): number => readFileSync(counter, "utf8").split("\n").filter(Boolean).length;
    const atStart = calls();
    await waitFor("polling", () => calls() >= atStart + 4);
    const [r] = s.sample(Date.now());
    expect(r).toMatchObject({
      model: "NVIDIA H200",
      util: 100,
      powerW: 627.4,
      powerLimitW: 700,
      memUsedBytes: 32362 * 1024 * 1024,
    });
    expect(r!.error).toBeUndefined();
    // It cannot list processes, so they are unknown rather than none.
    expect(r!.processes).toBeUndefined();
    expect(s.stats().restarts).toBe(0);
    const msgs = log.lines().map((l) => String(l["msg"]));
    expect(msgs.filter((m) => /polling it once per interval/.test(m))).toHaveLength(1);
    expect(msgs.filter((m) => /compute process list/.test(m))).toHaveLength(1);
  });

  it("drops fields an old driver rejects when its help cannot be read", async () => {
    const raw = {
      host: "old",
      driverVersion: "470.57.02",
      gpus: [{ model: "NVIDIA A100-SXM4-80GB", phases: [{ for: "1h", state: "held_idle" }] }],
    };
    const log = captureLogger();
    const s = make({
      path: writeFakeNvidiaSmi(join(dir), raw),
      logger: log.logger,
      spawnEnv: { ...process.env, FAKE_NVIDIA_SMI_NO_HELP: "1" },
    });
    await s.start();
    const [r] = s.sample(Date.now());
    // The 465 help lists no encoder or decoder utilization: media is unknown, not 0.
    expectMatches(r!, readingsAt(parseScenario(raw), Date.now())[0]!, {});
    expect(r!.idleReason).toBe(true);
    const dropped = log
      .lines()
      .filter((l) => /does not know the field/.test(String(l["msg"])))
      .map((l) => String(l["msg"]));
    expect(dropped.join(" ")).toContain('"utilization.encoder"');
  });

  it("reads the old gpu_idle name from a driver whose help lists only it", async () => {
    const raw = {
      host: "old2",
      driverVersion: "470.57.02",
      gpus: [{ model: "NVIDIA A100-SXM4-80GB", phases: [{ for: "1h", state: "free_idle" }] }],
    };
    const log = captureLogger();
    const s = make({ path: writeFakeNvidiaSmi(join(dir), raw), logger: log.logger });
    await s.start();
    expect(s.sample(Date.now())[0]).toMatchObject({ idleReason: true, util: 0 });
    expect(log.lines().find((l) => /source started/.test(String(l["msg"])))?.["fields"]).toContain(
      "clocks_throttle_reasons.gpu_idle",
    );
  });

  it("fails clearly when the executable is missing", async () => {
    const s = make({ path: join(dir, "no-such-nvidia-smi") });
    const err = await s.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrueidleError);
    expect((err as TrueidleError).code).toBe("source_failed");
    expect((err as TrueidleError).message).toBe(
      `nvidia-smi not found at ${join(dir, "no-such-nvidia-smi")}: install the NVIDIA driver, or pass --nvidia-smi PATH`,
    );
    await s.stop();
  });

  it("fails naming the executable and what it printed when it gives no readings", async () => {
    const path = script(
      dir,
      "broken-smi",
      `echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."\nexit 9`,
    );
    const err = await make({ path })
      .start()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrueidleError);
    expect((err as Error).message).toContain(path);
    expect((err as Error).message).toContain("exit code 9");
    expect((err as Error).message).toContain("couldn't communicate with the NVIDIA driver");
  });

  it("gives up after the start timeout, saying what the executable printed", async () => {
    const path = script(
      dir,
      "hanging-smi",
      'case "$*" in *--help-query-gpu*) exit 2;; esac\necho "waiting for the driver"\nexec sleep 600',
    );
    const err = await make({ path, startTimeoutMs: 1_000 })
      .start()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrueidleError);
    expect((err as Error).message).toBe(`${path} gave no GPU readings within 1 s; it printed: waiting for the driver`);
  });

  it("can be stopped before start and twice", async () => {
    const s = make({ path: join(dir, "never-run") });
    await s.stop();
    await s.stop();
    expect(s.sample(Date.now())).toEqual([]);
    expect(s.stats()).toEqual({ restarts: 0, parseErrors: 0 });
  });
});
