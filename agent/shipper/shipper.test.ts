import { afterEach, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { ingestServiceDefinition } from "../../common/grpc-service.js";
import { StreamResponseSchema, type StreamRequest, type StreamResponse } from "../../gen/trueidle/v1/ingest_pb.js";
import { silentLogger } from "../../common/log.js";
import { Shipper } from "./shipper.js";
import { emptyStateSeconds, type GpuWindowRecord } from "../window.js";

type ServerCall = grpc.ServerDuplexStream<StreamRequest, StreamResponse>;

/** A real gRPC server on a loopback socket; `onBatch` decides what each batch gets. */
async function startServer(onBatch: (call: ServerCall, seq: bigint, uuids: string[], n: number) => void) {
  const server = new grpc.Server();
  const hellos: StreamRequest[] = [];
  let streams = 0;
  server.addService(ingestServiceDefinition, {
    stream: (call: ServerCall) => {
      streams++;
      let n = 0;
      call.on("data", (m: StreamRequest) => {
        if (m.msg.case === "hello") {
          hellos.push(m);
          call.write(create(StreamResponseSchema, {
            msg: { case: "welcome", value: { collectorId: "t", thresholds: { utilBusyPercent: 7, realActiveRatio: 0.2, heldMemoryBytes: 1n } } },
          }));
        } else if (m.msg.case === "batch") {
          onBatch(call, m.msg.value.seq, m.msg.value.windows.map((w) => `${w.uuid}@${w.startMs}`), ++n);
        }
      });
      call.on("error", () => {});
      call.on("end", () => call.end());
    },
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { server, port, hellos, streams: () => streams };
}

function win(i: number): GpuWindowRecord {
  return {
    uuid: `GPU-${i % 3}`, index: i % 3, model: "NVIDIA H100 80GB HBM3", driverVersion: "550.90.07",
    startMs: 1_700_000_000_000 + Math.floor(i / 3) * 10_000, durationMs: 10_000,
    observedS: 10, stateS: { ...emptyStateSeconds(), free_idle: 10 }, reportedIdleS: 10, reportedBusyS: 0, realBusyS: 0,
    processesMax: 0, topHolders: [],
    last: { timeMs: 0, state: "free_idle", real: 0, realSource: "none", processes: 0, idleStreakS: 1 },
  };
}

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

function ack(call: ServerCall, seq: bigint, accepted: number): void {
  call.write(create(StreamResponseSchema, { msg: { case: "ack", value: { seq, accepted } } }));
}

describe("Shipper", () => {
  it("sends a Hello, applies the collector's thresholds, and frees windows only when acknowledged", async () => {
    const received: string[] = [];
    const srv = await startServer((call, seq, uuids) => {
      received.push(...uuids);
      ack(call, seq, uuids.length);
    });
    cleanup.push(() => void srv.server.forceShutdown());
    let thresholds: unknown;
    const s = new Shipper({
      targets: [`127.0.0.1:${srv.port}`], host: { hostname: "h1", machineId: "m", labels: { site: "x" } },
      agentVersion: "test", source: "sim", windowMs: 10_000, logger: silentLogger, onThresholds: (t) => (thresholds = t),
    });
    cleanup.push(() => s.stop());
    s.start();
    s.enqueue([0, 1, 2, 3, 4, 5].map(win));
    expect(await s.drain(10_000)).toBe(true);
    expect(received).toHaveLength(6);
    expect(s.stats()).toMatchObject({ buffered: 0, acked: 6, dropped: 0, connected: true });
    expect(thresholds).toEqual({ utilBusyPercent: 7, realActiveRatio: 0.2, heldMemoryBytes: 1 });
    const hello = srv.hellos[0]!.msg;
    expect(hello.case === "hello" && hello.value.host?.hostname).toBe("h1");
    expect(hello.case === "hello" && hello.value.host?.labels).toEqual({ site: "x" });
  });

  it("re-sends unacknowledged windows in order after the stream breaks, and loses none", async () => {
    const received: string[] = [];
    const calls = new Map<ServerCall, string[]>();
    let broke = false;
    const srv = await startServer((call, seq, uuids, n) => {
      calls.set(call, [...(calls.get(call) ?? []), ...uuids]);
      if (!broke && n === 1) {
        // Take the first batch, never acknowledge it, and break the stream.
        broke = true;
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "cut" });
        return;
      }
      received.push(...uuids);
      ack(call, seq, uuids.length);
    });
    cleanup.push(() => void srv.server.forceShutdown());
    const s = new Shipper({
      targets: [`127.0.0.1:${srv.port}`], host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test", source: "sim", windowMs: 10_000, logger: silentLogger,
      maxWindowsPerBatch: 4, backoffInitialMs: 50, backoffMaxMs: 200,
    });
    cleanup.push(() => s.stop());
    s.start();
    const all = Array.from({ length: 10 }, (_, i) => win(i));
    s.enqueue(all);
    expect(await s.drain(15_000)).toBe(true);
    const expected = all.map((w) => `${w.uuid}@${w.startMs}`);
    expect(new Set(received)).toEqual(new Set(expected));
    // On the stream after the break, windows came in their original order, the unacknowledged first batch first.
    const second = [...calls.values()][1]!;
    expect(second.slice(0, 4)).toEqual(expected.slice(0, 4));
    expect(second).toEqual(expected.filter((k) => second.includes(k)));
    expect(s.stats().reconnects).toBeGreaterThanOrEqual(1);
    expect(srv.streams()).toBeGreaterThanOrEqual(2);
  });

  it("keeps windows while no collector is reachable and delivers them once one appears", async () => {
    // Reserve a port, then start nothing on it yet.
    const probe = await startServer(() => {});
    const port = probe.port;
    probe.server.forceShutdown();
    const s = new Shipper({
      targets: [`127.0.0.1:${port}`], host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test", source: "sim", windowMs: 10_000, logger: silentLogger, backoffInitialMs: 50, backoffMaxMs: 300,
    });
    cleanup.push(() => s.stop());
    s.start();
    s.enqueue([0, 1, 2].map(win));
    expect(await s.drain(700)).toBe(false);
    expect(s.stats().buffered).toBe(3);
    const received: string[] = [];
    const server = new grpc.Server();
    server.addService(ingestServiceDefinition, {
      stream: (call: ServerCall) => {
        call.on("data", (m: StreamRequest) => {
          if (m.msg.case === "hello") call.write(create(StreamResponseSchema, { msg: { case: "welcome", value: { collectorId: "late" } } }));
          else if (m.msg.case === "batch") {
            received.push(...m.msg.value.windows.map((w) => w.uuid));
            ack(call, m.msg.value.seq, m.msg.value.windows.length);
          }
        });
        call.on("error", () => {});
      },
    });
    await new Promise<void>((res, rej) => server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
    cleanup.push(() => void server.forceShutdown());
    expect(await s.drain(15_000)).toBe(true);
    expect(received).toHaveLength(3);
  });

  it("drops the oldest windows beyond its bound and counts them", async () => {
    const probe = await startServer(() => {});
    probe.server.forceShutdown();
    const s = new Shipper({
      targets: [`127.0.0.1:${probe.port}`], host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test", source: "sim", windowMs: 10_000, logger: silentLogger, maxBufferedWindows: 5,
    });
    cleanup.push(() => s.stop());
    s.enqueue(Array.from({ length: 8 }, (_, i) => win(i)));
    expect(s.stats()).toMatchObject({ buffered: 5, dropped: 3 });
  });
});
