/**
 * A simulated fleet whose readings vary with time, for backfilled history: office-hour
 * rhythm per site (busy on weekday working hours in the site's own time zone, quiet at
 * night and at weekends), one site that is mostly idle, and one GPU model whose inference
 * servers spin kernels on nothing (phantom-busy: high utilization.gpu, power at the floor).
 *
 * Deterministic: every reading is a pure function of (seed, host, GPU, time). Each GPU's
 * "job" is drawn once per hour from the hour's rhythm, so states last hours as jobs do;
 * utilization and power vary sample by sample. No reading depends on an earlier one, so
 * any two backfills that overlap produce the same windows where they overlap.
 *
 * Owners: every process has one, as the agent learns it from a node. On the Kubernetes
 * sites (us-east, eu-west) a training GPU's work belongs to one of the site's team
 * namespaces, a notebook holding a GPU to `notebooks`, an inference server to `serving`;
 * the Slurm site (ap-south) runs jobs of its users. Which owner holds a GPU is drawn per
 * GPU and day, so `trueidle report --by namespace` has teams to compare.
 *
 * The readings are built so that the idle model's state does not depend on history
 * either: idle power is at or above the model's default floor (so the floor in force is
 * always that default), and idle memory is far below the held threshold.
 */
import type { GpuOwner, GpuProcess, GpuReading } from "../common/types.js";
import { DEMO_SETTINGS } from "./settings.js";

export type HistoryPool = "training" | "inference";

export interface HistoryModel {
  name: string;
  powerLimitW: number;
  /** Power while nothing runs; at or above the model's default idle floor (agent/model/power-floors.ts). */
  idlePowerW: number;
  memTotalMiB: number;
}

export const HISTORY_MODELS = {
  h100: { name: "NVIDIA H100 80GB HBM3", powerLimitW: 700, idlePowerW: 76, memTotalMiB: 81_559 },
  a100: { name: "NVIDIA A100-SXM4-80GB", powerLimitW: 400, idlePowerW: 61, memTotalMiB: 81_920 },
  l40s: { name: "NVIDIA L40S", powerLimitW: 350, idlePowerW: 31, memTotalMiB: 46_068 },
} as const satisfies Record<string, HistoryModel>;

export interface HistoryHost {
  hostname: string;
  /** Configured labels, as `--label` gives them to an agent. */
  labels: { site: string; pool: HistoryPool };
  model: HistoryModel;
  gpus: number;
  /** The site's offset from UTC in hours; office hours are local. */
  utcOffsetH: number;
  /** Persistence mode off: a GPU nobody holds reads utilization.gpu 100 %. */
  persistenceOff: boolean;
  /** Scales how much work the site gets: 1 normal, near 0 a site that is mostly idle. */
  demand: number;
  /** Inference servers that poll with a spinning kernel: while serving nothing they are busy_phantom, not held_idle. */
  spinsWhenIdle: boolean;
}

function host(
  hostname: string,
  site: string,
  pool: HistoryPool,
  model: HistoryModel,
  utcOffsetH: number,
  extra: Partial<Pick<HistoryHost, "persistenceOff" | "demand" | "spinsWhenIdle">> = {},
): HistoryHost {
  return {
    hostname,
    labels: { site, pool },
    model,
    gpus: 8,
    utcOffsetH,
    persistenceOff: extra.persistenceOff ?? false,
    demand: extra.demand ?? 1,
    spinsWhenIdle: extra.spinsWhenIdle ?? false,
  };
}

/** The idle site. */
export const IDLE_SITE = "ap-south";
/** The phantom-busy model: its inference servers spin when they serve nothing. */
export const PHANTOM_MODEL = HISTORY_MODELS.l40s.name;

/**
 * The demo's history fleet: 8 hosts × 8 GPUs, three sites, three models.
 * us-east and eu-west train on H100/A100 and serve on L40S; ap-south (A100, persistence
 * off) got GPUs nobody uses.
 */
export const HISTORY_FLEET: readonly HistoryHost[] = [
  host("gpu-use-t01", "us-east", "training", HISTORY_MODELS.h100, -5),
  host("gpu-use-t02", "us-east", "training", HISTORY_MODELS.h100, -5),
  host("gpu-use-i01", "us-east", "inference", HISTORY_MODELS.l40s, -5, { spinsWhenIdle: true }),
  host("gpu-euw-t01", "eu-west", "training", HISTORY_MODELS.h100, 1),
  host("gpu-euw-t02", "eu-west", "training", HISTORY_MODELS.a100, 1),
  host("gpu-euw-i01", "eu-west", "inference", HISTORY_MODELS.l40s, 1, { spinsWhenIdle: true }),
  host("gpu-aps-t01", IDLE_SITE, "training", HISTORY_MODELS.a100, 5.5, { demand: 0.1, persistenceOff: true }),
  host("gpu-aps-t02", IDLE_SITE, "training", HISTORY_MODELS.a100, 5.5, { demand: 0.1, persistenceOff: true }),
];

/**
 * A fleet of `hostCount` hosts shaped like HISTORY_FLEET (its hosts in turn, numbered from
 * the second round on: gpu-use-t01, …, gpu-aps-t02, gpu-use-t01-2, …), for benchmarks that
 * need the same rhythm over more GPUs.
 */
export function historyFleet(hostCount: number): HistoryHost[] {
  if (!Number.isInteger(hostCount) || hostCount < 1)
    throw new RangeError(`hostCount must be a positive integer (got ${hostCount})`);
  return Array.from({ length: hostCount }, (_, i) => {
    const t = HISTORY_FLEET[i % HISTORY_FLEET.length]!;
    const round = Math.floor(i / HISTORY_FLEET.length);
    return { ...t, labels: { ...t.labels }, hostname: round === 0 ? t.hostname : `${t.hostname}-${round + 1}` };
  });
}

/** What a GPU is doing during one hour; the idle model decides the state from the readings. */
export type Activity = "working" | "holding" | "spinning" | "free" | "lost";

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
const MiB = 1024 * 1024;

/**
 * Demand for work, 0–1, at a local hour of a weekday (0 = Sunday): weekday office hours
 * 1.0 (lunch a little less), shoulders 0.45, evenings 0.3, nights 0.1; weekends 0.15 by
 * day and 0.08 at night.
 */
export function rhythm(localHour: number, weekday: number): number {
  const weekend = weekday === 0 || weekday === 6;
  if (weekend) return localHour >= 9 && localHour < 19 ? 0.15 : 0.08;
  if (localHour >= 9 && localHour < 18) return localHour === 12 ? 0.8 : 1;
  if ((localHour >= 7 && localHour < 9) || (localHour >= 18 && localHour < 20)) return 0.45;
  if (localHour >= 20 && localHour < 23) return 0.3;
  return 0.1;
}

/** Local hour (0–23) and weekday (0 = Sunday) of a UTC instant at a fixed offset. */
export function localTime(timeMs: number, utcOffsetH: number): { hour: number; weekday: number } {
  const local = timeMs + utcOffsetH * HOUR_MS;
  const day = Math.floor(local / DAY_MS);
  const hour = Math.floor((local - day * DAY_MS) / HOUR_MS);
  // 1970-01-01 was a Thursday.
  const weekday = (((day + 4) % 7) + 7) % 7;
  return { hour, weekday };
}

interface SimGpu {
  host: HistoryHost;
  index: number;
  uuid: string;
  /** Distinct per GPU across the fleet; feeds the hash. */
  key: number;
  memTotalBytes: number;
  /** Per owner variant (drawn per day): the process list of each activity. */
  working: GpuProcess[][];
  holding: GpuProcess[][];
  spinning: GpuProcess[][];
}

/** Team namespaces of the Kubernetes sites' training pools. */
const TEAMS: Record<string, readonly string[]> = {
  "us-east": ["llm-pretrain", "vision", "research"],
  "eu-west": ["speech", "recsys", "vision"],
};
/** Users of the Slurm site. */
const SLURM_USERS = ["asha", "ravi", "meera"] as const;
/** Owner variants per GPU; one is drawn per GPU and day. */
const VARIANTS = 3;

/** Who runs each activity's process on GPU `index` of `h`, for owner variant `v`. */
function ownersOf(
  h: HistoryHost,
  index: number,
  v: number,
  pid: number,
): Record<"working" | "holding" | "spinning", GpuOwner> {
  const site = h.labels.site;
  const host = h.hostname;
  const teams = TEAMS[site];
  if (teams === undefined) {
    // The Slurm site: a batch job for work, an interactive one for a held GPU.
    const user = SLURM_USERS[(index + v) % SLURM_USERS.length];
    const job = String(100_000 + ((pid * 7 + v * 131) % 90_000));
    return {
      working: { via: "process", job, step: "0", user, pid, command: "python3" },
      holding: {
        via: "process",
        job: String(Number(job) + 1),
        step: "interactive",
        user,
        pid: pid + 1,
        command: "jupyter-kernel",
      },
      spinning: {
        via: "process",
        job: String(Number(job) + 2),
        step: "0",
        user,
        pid: pid + 2,
        command: "tritonserver",
      },
    };
  }
  const team = teams[(index + v) % teams.length]!;
  return {
    working: {
      via: "process",
      namespace: team,
      pod: `${team}-train-${host.slice(-3)}-${v}`,
      container: "pytorch",
      pid,
      command: "python3",
    },
    holding: {
      via: "process",
      namespace: "notebooks",
      pod: `jupyter-${team}-${v}`,
      container: "notebook",
      pid: pid + 1,
      command: "jupyter-kernel",
    },
    spinning: {
      via: "process",
      namespace: "serving",
      pod: `triton-${site}-${(index % 4) + v * 4}`,
      container: "triton",
      pid: pid + 2,
      command: "tritonserver",
    },
  };
}

export class FleetHistoryModel {
  readonly hosts: readonly HistoryHost[];
  private readonly seed: number;
  private readonly gpus: SimGpu[][];

  constructor(hosts: readonly HistoryHost[] = HISTORY_FLEET, seed: number = DEMO_SETTINGS.seed.default) {
    this.hosts = hosts;
    this.seed = seed >>> 0;
    this.gpus = hosts.map((h) => {
      const hostKey = fnv1a(h.hostname);
      return Array.from({ length: h.gpus }, (_, index): SimGpu => {
        const key = mix(hostKey, index + 1);
        const pid = 1000 + (key % 50_000);
        const variants = Array.from({ length: VARIANTS }, (_, v) => ownersOf(h, index, v, pid));
        const serving = h.labels.pool !== "training";
        return {
          host: h,
          index,
          key,
          uuid: uuidFor(h.hostname, index),
          memTotalBytes: h.model.memTotalMiB * MiB,
          // Process lists are fixed per GPU, activity and owner; the pipeline copies what it keeps.
          working: variants.map((o) => [
            {
              pid,
              name: serving ? "tritonserver" : "python3",
              usedMemoryBytes: 0.6 * h.model.memTotalMiB * MiB,
              owner: serving ? o.spinning : o.working,
            },
          ]),
          holding: variants.map((o) => [
            { pid: pid + 1, name: "jupyter-kernel", usedMemoryBytes: 12_288 * MiB, owner: o.holding },
          ]),
          spinning: variants.map((o) => [
            { pid: pid + 2, name: "tritonserver", usedMemoryBytes: 0.4 * h.model.memTotalMiB * MiB, owner: o.spinning },
          ]),
        };
      });
    });
  }

  /** Number of GPUs in the fleet. */
  get gpuCount(): number {
    return this.gpus.reduce((a, g) => a + g.length, 0);
  }

  /** The uuids of one host's GPUs, by index. */
  uuids(hostIndex: number): string[] {
    return (this.gpus[hostIndex] ?? []).map((g) => g.uuid);
  }

  /** What one GPU does during the hour holding `timeMs`; constant within the hour. */
  activity(hostIndex: number, gpuIndex: number, timeMs: number): Activity {
    const g = this.gpus[hostIndex]?.[gpuIndex];
    if (!g) throw new RangeError(`no GPU ${gpuIndex} on host ${hostIndex}`);
    return this.activityOf(g, Math.floor(timeMs / HOUR_MS));
  }

  /** One reading of every GPU of a host at `timeMs`. */
  readings(hostIndex: number, timeMs: number): GpuReading[] {
    const gpus = this.gpus[hostIndex];
    if (!gpus) throw new RangeError(`no host ${hostIndex}`);
    const hour = Math.floor(timeMs / HOUR_MS);
    const tick = Math.floor(timeMs / 1000);
    return gpus.map((g) => this.reading(g, this.activityOf(g, hour), tick));
  }

  private activityOf(g: SimGpu, hour: number): Activity {
    const h = g.host;
    const u = unit(mix(mix(this.seed, g.key), hour));
    // A lost GPU stays lost for its hour; about one GPU-hour in 250.
    if (u < 0.004) return "lost";
    const { hour: lh, weekday } = localTime(hour * HOUR_MS, h.utcOffsetH);
    const r = rhythm(lh, weekday) * h.demand;
    // Shares of the hour's GPUs: working, then held by someone doing nothing, the rest free.
    const working = h.labels.pool === "training" ? 0.05 + 0.75 * r : 0.1 + 0.6 * r;
    const held = h.labels.pool === "training" ? 0.05 + 0.15 * r : 0.85 - 0.6 * r;
    const v = (u - 0.004) / 0.996;
    if (v < working) return "working";
    if (v < working + held) return h.spinsWhenIdle ? "spinning" : "holding";
    return "free";
  }

  private reading(g: SimGpu, a: Activity, tick: number): GpuReading {
    const m = g.host.model;
    if (a === "lost")
      return { uuid: g.uuid, index: g.index, model: m.name, driverVersion: DRIVER, error: "GPU is lost" };
    const n1 = unit(mix(mix(g.key, tick), 0x9e37));
    const n2 = unit(mix(mix(g.key, tick), 0x79b9));
    const v = mix(g.key, Math.floor(tick / 86_400)) % VARIANTS;
    let util: number;
    let powerW: number;
    let processes: GpuProcess[];
    switch (a) {
      case "working":
        // Real work: utilization 60–100 %, power 30–90 % of the headroom above idle.
        util = Math.round(60 + 40 * n1);
        powerW = m.idlePowerW + (0.3 + 0.6 * n2) * (m.powerLimitW - m.idlePowerW);
        processes = g.working[v]!;
        break;
      case "holding":
        // A notebook kernel holding memory, nothing running.
        util = 0;
        powerW = m.idlePowerW + 6 + 2 * n2;
        processes = g.holding[v]!;
        break;
      case "spinning":
        // An inference server polling with a spinning kernel: utilization.gpu near 100 %, power a few watts over idle.
        util = Math.round(92 + 8 * n1);
        powerW = m.idlePowerW + 8 + 4 * n2;
        processes = g.spinning[v]!;
        break;
      case "free":
        util = g.host.persistenceOff ? 100 : 0;
        powerW = m.idlePowerW + n2;
        processes = NO_PROCESSES;
        break;
    }
    const memUsedBytes = processes[0]?.usedMemoryBytes ?? MiB;
    // One object shape for every reading of a valid GPU: the pipeline reads millions of them.
    return {
      uuid: g.uuid,
      index: g.index,
      model: m.name,
      driverVersion: DRIVER,
      util,
      memUsedBytes,
      memTotalBytes: g.memTotalBytes,
      powerW: round1(powerW),
      powerLimitW: m.powerLimitW,
      processes,
    };
  }
}

const DRIVER = "550.90.07";
/** Shared by every free reading; nobody mutates a reading's process list. */
const NO_PROCESSES: GpuProcess[] = [];

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** A stable GPU uuid from the host name and index, shaped like nvidia-smi's. */
export function uuidFor(hostname: string, index: number): string {
  const a = mix(fnv1a(hostname), index + 1);
  const b = mix(a, 0x51ed27);
  const c = mix(b, 0x2f6b3a);
  const d = mix(c, 0x11c0ffee);
  const hex = (x: number): string => x.toString(16).padStart(8, "0");
  const s = hex(a) + hex(b) + hex(c) + hex(d);
  return `GPU-${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20, 32)}`;
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A 32-bit mix of two integers (murmur3's finalizer over a combined word). */
function mix(a: number, b: number): number {
  let h = (Math.imul(a >>> 0, 0x9e3779b1) ^ (b >>> 0) ^ ((b / 4294967296) >>> 0)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A number in [0, 1) from a 32-bit hash. */
function unit(h: number): number {
  return h / 4294967296;
}
