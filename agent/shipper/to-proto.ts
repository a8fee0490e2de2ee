/** Converts the agent's window records to and from the wire messages. */
import { create } from "@bufbuild/protobuf";
import {
  GpuState as PbState,
  GpuWindowSchema,
  OwnerSource as PbOwnerSource,
  RealSource as PbSource,
  type GpuWindow,
} from "../../gen/trueidle/v1/ingest_pb.js";
import type { GpuState, OwnerSource, RealSource } from "../../common/types.js";
import {
  cutText,
  MAX_ERROR_LENGTH,
  MAX_HOLDER_NAME_LENGTH,
  MAX_HOLDERS,
  MAX_OWNER_FIELD_LENGTH,
  MAX_OWNERS,
} from "../../common/wire-limits.js";
import type { GpuWindowRecord, WindowOwner } from "../window.js";

export const STATE_TO_PB: Record<GpuState, PbState> = {
  unavailable: PbState.UNAVAILABLE,
  free_idle: PbState.FREE_IDLE,
  active: PbState.ACTIVE,
  busy_phantom: PbState.BUSY_PHANTOM,
  held_idle: PbState.HELD_IDLE,
};

export const SOURCE_TO_PB: Record<RealSource, PbSource> = {
  none: PbSource.NONE,
  sm_active: PbSource.SM_ACTIVE,
  power: PbSource.POWER,
  media: PbSource.MEDIA,
  util: PbSource.UTIL,
};

export const OWNER_SOURCE_TO_PB: Record<OwnerSource, PbOwnerSource> = {
  pod_resources: PbOwnerSource.POD_RESOURCES,
  job_mapping: PbOwnerSource.JOB_MAPPING,
  process: PbOwnerSource.PROCESS,
};

/** An owner's text field as sent: cut to MAX_OWNER_FIELD_LENGTH, "" when unknown. */
export const ownerText = (v: string | undefined): string => cutText(v ?? "", MAX_OWNER_FIELD_LENGTH);

/** The owners a window sends: at most MAX_OWNERS. */
export const sentOwners = (w: GpuWindowRecord): readonly WindowOwner[] => (w.owners ?? []).slice(0, MAX_OWNERS);

const bigOpt = (v: number | undefined): bigint | undefined => (v === undefined ? undefined : BigInt(Math.round(v)));

export function windowToProto(w: GpuWindowRecord): GpuWindow {
  return create(GpuWindowSchema, {
    uuid: w.uuid,
    index: w.index,
    model: w.model,
    driverVersion: w.driverVersion,
    parentUuid: w.parentUuid ?? "",
    migProfile: w.migProfile ?? "",
    migBoard: w.migBoard === true,
    startMs: BigInt(w.startMs),
    durationMs: w.durationMs,
    observedS: w.observedS,
    freeIdleS: w.stateS.free_idle,
    heldIdleS: w.stateS.held_idle,
    busyPhantomS: w.stateS.busy_phantom,
    activeS: w.stateS.active,
    unavailableS: w.stateS.unavailable,
    reportedIdleS: w.reportedIdleS,
    reportedBusyS: w.reportedBusyS,
    realBusyS: w.realBusyS,
    powerMeanW: w.powerMeanW,
    powerMaxW: w.powerMaxW,
    powerFloorW: w.powerFloorW,
    powerLimitW: w.powerLimitW,
    memUsedMaxBytes: bigOpt(w.memUsedMaxBytes),
    memTotalBytes: bigOpt(w.memTotalBytes),
    processesMax: w.processesMax,
    last: {
      timeMs: BigInt(w.last.timeMs),
      state: STATE_TO_PB[w.last.state],
      real: w.last.real,
      realSource: SOURCE_TO_PB[w.last.realSource],
      utilPercent: w.last.utilPercent,
      powerW: w.last.powerW,
      memUsedBytes: bigOpt(w.last.memUsedBytes),
      processes: w.last.processes,
      idleStreakS: w.last.idleStreakS,
      error: cutText(w.last.error ?? "", MAX_ERROR_LENGTH),
      heldBy: w.last.heldBy ?? 0,
    },
    topHolders: w.topHolders.slice(0, MAX_HOLDERS).map((h) => ({
      pid: h.pid,
      name: cutText(h.name, MAX_HOLDER_NAME_LENGTH),
      usedMemoryBytes: bigOpt(h.usedMemoryBytes),
      smUtilRatio: h.smShare,
    })),
    heldByProcessS: w.heldByS?.process ?? 0,
    heldByMemoryS: w.heldByS?.memory ?? 0,
    heldByAllocationS: w.heldByS?.allocation ?? 0,
    owners: sentOwners(w).map((o) => ({
      via: OWNER_SOURCE_TO_PB[o.via],
      namespace: ownerText(o.namespace),
      pod: ownerText(o.pod),
      container: ownerText(o.container),
      podUid: ownerText(o.podUid),
      job: ownerText(o.job),
      step: ownerText(o.step),
      user: ownerText(o.user),
      runtime: ownerText(o.runtime),
      containerId: ownerText(o.containerId),
      pid: o.pid ?? 0,
      command: ownerText(o.command),
      observedS: o.observedS,
      freeIdleS: o.stateS.free_idle,
      heldIdleS: o.stateS.held_idle,
      busyPhantomS: o.stateS.busy_phantom,
      activeS: o.stateS.active,
      unavailableS: o.stateS.unavailable,
      reportedIdleS: o.reportedIdleS,
      reportedBusyS: o.reportedBusyS,
      realBusyS: o.realBusyS,
    })),
  });
}
