/**
 * End to end: agents as subprocesses sampling through a fake nvidia-smi subprocess, and
 * again through NVML (the stub libnvidia-ml.so driven by the same scenarios) → collector
 * subprocess over real gRPC → scraped by a real Prometheus → PromQL checks every GPU's
 * state and the fleet's real and reported idle ratios against what the scenarios imply.
 * Every check runs for both sources with the same expectations.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { freePort } from "../helpers/ports.js";
import { startPrometheus, type PrometheusHandle } from "../helpers/prometheus.js";
import { GPU_SOURCES } from "../helpers/gpu-sources.js";
import { startTrueidle, type TrueidleProcess } from "../helpers/trueidle-process.js";

const WINDOW = "2s";

/** Each GPU sits in one state the whole run; `reportedIdle`: utilization.gpu < 5 %. */
const HOSTS = [
  {
    host: "e2e-h1",
    labels: ["site=lab-a", "pool=training"],
    gpus: [
      { model: "NVIDIA H100 80GB HBM3", state: "active", reportedIdle: false, phase: { state: "active" } },
      { model: "NVIDIA H100 80GB HBM3", state: "busy_phantom", reportedIdle: false, phase: { state: "busy_phantom" } },
      { model: "NVIDIA H100 80GB HBM3", state: "held_idle", reportedIdle: true, phase: { state: "held_idle" } },
      { model: "NVIDIA H100 80GB HBM3", state: "free_idle", reportedIdle: true, phase: { state: "free_idle" } },
    ],
  },
  {
    host: "e2e-h2",
    labels: ["site=lab-b"],
    gpus: [
      // Persistence mode off: reads 100 % with nothing on it.
      { model: "NVIDIA L40S", state: "free_idle", reportedIdle: false, phase: { state: "free_busy" } },
      { model: "NVIDIA L40S", state: "unavailable", reportedIdle: false, phase: { error: "Unknown Error" } },
      // NVENC at 70 % moves utilization.gpu only to 7 %: real work the usual tools miss.
      {
        model: "NVIDIA L40S",
        state: "active",
        reportedIdle: false,
        phase: { util: 7, powerW: 60, memUsedMiB: 2048, media: 70, processes: 1 },
      },
    ],
  },
] as const;

const REAL_IDLE = new Set(["free_idle", "held_idle", "busy_phantom"]);

describe.each(GPU_SOURCES)("agents (through $name) → collector → Prometheus", (kind) => {
  let dir: string;
  let collector: TrueidleProcess;
  const agents: TrueidleProcess[] = [];
  let prom: PrometheusHandle;
  const uuidState = new Map<string, string>();

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "trueidle-e2e-"));
    const grpcPort = await freePort();
    const httpPort = await freePort();
    collector = startTrueidle([
      "collector",
      "--plaintext",
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--log-level",
      "warn",
    ]);
    prom = await startPrometheus({ scrapeTargets: [`127.0.0.1:${httpPort}`], scrapeIntervalMs: 1000 });
    for (const h of HOSTS) {
      const hostDir = path.join(dir, h.host);
      mkdirSync(hostDir);
      const src = kind.prepare(hostDir, {
        host: h.host,
        driverVersion: "550.90.07",
        gpus: h.gpus.map((g) => ({ model: g.model, phases: [{ for: "1h", ...g.phase }] })),
      });
      agents.push(
        startTrueidle(
          [
            "agent",
            "--plaintext",
            ...src.flags,
            "--collector",
            `127.0.0.1:${grpcPort}`,
            "--hostname",
            h.host,
            ...h.labels.flatMap((l) => ["--label", l]),
            "--interval",
            "1s",
            "--window",
            WINDOW,
            "--log-level",
            "warn",
          ],
          src.env,
        ),
      );
    }
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await collector?.stop();
    await prom?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("puts every GPU in the state its scenario implies", async () => {
    const total = HOSTS.reduce((n, h) => n + h.gpus.length, 0);
    const current = await prom.waitFor("trueidle_gpu_state == 1", (r) => r.length === total, 90_000);
    for (const h of HOSTS) {
      const got = current
        .filter((s) => s.metric["host"] === h.host)
        .sort((a, b) => Number(a.metric["gpu"]) - Number(b.metric["gpu"]));
      expect(
        got.map((s) => s.metric["state"]),
        `states of ${h.host}`,
      ).toEqual(h.gpus.map((g) => g.state));
      for (const s of got) uuidState.set(s.metric["uuid"]!, s.metric["state"]!);
      expect(got.every((s) => s.metric["site"] === h.labels[0].slice(5))).toBe(true);
    }
    const up = await prom.query("trueidle_gpu_up");
    expect(up).toHaveLength(total);
    expect(up.every((s) => s.value === 1)).toBe(true);
    const media = await prom.query('trueidle_gpu_real_utilization_ratio{host="e2e-h2", gpu="2"}');
    expect(media).toHaveLength(1);
    expect(media[0]!.metric["source"]).toBe("media");
    expect(media[0]!.value).toBeCloseTo(0.7, 6);
  });

  it("gives the real and reported idle ratios the scenarios imply, per host and for the fleet", async () => {
    // Wait until every GPU has several windows behind it.
    await prom.waitFor("min(trueidle_gpu_observed_seconds_total)", (r) => (r[0]?.value ?? 0) >= 6, 60_000);
    const at = Date.now();
    const byHost = async (q: string): Promise<Map<string, number>> =>
      new Map((await prom.query(`sum by (host) (${q})`, at)).map((s) => [s.metric["host"]!, s.value]));
    const observed = await byHost("trueidle_gpu_observed_seconds_total");
    const realIdle = await byHost('trueidle_gpu_state_seconds_total{state=~"free_idle|held_idle|busy_phantom"}');
    const reportedIdle = await byHost("trueidle_gpu_reported_idle_seconds_total");

    let fleetObserved = 0,
      fleetReal = 0,
      fleetReported = 0;
    for (const h of HOSTS) {
      const n = h.gpus.length;
      const expectReal = h.gpus.filter((g) => REAL_IDLE.has(g.state)).length / n;
      const expectReported = h.gpus.filter((g) => g.reportedIdle).length / n;
      const obs = observed.get(h.host)!;
      expect(obs, `observed seconds of ${h.host}`).toBeGreaterThan(0);
      expect(realIdle.get(h.host)! / obs, `real idle ratio of ${h.host}`).toBeCloseTo(expectReal, 9);
      expect((reportedIdle.get(h.host) ?? 0) / obs, `reported idle ratio of ${h.host}`).toBeCloseTo(expectReported, 9);
      fleetObserved += obs;
      fleetReal += expectReal * obs;
      fleetReported += expectReported * obs;
    }
    const [fleetRealQ] = await prom.query(
      'sum(trueidle_gpu_state_seconds_total{state=~"free_idle|held_idle|busy_phantom"}) / sum(trueidle_gpu_observed_seconds_total)',
      at,
    );
    const [fleetReportedQ] = await prom.query(
      "sum(trueidle_gpu_reported_idle_seconds_total) / sum(trueidle_gpu_observed_seconds_total)",
      at,
    );
    expect(fleetRealQ!.value).toBeCloseTo(fleetReal / fleetObserved, 9);
    expect(fleetReportedQ!.value).toBeCloseTo(fleetReported / fleetObserved, 9);
    // The point of trueidle: the fleet is far more idle than the usual tools say.
    expect(fleetRealQ!.value - fleetReportedQ!.value).toBeGreaterThan(0.2);

    const fleetGpus = await prom.query("sum by (state) (trueidle_fleet_gpus)");
    const counts = Object.fromEntries(fleetGpus.map((s) => [s.metric["state"], s.value]));
    expect(counts).toMatchObject({ active: 2, busy_phantom: 1, held_idle: 1, free_idle: 2, unavailable: 1 });
  });

  it("marks a silent host's GPUs down after three windows", async () => {
    const h2 = agents[1]!;
    await h2.stop("SIGKILL");
    await prom.waitFor('trueidle_gpu_up{host="e2e-h2"} == 0', (r) => r.length === 3, 60_000);
    const h1 = await prom.query('trueidle_gpu_up{host="e2e-h1"} == 1');
    expect(h1).toHaveLength(4);
  });
});
