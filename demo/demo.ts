/**
 * The demo fleet: a collector on the default ports and three simulated 8-GPU hosts that
 * stream over real gRPC, with a live summary after every window. With `influx` the
 * collector writes every window to InfluxDB; with `historyFleet` the hosts are the
 * backfilled history fleet instead, going on live where the backfill ended.
 */
import * as path from "node:path";
import { startCollector, type Collector } from "../collector/collector.js";
import { Agent } from "../agent/agent.js";
import { SimSource } from "../agent/sources/sim/sim-source.js";
import { loadScenario } from "../agent/sim/scenario.js";
import { packageRoot } from "../common/paths.js";
import type { Logger } from "../common/log.js";
import type { GpuState, Thresholds } from "../common/types.js";
import type { GpuSource } from "../agent/sources/source.js";
import type { CollectorInfluxOptions } from "../collector/collector.js";
import type { FleetHistoryModel } from "./fleet-history.js";
import { FleetHistorySource } from "./history-source.js";

export interface DemoHost {
  scenarioFile: string;
  labels: Record<string, string>;
}

export const DEMO_HOSTS: DemoHost[] = [
  { scenarioFile: "gpu-a01.json", labels: { site: "eu-west", pool: "training" } },
  { scenarioFile: "gpu-b01.json", labels: { site: "us-east", pool: "training" } },
  { scenarioFile: "gpu-c01.json", labels: { site: "us-east", pool: "inference" } },
];

export interface DemoOptions {
  grpcListen: string;
  httpListen: string;
  intervalMs: number;
  windowMs: number;
  /** Run this long, or until `signal` aborts. */
  durationMs?: number | undefined;
  thresholds: Thresholds;
  logger: Logger;
  out: (line: string) => void;
  signal?: AbortSignal | undefined;
  /** Write every window to this InfluxDB through the collector. */
  influx?: CollectorInfluxOptions | undefined;
  /** Run these hosts (the backfilled fleet) instead of the three scenario hosts. */
  historyFleet?: FleetHistoryModel | undefined;
}

interface LiveHost {
  source: GpuSource;
  hostname: string;
  labels: Record<string, string>;
  gpus: number;
}

function liveHosts(history: FleetHistoryModel | undefined): LiveHost[] {
  if (history) {
    return history.hosts.map((h, i) => ({
      source: new FleetHistorySource(history, i),
      hostname: h.hostname,
      labels: { ...h.labels },
      gpus: h.gpus,
    }));
  }
  return DEMO_HOSTS.map((h) => {
    const scenario = loadScenario(path.join(packageRoot(), "demo", "scenarios", h.scenarioFile));
    return {
      source: new SimSource(scenario),
      hostname: scenario.host ?? h.scenarioFile,
      labels: h.labels,
      gpus: scenario.gpus.length,
    };
  });
}

type Totals = ReturnType<Collector["summary"]>["totals"];

export async function runDemo(opts: DemoOptions): Promise<void> {
  const collector = await startCollector({
    grpcListen: opts.grpcListen,
    httpListen: opts.httpListen,
    thresholds: opts.thresholds,
    logger: opts.logger.child({ component: "collector" }),
    influx: opts.influx,
    // A few hosts, and room for agents a user points at the demo: within any host's file
    // descriptor limit, where the production defaults (20,000 agents) would warn.
    maxAgents: 100,
    maxConnections: 200,
  });
  const grpcTarget = `127.0.0.1:${collector.grpcPort}`;
  const hosts = liveHosts(opts.historyFleet);
  const gpuCount = hosts.reduce((a, h) => a + h.gpus, 0);
  const agents = hosts.map(
    (h) =>
      new Agent({
        source: h.source,
        host: { hostname: h.hostname, machineId: "", labels: h.labels },
        collectors: [grpcTarget],
        intervalMs: opts.intervalMs,
        windowMs: opts.windowMs,
        thresholds: opts.thresholds,
        logger: opts.logger.child({ component: "agent", host: h.hostname }),
      }),
  );
  opts.out(
    `trueidle demo: collector gRPC ${grpcTarget}, metrics http://${hostOf(opts.httpListen)}:${collector.httpPort}/metrics`,
  );
  opts.out(
    `${agents.length} simulated hosts, ${gpuCount} GPUs, window ${opts.windowMs / 1000}s. ` +
      `Real idle counts free_idle + held_idle + busy_phantom; reported idle is utilization.gpu < ${opts.thresholds.utilBusyPercent}%.`,
  );
  opts.out(opts.durationMs ? `Running for ${opts.durationMs / 1000}s (Ctrl-C stops sooner).` : "Running until Ctrl-C.");
  opts.out("");
  opts.out(header());

  for (const a of agents) await a.start();
  let prev: Totals = collector.summary().totals;
  const started = Date.now();
  const until = opts.durationMs ? started + opts.durationMs : Infinity;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const onAbort = (): void => wake?.();
  opts.signal?.addEventListener("abort", onAbort);
  try {
    while (!opts.signal?.aborted) {
      // Report shortly after each window boundary, once the agents' windows have arrived.
      const now = Date.now();
      const nextReport =
        Math.floor(now / opts.windowMs) * opts.windowMs + opts.windowMs + Math.min(1500, opts.windowMs / 4);
      const wakeAt = Math.min(nextReport, until);
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, Math.max(0, wakeAt - now));
      });
      if (opts.signal?.aborted) break;
      const s = collector.summary();
      // Until the first window arrives there is nothing to show; a row of zeros would read as a dead fleet.
      if (Date.now() >= nextReport - 5 && s.gpus > 0) {
        opts.out(row(new Date(), s.gpus, s.up, s.byState, prev, s.totals));
        prev = s.totals;
      }
      if (Date.now() >= until) break;
    }
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onAbort);
    await Promise.all(agents.map((a) => a.stop(3000)));
    const s = collector.summary();
    opts.out("");
    opts.out(
      `Whole run: ${pct(realIdle(s.totals.stateS), s.totals.observedS)} really idle, ` +
        `${pct(s.totals.reportedIdleS, s.totals.observedS)} reported idle, over ${Math.round(s.totals.observedS)} GPU-seconds observed.`,
    );
    await collector.stop();
  }
}

/** States in the order a reader scans them: working, then the kinds of idle, then lost. */
const SHOWN_STATES: readonly GpuState[] = ["active", "busy_phantom", "held_idle", "free_idle", "unavailable"];
const COLS = ["time", "GPUs", "up", "real idle", "reported idle", "hidden idle", ...SHOWN_STATES] as const;
const WIDTHS = [10, 6, 5, 11, 15, 13, 8, 14, 11, 11, 11];

function header(): string {
  return COLS.map((c, i) => c.padEnd(WIDTHS[i]!))
    .join("")
    .trimEnd();
}

function row(t: Date, gpus: number, up: number, byState: Record<GpuState, number>, a: Totals, b: Totals): string {
  const observed = b.observedS - a.observedS;
  const real = realIdle(b.stateS) - realIdle(a.stateS);
  const reported = b.reportedIdleS - a.reportedIdleS;
  const cells = [
    t.toTimeString().slice(0, 8),
    String(gpus),
    String(up),
    pct(real, observed),
    pct(reported, observed),
    observed > 0 ? signedPct((real - reported) / observed) : "-",
    ...SHOWN_STATES.map((s) => String(byState[s] ?? 0)),
  ];
  return cells
    .map((c, i) => c.padEnd(WIDTHS[i]!))
    .join("")
    .trimEnd();
}

function realIdle(s: Record<GpuState, number>): number {
  return s.free_idle + s.held_idle + s.busy_phantom;
}

function pct(x: number, of: number): string {
  return of > 0 ? `${((100 * x) / of).toFixed(1)}%` : "-";
}

function signedPct(r: number): string {
  return `${r >= 0 ? "+" : ""}${(100 * r).toFixed(1)}%`;
}

function hostOf(listen: string): string {
  const i = listen.lastIndexOf(":");
  const h = i > 0 ? listen.slice(0, i) : listen;
  return h === "0.0.0.0" || h === "" ? "127.0.0.1" : h;
}
