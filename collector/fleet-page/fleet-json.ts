/**
 * The fleet page's data, `GET /api/fleet`: fleet totals, hosts → GPUs with their current
 * state, and the GPUs held idle longest, built from FleetState on each request.
 *
 * Idle figures are cumulative since the collector started (its counters): real idle =
 * free_idle + held_idle + busy_phantom seconds over observed seconds; reported idle =
 * seconds with utilization.gpu below the busy threshold over observed seconds.
 *
 * Output is bounded: at most `maxHosts` hosts (by name) are listed with their GPUs; the
 * totals and the longest-held-idle list still cover the whole fleet, and `hostsTruncated`
 * says when hosts were left out.
 */
import { GPU_STATES, type GpuState, type RealSource } from "../../common/types.js";
import type { FleetState, GpuRecord } from "../fleet-state.js";

export const DEFAULT_FLEET_JSON_MAX_HOSTS = 500;
export const DEFAULT_FLEET_JSON_TOP_HELD_IDLE = 10;

export interface FleetJsonGpu {
  index: number;
  uuid: string;
  model: string;
  state: GpuState;
  up: boolean;
  real: number;
  realSource: RealSource;
  reportedUtilization: number | null;
  idleStreakS: number;
  processes: number;
  powerW: number | null;
  powerFloorW: number | null;
}

export interface FleetJsonHost {
  host: string;
  labels: Record<string, string>;
  gpus: FleetJsonGpu[];
}

export interface FleetJsonHeldIdle {
  host: string;
  index: number;
  uuid: string;
  model: string;
  idleStreakS: number;
}

export interface FleetJson {
  generatedAtMs: number;
  gpus: number;
  up: number;
  hostCount: number;
  byState: Record<GpuState, number>;
  idle: {
    /** What the seconds and ratios cover. */
    span: "since_collector_start";
    observedS: number;
    realIdleS: number;
    reportedIdleS: number;
    /** null until any second is observed. */
    realIdleRatio: number | null;
    reportedIdleRatio: number | null;
    /** realIdleRatio − reportedIdleRatio: idle that utilization.gpu does not show. */
    hiddenIdleRatio: number | null;
  };
  /** Hosts sorted by name, GPUs by index; at most maxHosts of them. */
  hosts: FleetJsonHost[];
  hostsShown: number;
  hostsTruncated: boolean;
  maxHosts: number;
  /** GPUs now held_idle, longest idle streak first. */
  longestHeldIdle: FleetJsonHeldIdle[];
}

export interface FleetJsonOptions {
  maxHosts?: number;
  topHeldIdle?: number;
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const orNull = (v: number | undefined): number | null => (v === undefined ? null : v);

export function buildFleetJson(fleet: FleetState, options: FleetJsonOptions = {}, now = fleet.now()): FleetJson {
  const maxHosts = options.maxHosts ?? DEFAULT_FLEET_JSON_MAX_HOSTS;
  const topN = options.topHeldIdle ?? DEFAULT_FLEET_JSON_TOP_HELD_IDLE;
  const summary = fleet.summary(now);
  const byHost = new Map<string, GpuRecord[]>();
  const held: GpuRecord[] = [];
  for (const rec of fleet.gpus()) {
    let list = byHost.get(rec.host);
    if (!list) byHost.set(rec.host, (list = []));
    list.push(rec);
    if (fleet.currentState(rec, now) === "held_idle") held.push(rec);
  }
  const names = [...byHost.keys()].sort(byName);
  const shown = names.slice(0, Math.max(0, maxHosts));
  const hosts = shown.map((host): FleetJsonHost => {
    const recs = byHost.get(host)!.sort((a, b) => a.index - b.index || byName(a.uuid, b.uuid));
    return {
      host,
      labels: Object.fromEntries(recs[0]!.labels),
      gpus: recs.map((rec) => {
        const up = fleet.isUp(rec, now);
        return {
          index: rec.index,
          uuid: rec.uuid,
          model: rec.model,
          state: up ? rec.state : "unavailable",
          up,
          real: rec.real,
          realSource: rec.realSource,
          reportedUtilization: orNull(rec.reportedUtilization),
          idleStreakS: rec.idleStreakS,
          processes: rec.processes,
          powerW: orNull(rec.powerW),
          powerFloorW: orNull(rec.powerFloorW),
        };
      }),
    };
  });
  held.sort((a, b) => b.idleStreakS - a.idleStreakS || byName(a.host, b.host) || a.index - b.index);
  const t = summary.totals;
  const ratio = (s: number): number | null => (t.observedS > 0 ? s / t.observedS : null);
  const realIdleRatio = ratio(t.realIdleS);
  const reportedIdleRatio = ratio(t.reportedIdleS);
  const byState = {} as Record<GpuState, number>;
  for (const s of GPU_STATES) byState[s] = summary.byState[s];
  return {
    generatedAtMs: now,
    gpus: summary.gpus,
    up: summary.up,
    hostCount: names.length,
    byState,
    idle: {
      span: "since_collector_start",
      observedS: t.observedS,
      realIdleS: t.realIdleS,
      reportedIdleS: t.reportedIdleS,
      realIdleRatio,
      reportedIdleRatio,
      hiddenIdleRatio: realIdleRatio === null || reportedIdleRatio === null ? null : realIdleRatio - reportedIdleRatio,
    },
    hosts,
    hostsShown: hosts.length,
    hostsTruncated: names.length > hosts.length,
    maxHosts,
    longestHeldIdle: held.slice(0, Math.max(0, topN)).map((rec) => ({
      host: rec.host,
      index: rec.index,
      uuid: rec.uuid,
      model: rec.model,
      idleStreakS: rec.idleStreakS,
    })),
  };
}
