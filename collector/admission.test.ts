/**
 * Admission under attack, over real sockets: streams that never say Hello, many streams on
 * one connection, connections that say nothing, too many connections from one address,
 * labels that would blow the bytes-per-series budget, token guessing. Each test checks
 * what the attacker gets, the counter an operator sees, and that agents are still served.
 */
import { connect as h2connect, constants as h2 } from "node:http2";
import { connect as netConnect, type Socket } from "node:net";
import { Metadata, status, type StatusObject } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { RETRY_AFTER_METADATA_KEY, STREAM_METHOD_PATH } from "../common/grpc-service.js";
import { MAX_HEADER_LIST_BYTES, MAX_STREAMS_PER_CONNECTION } from "./grpc-server.js";
import { TokenSet } from "./auth/tokens.js";
import type { Collector, CollectorOptions } from "./collector.js";
import { GPU_LABEL_BYTES, HOST_LABEL_BYTES } from "./series-budget.js";
import { TestCollectors } from "./testdata/test-collectors.js";
import { batchRequest, helloRequest, makeWindow } from "./testdata/windows.js";
import { eventuallyEquals as eventually, metricValue, Probe } from "../test/helpers/ingest-probe.js";

const harness = new TestCollectors();
const probes = harness.probes;
afterEach(() => harness.stopAll());
const start = (extra: Partial<CollectorOptions> = {}): ReturnType<TestCollectors["start"]> => harness.start(extra);
const metric = (c: Collector, series: string): Promise<number | undefined> => metricValue(c.httpPort, series);

async function welcomed(p: Probe): Promise<string> {
  return Promise.race([
    p.next().then((r) => r.msg.case as string),
    p.status.then((s) => `${status[s.code]}: ${s.details}`),
  ]);
}

/** A TCP connection that sends nothing; resolves `closed` when the collector closes it. */
function silentSocket(port: number): { socket: Socket; closed: Promise<void> } {
  const socket = netConnect(port, "127.0.0.1");
  socket.on("error", () => {});
  // Read (and drop) what the collector sends, or its close would wait behind unread bytes.
  socket.resume();
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  return { socket, closed };
}

describe("stream and connection admission", () => {
  it("keeps streams that never say Hello from holding an agent's place: a known host replaces its stream meanwhile, and the silent ones end at the Hello timeout", async () => {
    const { collector } = await start({ maxAgents: 1, maxConnections: 100, helloTimeoutMs: 1_000 });
    const first = probes.open(collector.grpcPort);
    first.send(helloRequest("gpu-node-1"));
    expect(await welcomed(first)).toBe("welcome");
    // Twenty streams, each on its own connection, that never say Hello.
    const silent = Array.from({ length: 20 }, () => probes.open(collector.grpcPort));
    // The known host reconnects: its new stream takes the place of its older one.
    const again = probes.open(collector.grpcPort);
    again.send(helloRequest("gpu-node-1"));
    expect(await welcomed(again)).toBe("welcome");
    expect(status[(await first.status).code]).toBe("UNAVAILABLE");
    // A new host finds the one place taken by a real host, not by the silent streams.
    const other = probes.open(collector.grpcPort);
    other.send(helloRequest("gpu-node-2"));
    expect(await welcomed(other)).toMatch(/^RESOURCE_EXHAUSTED: the collector serves 1 agents/);
    const ended = await Promise.all(silent.map((p) => p.status));
    expect(new Set(ended.map((s) => `${status[s.code]}: ${s.details}`))).toEqual(
      new Set([
        "DEADLINE_EXCEEDED: no hello within 1 s of opening the stream; an agent sends hello first (--hello-timeout)",
      ]),
    );
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="hello_timeout"}')).toBe(20);
    expect(await metric(collector, "trueidle_agents_connected")).toBe(1);
    // The host that stayed is still served.
    again.send(batchRequest(1, [makeWindow({ uuid: "GPU-a" })]));
    const ack = await again.next();
    expect(ack.msg.case === "ack" && ack.msg.value.accepted).toBe(1);
  });

  it(`serves at most ${MAX_STREAMS_PER_CONNECTION} streams per connection and caps request headers at ${MAX_HEADER_LIST_BYTES} bytes`, async () => {
    const { collector } = await start({ helloTimeoutMs: 2_000 });
    const session = h2connect(`http://127.0.0.1:${collector.grpcPort}`);
    session.on("error", () => {});
    const settings = await new Promise<{ maxConcurrentStreams?: number; maxHeaderListSize?: number }>((resolve) =>
      session.once("remoteSettings", resolve),
    );
    expect(settings.maxConcurrentStreams).toBe(MAX_STREAMS_PER_CONNECTION);
    expect(settings.maxHeaderListSize).toBe(MAX_HEADER_LIST_BYTES);
    const headers = {
      ":method": "POST",
      ":path": STREAM_METHOD_PATH,
      "content-type": "application/grpc",
      te: "trailers",
    };
    // Ninety-nine silent streams on the one connection: only a few ever reach the collector.
    const streams = Array.from({ length: 99 }, () => {
      const s = session.request(headers, { endStream: false });
      s.on("error", () => {});
      return s;
    });
    // A stream whose headers are over the cap is reset by HTTP/2 before grpc-js sees it.
    // (The cap holds once the client has the collector's settings, as every HTTP/2 setting does.)
    const big = h2connect(`http://127.0.0.1:${collector.grpcPort}`);
    big.on("error", () => {});
    await new Promise((resolve) => big.once("remoteSettings", resolve));
    const bigStream = big.request({ ...headers, "x-junk": "j".repeat(MAX_HEADER_LIST_BYTES) }, { endStream: false });
    const bigEnd = new Promise<number | undefined>((resolve) => {
      bigStream.on("error", () => {});
      bigStream.on("close", () => resolve(bigStream.rstCode));
    });
    expect(await bigEnd).not.toBe(h2.NGHTTP2_NO_ERROR);
    // Within one Hello timeout, the collector ended exactly the streams it served.
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="hello_timeout"}')).toBe(
      MAX_STREAMS_PER_CONNECTION,
    );
    for (const s of streams) s.close(h2.NGHTTP2_CANCEL);
    session.destroy();
    big.destroy();
    // An agent still gets in.
    const p = probes.open(collector.grpcPort);
    p.send(helloRequest("gpu-node-1"));
    expect(await welcomed(p)).toBe("welcome");
  });

  it("caps connections per address and in all, closes connections that open no stream in time, counts each, and still serves agents", async () => {
    const { collector, logs } = await start({ maxConnections: 8, maxConnectionsPerAddress: 5, helloTimeoutMs: 1_000 });
    const sockets = Array.from({ length: 9 }, () => silentSocket(collector.grpcPort));
    // Four over the per-address cap are closed at once; five wait for their setup deadline.
    await eventually(
      () => metric(collector, 'trueidle_connections_refused_total{listener="grpc",reason="max_per_address"}'),
      4,
    );
    await Promise.all(sockets.map((s) => s.closed));
    await eventually(
      () => metric(collector, 'trueidle_connections_refused_total{listener="grpc",reason="setup_timeout"}'),
      5,
    );
    await eventually(() => metric(collector, 'trueidle_connections_open{listener="grpc"}'), 0);
    expect(logs.some((l) => l.includes("the limit per address (--max-connections-per-address)"))).toBe(true);
    const p = probes.open(collector.grpcPort);
    p.send(helloRequest("gpu-node-1"));
    expect(await welcomed(p)).toBe("welcome");
  });

  it("logs a cancelled stream as cancelled, and a half-closed one as closed by the agent", async () => {
    const { collector, logs } = await start();
    const cancelled = probes.open(collector.grpcPort);
    cancelled.send(helloRequest("gpu-node-cancel"));
    expect(await welcomed(cancelled)).toBe("welcome");
    cancelled.call.cancel();
    const closed = probes.open(collector.grpcPort);
    closed.send(helloRequest("gpu-node-close"));
    expect(await welcomed(closed)).toBe("welcome");
    closed.call.end();
    await closed.status;
    const line = async (host: string): Promise<string> => {
      for (;;) {
        const l = logs.find((x) => x.includes(`Agent on ${host} disconnected`));
        if (l) return (JSON.parse(l) as { msg: string }).msg;
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    expect(await line("gpu-node-cancel")).toBe(
      "Agent on gpu-node-cancel disconnected: the stream was cancelled by the agent, or its connection was lost.",
    );
    expect(await line("gpu-node-close")).toBe("Agent on gpu-node-close disconnected: the agent closed the stream.");
  });

  it("refuses a Hello and windows whose labels would blow the bytes-per-series budget", async () => {
    const { collector } = await start();
    const labels = Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`label_${i}`, "v".repeat(120)]));
    const fat = probes.open(collector.grpcPort);
    fat.send(helloRequest("gpu-node-fat", labels));
    expect(await welcomed(fat)).toMatch(
      new RegExp(
        `^INVALID_ARGUMENT: hello\\.host: the host name and labels take \\d+ bytes .*at most ${HOST_LABEL_BYTES} are allowed`,
      ),
    );
    const p = probes.open(collector.grpcPort);
    p.send(helloRequest("gpu-node-1"));
    expect(await welcomed(p)).toBe("welcome");
    // Each field within its own length cap; together over the GPU's part of the budget.
    const model = "M".repeat(GPU_LABEL_BYTES - 160);
    p.send(
      batchRequest(1, [
        makeWindow({ uuid: "GPU-ok" }),
        makeWindow({ uuid: `GPU-${"u".repeat(120)}`, model, driverVersion: "5".repeat(60) }),
      ]),
    );
    const ack = await p.next();
    if (ack.msg.case !== "ack") throw new Error(`expected an ack, got ${ack.msg.case}`);
    expect(ack.msg.value.accepted).toBe(1);
    expect(ack.msg.value.rejections.map((r) => `${r.index} ${r.reason} ${r.field}`)).toEqual([
      "1 too_large windows[1].model",
    ]);
    expect(await metric(collector, 'trueidle_windows_rejected_total{reason="too_large"}')).toBe(1);
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="invalid"}')).toBe(1);
  });

  it("throttles token guessing per address: after ten failures every stream from there gets RESOURCE_EXHAUSTED with a retry delay, unchecked", async () => {
    const token = "4f2a9c0d6e8b1a3f5c7e9d0b2a4c6e8f";
    const { collector } = await start({ tokens: new TokenSet([{ name: "fleet", token }]) });
    const tryToken = async (t: string): Promise<StatusObject | string> => {
      const md = new Metadata();
      md.set("authorization", `Bearer ${t}`);
      const p = new Probe(probes.openCall(collector.grpcPort, md));
      p.send(helloRequest("gpu-node-1"));
      const r = await welcomed(p);
      if (r === "welcome") {
        p.call.end();
        return r;
      }
      return p.status;
    };
    const codes: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await tryToken(`wrong-token-${String(i).padStart(20, "0")}`);
      codes.push(typeof r === "string" ? r : (status[r.code] ?? "?"));
    }
    expect(codes).toEqual([...Array(10).fill("UNAUTHENTICATED"), "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]);
    // The right token is not even checked while the address is throttled.
    const right = await tryToken(token);
    expect(typeof right === "string" ? right : status[right.code]).toBe("RESOURCE_EXHAUSTED");
    if (typeof right !== "string") {
      expect(right.details).toMatch(/^too many streams from 127\.0\.0\.1 failed the token check/);
      expect(Number(right.metadata.get(RETRY_AFTER_METADATA_KEY)[0])).toBeGreaterThan(1_000);
    }
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="unauthenticated"}')).toBe(10);
    expect(await metric(collector, 'trueidle_streams_refused_total{reason="auth_throttled"}')).toBe(3);
  });
});
