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
 *
 * Owners (DESIGN "Owners") are shown as `/metrics` shows them in trueidle_gpu_owner_info:
 * for GPUs held now (held_idle, busy_phantom, active; never free or stale ones), with the
 * owner fields `--owner-labels` names and no other, through the same `ownerValues`. With no
 * owner fields configured the JSON carries no owner at all. Owner text comes from agents:
 * the page writes it as text only.
 */
import { GPU_STATES, type GpuState, type RealSource } from "../../common/types.js";
import type { FleetState, GpuRecord } from "../fleet-state.js";
import type { OwnerLabel, OwnerLedger } from "../owner-ledger.js";

export const DEFAULT_FLEET_JSON_MAX_HOSTS = 500;
export const DEFAULT_FLEET_JSON_TOP_HELD_IDLE = 10;
/** Owners listed per GPU; the rest are counted in `ownersLeftOut`. */
export const MAX_FLEET_JSON_OWNERS_PER_GPU = 4;
export const DEFAULT_FLEET_JSON_TOP_OWNERS = 10;

/** One owner: the configured owner fields it has, none empty. */
export type FleetJsonOwner = Partial<Record<OwnerLabel, string>>;

/** A held GPU's distinct owners, at most MAX_FLEET_JSON_OWNERS_PER_GPU, and how many more it has. */
export interface FleetJsonOwners {
  owners: FleetJsonOwner[];
  ownersLeftOut: number;
}

export interface FleetJsonGpu {
  index: number;
  uuid: string;
  model: string;
  /** A MIG instance (a GPU of its own): its board's uuid and its profile; absent for a whole GPU. */
  parentUuid?: string;
  migProfile?: string;
  state: GpuState;
  up: boolean;
  real: number;
  realSource: RealSource;
  reportedUtilization: number | null;
  idleStreakS: number;
  processes: number;
  powerW: number | null;
  powerFloorW: number | null;
  /** Set on a GPU held now (held_idle, busy_phantom, active) when owner fields are configured; [] when none is known. */
  owners?: FleetJsonOwner[];
  ownersLeftOut?: number;
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
  parentUuid?: string;
  migProfile?: string;
  idleStreakS: number;
  /** Set when owner fields are configured; [] when none is known. */
  owners?: FleetJsonOwner[];
  ownersLeftOut?: number;
}

/** One owner's GPUs held idle now. */
export interface FleetJsonOwnerHeldIdle {
  owner: FleetJsonOwner;
  gpus: number;
  /** The longest idle streak among them. */
  longestIdleS: number;
}

export interface FleetJsonHeldIdleByOwner {
  /** Most GPUs first, then longest idle; at most topOwners of them. */
  owners: FleetJsonOwnerHeldIdle[];
  /** Distinct owners of GPUs held idle, listed or not. */
  ownerCount: number;
  /** GPUs held idle with no owner known (or none with a configured field). */
  withoutOwner: number;
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
  /** The owner fields shown (`--owner-labels`), in order; empty: owners are not exported and none is shown. */
  ownerLabels: OwnerLabel[];
  /**
   * GPUs held idle now, whole fleet, by owner; a GPU with two owners counts for each.
   * Absent when ownerLabels is empty.
   */
  heldIdleByOwner?: FleetJsonHeldIdleByOwner;
}

export interface FleetJsonOptions {
  maxHosts?: number;
  topHeldIdle?: number;
  topOwners?: number;
  /** The collector's owner ledger, whose labels and ownerValues decide what is shown; none: no owners. */
  owners?: Pick<OwnerLedger, "labels" | "ownerValues"> | undefined;
}

const HELD_STATES: ReadonlySet<GpuState> = new Set(["held_idle", "busy_phantom", "active"]);

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const orNull = (v: number | undefined): number | null => (v === undefined ? null : v);

/** A record's distinct owners as values of the configured labels, in the order the window gave them. */
function distinctOwnerValues(
  rec: GpuRecord,
  ledger: Pick<OwnerLedger, "ownerValues">,
): { key: string; values: readonly string[] }[] {
  const out: { key: string; values: readonly string[] }[] = [];
  for (const o of rec.owners) {
    const values = ledger.ownerValues(o);
    if (values === undefined) continue;
    const key = JSON.stringify(values);
    if (!out.some((d) => d.key === key)) out.push({ key, values });
  }
  return out;
}

function ownerOf(labels: readonly OwnerLabel[], values: readonly string[]): FleetJsonOwner {
  const owner: FleetJsonOwner = {};
  labels.forEach((l, i) => {
    const v = values[i];
    if (v) owner[l] = v;
  });
  return owner;
}

export function buildFleetJson(fleet: FleetState, options: FleetJsonOptions = {}, now = fleet.now()): FleetJson {
  const maxHosts = options.maxHosts ?? DEFAULT_FLEET_JSON_MAX_HOSTS;
  const topN = options.topHeldIdle ?? DEFAULT_FLEET_JSON_TOP_HELD_IDLE;
  const ledger = options.owners !== undefined && options.owners.labels.length > 0 ? options.owners : undefined;
  const ownerLabels = ledger ? [...ledger.labels] : [];
  /** The owners field of a GPU held now; nothing when owners are not shown. */
  const ownersOf = (rec: GpuRecord): FleetJsonOwners | Record<string, never> => {
    if (!ledger) return {};
    const distinct = distinctOwnerValues(rec, ledger);
    const shown = distinct.slice(0, MAX_FLEET_JSON_OWNERS_PER_GPU);
    return { owners: shown.map((d) => ownerOf(ownerLabels, d.values)), ownersLeftOut: distinct.length - shown.length };
  };
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
          ...migOf(rec),
          state: up ? rec.state : "unavailable",
          up,
          real: rec.real,
          realSource: rec.realSource,
          reportedUtilization: orNull(rec.reportedUtilization),
          idleStreakS: rec.idleStreakS,
          processes: rec.processes,
          powerW: orNull(rec.powerW),
          powerFloorW: orNull(rec.powerFloorW),
          ...(up && HELD_STATES.has(rec.state) ? ownersOf(rec) : {}),
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
      ...migOf(rec),
      idleStreakS: rec.idleStreakS,
      ...ownersOf(rec),
    })),
    ownerLabels,
    ...(ledger
      ? {
          heldIdleByOwner: heldIdleByOwner(
            held,
            ledger,
            ownerLabels,
            options.topOwners ?? DEFAULT_FLEET_JSON_TOP_OWNERS,
          ),
        }
      : {}),
  };
}

function heldIdleByOwner(
  held: readonly GpuRecord[],
  ledger: Pick<OwnerLedger, "ownerValues">,
  labels: readonly OwnerLabel[],
  topN: number,
): FleetJsonHeldIdleByOwner {
  const byKey = new Map<string, { values: readonly string[]; gpus: number; longestIdleS: number }>();
  let withoutOwner = 0;
  for (const rec of held) {
    const distinct = distinctOwnerValues(rec, ledger);
    if (distinct.length === 0) withoutOwner++;
    for (const { key, values } of distinct) {
      const g = byKey.get(key);
      if (!g) byKey.set(key, { values, gpus: 1, longestIdleS: rec.idleStreakS });
      else {
        g.gpus++;
        g.longestIdleS = Math.max(g.longestIdleS, rec.idleStreakS);
      }
    }
  }
  const ranked = [...byKey.entries()].sort(
    ([ka, a], [kb, b]) => b.gpus - a.gpus || b.longestIdleS - a.longestIdleS || byName(ka, kb),
  );
  return {
    owners: ranked
      .slice(0, Math.max(0, topN))
      .map(([, g]) => ({ owner: ownerOf(labels, g.values), gpus: g.gpus, longestIdleS: g.longestIdleS })),
    ownerCount: byKey.size,
    withoutOwner,
  };
}

/** A MIG instance's board and profile, for the page to show it under its board; nothing for a whole GPU. */
function migOf(rec: GpuRecord): { parentUuid?: string; migProfile?: string } {
  return rec.parentUuid === "" ? {} : { parentUuid: rec.parentUuid, migProfile: rec.migProfile };
}
