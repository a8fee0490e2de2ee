/**
 * Owners on the collector (DESIGN "Owners"): who holds each GPU now, and the seconds each
 * owner held GPUs in every state, for Prometheus:
 *
 * - `trueidle_gpu_owner_info{host,gpu,uuid,<owner labels>} 1`, one series per owner of a
 *   GPU that is held now (its newest window's owners, kept on its fleet record; none once
 *   it is free or stale): rendered from the fleet, labelled through `ownerValues`;
 * - `trueidle_owner_state_seconds_total{<owner labels>,state}`, summed over every window
 *   counted, so `sum by (namespace)` of its held_idle rate is the idle GPU time a namespace
 *   holds. A GPU's second counts once per owner: a pod's allocation and the process in it
 *   are two owners (with different labels) of the same second; owners of one window that
 *   share their labels are one (see windowOwnerGroups).
 *
 * Which owner fields become labels is configuration (`--owner-labels`, for privacy and
 * cardinality): a subset of namespace, pod, container, job, user, or none. Owners that
 * have none of the configured fields are left out. Owner groups are capped (`maxGroups`);
 * past it new owners are not counted, which is counted and logged once a minute. A group
 * without a window for `expireAfterMs` goes, as GPUs do.
 */
import type { Logger } from "../common/log.js";
import type { GpuState } from "../common/types.js";
import type { GpuWindow, Owner } from "../gen/trueidle/v1/ingest_pb.js";

import { isOwnerLabel, OWNER_LABELS, type OwnerLabel } from "../common/owner-fields.js";

export { OWNER_LABELS, type OwnerLabel };

/** Parses `--owner-labels`: a comma-separated subset of OWNER_LABELS, or `none`. */
export function parseOwnerLabels(text: string): OwnerLabel[] {
  const t = text.trim();
  if (t === "none" || t === "") return [];
  const out: OwnerLabel[] = [];
  for (const part of t.split(",").map((s) => s.trim())) {
    if (!isOwnerLabel(part)) {
      throw new Error(
        `--owner-labels: "${part}" is not an owner field; use a comma-separated list of ${OWNER_LABELS.join(", ")}, or none`,
      );
    }
    if (!out.includes(part)) out.push(part);
  }
  return out;
}

/** An owner's seconds in a window, as the collector sums them (the Owner message's fields). */
export interface OwnerSeconds {
  observedS: number;
  freeIdleS: number;
  heldIdleS: number;
  busyPhantomS: number;
  activeS: number;
  unavailableS: number;
  reportedIdleS: number;
  reportedBusyS: number;
  realBusyS: number;
}

/** The fields of an owner that can become labels: what a GPU record keeps of its newest window's owners. */
export type OwnerLabelFields = Readonly<Pick<Owner, OwnerLabel>>;

/** One window's owners that share the configured label values, merged. */
export interface WindowOwnerGroup {
  readonly values: readonly string[];
  readonly seconds: OwnerSeconds;
}

const STATE_KEYS = ["freeIdleS", "heldIdleS", "busyPhantomS", "activeS", "unavailableS"] as const;
const REPORTED_KEYS = ["reportedIdleS", "reportedBusyS", "realBusyS"] as const;

/**
 * The owners of one window grouped by the values of `labels`, in first-seen order; owners
 * with none of the fields are left out. Owners that become one group (two pods of one
 * namespace with `--owner-labels namespace`, a pod's allocation and its process) held the
 * same GPU, so their seconds are not added: each state takes the larger of their seconds,
 * observed is the sum of the states, and the reported and real fields the larger, within
 * observed. Exact when one owner's time covers the other's, as it does for a pod and its
 * process, and never more GPU time than the window has. Every series of one window thus
 * has one point (an InfluxDB point per series and time, a Prometheus sample per series).
 */
export function windowOwnerGroups(labels: readonly OwnerLabel[], owners: readonly Owner[]): WindowOwnerGroup[] {
  if (labels.length === 0 || owners.length === 0) return [];
  const out: WindowOwnerGroup[] = [];
  let keys: string[] | undefined;
  for (const o of owners) {
    const values = labels.map((l) => o[l]);
    if (values.every((v) => v === "")) continue;
    const key = values.join("\u0000");
    keys ??= [];
    const at = keys.indexOf(key);
    if (at < 0) {
      keys.push(key);
      out.push({ values, seconds: secondsOf(o) });
      continue;
    }
    const s = (out[at] as WindowOwnerGroup).seconds;
    for (const k of STATE_KEYS) s[k] = Math.max(s[k], o[k]);
    s.observedS = s.freeIdleS + s.heldIdleS + s.busyPhantomS + s.activeS + s.unavailableS;
    for (const k of REPORTED_KEYS) s[k] = Math.min(s.observedS, Math.max(s[k], o[k]));
  }
  return out;
}

/**
 * The distinct values of `labels` among `owners`, in first-seen order; owners with none of
 * the fields are left out. The `values` of windowOwnerGroups, without the seconds.
 */
export function ownerLabelValues(
  labels: readonly OwnerLabel[],
  owners: readonly OwnerLabelFields[],
): (readonly string[])[] {
  if (labels.length === 0 || owners.length === 0) return [];
  const out: (readonly string[])[] = [];
  const keys: string[] = [];
  for (const o of owners) {
    const values = labels.map((l) => o[l]);
    if (values.every((v) => v === "")) continue;
    const key = values.join("\u0000");
    if (keys.includes(key)) continue;
    keys.push(key);
    out.push(values);
  }
  return out;
}

function secondsOf(o: Owner): OwnerSeconds {
  return {
    observedS: o.observedS,
    freeIdleS: o.freeIdleS,
    heldIdleS: o.heldIdleS,
    busyPhantomS: o.busyPhantomS,
    activeS: o.activeS,
    unavailableS: o.unavailableS,
    reportedIdleS: o.reportedIdleS,
    reportedBusyS: o.reportedBusyS,
    realBusyS: o.realBusyS,
  };
}

export interface OwnerGroup {
  /** Values of the configured labels, in their order. */
  readonly values: readonly string[];
  readonly stateS: Record<GpuState, number>;
  lastMs: number;
  /** Cache for the renderer. */
  promLabels: string | undefined;
}

const DROP_LOG_INTERVAL_MS = 60_000;

export class OwnerLedger {
  private readonly groupMap = new Map<string, OwnerGroup>();
  private lastDropLogAt = -Infinity;
  /** Owners not counted because the ledger held maxGroups groups. */
  dropped = 0;

  constructor(
    readonly labels: readonly OwnerLabel[],
    private readonly opts: { maxGroups: number; expireAfterMs: number; logger?: Logger | undefined },
  ) {}

  get enabled(): boolean {
    return this.labels.length > 0;
  }

  /** The values of the configured labels for owner `o`; undefined when it has none of them. */
  ownerValues(o: OwnerLabelFields): readonly string[] | undefined {
    const values = this.labels.map((l) => o[l]);
    return values.every((v) => v === "") ? undefined : values;
  }

  /** Adds one applied window's owners' seconds to their groups. */
  applyWindow(host: string, w: GpuWindow, now: number): void {
    if (!this.enabled) return;
    for (const { values, seconds: o } of windowOwnerGroups(this.labels, w.owners)) {
      const key = JSON.stringify(values);
      let g = this.groupMap.get(key);
      if (!g) {
        if (this.groupMap.size >= this.opts.maxGroups) {
          this.drop(host, w, now);
          continue;
        }
        g = {
          values,
          stateS: { unavailable: 0, free_idle: 0, active: 0, busy_phantom: 0, held_idle: 0 },
          lastMs: now,
          promLabels: undefined,
        };
        this.groupMap.set(key, g);
      }
      g.stateS.free_idle += o.freeIdleS;
      g.stateS.held_idle += o.heldIdleS;
      g.stateS.busy_phantom += o.busyPhantomS;
      g.stateS.active += o.activeS;
      g.stateS.unavailable += o.unavailableS;
      g.lastMs = now;
    }
  }

  groups(): IterableIterator<OwnerGroup> {
    return this.groupMap.values();
  }

  /** Drops groups without a window for expireAfterMs. */
  sweep(now: number): void {
    for (const [k, g] of this.groupMap) if (now - g.lastMs > this.opts.expireAfterMs) this.groupMap.delete(k);
  }

  private drop(host: string, w: GpuWindow, now: number): void {
    this.dropped++;
    if (!this.opts.logger || now - this.lastDropLogAt < DROP_LOG_INTERVAL_MS) return;
    this.lastDropLogAt = now;
    this.opts.logger.warn(
      `The collector counts ${this.opts.maxGroups} owners, its limit: owners of GPU ${w.uuid} of ${host} and others new are not counted in ` +
        "trueidle_owner_state_seconds_total until owners without windows for the expiry time go (--owner-labels with fewer fields holds fewer). " +
        "Logged at most once a minute.",
      { host, uuid: w.uuid, groups: this.groupMap.size },
    );
  }
}
