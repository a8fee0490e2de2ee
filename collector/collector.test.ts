/**
 * The collector over real sockets: a grpc-js client built from the service definition
 * talks to it, and /metrics and /healthz are read over HTTP.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { StreamRequestSchema } from "../gen/trueidle/v1/ingest_pb.js";
import { eventuallyEquals as eventually, metricValue, type Probe } from "../test/helpers/ingest-probe.js";
import { promtool } from "../test/helpers/prometheus.js";
import { startCollector, type Collector, type CollectorOptions } from "./collector.js";
import { NOW, TestCollectors } from "./testdata/test-collectors.js";
import { batchRequest, helloRequest, makeWindow, phantomWindow } from "./testdata/windows.js";

const harness = new TestCollectors();
const probes = harness.probes;
afterEach(() => harness.stopAll());
const start = (extra: Partial<CollectorOptions> = {}): ReturnType<TestCollectors["start"]> => harness.start(extra);

function open(collector: Collector): Probe {
  return probes.open(collector.grpcPort);
}

function openRaw(collector: Collector): Probe<Buffer> {
  return probes.openRaw(collector.grpcPort);
}

async function http(
  collector: Collector,
  path: string,
  method = "GET",
): Promise<{ status: number; type: string | null; body: string }> {
  const res = await fetch(`http://127.0.0.1:${collector.httpPort}${path}`, { method });
  return { status: res.status, type: res.headers.get("content-type"), body: await res.text() };
}

function metric(collector: Collector, series: string): Promise<number | undefined> {
  return metricValue(collector.httpPort, series);
}

async function hello(collector: Collector, hostname = "gpu-node-1"): Promise<Probe> {
  const p = open(collector);
  p.send(helloRequest(hostname));
  const r = await p.next();
  expect(r.msg.case).toBe("welcome");
  return p;
}

describe("collector over gRPC and HTTP", () => {
  it("welcomes an agent with the fleet's thresholds and logs the connection", async () => {
    const { collector, logs } = await start({
      thresholds: { utilBusyPercent: 7, realActiveRatio: 0.2, heldMemoryBytes: 1 << 20 },
    });
    const p = open(collector);
    p.send(helloRequest("gpu-node-1"));
    const r = await p.next();
    expect(r.msg.case).toBe("welcome");
    if (r.msg.case !== "welcome") return;
    expect(r.msg.value.collectorId).toBe("collector-under-test");
    expect(r.msg.value.thresholds).toMatchObject({
      utilBusyPercent: 7,
      realActiveRatio: 0.2,
      heldMemoryBytes: 1_048_576n,
    });
    expect((await http(collector, "/healthz")).body).toBe('{"status":"ok","agents":1,"gpus":0}\n');
    const connected = logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => String(l.msg).startsWith("Agent on gpu-node-1 connected from "));
    expect(connected).toMatchObject({ level: "info", host: "gpu-node-1", windowMs: 10_000 });
    expect(String(connected?.peer)).toMatch(/^(127\.0\.0\.1|ipv4:)/);

    p.call.end();
    expect((await p.status).code).toBe(status.OK);
    await eventually(async () => (await http(collector, "/healthz")).body, '{"status":"ok","agents":0,"gpus":0}\n');
    expect(logs.some((l) => l.includes("Agent on gpu-node-1 disconnected: the agent closed the stream."))).toBe(true);
  });

  it("counts an agent that vanishes without closing its stream as disconnected", async () => {
    const { collector, logs } = await start();
    const p = await hello(collector);
    expect(await metric(collector, "trueidle_agents_connected")).toBe(1);
    p.call.cancel();
    await eventually(() => metric(collector, "trueidle_agents_connected"), 0);
    expect(logs.some((l) => l.includes("Agent on gpu-node-1 disconnected: "))).toBe(true);
  });

  it("acks each batch after applying it, and acks a re-sent batch without counting it again", async () => {
    const { collector } = await start();
    const p = await hello(collector);
    const batch = [makeWindow({ uuid: "GPU-a" }), phantomWindow({ uuid: "GPU-b", index: 1 })];
    p.send(batchRequest(1, batch));
    const ack = await p.next();
    expect(ack.msg.case === "ack" && ack.msg.value).toMatchObject({ seq: 1n, accepted: 2, rejections: [] });
    expect(collector.summary()).toMatchObject({
      gpus: 2,
      up: 2,
      byState: { free_idle: 1, busy_phantom: 1 },
      totals: { observedS: 20, realIdleS: 20, reportedIdleS: 10 },
    });

    p.send(batchRequest(2, batch));
    const again = await p.next();
    expect(again.msg.case === "ack" && again.msg.value).toMatchObject({ seq: 2n, accepted: 2, rejections: [] });
    expect(collector.summary().totals.observedS).toBe(20);
    const labels = 'host="gpu-node-1",gpu="1",uuid="GPU-b",model="NVIDIA H100 80GB HBM3",site="dc1"';
    expect(await metric(collector, `trueidle_gpu_state_seconds_total{${labels},state="busy_phantom"}`)).toBe(10);
    expect(await metric(collector, `trueidle_gpu_state{${labels},state="busy_phantom"}`)).toBe(1);
    expect(await metric(collector, "trueidle_windows_received_total")).toBe(4);
  });

  it("rejects a bad window in the ack and counts it, accepting the rest of the batch", async () => {
    const { collector, logs } = await start();
    const p = await hello(collector);
    p.send(
      batchRequest(7, [
        makeWindow({ uuid: "GPU-a" }),
        makeWindow({ uuid: "GPU-b", powerMeanW: Number.NaN }),
        makeWindow({ uuid: "GPU-c", startMs: BigInt(NOW + 3_600_000) }),
      ]),
    );
    const ack = await p.next();
    expect(ack.msg.case).toBe("ack");
    if (ack.msg.case !== "ack") return;
    expect(ack.msg.value.accepted).toBe(1);
    expect(ack.msg.value.rejections.map((r) => ({ index: r.index, reason: r.reason, field: r.field }))).toEqual([
      { index: 1, reason: "bad_number", field: "windows[1].power_mean_w" },
      { index: 2, reason: "in_future", field: "windows[2].start_ms" },
    ]);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="bad_number"}')).toBe(1);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="in_future"}')).toBe(1);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="too_old"}')).toBe(0);
    expect(collector.summary().gpus).toBe(1);
    expect(
      logs.some((l) =>
        l.includes("Rejected 2 of 3 windows from gpu-node-1; the first was windows[1].power_mean_w (bad_number)."),
      ),
    ).toBe(true);
  });

  it("refuses GPUs of a host beyond maxGpusPerHost", async () => {
    const { collector } = await start({ maxGpusPerHost: 1 });
    const p = await hello(collector);
    p.send(batchRequest(1, [makeWindow({ uuid: "GPU-a" }), makeWindow({ uuid: "GPU-b" })]));
    const ack = await p.next();
    expect(ack.msg.case === "ack" && ack.msg.value.rejections.map((r) => `${r.reason} ${r.field}`)).toEqual([
      "too_many_gpus windows[1].uuid",
    ]);
  });

  const invalid: [string, (p: Probe) => void, RegExp, Partial<CollectorOptions>?][] = [
    ["a batch before hello", (p) => p.send(batchRequest(1, [makeWindow()])), /^batch arrived before hello/],
    [
      "a hello with a bad label key",
      (p) => p.send(helloRequest("gpu-node-1", { Bad: "x" })),
      /^hello\.host\.labels\["Bad"\]/,
    ],
    ["a hello with an empty hostname", (p) => p.send(helloRequest("")), /^hello\.host\.hostname is empty/],
    ["a hello with an absurd window_ms", (p) => p.send(helloRequest("gpu-node-1", {}, 1)), /^hello\.window_ms is 1;/],
    [
      "a second hello",
      (p) => {
        p.send(helloRequest());
        p.send(helloRequest());
      },
      /^hello was sent twice/,
    ],
    ["an empty message", (p) => p.send(create(StreamRequestSchema, {})), /holds neither hello nor batch/],
    [
      "a batch whose seq does not increase",
      (p) => {
        p.send(helloRequest());
        p.send(batchRequest(5, []));
        p.send(batchRequest(5, []));
      },
      /^batch\.seq 5 is not above the previous 5/,
    ],
    [
      "a batch over maxWindowsPerBatch",
      (p) => {
        p.send(helloRequest());
        p.send(batchRequest(1, [makeWindow(), makeWindow(), makeWindow()]));
      },
      /^batch\.windows holds 3 windows; at most 2/,
      { maxWindowsPerBatch: 2 },
    ],
  ];
  it.each(invalid)("ends the stream with INVALID_ARGUMENT on %s", async (_name, send, details, extra) => {
    const { collector, logs } = await start(extra);
    const p = open(collector);
    send(p);
    const s = await p.status;
    expect({ code: status[s.code], details: s.details }).toMatchObject({
      code: "INVALID_ARGUMENT",
      details: expect.stringMatching(details),
    });
    expect(logs.some((l) => l.includes('"level":"warn"') && l.includes("Ended an agent stream as invalid: "))).toBe(
      true,
    );
    // The collector goes on serving.
    const ok = await hello(collector, "gpu-node-2");
    ok.call.end();
  });

  it("ends the stream with INVALID_ARGUMENT on bytes that are not a StreamRequest", async () => {
    const { collector } = await start();
    const p = openRaw(collector);
    p.send(Buffer.from([0xff, 0xff, 0xff]));
    const s = await p.status;
    expect(status[s.code]).toBe("INVALID_ARGUMENT");
    expect(s.details).toMatch(/^the message could not be decoded as trueidle\.v1\.StreamRequest: /);
    // A well-formed message over the same raw client is served, so the test above can fail.
    const q = openRaw(collector);
    q.send(Buffer.from(toBinary(StreamRequestSchema, helloRequest())));
    expect((await q.next()).msg.case).toBe("welcome");
    q.call.end();
  });

  it("refuses messages over 4 MiB with RESOURCE_EXHAUSTED", async () => {
    const { collector } = await start();
    const p = await hello(collector);
    p.send(batchRequest(1, [makeWindow({ model: "m".repeat(4 * 1024 * 1024) })]));
    expect(status[(await p.status).code]).toBe("RESOURCE_EXHAUSTED");
  });

  it("serves /metrics that promtool accepts, /healthz, / and 404", async () => {
    const { collector } = await start();
    const p = await hello(collector);
    p.send(
      batchRequest(1, [
        makeWindow({ uuid: "GPU-a", model: 'odd "model" \\ name' }),
        makeWindow({ uuid: "GPU-b", powerMeanW: -1 }),
      ]),
    );
    await p.next();
    const m = await http(collector, "/metrics");
    expect(m.status).toBe(200);
    expect(m.type).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(m.body).toContain("trueidle_agents_connected 1\n");
    expect(m.body).toContain('model="odd \\"model\\" \\\\ name"');
    const check = await promtool(["check", "metrics"], m.body);
    expect({ code: check.code, out: check.stdout + check.stderr }).toEqual({ code: 0, out: "" });

    const head = await http(collector, "/metrics", "HEAD");
    expect([head.status, head.body]).toEqual([200, ""]);
    expect(JSON.parse((await http(collector, "/healthz?verbose=1")).body)).toEqual({
      status: "ok",
      agents: 1,
      gpus: 1,
    });
    const index = await http(collector, "/");
    expect(index.status).toBe(200);
    expect(index.body).toContain('href="/metrics"');
    expect((await http(collector, "/nope")).status).toBe(404);
    expect((await http(collector, "/metrics", "POST")).status).toBe(405);
  });

  it("stops gracefully: open streams end with UNAVAILABLE, both ports close, and stop is safe twice", async () => {
    const { collector } = await start();
    const p = await hello(collector);
    await Promise.all([collector.stop(), collector.stop()]);
    await collector.stop();
    const s = await p.status;
    expect(status[s.code]).toBe("UNAVAILABLE");
    await expect(fetch(`http://127.0.0.1:${collector.httpPort}/healthz`)).rejects.toThrow();
  });

  it("refuses bad options, naming every problem at once", async () => {
    await expect(
      startCollector({
        grpcListen: "nowhere",
        httpListen: "[::1",
        thresholds: { ...DEFAULT_THRESHOLDS, realActiveRatio: 2 },
        maxGpusPerHost: 0,
        logger: createLogger({ write: () => undefined }),
      }),
    ).rejects.toThrow(
      /grpcListen "nowhere" has no :PORT.*httpListen "\[::1" has an unclosed \[.*maxGpusPerHost must be a positive integer.*thresholds\.realActiveRatio must be in \(0, 1\]/,
    );
  });

  it("reports a port in use and leaves nothing listening", async () => {
    const { collector } = await start();
    await expect(start({ httpListen: `127.0.0.1:${collector.httpPort}` })).rejects.toThrow(
      /HTTP could not listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/,
    );
  });
});
