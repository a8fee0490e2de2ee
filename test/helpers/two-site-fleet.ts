/**
 * A small fleet for testing what reads Prometheus (rules, dashboards): two hosts at two
 * sites, each streaming to its own collector subprocess (so every query must sum over
 * collectors), every GPU in one state for the whole run, and a real Prometheus scraping both
 * collectors with the given rule files.
 */
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { freePort } from "./ports.js";
import { startPrometheus, type PrometheusHandle } from "./prometheus.js";
import { startTrueidle, type TrueidleProcess } from "./trueidle-process.js";

export interface FleetGpu {
  /** The state the idle model must give it. */
  state: string;
  /** utilization.gpu < 5 %. */
  reportedIdle: boolean;
  /** Its scenario phase (agent/sim/scenario.ts). */
  phase: Record<string, unknown>;
}

export interface FleetHost {
  host: string;
  site: string;
  labels: string[];
  model: string;
  gpus: FleetGpu[];
}

/** The two hosts, named `<prefix>-h1` and `<prefix>-h2`; `firstLabels` are added to the first. */
export function twoSiteHosts(prefix: string, firstLabels: string[] = []): FleetHost[] {
  return [
    {
      host: `${prefix}-h1`,
      site: "lab-a",
      labels: ["site=lab-a", ...firstLabels],
      model: "NVIDIA H100 80GB HBM3",
      gpus: [
        { state: "active", reportedIdle: false, phase: { state: "active" } },
        { state: "busy_phantom", reportedIdle: false, phase: { state: "busy_phantom" } },
        { state: "held_idle", reportedIdle: true, phase: { state: "held_idle" } },
        { state: "free_idle", reportedIdle: true, phase: { state: "free_idle" } },
      ],
    },
    {
      host: `${prefix}-h2`,
      site: "lab-b",
      labels: ["site=lab-b"],
      model: "NVIDIA L40S",
      gpus: [
        // Persistence mode off: reads 100 % with nothing on it.
        { state: "free_idle", reportedIdle: false, phase: { state: "free_busy" } },
        { state: "unavailable", reportedIdle: false, phase: { error: "Unknown Error" } },
        // NVENC at 70 % moves utilization.gpu only to 7 %: real work the usual tools miss.
        { state: "active", reportedIdle: false, phase: { util: 7, powerW: 60, memUsedMiB: 2048, media: 70, processes: 1 } },
      ],
    },
  ];
}

const REAL_IDLE = new Set(["free_idle", "held_idle", "busy_phantom"]);

/** Each site's real, reported and hidden idle ratio, as the scenario implies. */
export function siteRatios(hosts: readonly FleetHost[]): Array<{ site: string; model: string; real: number; reported: number; hidden: number }> {
  return hosts.map((h) => {
    const real = h.gpus.filter((g) => REAL_IDLE.has(g.state)).length / h.gpus.length;
    const reported = h.gpus.filter((g) => g.reportedIdle).length / h.gpus.length;
    return { site: h.site, model: h.model, real, reported, hidden: real - reported };
  });
}

export interface TwoSiteFleet {
  collectors: TrueidleProcess[];
  agents: TrueidleProcess[];
  prom: PrometheusHandle;
  stop(): Promise<void>;
}

/**
 * Starts a collector and an agent (1 s samples, 2 s windows) per host, scenario files in
 * `dir`, and Prometheus scraping the collectors every `scrapeIntervalMs` with `ruleFiles`.
 * `collectorArgs(i)` adds flags to the i-th collector.
 */
export async function startTwoSiteFleet(opts: {
  hosts: readonly FleetHost[];
  dir: string;
  ruleFiles: string[];
  scrapeIntervalMs: number;
  collectorArgs?: (i: number) => string[];
}): Promise<TwoSiteFleet> {
  const collectors: TrueidleProcess[] = [];
  const agents: TrueidleProcess[] = [];
  const targets: string[] = [];
  for (const [i, h] of opts.hosts.entries()) {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    collectors.push(startTrueidle([
      "collector", "--plaintext", "--grpc-listen", `127.0.0.1:${grpcPort}`, "--http-listen", `127.0.0.1:${httpPort}`, "--log-level", "warn",
      ...(opts.collectorArgs?.(i) ?? []),
    ]));
    targets.push(`127.0.0.1:${httpPort}`);
    const scenario = path.join(opts.dir, `${h.host}.json`);
    writeFileSync(scenario, JSON.stringify({
      host: h.host,
      driverVersion: "550.90.07",
      gpus: h.gpus.map((g) => ({ model: h.model, phases: [{ for: "1h", ...g.phase }] })),
    }));
    agents.push(startTrueidle([
      "agent", "--plaintext", "--source", "sim", "--scenario", scenario, "--collector", `127.0.0.1:${grpcPort}`,
      "--hostname", h.host, ...h.labels.flatMap((l) => ["--label", l]),
      "--interval", "1s", "--window", "2s", "--log-level", "warn",
    ]));
  }
  const stopProcesses = async (): Promise<void> => {
    await Promise.all(agents.map((a) => a.stop()));
    await Promise.all(collectors.map((c) => c.stop()));
  };
  let prom: PrometheusHandle;
  try {
    prom = await startPrometheus({ scrapeTargets: targets, scrapeIntervalMs: opts.scrapeIntervalMs, ruleFiles: opts.ruleFiles });
  } catch (err) {
    await stopProcesses();
    throw err;
  }
  return {
    collectors,
    agents,
    prom,
    stop: async () => {
      await stopProcesses();
      await prom.stop();
    },
  };
}
