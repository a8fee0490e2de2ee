/**
 * Builders of protocol messages for the collector's tests: a valid window (one H100,
 * ten seconds, free and idle) that each test bends in the one way it needs.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  GpuState,
  GpuWindowSchema,
  HelloSchema,
  LastReadingSchema,
  RealSource,
  StreamRequestSchema,
  type GpuWindow,
  type StreamRequest,
} from "../../gen/trueidle/v1/ingest_pb.js";

/** A fixed wall-clock instant the tests' clocks start at: 2024-03-01T00:00:00Z. */
export const T0 = Date.UTC(2024, 2, 1);

export type WindowInit = MessageInitShape<typeof GpuWindowSchema>;
export type LastInit = MessageInitShape<typeof LastReadingSchema>;

export function makeWindow(init: WindowInit = {}, last: LastInit = {}): GpuWindow {
  const startMs = init.startMs ?? BigInt(T0);
  return create(GpuWindowSchema, {
    uuid: "GPU-11111111-2222-3333-4444-555555555555",
    index: 0,
    model: "NVIDIA H100 80GB HBM3",
    driverVersion: "550.54.15",
    durationMs: 10_000,
    observedS: 10,
    freeIdleS: 10,
    reportedIdleS: 10,
    reportedBusyS: 0,
    realBusyS: 0,
    powerMeanW: 70,
    powerMaxW: 72,
    powerFloorW: 68,
    powerLimitW: 700,
    memUsedMaxBytes: 0n,
    memTotalBytes: 85_520_809_984n,
    processesMax: 0,
    ...init,
    startMs,
    last: create(LastReadingSchema, {
      timeMs: BigInt(startMs) + 9_000n,
      state: GpuState.FREE_IDLE,
      real: 0,
      realSource: RealSource.NONE,
      utilPercent: 0,
      powerW: 70,
      memUsedBytes: 0n,
      processes: 0,
      idleStreakS: 120,
      ...last,
    }),
  });
}

/** A window that is busy_phantom all along: util reads 100%, real work is 2%. */
export function phantomWindow(init: WindowInit = {}): GpuWindow {
  return makeWindow(
    {
      freeIdleS: 0,
      busyPhantomS: 10,
      reportedIdleS: 0,
      reportedBusyS: 10,
      realBusyS: 0.2,
      processesMax: 1,
      memUsedMaxBytes: 1_073_741_824n,
      ...init,
    },
    {
      state: GpuState.BUSY_PHANTOM,
      real: 0.02,
      realSource: RealSource.POWER,
      utilPercent: 100,
      powerW: 80,
      memUsedBytes: 1_073_741_824n,
      processes: 1,
    },
  );
}

/** The uuid of the board boardWindow() describes (a board in MIG mode is a `GPU-…` device). */
export const BOARD_UUID = "GPU-b0a4d000-1111-2222-3333-444444444444";

/**
 * The row of a board in MIG mode (GpuWindow.mig_board): sampled all along and readable, its
 * power, limit and memory total; every other seconds field 0, no holders or owners.
 */
export function boardWindow(init: WindowInit = {}, last: LastInit = {}): GpuWindow {
  return makeWindow(
    {
      uuid: BOARD_UUID,
      migBoard: true,
      freeIdleS: 0,
      reportedIdleS: 0,
      powerMeanW: 180,
      powerMaxW: 195,
      powerFloorW: 90,
      memUsedMaxBytes: undefined,
      ...init,
    },
    { utilPercent: undefined, powerW: 182, memUsedBytes: undefined, idleStreakS: 0, ...last },
  );
}

export function helloRequest(
  hostname = "gpu-node-1",
  labels: Record<string, string> = { site: "dc1" },
  windowMs = 10_000,
): StreamRequest {
  return create(StreamRequestSchema, {
    msg: {
      case: "hello",
      value: create(HelloSchema, {
        agentVersion: "0.1.0",
        source: "sim",
        windowMs,
        host: { hostname, machineId: "0123456789abcdef", labels },
      }),
    },
  });
}

export function batchRequest(seq: number, windows: GpuWindow[]): StreamRequest {
  return create(StreamRequestSchema, { msg: { case: "batch", value: { seq: BigInt(seq), windows } } });
}
