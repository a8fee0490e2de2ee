/** Converts the agent's window records to and from the wire messages. */
import { create } from "@bufbuild/protobuf";
import {
  GpuState as PbState,
  GpuWindowSchema,
  RealSource as PbSource,
  type GpuWindow,
} from "../../gen/trueidle/v1/ingest_pb.js";
import type { GpuState, RealSource } from "../../common/types.js";
import { cutText, MAX_ERROR_LENGTH, MAX_HOLDER_NAME_LENGTH, MAX_HOLDERS } from "../../common/wire-limits.js";
import type { GpuWindowRecord } from "../window.js";

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

const bigOpt = (v: number | undefined): bigint | undefined => (v === undefined ? undefined : BigInt(Math.round(v)));

export function windowToProto(w: GpuWindowRecord): GpuWindow {
  return create(GpuWindowSchema, {
    uuid: w.uuid,
    index: w.index,
    model: w.model,
    driverVersion: w.driverVersion,
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
    },
    topHolders: w.topHolders
      .slice(0, MAX_HOLDERS)
      .map((h) => ({
        pid: h.pid,
        name: cutText(h.name, MAX_HOLDER_NAME_LENGTH),
        usedMemoryBytes: bigOpt(h.usedMemoryBytes),
        smUtilRatio: h.smShare,
      })),
  });
}
