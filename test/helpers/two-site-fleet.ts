/**
 * A small fleet for testing what reads Prometheus (rules, dashboards): two hosts at two
 * sites, each streaming to its own collector subprocess (so every query must sum over
 * collectors), every GPU in one state for the whole run, some held by a pod or a batch job
 * the whole run (told to the agent the ways a node tells it: a kubelet pod-resources server,
 * a job mapping directory), and a real Prometheus scraping both collectors with the given
 * rule files.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { fakeUuid } from "../../agent/sim/scenario.js";
import { gpuPod, PodResourcesServer } from "./pod-resources-server.js";
import { freePort } from "./ports.js";
import { startPrometheus, type PrometheusHandle } from "./prometheus.js";
import { startTrueidle, type TrueidleProcess } from "./trueidle-process.js";

/** Who a scheduler gave a GPU to: a pod's container (pod-resources API) or a batch job and its user (job mapping file). */
export type FleetOwner = { namespace: string; pod: string; container: string } | { job: string; user: string };

export interface FleetGpu {
  /** The state the idle model must give it. */
  state: string;
  /** utilization.gpu < 5 %. */
  reportedIdle: boolean;
  /** Its scenario phase (agent/sim/scenario.ts). */
  phase: Record<string, unknown>;
  /** Allocated to this owner the whole run (only on GPUs held anyway, or lost: an allocation holds a GPU). */
  owner?: FleetOwner;
}

export interface FleetHost {
  host: string;
  site: string;
  labels: string[];
  model: string;
  gpus: FleetGpu[];
}

/**
 * The two hosts, named `<prefix>-h1` and `<prefix>-h2`; `firstLabels` are added to the first.
 * Owners: on the first host a pod works on the active GPU, Slurm job 4242 of alice holds the
 * busy_phantom one and pod research/notebook-b the held_idle one (a pod and a job on one
 * host, so that each owner query has an idle owner); on the second a pod is given the lost
 * GPU and job 77 of bob works on the active one.
 */
export function twoSiteHosts(prefix: string, firstLabels: string[] = []): FleetHost[] {
  return [
    {
      host: `${prefix}-h1`,
      site: "lab-a",
      labels: ["site=lab-a", ...firstLabels],
      model: "NVIDIA H100 80GB HBM3",
      gpus: [
        {
          state: "active",
          reportedIdle: false,
          phase: { state: "active" },
          owner: { namespace: "ml", pod: "train-a", container: "trainer" },
        },
        {
          state: "busy_phantom",
          reportedIdle: false,
          phase: { state: "busy_phantom" },
          owner: { job: "4242", user: "alice" },
        },
        {
          state: "held_idle",
          reportedIdle: true,
          phase: { state: "held_idle" },
          owner: { namespace: "research", pod: "notebook-b", container: "jupyter" },
        },
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
        {
          state: "unavailable",
          reportedIdle: false,
          phase: { error: "Unknown Error" },
          owner: { namespace: "ml", pod: "lost-c", container: "main" },
        },
        // NVENC at 70 % moves utilization.gpu only to 7 %: real work the usual tools miss.
        {
          state: "active",
          reportedIdle: false,
          phase: { util: 7, powerW: 60, memUsedMiB: 2048, media: 70, processes: 1 },
          owner: { job: "77", user: "bob" },
        },
      ],
    },
  ];
}

const REAL_IDLE = new Set(["free_idle", "held_idle", "busy_phantom"]);

/** The uuid of GPU `index` of `host` in the fleet's scenarios. */
export function fleetGpuUuid(host: string, index: number): string {
  return fakeUuid(host, index);
}

/** Each site's real, reported and hidden idle ratio, as the scenario implies. */
export function siteRatios(
  hosts: readonly FleetHost[],
): Array<{ site: string; model: string; real: number; reported: number; hidden: number }> {
  return hosts.map((h) => {
    const real = h.gpus.filter((g) => REAL_IDLE.has(g.state)).length / h.gpus.length;
    const reported = h.gpus.filter((g) => g.reportedIdle).length / h.gpus.length;
    return { site: h.site, model: h.model, real, reported, hidden: real - reported };
  });
}

export interface TwoSiteFleet {
  collectors: TrueidleProcess[];
  agents: TrueidleProcess[];
  podResources: PodResourcesServer[];
  prom: PrometheusHandle;
  stop(): Promise<void>;
}

/**
 * Starts a collector and an agent (1 s samples, 2 s windows) per host, scenario files in
 * `dir`, and Prometheus scraping the collectors every `scrapeIntervalMs` with `ruleFiles`.
 * `collectorArgs(i)` adds flags to the i-th collector. A host with pod owners gets a
 * pod-resources server (`--pod-resources-socket`), one with job owners a job mapping
 * directory in `dir` holding "JOB USER" in a file per GPU uuid (`--job-mapping-dir`).
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
  const podResources: PodResourcesServer[] = [];
  const targets: string[] = [];
  const stopProcesses = async (): Promise<void> => {
    await Promise.all(agents.map((a) => a.stop()));
    await Promise.all(collectors.map((c) => c.stop()));
    await Promise.all(podResources.map((s) => s.stop()));
  };
  for (const [i, h] of opts.hosts.entries()) {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    collectors.push(
      startTrueidle([
        "collector",
        "--plaintext",
        "--grpc-listen",
        `127.0.0.1:${grpcPort}`,
        "--http-listen",
        `127.0.0.1:${httpPort}`,
        "--log-level",
        "warn",
        ...(opts.collectorArgs?.(i) ?? []),
      ]),
    );
    targets.push(`127.0.0.1:${httpPort}`);
    const scenario = path.join(opts.dir, `${h.host}.json`);
    writeFileSync(
      scenario,
      JSON.stringify({
        host: h.host,
        driverVersion: "550.90.07",
        gpus: h.gpus.map((g, index) => ({
          model: h.model,
          uuid: fleetGpuUuid(h.host, index),
          phases: [{ for: "1h", ...g.phase }],
        })),
      }),
    );
    const ownerArgs: string[] = [];
    const pods = h.gpus.flatMap((g, index) =>
      g.owner && "pod" in g.owner
        ? [gpuPod(g.owner.namespace, g.owner.pod, g.owner.container, [fleetGpuUuid(h.host, index)])]
        : [],
    );
    if (pods.length > 0) {
      let server: PodResourcesServer;
      try {
        server = await PodResourcesServer.start({ pods });
      } catch (err) {
        await stopProcesses();
        throw err;
      }
      podResources.push(server);
      ownerArgs.push("--pod-resources-socket", server.socketPath);
    }
    const jobs = h.gpus.flatMap((g, index) =>
      g.owner && "job" in g.owner ? [{ uuid: fleetGpuUuid(h.host, index), ...g.owner }] : [],
    );
    if (jobs.length > 0) {
      const mapping = path.join(opts.dir, `${h.host}-jobs`);
      mkdirSync(mapping);
      for (const j of jobs) writeFileSync(path.join(mapping, j.uuid), `${j.job} ${j.user}\n`);
      ownerArgs.push("--job-mapping-dir", mapping);
    }
    agents.push(
      startTrueidle([
        "agent",
        "--plaintext",
        "--source",
        "sim",
        "--scenario",
        scenario,
        "--collector",
        `127.0.0.1:${grpcPort}`,
        "--hostname",
        h.host,
        ...h.labels.flatMap((l) => ["--label", l]),
        "--interval",
        "1s",
        "--window",
        "2s",
        "--log-level",
        "warn",
        ...ownerArgs,
      ]),
    );
  }
  let prom: PrometheusHandle;
  try {
    prom = await startPrometheus({
      scrapeTargets: targets,
      scrapeIntervalMs: opts.scrapeIntervalMs,
      ruleFiles: opts.ruleFiles,
    });
  } catch (err) {
    await stopProcesses();
    throw err;
  }
  return {
    collectors,
    agents,
    podResources,
    prom,
    stop: async () => {
      await stopProcesses();
      await prom.stop();
    },
  };
}
