/**
 * The collector's limits over real gRPC: hostile and oversized input, caps on agents and
 * series, per-agent rate limits. Each test checks the status or rejection an agent sees,
 * the counter an operator sees, and that other agents are still served.
 */
import { toBinary } from "@bufbuild/protobuf";
import { status, type StatusObject } from "@grpc/grpc-js";
import { windowToProto } from "../agent/shipper/to-proto.js";
import { afterEach, describe, expect, it } from "vitest";
import { RETRY_AFTER_METADATA_KEY } from "../common/grpc-service.js";
import { createLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import {
  GpuState,
  StreamRequestSchema,
  type BatchAck,
  type GpuWindow,
  type StreamResponse,
} from "../gen/trueidle/v1/ingest_pb.js";
import { startCollector, type Collector, type CollectorOptions } from "./collector.js";
import { NOW, TestCollectors } from "./testdata/test-collectors.js";
import { MAX_RECEIVE_MESSAGE_BYTES } from "./grpc-server.js";
import { T0, batchRequest, helloRequest, makeWindow } from "./testdata/windows.js";
import { eventuallyEquals as eventually, metricValue, type Probe } from "../test/helpers/ingest-probe.js";

const harness = new TestCollectors();
const probes = harness.probes;
afterEach(() => harness.stopAll());
const start = (extra: Partial<CollectorOptions> = {}): ReturnType<TestCollectors["start"]> => harness.start(extra);

const open = (c: Collector): Probe => probes.open(c.grpcPort);
const metric = (c: Collector, series: string): Promise<number | undefined> => metricValue(c.httpPort, series);

async function hello(collector: Collector, hostname: string): Promise<Probe> {
  const p = open(collector);
  p.send(helloRequest(hostname));
  expect((await p.next()).msg.case).toBe("welcome");
  return p;
}

function ackOf(r: StreamResponse): BatchAck {
  if (r.msg.case !== "ack") throw new Error(`expected an ack, got ${r.msg.case}`);
  return r.msg.value;
}

/** Sends one batch and waits for its ack. */
async function roundTrip(p: Probe, seq: number, windows: GpuWindow[]): Promise<BatchAck> {
  p.send(batchRequest(seq, windows));
  const ack = ackOf(await p.next());
  expect(ack.seq).toBe(BigInt(seq));
  return ack;
}

const retryAfter = (s: StatusObject): number => Number(s.metadata.get(RETRY_AFTER_METADATA_KEY)[0]);

/** `n` windows of distinct GPUs, starting at `start`. */
function gpus(n: number, start = T0, prefix = "GPU"): GpuWindow[] {
  return Array.from({ length: n }, (_, i) => makeWindow({ uuid: `${prefix}-${i}`, index: i, startMs: BigInt(start) }));
}

describe("collector limits", () => {
  it("rejects NaN, negative, absurd, future and old windows one by one, naming the field, and counts them by reason", async () => {
    const { collector } = await start({ maxWindowAgeMs: 3_600_000, maxWindowFutureMs: 60_000 });
    const p = await hello(collector, "gpu-node-1");
    const batch = [
      makeWindow({ uuid: "GPU-ok" }),
      makeWindow({ uuid: "GPU-1", powerMeanW: Number.NaN }),
      makeWindow({ uuid: "GPU-2", freeIdleS: -1, heldIdleS: 11 }),
      makeWindow({ uuid: "GPU-3", powerMaxW: 1e6 }),
      makeWindow({ uuid: "GPU-4", memTotalBytes: 2n ** 60n }),
      makeWindow({ uuid: "GPU-5", startMs: BigInt(NOW + 60_001) }),
      makeWindow({ uuid: "GPU-6", startMs: BigInt(NOW - 2 * 3_600_000) }),
      makeWindow({ uuid: "GPU-7" }, { idleStreakS: Number.POSITIVE_INFINITY }),
      makeWindow({ uuid: "" }),
      makeWindow({ uuid: "GPU-9", processesMax: 1 }, { processes: 3, state: GpuState.HELD_IDLE }),
    ];
    const ack = await roundTrip(p, 1, batch);
    expect(ack.accepted).toBe(1);
    expect(ack.rejections.map((r) => `${r.index} ${r.reason} ${r.field}`)).toEqual([
      "1 bad_number windows[1].power_mean_w",
      "2 bad_number windows[2].free_idle_s",
      "3 bad_number windows[3].power_max_w",
      "4 bad_number windows[4].mem_total_bytes",
      "5 in_future windows[5].start_ms",
      "6 too_old windows[6].start_ms",
      "7 bad_number windows[7].last.idle_streak_s",
      "8 bad_uuid windows[8].uuid",
      "9 inconsistent windows[9].last.processes",
    ]);
    expect(await metric(collector, "trueidle_windows_received_total")).toBe(10);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="bad_number"}')).toBe(5);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="in_future"}')).toBe(1);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="too_old"}')).toBe(1);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="bad_uuid"}')).toBe(1);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="inconsistent"}')).toBe(1);
    expect(collector.summary().gpus).toBe(1);
  });

  const badHellos: [string, string, Record<string, string>, RegExp][] = [
    [
      "a label key with upper case",
      "gpu-node-1",
      { Rack: "r1" },
      /^hello\.host\.labels\["Rack"\]: label key "Rack" must match/,
    ],
    [
      "a reserved label key",
      "gpu-node-1",
      { instance: "x" },
      /^hello\.host\.labels\["instance"\]: label key "instance" is reserved/,
    ],
    [
      "nine labels",
      "gpu-node-1",
      Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, "v"])),
      /^hello\.host\.labels holds 9 labels; at most 8/,
    ],
    [
      "a label value of 129 characters",
      "gpu-node-1",
      { site: "v".repeat(129) },
      /^hello\.host\.labels\["site"\]: label "site" value is longer than 128/,
    ],
    [
      "a control character in a label value",
      "gpu-node-1",
      { site: "dc1\u001b[31m" },
      /^hello\.host\.labels\["site"\]: label "site" value holds control characters/,
    ],
    [
      "a control character in the hostname",
      "gpu-node-1\u0000",
      { site: "dc1" },
      /^hello\.host\.hostname holds control characters/,
    ],
    ["a hostname of 256 characters", "h".repeat(256), { site: "dc1" }, /^hello\.host\.hostname is longer than 255/],
  ];
  it.each(badHellos)(
    "ends a stream whose Hello has %s with INVALID_ARGUMENT naming the field",
    async (_name, hostname, labels, details) => {
      const { collector } = await start();
      const p = open(collector);
      p.send(helloRequest(hostname, labels));
      const s = await p.status;
      expect({ code: status[s.code], details: s.details }).toMatchObject({
        code: "INVALID_ARGUMENT",
        details: expect.stringMatching(details),
      });
      expect(await metric(collector, 'trueidle_streams_refused_total{reason="invalid"}')).toBe(1);
      expect(await metric(collector, "trueidle_agents_connected")).toBe(0);
      await hello(collector, "gpu-node-2");
    },
  );

  it("takes 64 GPUs of a host and refuses the 65th as too_many_gpus", async () => {
    const { collector } = await start();
    const p = await hello(collector, "gpu-node-1");
    const ack = await roundTrip(p, 1, gpus(65));
    expect(ack.accepted).toBe(64);
    expect(ack.rejections.map((r) => `${r.reason} ${r.field}`)).toEqual(["too_many_gpus windows[64].uuid"]);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="too_many_gpus"}')).toBe(1);
    expect(collector.summary().gpus).toBe(64);
  });

  it("caps GPUs across hosts at maxGpus: series_limit for new GPUs, known GPUs keep working", async () => {
    const { collector, logs } = await start({ maxGpus: 3 });
    const a = await hello(collector, "gpu-node-a");
    const b = await hello(collector, "gpu-node-b");
    expect((await roundTrip(a, 1, gpus(2, T0, "A"))).accepted).toBe(2);
    const refused = await roundTrip(b, 1, gpus(2, T0, "B"));
    expect(refused.accepted).toBe(1);
    expect(refused.rejections.map((r) => `${r.reason} ${r.field}`)).toEqual(["series_limit windows[1].uuid"]);
    expect((await roundTrip(a, 2, gpus(2, T0 + 10_000, "A"))).accepted).toBe(2);
    expect(collector.summary().gpus).toBe(3);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="series_limit"}')).toBe(1);
    expect(
      logs.some(
        (l) => l.includes('"level":"warn"') && l.includes("The collector holds 3 GPUs, its limit (--max-gpus)"),
      ),
    ).toBe(true);
  });

  it("refuses agents beyond maxAgents with RESOURCE_EXHAUSTED and a retry delay, but lets a connected host reconnect", async () => {
    const { collector } = await start({ maxAgents: 2 });
    const a = await hello(collector, "gpu-node-a");
    await hello(collector, "gpu-node-b");
    const c = open(collector);
    c.send(helloRequest("gpu-node-c"));
    const s = await c.status;
    expect(status[s.code]).toBe("RESOURCE_EXHAUSTED");
    expect(s.details).toMatch(/^the collector serves 2 agents, its limit \(--max-agents\)/);
    expect(retryAfter(s)).toBeGreaterThanOrEqual(60_000);
    expect(retryAfter(s)).toBeLessThanOrEqual(90_000);
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="too_many_agents"}')).toBe(1);

    // gpu-node-a comes back over a new connection while its old stream still looks open.
    const again = await hello(collector, "gpu-node-a");
    const old = await a.status;
    expect({ code: status[old.code], details: old.details }).toEqual({
      code: "UNAVAILABLE",
      details: "replaced by a newer stream from the same host",
    });
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="replaced"}')).toBe(1);
    expect(await metric(collector, "trueidle_agents_connected")).toBe(2);
    expect((await roundTrip(again, 1, gpus(1))).accepted).toBe(1);
    // The replaced stream's end does not free a place: the collector is still full.
    const d = open(collector);
    d.send(helloRequest("gpu-node-d"));
    expect(status[(await d.status).code]).toBe("RESOURCE_EXHAUSTED");
  });

  it("holds acks over the rate limit, in batch order", async () => {
    // 100 windows/s, burst 1,000: batches 11 and 12 wait about 1 s and 2 s.
    const { collector } = await start({ agentRateLimit: 100, maxWindowsPerBatch: 500, maxGpusPerHost: 100 });
    const p = await hello(collector, "gpu-node-1");
    for (let seq = 1; seq <= 12; seq++) p.send(batchRequest(seq, gpus(100, T0 + seq * 10_000)));
    const seqs: bigint[] = [];
    for (let i = 0; i < 12; i++) seqs.push(ackOf(await p.next()).seq);
    expect(seqs).toEqual(Array.from({ length: 12 }, (_, i) => BigInt(i + 1)));
    expect(collector.summary().totals.observedS).toBe(12 * 100 * 10);
  });

  it("throttles a flooding agent, then ends it with RESOURCE_EXHAUSTED, while a well-behaved agent keeps getting acks", async () => {
    const { collector, logs } = await start({ agentRateLimit: 100, maxWindowsPerBatch: 500 });
    const good = await hello(collector, "gpu-node-good");
    const flood = await hello(collector, "gpu-node-flood");
    // Burst 1,000 + 20 s of debt at 100/s: 30 batches of 100 pass, the 31st ends the stream.
    const windows = gpus(100);
    for (let seq = 1; seq <= 40; seq++) flood.send(batchRequest(seq, windows));
    let seq = 0;
    for (let i = 0; i < 3; i++)
      expect((await roundTrip(good, ++seq, gpus(2, T0 + seq * 10_000, "G"))).accepted).toBe(2);
    const s = await flood.status;
    expect(status[s.code]).toBe("RESOURCE_EXHAUSTED");
    expect(s.details).toMatch(
      /^the agent sent over its rate limit \(100 windows\/s, 50 batches\/s\) without waiting for its acks; come back in 2\d s$/,
    );
    expect(retryAfter(s)).toBeGreaterThan(20_000);
    // Throttled before: the burst was acknowledged at once, later acks were held and never sent.
    expect(flood.received).toBeGreaterThanOrEqual(1 + 10);
    expect(flood.received).toBeLessThan(1 + 30);
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="rate_limited"}')).toBe(1);
    expect(logs.filter((l) => l.includes("Pushed an agent back: the agent sent over its rate limit")).length).toBe(1);
    for (let i = 0; i < 3; i++)
      expect((await roundTrip(good, ++seq, gpus(2, T0 + seq * 10_000, "G"))).accepted).toBe(2);
    expect(await metric(collector, "trueidle_agents_connected")).toBe(1);
  });

  it("stops a flood of empty batches with the default message rate", async () => {
    const { collector } = await start();
    const flood = await hello(collector, "gpu-node-flood");
    // Burst 200 + 20 s at 50/s: 1,200 batches pass.
    for (let seq = 1; seq <= 1_300; seq++) flood.send(batchRequest(seq, []));
    const s = await flood.status;
    expect(status[s.code]).toBe("RESOURCE_EXHAUSTED");
    expect(s.details).toMatch(/rate limit \(2000 windows\/s, 50 batches\/s\)/);
    expect(retryAfter(s)).toBeGreaterThan(20_000);
    await hello(collector, "gpu-node-2");
  });

  it("refuses a message over maxMessageBytes with RESOURCE_EXHAUSTED and goes on serving the other agents", async () => {
    const { collector } = await start();
    const good = await hello(collector, "gpu-node-good");
    const big = await hello(collector, "gpu-node-big");
    big.send(batchRequest(1, [makeWindow({ model: "m".repeat(4 * 1024 * 1024) })]));
    expect(status[(await big.status).code]).toBe("RESOURCE_EXHAUSTED");
    expect((await roundTrip(good, 1, gpus(1))).accepted).toBe(1);
    await eventually(() => metric(collector, "trueidle_agents_connected"), 1);
  });

  it("fits an agent's batch of 2,000 busy windows with 256-character process names into the default message size", () => {
    const w = windowToProto({
      uuid: "GPU-11111111-2222-3333-4444-555555555555",
      index: 63,
      model: "NVIDIA H100 80GB HBM3",
      driverVersion: "550.54.15",
      startMs: T0,
      durationMs: 10_000,
      observedS: 10.000000001,
      reportedIdleS: 4.56789,
      reportedBusyS: 5.4321987,
      realBusyS: 2.987654321,
      stateS: {
        unavailable: 0.1234567,
        free_idle: 3.3333333,
        active: 2.22222222,
        busy_phantom: 1.111111111,
        held_idle: 3.1234567,
      },
      powerMeanW: 123.456789,
      powerMaxW: 700.123,
      powerFloorW: 68.5,
      powerLimitW: 700,
      memUsedMaxBytes: 85e9,
      memTotalBytes: 85_520_809_984,
      processesMax: 12,
      last: {
        timeMs: T0 + 9_000,
        state: "active",
        real: 0.6543210987,
        realSource: "sm_active",
        utilPercent: 97,
        powerW: 650.25,
        memUsedBytes: 84e9,
        processes: 12,
        idleStreakS: 0,
      },
      topHolders: [1, 2, 3].map((i) => ({
        pid: 4_000_000 + i,
        name: `/${"x".repeat(255)}`,
        usedMemoryBytes: 28e9,
        smShare: 0.123456789,
      })),
    });
    const bytes = toBinary(
      StreamRequestSchema,
      batchRequest(
        2 ** 40,
        Array.from({ length: 2_000 }, () => w),
      ),
    ).length;
    // About 2.2 MB: half the limit. Windows that also carry a 1 KiB error text each would not fit.
    expect(bytes).toBeLessThan(MAX_RECEIVE_MESSAGE_BYTES * 0.6);
  });

  it("accepts larger messages when maxMessageBytes is raised", async () => {
    const { collector } = await start({ maxMessageBytes: 8 * 1024 * 1024 });
    const p = await hello(collector, "gpu-node-1");
    // Through the transport; the window itself is still refused for its model string.
    const ack = await roundTrip(p, 1, [makeWindow({ model: "m".repeat(5 * 1024 * 1024) })]);
    expect(ack.rejections.map((r) => `${r.reason} ${r.field}`)).toEqual(["bad_string windows[0].model"]);
  });

  it("refuses bad limit options, naming each", async () => {
    await expect(
      startCollector({
        grpcListen: "127.0.0.1:0",
        httpListen: "127.0.0.1:0",
        thresholds: DEFAULT_THRESHOLDS,
        maxGpus: 0,
        maxAgents: 1.5,
        maxMessageBytes: 1024,
        agentRateLimit: 10,
        logger: createLogger({ write: () => undefined }),
      }),
    ).rejects.toThrow(
      /maxGpus must be a positive integer \(got 0\).*maxAgents must be a positive integer \(got 1\.5\).*maxMessageBytes must be an integer from 4194304.*agentRateLimit 10 windows\/s is too low for maxWindowsPerBatch 10000/,
    );
  });
});
