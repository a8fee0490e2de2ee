/**
 * An agent with --state-dir killed with SIGKILL while no collector is reachable, started
 * again with the same state dir, then a collector appears: every window the first run left
 * on disk and every window the second run measured reach the collector, each exactly once.
 * Also: a second agent on the same state dir is refused, and --http-listen serves the
 * agent's metrics.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { WindowBuffer } from "../agent/shipper/window-buffer.js";
import { startCollector, type Collector } from "../collector/collector.js";
import { silentLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { GpuWindowSchema } from "../gen/trueidle/v1/ingest_pb.js";
import { freePort } from "./helpers/ports.js";
import { runTrueidle, startTrueidle, type TrueidleProcess } from "./helpers/trueidle-process.js";
import { eventually } from "./helpers/eventually.js";

const WINDOW_MS = 1000;
const GPUS = 3;

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** Samples of a metric in Prometheus text, keyed by their label set. */
async function scrape(port: number, name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) out.set(m[2] ?? "", Number(m[3]));
  }
  return out;
}
const single = async (port: number, name: string): Promise<number> => (await scrape(port, name)).get("") ?? NaN;

/** Waits until the middle of a window, so the window before a kill is closed and written. */
async function midWindow(): Promise<void> {
  await sleep((WINDOW_MS * 1.5 - (Date.now() % WINDOW_MS)) % WINDOW_MS);
}

function lastJsonLine(output: string, msg: string): Record<string, unknown> {
  const lines = output.split("\n").filter((l) => l.includes(`"msg":"${msg}"`));
  const last = lines[lines.length - 1];
  if (!last) throw new Error(`no log line "${msg}" in:\n${output.slice(-4000)}`);
  return JSON.parse(last) as Record<string, unknown>;
}

describe("agent restart with --state-dir", () => {
  it("keeps the windows of a killed agent and delivers every window once", { timeout: 120_000 }, async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-agent-restart-"));
    cleanup.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const scenario = path.join(tmp, "scenario.json");
    fs.writeFileSync(
      scenario,
      JSON.stringify({
        host: "restart-test",
        gpus: [{ model: "NVIDIA H100 80GB HBM3", count: GPUS, phases: [{ for: "3600s", state: "free_idle" }] }],
      }),
    );
    const stateDir = path.join(tmp, "state");
    const grpcPort = await freePort();
    const agentArgs = (httpPort: number): string[] => [
      "agent",
      "--source",
      "sim",
      "--scenario",
      scenario,
      "--hostname",
      "restart-test",
      "--collector",
      `127.0.0.1:${grpcPort}`,
      "--plaintext",
      "--state-dir",
      stateDir,
      "--interval",
      "100ms",
      "--window",
      "1s",
      "--http-listen",
      `127.0.0.1:${httpPort}`,
    ];
    const track = (p: TrueidleProcess): TrueidleProcess => {
      cleanup.push(() => p.stop("SIGKILL"));
      return p;
    };

    // First run: no collector; windows pile up in the state dir.
    const portA = await freePort();
    const a = track(startTrueidle(agentArgs(portA)));
    await a.waitForOutput(/The agent is sampling/);
    expect((await fetch(`http://127.0.0.1:${portA}/healthz`)).status).toBe(200);
    await eventually("the first run's windows", async () =>
      (await single(portA, "trueidle_agent_windows_total")) >= 5 * GPUS ? true : undefined,
    );
    expect(await single(portA, "trueidle_agent_connected")).toBe(0);
    await midWindow();
    a.child.kill("SIGKILL");
    await a.exited;

    // What it left on disk: whole seconds, in order, none twice, per GPU.
    const buf = await WindowBuffer.open(path.join(stateDir, "buffer"), { maxWindows: 1_000_000, logger: silentLogger });
    const stored = buf.takeUnsent(1_000_000).map((e) => fromBinary(GpuWindowSchema, e.data));
    await buf.close();
    const storedObserved = new Map<string, number>();
    const byGpu = new Map<string, number[]>();
    for (const w of stored) {
      byGpu.set(w.uuid, [...(byGpu.get(w.uuid) ?? []), Number(w.startMs)]);
      storedObserved.set(w.uuid, (storedObserved.get(w.uuid) ?? 0) + w.observedS);
    }
    expect(byGpu.size).toBe(GPUS);
    for (const starts of byGpu.values()) {
      expect(starts.length).toBeGreaterThanOrEqual(4);
      for (let i = 1; i < starts.length; i++) expect((starts[i] as number) - (starts[i - 1] as number)).toBe(WINDOW_MS);
    }

    // Second run with the same state dir: it takes over the dead agent's lock and loads the windows.
    const portB = await freePort();
    const b = track(startTrueidle(agentArgs(portB)));
    await b.waitForOutput(/The agent is sampling/);
    expect(b.output()).toContain("Took over the state directory's lock");
    expect(
      lastJsonLine(b.output(), "Loaded windows that were not acknowledged before the last stop; they are sent first."),
    ).toMatchObject({ windows: stored.length });

    // A third agent on the same state dir is refused with a message naming the fix.
    const third = await runTrueidle(agentArgs(await freePort()));
    expect(third.code).toBe(1);
    expect(third.output).toMatch(
      /Another agent \(pid \d+\) is using the state directory .*; give each agent its own --state-dir\./,
    );

    // The collector appears; the agent replays, then streams.
    const collector: Collector = await startCollector({
      grpcListen: `127.0.0.1:${grpcPort}`,
      httpListen: "127.0.0.1:0",
      thresholds: DEFAULT_THRESHOLDS,
      logger: silentLogger,
    });
    cleanup.push(() => collector.stop());
    await eventually("the replayed windows acknowledged", async () =>
      (await single(portB, "trueidle_agent_windows_acked_total")) >= stored.length + 3 * GPUS ? true : undefined,
    );
    expect(await single(portB, "trueidle_agent_connected")).toBe(1);
    expect(await single(portB, "trueidle_agent_windows_dropped_total")).toBe(0);

    expect(await b.stop("SIGTERM")).toBe(0);
    const stopped = lastJsonLine(b.output(), "The agent stopped.");
    const measured = stopped["windows_measured"] as number;
    const acked = stopped["windows_acked"] as number;
    expect(b.output()).not.toContain('"level":"error"');
    // Nothing lost: every stored window and every window of the second run acknowledged.
    expect(acked).toBe(stored.length + measured);
    // Nothing sent twice: the collector received exactly what was acknowledged.
    expect(await single(collector.httpPort, "trueidle_windows_received_total")).toBe(acked);
    // Nothing counted twice: per GPU, what the second run added is the same on every GPU
    // and at most one window length per window it measured.
    const observed = await scrape(collector.httpPort, "trueidle_gpu_observed_seconds_total");
    expect(observed.size).toBe(GPUS);
    const added = [...observed].map(([labels, total]) => {
      const uuid = /uuid="([^"]+)"/.exec(labels)?.[1] ?? "";
      return total - (storedObserved.get(uuid) ?? NaN);
    });
    const perGpu = measured / GPUS;
    for (const x of added) {
      expect(x).toBeCloseTo(added[0] as number, 6);
      expect(x).toBeLessThanOrEqual(perGpu * (WINDOW_MS / 1000) + 1e-6);
      // Only the first (started mid-window) and last (cut by the stop) windows may be partial.
      expect(x).toBeGreaterThanOrEqual((perGpu - 2) * (WINDOW_MS / 1000) - 1e-6);
    }
  });
});
