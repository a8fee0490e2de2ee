import { afterEach, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary } from "@bufbuild/protobuf";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ingestServiceDefinition, RETRY_AFTER_METADATA_KEY } from "../../common/grpc-service.js";
import {
  GpuWindowSchema,
  StreamResponseSchema,
  type StreamRequest,
  type StreamResponse,
} from "../../gen/trueidle/v1/ingest_pb.js";
import { silentLogger, recordingLogger } from "../../common/log.js";
import { Shipper } from "./shipper.js";
import { WindowBuffer } from "./window-buffer.js";
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
          call.write(
            create(StreamResponseSchema, {
              msg: {
                case: "welcome",
                value: {
                  collectorId: "t",
                  thresholds: { utilBusyPercent: 7, realActiveRatio: 0.2, heldMemoryBytes: 1n },
                },
              },
            }),
          );
        } else if (m.msg.case === "batch") {
          onBatch(
            call,
            m.msg.value.seq,
            m.msg.value.windows.map((w) => `${w.uuid}@${w.startMs}`),
            ++n,
          );
        }
      });
      call.on("error", () => {});
      call.on("end", () => call.end());
    },
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return { server, port, hellos, streams: () => streams };
}

function win(i: number): GpuWindowRecord {
  return {
    uuid: `GPU-${i % 3}`,
    index: i % 3,
    model: "NVIDIA H100 80GB HBM3",
    driverVersion: "550.90.07",
    startMs: 1_700_000_000_000 + Math.floor(i / 3) * 10_000,
    durationMs: 10_000,
    observedS: 10,
    stateS: { ...emptyStateSeconds(), free_idle: 10 },
    reportedIdleS: 10,
    reportedBusyS: 0,
    realBusyS: 0,
    processesMax: 0,
    topHolders: [],
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
      targets: [`127.0.0.1:${srv.port}`],
      host: { hostname: "h1", machineId: "m", labels: { site: "x" } },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger: silentLogger,
      onThresholds: (t) => (thresholds = t),
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
      targets: [`127.0.0.1:${srv.port}`],
      host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger: silentLogger,
      maxWindowsPerBatch: 4,
      backoffInitialMs: 50,
      backoffMaxMs: 200,
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
    const logger = recordingLogger();
    const s = new Shipper({
      targets: [`127.0.0.1:${port}`],
      host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger,
      backoffInitialMs: 50,
      backoffMaxMs: 300,
    });
    cleanup.push(() => s.stop());
    s.start();
    s.enqueue([0, 1, 2].map(win));
    expect(await s.drain(700)).toBe(false);
    expect(s.stats().buffered).toBe(3);
    // Several failed attempts, one WARN: the rest of the outage goes to debug.
    expect(s.stats().reconnects).toBeGreaterThan(1);
    expect(logger.lines.filter((l) => l.level === "warn" && /Could not open/.test(l.msg))).toHaveLength(1);
    expect(logger.lines.filter((l) => l.level === "debug" && /Could not open/.test(l.msg)).length).toBeGreaterThan(0);
    const received: string[] = [];
    const server = new grpc.Server();
    server.addService(ingestServiceDefinition, {
      stream: (call: ServerCall) => {
        call.on("data", (m: StreamRequest) => {
          if (m.msg.case === "hello")
            call.write(create(StreamResponseSchema, { msg: { case: "welcome", value: { collectorId: "late" } } }));
          else if (m.msg.case === "batch") {
            received.push(...m.msg.value.windows.map((w) => w.uuid));
            ack(call, m.msg.value.seq, m.msg.value.windows.length);
          }
        });
        call.on("error", () => {});
      },
    });
    await new Promise<void>((res, rej) =>
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
    );
    cleanup.push(() => void server.forceShutdown());
    expect(await s.drain(15_000)).toBe(true);
    expect(received).toHaveLength(3);
  });

  it("drops the oldest windows beyond its bound and counts them", async () => {
    const probe = await startServer(() => {});
    probe.server.forceShutdown();
    const s = new Shipper({
      targets: [`127.0.0.1:${probe.port}`],
      host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger: silentLogger,
      maxBufferedWindows: 5,
    });
    cleanup.push(() => s.stop());
    s.enqueue(Array.from({ length: 8 }, (_, i) => win(i)));
    expect(s.stats()).toMatchObject({ buffered: 5, dropped: 3 });
  });

  it("waits the delay a collector names in its trailer before reconnecting, with one WARN and no ERROR", async () => {
    const opened: number[] = [];
    const ended: number[] = [];
    const received: string[] = [];
    const server = new grpc.Server();
    server.addService(ingestServiceDefinition, {
      stream: (call: ServerCall) => {
        opened.push(Date.now());
        const n = opened.length;
        call.on("data", (m: StreamRequest) => {
          if (m.msg.case === "hello") {
            if (n <= 2) {
              // Pushed back twice: the spool is full, come back in 1.5 s.
              const metadata = new grpc.Metadata();
              metadata.set(RETRY_AFTER_METADATA_KEY, "1500");
              ended.push(Date.now());
              call.emit("error", { code: grpc.status.RESOURCE_EXHAUSTED, details: "spool full", metadata });
              return;
            }
            call.write(create(StreamResponseSchema, { msg: { case: "welcome", value: { collectorId: "t" } } }));
          } else if (m.msg.case === "batch") {
            received.push(...m.msg.value.windows.map((w) => w.uuid));
            ack(call, m.msg.value.seq, m.msg.value.windows.length);
          }
        });
        call.on("error", () => {});
      },
    });
    const port = await new Promise<number>((res, rej) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
    );
    cleanup.push(() => void server.forceShutdown());
    const logger = recordingLogger();
    const s = new Shipper({
      targets: [`127.0.0.1:${port}`],
      host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger,
      backoffInitialMs: 20,
      backoffMaxMs: 40,
    });
    cleanup.push(() => s.stop());
    s.start();
    s.enqueue([0, 1, 2].map(win));
    expect(await s.drain(30_000)).toBe(true);
    expect(received).toHaveLength(3);
    expect(opened).toHaveLength(3);
    // Each reconnect came no sooner than the collector asked (the backoff alone is 40 ms at most).
    expect((opened[1] as number) - (ended[0] as number)).toBeGreaterThanOrEqual(1400);
    expect((opened[2] as number) - (ended[1] as number)).toBeGreaterThanOrEqual(1400);
    expect(logger.lines.filter((l) => l.level === "error")).toEqual([]);
    const warns = logger.lines.filter((l) => l.level === "warn");
    expect(warns).toHaveLength(1);
    expect(warns[0]?.fields).toMatchObject({ detail: "spool full" });
  });

  it("sends the call metadata with every stream it opens", async () => {
    const seen: string[] = [];
    const server = new grpc.Server();
    server.addService(ingestServiceDefinition, {
      stream: (call: ServerCall) => {
        seen.push(String(call.metadata.get("authorization")[0]));
        call.on("data", (m: StreamRequest) => {
          if (m.msg.case === "hello")
            call.write(create(StreamResponseSchema, { msg: { case: "welcome", value: { collectorId: "t" } } }));
          else if (m.msg.case === "batch") ack(call, m.msg.value.seq, m.msg.value.windows.length);
        });
        call.on("error", () => {});
      },
    });
    const port = await new Promise<number>((res, rej) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
    );
    cleanup.push(() => void server.forceShutdown());
    const callMetadata = new grpc.Metadata();
    callMetadata.set("authorization", "Bearer sekrit");
    const s = new Shipper({
      targets: [`127.0.0.1:${port}`],
      host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger: silentLogger,
      callMetadata,
    });
    cleanup.push(() => s.stop());
    s.start();
    s.enqueue([win(0)]);
    expect(await s.drain(15_000)).toBe(true);
    expect(seen).toEqual(["Bearer sekrit"]);
  });

  it("with a disk buffer, consumes acknowledged and rejected windows and keeps the rest for the next start", async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-shipper-"));
    cleanup.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const dir = path.join(tmp, "buffer");
    let batches = 0;
    const srv = await startServer((call, seq, uuids) => {
      batches++;
      // First batch: window 0 accepted, window 1 rejected. Later batches: never acknowledged.
      if (batches === 1) {
        call.write(
          create(StreamResponseSchema, {
            msg: {
              case: "ack",
              value: {
                seq,
                accepted: uuids.length - 1,
                rejections: [{ index: 1, reason: "bad_number", field: "windows[1].power_mean_w" }],
              },
            },
          }),
        );
      }
    });
    cleanup.push(() => void srv.server.forceShutdown());
    const buffer = await WindowBuffer.open(dir, { maxWindows: 1000, logger: silentLogger });
    const s = new Shipper({
      targets: [`127.0.0.1:${srv.port}`],
      host: { hostname: "h1", machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger: silentLogger,
      buffer,
      maxWindowsPerBatch: 2,
    });
    s.start();
    s.enqueue([0, 1].map(win));
    for (let i = 0; i < 1000 && s.stats().acked === 0; i++) await new Promise((r) => setTimeout(r, 10));
    s.enqueue([2, 3, 4].map(win));
    for (let i = 0; i < 1000 && s.stats().inFlight < 3; i++) await new Promise((r) => setTimeout(r, 10));
    expect(s.stats()).toMatchObject({ acked: 1, rejected: 1, buffered: 3, inFlight: 3 });
    await s.stop();
    await buffer.close();
    const again = await WindowBuffer.open(dir, { maxWindows: 1000, logger: silentLogger });
    const keys = again.takeUnsent(100).map((e) => {
      const w = fromBinary(GpuWindowSchema, e.data);
      return `${w.uuid}@${w.startMs}`;
    });
    expect(keys).toEqual([2, 3, 4].map((i) => `${win(i).uuid}@${win(i).startMs}`));
    await again.close();
  });

  it("after no answer within the response timeout, reconnects at a point of its own within that timeout", async () => {
    // A swamped collector: it takes the first stream's batch and never answers it; the
    // stream after that is answered.
    const srv = await startServer((call, seq, uuids) => {
      if (srv.streams() === 1) return;
      ack(call, seq, uuids.length);
    });
    cleanup.push(() => void srv.server.forceShutdown());
    const run = async (random: number): Promise<number> => {
      const s = new Shipper({
        targets: [`127.0.0.1:${srv.port}`],
        host: { hostname: `h-${random}`, machineId: "", labels: {} },
        agentVersion: "test",
        source: "sim",
        windowMs: 10_000,
        logger: silentLogger,
        responseTimeoutMs: 600,
        backoffInitialMs: 20,
        backoffMaxMs: 40,
        random: () => random,
      });
      cleanup.push(() => s.stop());
      s.start();
      s.enqueue([0, 1, 2].map(win));
      const started = Date.now();
      expect(await s.drain(20_000)).toBe(true);
      expect(srv.streams()).toBe(2);
      expect(s.stats()).toMatchObject({ acked: 3, reconnects: 1 });
      return Date.now() - started;
    };
    const late = await run(0.9);
    // 600 ms without an answer (checked every 100 ms), then 0.9 × 600 = 540 ms before reconnecting.
    expect(late).toBeGreaterThanOrEqual(600 + 540);
  });
});
