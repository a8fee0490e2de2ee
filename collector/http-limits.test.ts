/**
 * The HTTP side under attack, over real sockets: scrapers that stop reading a large
 * exposition, more scrapes than the collector answers at once, too many connections from
 * one address, request heads sent slowly, password guessing. Each test checks what the
 * client gets, the counter an operator sees, and that /healthz and honest scrapes go on.
 */
import { connect as netConnect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { BasicAuthUsers } from "./auth/basic-auth.js";
import type { Collector, CollectorOptions } from "./collector.js";
import { MAX_SCRAPES_PER_ADDRESS } from "./http-server.js";
import { TestCollectors } from "./testdata/test-collectors.js";
import { batchRequest, helloRequest, makeWindow } from "./testdata/windows.js";
import { eventuallyEquals as eventually, metricValue } from "../test/helpers/ingest-probe.js";

const harness = new TestCollectors();
afterEach(() => harness.stopAll());
const start = (extra: Partial<CollectorOptions> = {}): ReturnType<TestCollectors["start"]> => harness.start(extra);
const metric = (c: Collector, series: string): Promise<number | undefined> => metricValue(c.httpPort, series);

/** `hosts` hosts of 64 GPUs each, with labels near the bytes-per-series budget: an exposition of tens of MB. */
async function bigFleet(collector: Collector, hosts: number): Promise<void> {
  const labels = { site: "s".repeat(120), cluster: "c".repeat(120), pool: "p".repeat(120), rack: "r".repeat(120) };
  for (let h = 0; h < hosts; h++) {
    const p = harness.probes.open(collector.grpcPort);
    p.send(helloRequest(`gpu-node-${String(h).padStart(3, "0")}-${"h".repeat(60)}`, labels));
    expect((await p.next()).msg.case).toBe("welcome");
    const windows = Array.from({ length: 64 }, (_, i) =>
      makeWindow({
        uuid: `GPU-${String(h).padStart(4, "0")}-${String(i).padStart(2, "0")}-${"u".repeat(80)}`,
        index: i,
        model: `NVIDIA ${"M".repeat(100)}`,
      }),
    );
    p.send(batchRequest(1, windows));
    const ack = await p.next();
    expect(ack.msg.case === "ack" && ack.msg.value.accepted).toBe(64);
  }
}

/** Sends a request head and reads nothing back: the socket's receive buffer fills and stays full. */
function stalledRequest(port: number, path: string): { socket: Socket; head: Promise<string> } {
  const socket = netConnect(port, "127.0.0.1");
  socket.on("error", () => {});
  socket.write(`GET ${path} HTTP/1.1\r\nHost: collector\r\n\r\n`);
  // Read the first bytes only (the status line), then stop reading.
  const head = new Promise<string>((resolve) => {
    socket.once("data", (d: Buffer) => {
      socket.pause();
      resolve(d.toString("latin1").split("\r\n", 1)[0] ?? "");
    });
  });
  return { socket, head };
}

describe("the HTTP side under attack", () => {
  it(`answers at most ${MAX_SCRAPES_PER_ADDRESS} scrapes at once per address (503 with Retry-After beyond), holds nothing for a scraper that stopped reading, and /healthz answers throughout`, async () => {
    const { collector } = await start({ maxGpusPerHost: 64 });
    await bigFleet(collector, 20);
    const stalled = Array.from({ length: MAX_SCRAPES_PER_ADDRESS }, () =>
      stalledRequest(collector.httpPort, "/metrics"),
    );
    expect(await Promise.all(stalled.map((s) => s.head))).toEqual(
      Array(MAX_SCRAPES_PER_ADDRESS).fill("HTTP/1.1 200 OK"),
    );
    const third = await fetch(`http://127.0.0.1:${collector.httpPort}/metrics`);
    expect(third.status).toBe(503);
    expect(third.headers.get("retry-after")).toBe("5");
    await third.text();
    const health = await fetch(`http://127.0.0.1:${collector.httpPort}/healthz`);
    expect(await health.json()).toMatchObject({ status: "ok", gpus: 20 * 64 });
    // The stalled scrapers go away: their answers are cut short, counted, and the slots free again.
    for (const s of stalled) s.socket.destroy();
    await eventually(() => metric(collector, "trueidle_metrics_scrapes_aborted_total"), MAX_SCRAPES_PER_ADDRESS);
    // The third scrape, and any of the polls above that came while the two were still in progress.
    expect(
      await metric(collector, 'trueidle_http_requests_refused_total{reason="scrapes_in_flight"}'),
    ).toBeGreaterThanOrEqual(1);
    const whole = await (await fetch(`http://127.0.0.1:${collector.httpPort}/metrics`)).text();
    expect(whole.length).toBeGreaterThan(20 * 1024 * 1024);
    expect(whole.split("\n").filter((l) => l.startsWith("trueidle_gpu_up{")).length).toBe(20 * 64);
    expect(whole.endsWith("\n")).toBe(true);
  });

  it("caps HTTP connections per address and closes a connection whose request head does not arrive in time (408), counting both", async () => {
    const { collector } = await start({ httpMaxConnections: 8 });
    // A quarter of 8 from one address: the third and fourth are closed at once.
    const sockets = Array.from({ length: 4 }, () => {
      const s = netConnect(collector.httpPort, "127.0.0.1");
      s.on("error", () => {});
      const got: Buffer[] = [];
      s.on("data", (d: Buffer) => void got.push(d));
      const closed = new Promise<string>((resolve) =>
        s.once("close", () => resolve(Buffer.concat(got).toString("latin1"))),
      );
      return { s, closed };
    });
    // The two kept send a request head slowly, a header line at a time, never finishing it.
    for (const { s } of sockets) s.write("GET /metrics HTTP/1.1\r\n");
    const trickle = setInterval(() => {
      for (const { s } of sockets) if (s.writable) s.write("X-Slow: 1\r\n");
    }, 500);
    try {
      const answers = await Promise.all(sockets.map((x) => x.closed));
      expect(answers.filter((a) => a === "").length).toBe(2);
      expect(answers.filter((a) => a.startsWith("HTTP/1.1 408")).length).toBe(2);
    } finally {
      clearInterval(trickle);
    }
    expect(
      await metric(collector, 'trueidle_connections_refused_total{listener="http",reason="max_per_address"}'),
    ).toBe(2);
    const slow = (await metric(collector, 'trueidle_http_requests_refused_total{reason="header_timeout"}')) ?? 0;
    const setup =
      (await metric(collector, 'trueidle_connections_refused_total{listener="http",reason="setup_timeout"}')) ?? 0;
    expect(slow + setup).toBe(2);
    expect((await fetch(`http://127.0.0.1:${collector.httpPort}/healthz`)).status).toBe(200);
  }, 30_000);

  it("answers password guessing with 429 and Retry-After after ten failures from an address, without checking even the right password", async () => {
    const { collector } = await start({
      httpBasicAuth: BasicAuthUsers.fromPasswords({ prometheus: "right-password" }),
    });
    const get = (password: string): Promise<Response> =>
      fetch(`http://127.0.0.1:${collector.httpPort}/metrics`, {
        headers: { authorization: `Basic ${Buffer.from(`prometheus:${password}`).toString("base64")}` },
      });
    expect((await get("right-password")).status).toBe(200);
    const codes: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await get(`guess-${i}`);
      codes.push(r.status);
      await r.text();
    }
    expect(codes).toEqual([...Array(10).fill(401), 429, 429]);
    const right = await get("right-password");
    expect(right.status).toBe(429);
    expect(Number(right.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    // /healthz needs no password and is never throttled.
    expect((await fetch(`http://127.0.0.1:${collector.httpPort}/healthz`)).status).toBe(200);
  });
});
