/**
 * /metrics rendered at most once per --metrics-cache-max-age and kept gzip-compressed: real
 * HTTP requests to a real CollectorHttpServer, the answers read and gunzipped by node:zlib.
 */
import { request } from "node:http";
import { crc32, gunzipSync, gzipSync, inflateRawSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { expectValidExposition } from "../test/helpers/exposition-check.js";
import { eventually } from "../test/helpers/eventually.js";
import { FleetState } from "./fleet-state.js";
import { CollectorHttpServer } from "./http-server.js";
import { acceptsGzip, MetricsCache } from "./metrics-cache.js";
import { renderMetricsChunks } from "./metrics-render.js";
import { SelfMetrics } from "./self-metrics.js";
import { makeWindow, T0 } from "./testdata/windows.js";

let server: CollectorHttpServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** GET /metrics with the given Accept-Encoding (none: no header), the body as sent. */
function scrape(port: number, acceptEncoding?: string, method = "GET"): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: "/metrics",
        method,
        headers: acceptEncoding === undefined ? {} : { "accept-encoding": acceptEncoding },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on("data", (b: Buffer) => parts.push(b));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

function start(
  opts: { maxAgeMs?: number; costlyRenderMs?: number; render?: () => Promise<string> } = {},
): Promise<{ port: number; fleet: FleetState; self: SelfMetrics }> {
  const fleet = new FleetState();
  fleet.applyWindow({ hostname: "node-1", labels: { site: "dc1" }, windowMs: 10_000 }, makeWindow());
  const self = new SelfMetrics();
  server = new CollectorHttpServer({
    fleet,
    self,
    logger: silentLogger,
    metricsCacheMaxAgeMs: opts.maxAgeMs,
    metricsCacheCostlyRenderMs: opts.costlyRenderMs,
    processMetrics: { render: opts.render ?? (async () => "") },
  });
  return server.listen({ host: "127.0.0.1", port: 0 }).then((port) => ({ port, fleet, self }));
}

describe("/metrics cache and gzip", () => {
  it("answers gzip to a scraper that asks for it and text to one that does not, the same exposition, rendered once", async () => {
    const { port, self } = await start({ maxAgeMs: 60_000 });
    const zipped = await scrape(port, "gzip");
    expect(zipped.status).toBe(200);
    expect(zipped.headers["content-encoding"]).toBe("gzip");
    expect(zipped.headers["vary"]).toBe("Accept-Encoding");
    const text = gunzipSync(zipped.body).toString("utf8");
    expect(text).toContain("trueidle_gpu_up{");
    await expectValidExposition(text);

    const plain = await scrape(port);
    expect(plain.headers["content-encoding"]).toBeUndefined();
    expect(plain.headers["vary"]).toBe("Accept-Encoding");
    expect(plain.body.toString("utf8")).toBe(text);
    const again = await scrape(port, "deflate, gzip;q=0.5");
    expect(again.headers["content-encoding"]).toBe("gzip");
    expect(gunzipSync(again.body).toString("utf8")).toBe(text);
    expect([self.metricsRenders, self.metricsCacheHits]).toEqual([1, 2]);
    expect(self.metricsExpositionBytes.identity).toBe(Buffer.byteLength(text));
    expect(self.metricsExpositionBytes.gzip).toBe(zipped.body.length);
    expect(self.metricsRenderSeconds).toBeGreaterThan(0);
    // The first render counted itself; its hits came after it.
    expect(text).toMatch(/^trueidle_metrics_renders_total 1$/m);
    expect(text).toMatch(/^trueidle_metrics_cache_hits_total 0$/m);
  });

  it("renders anew once the exposition is older than the bound, with what changed meanwhile", async () => {
    const { port, fleet, self } = await start({ maxAgeMs: 0 });
    const first = (await scrape(port, "gzip")).body;
    fleet.applyWindow(
      { hostname: "node-2", labels: {}, windowMs: 10_000 },
      makeWindow({ uuid: "GPU-other", model: "Tesla T4" }),
    );
    const second = gunzipSync((await scrape(port, "gzip")).body).toString("utf8");
    expect(gunzipSync(first).toString("utf8")).not.toContain('model="Tesla T4"');
    expect(second).toContain('trueidle_gpu_up{host="node-2"');
    expect([self.metricsRenders, self.metricsCacheHits]).toEqual([2, 0]);
  });

  it("a scrape that comes while a render is in progress follows it, even with a bound of 0", async () => {
    let release: (tail: string) => void = () => undefined;
    let calls = 0;
    const tail = "# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\nprocess_open_fds 7\n";
    const { port, self } = await start({
      maxAgeMs: 0,
      render: () => {
        calls++;
        return new Promise<string>((resolve) => (release = resolve));
      },
    });
    const a = scrape(port, "gzip");
    await eventually("the first render starts", () => (calls === 1 ? true : undefined), 10_000, 10);
    const b = scrape(port);
    await eventually("the second scrape joins", () => (self.metricsCacheHits === 1 ? true : undefined), 10_000, 10);
    release(tail);
    const [za, pb] = await Promise.all([a, b]);
    expect(gunzipSync(za.body).toString("utf8")).toBe(pb.body.toString("utf8"));
    expect(pb.body.toString("utf8").endsWith(tail)).toBe(true);
    expect([calls, self.metricsRenders, self.metricsCacheHits]).toEqual([1, 1, 1]);
  });

  it("answers 500 when the render fails, and renders again for the next scrape", async () => {
    let fail = true;
    const { port, self } = await start({
      maxAgeMs: 60_000,
      render: async () => {
        if (fail) throw new Error("no process metrics");
        return "";
      },
    });
    expect((await scrape(port, "gzip")).status).toBe(500);
    fail = false;
    const ok = await scrape(port, "gzip");
    expect(ok.status).toBe(200);
    expect(gunzipSync(ok.body).toString("utf8")).toContain("trueidle_gpu_up{");
    expect(self.metricsRenders).toBe(2);
  });

  it("a cheap render is reused while nothing changed and redone after a change; a costly one is reused within the bound whatever changed", async () => {
    const node3 = { hostname: "node-3", labels: {}, windowMs: 10_000 };
    {
      const { port, fleet, self } = await start({ maxAgeMs: 60_000 });
      await scrape(port, "gzip");
      await scrape(port);
      expect([self.metricsRenders, self.metricsCacheHits]).toEqual([1, 1]);
      fleet.applyWindow(node3, makeWindow({ uuid: "GPU-third", model: "Tesla T4" }));
      expect(gunzipSync((await scrape(port, "gzip")).body).toString("utf8")).toContain('trueidle_gpu_up{host="node-3"');
      // The collector's own figures count as a change too.
      self.httpAuthFailures++;
      expect((await scrape(port)).body.toString("utf8")).toMatch(/^trueidle_http_auth_failures_total 1$/m);
      expect([self.metricsRenders, self.metricsCacheHits]).toEqual([3, 1]);
      await server?.stop();
    }
    const { port, fleet, self } = await start({ maxAgeMs: 60_000, costlyRenderMs: 0 });
    await scrape(port, "gzip");
    fleet.applyWindow(node3, makeWindow({ uuid: "GPU-third", model: "Tesla T4" }));
    expect(gunzipSync((await scrape(port, "gzip")).body).toString("utf8")).not.toContain('host="node-3"');
    expect([self.metricsRenders, self.metricsCacheHits]).toEqual([1, 1]);
  });

  it("HEAD renders nothing", async () => {
    const { port, self } = await start();
    const head = await scrape(port, "gzip", "HEAD");
    expect(head.status).toBe(200);
    expect(head.headers["content-encoding"]).toBe("gzip");
    expect(head.body.length).toBe(0);
    expect(self.metricsRenders).toBe(0);
  });

  it("reads Accept-Encoding as HTTP says", () => {
    expect(acceptsGzip(undefined)).toBe(false);
    expect(acceptsGzip("")).toBe(false);
    expect(acceptsGzip("gzip")).toBe(true);
    expect(acceptsGzip("GZIP")).toBe(true);
    expect(acceptsGzip("br, gzip;q=0.8")).toBe(true);
    expect(acceptsGzip("gzip;q=0")).toBe(false);
    expect(acceptsGzip("identity")).toBe(false);
    expect(acceptsGzip("*")).toBe(true);
    expect(acceptsGzip("*, gzip;q=0")).toBe(false);
    expect(acceptsGzip("deflate")).toBe(false);
  });
});

const PROCESS_TAIL = "# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\nprocess_open_fds 7\n";

/**
 * A first render of a fleet of `hosts` hosts of 8 GPUs each (on a stopped clock) through a
 * MetricsCache: its gzip output as pushed, and the text renderMetricsChunks makes of the same
 * state.
 */
async function gzipRender(
  hosts: number,
  opts: { parallelGzip?: boolean; gzipBlockBytes?: number } = {},
): Promise<{ gz: Buffer; pieces: Buffer[]; text: Buffer; chunks: number; self: SelfMetrics }> {
  const fleet = new FleetState({ now: () => T0 + 10_000 });
  for (let h = 0; h < hosts; h++) {
    for (let i = 0; i < 8; i++) {
      fleet.applyWindow(
        { hostname: `node-${h}`, labels: { site: "dc1" }, windowMs: 10_000 },
        makeWindow({ uuid: `GPU-${h}-${i}`, index: i }),
      );
    }
  }
  const self = new SelfMetrics();
  const cache = new MetricsCache({ fleet, self, process: { render: async () => PROCESS_TAIL }, ...opts });
  const e = cache.exposition();
  // The render waits for the process metrics before it renders: the state is the same now.
  const chunks = [...renderMetricsChunks(fleet, self, undefined, PROCESS_TAIL)];
  const pieces: Buffer[] = [];
  for await (const piece of e.gzip()) pieces.push(piece);
  return { gz: Buffer.concat(pieces), pieces, text: Buffer.from(chunks.join("")), chunks: chunks.length, self };
}

/**
 * `gz` is exactly one gzip member of `text`: a 10-byte header with no optional fields, one
 * deflate stream that ends where the 8-byte trailer starts, and a trailer with the text's
 * CRC-32 and length. Members laid end to end fail it: the first one's deflate stream ends
 * before the last trailer, short of the text.
 */
function expectOneGzipMember(gz: Buffer, text: Buffer): void {
  expect(gunzipSync(gz).equals(text), "gunzip gives the text").toBe(true);
  // ID1 ID2, CM deflate, FLG none: the deflate stream starts at byte 10.
  expect([...gz.subarray(0, 4)]).toEqual([0x1f, 0x8b, 8, 0]);
  const body = gz.subarray(10, gz.length - 8);
  const inflated = inflateRawSync(body, { info: true }) as unknown as {
    buffer: Buffer;
    engine: { bytesWritten: number };
  };
  expect(inflated.buffer.equals(text), "the deflate stream holds the whole text").toBe(true);
  expect(inflated.engine.bytesWritten, "the deflate stream ends at the trailer").toBe(body.length);
  expect(gz.readUInt32LE(gz.length - 8), "trailer CRC-32").toBe(crc32(text));
  expect(gz.readUInt32LE(gz.length - 4), "trailer ISIZE").toBe(text.length % 2 ** 32);
}

describe("/metrics gzip output", () => {
  it("the check for one gzip member refuses members laid end to end", () => {
    const text = Buffer.from("trueidle_gpu_up 1\n".repeat(1000));
    expectOneGzipMember(gzipSync(text), text);
    const twoMembers = Buffer.concat([gzipSync(text.subarray(0, 5000)), gzipSync(text.subarray(5000))]);
    expect(gunzipSync(twoMembers).equals(text)).toBe(true);
    expect(() => expectOneGzipMember(twoMembers, text)).toThrow();
  });

  it("is one gzip member of the rendered text, its trailer the text's CRC-32 and length, every byte counted", async () => {
    const { gz, text, self } = await gzipRender(1);
    expectOneGzipMember(gz, text);
    expect(text.toString("utf8")).toContain('trueidle_gpu_up{host="node-0"');
    expect(text.toString("utf8").endsWith(PROCESS_TAIL)).toBe(true);
    expect(self.metricsExpositionBytes).toEqual({ identity: text.length, gzip: gz.length });
  });

  it("is still one gzip member when the text spans many blocks compressed apart", async () => {
    const { gz, pieces, text, self } = await gzipRender(25, { gzipBlockBytes: 100_000 });
    expect(text.length).toBeGreaterThan(500_000);
    // The header, a piece per block, the trailer.
    expect(pieces.length).toBeGreaterThanOrEqual(2 + Math.floor(text.length / 200_000));
    expectOneGzipMember(gz, text);
    expect(self.metricsExpositionBytes).toEqual({ identity: text.length, gzip: gz.length });
    // Each block starts with the text before it as its dictionary: about as small as one deflate stream.
    expect(gz.length).toBeLessThan(gzipSync(text, { level: 1 }).length * 1.05);
  });

  it("ends with an empty last block where the text ends with a block", async () => {
    // Every chunk a block of its own: the last block, made at the end, has no text.
    const { gz, pieces, text, chunks } = await gzipRender(3, { gzipBlockBytes: 1 });
    expect(chunks).toBeGreaterThan(1);
    // The header, a block per chunk, the empty last block (a final block of no symbols), the trailer.
    expect(pieces.length).toBe(chunks + 3);
    expect([...(pieces.at(-2) as Buffer)]).toEqual([0x03, 0x00]);
    expectOneGzipMember(gz, text);
  });

  it("a render stopped between blocks fails its readers, and no block deflated meanwhile is pushed after", async () => {
    const fleet = new FleetState({ now: () => T0 + 10_000 });
    // About 25 chunks, each a block: the render is a few blocks ahead of the first one pushed at most.
    for (let i = 0; i < 400; i++) {
      fleet.applyWindow(
        { hostname: `node-${i >> 3}`, labels: {}, windowMs: 10_000 },
        makeWindow({ uuid: `GPU-${i}`, index: i & 7 }),
      );
    }
    const cache = new MetricsCache({
      fleet,
      self: new SelfMetrics(),
      process: { render: async () => "" },
      gzipBlockBytes: 1,
    });
    const e = cache.exposition();
    const reader = e.gzip();
    expect((await reader.next()).done).toBe(false);
    cache.stop();
    await expect(
      (async () => {
        while (!(await reader.next()).done);
      })(),
    ).rejects.toThrow(/stopping/);
    const pieces = e.chunks.length;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(e.chunks.length).toBe(pieces);
  });

  it("without the parallel gzip (Node 20 before 20.15), one gzip stream: one member of the same text", async () => {
    const { gz, text, self } = await gzipRender(25, { parallelGzip: false });
    expectOneGzipMember(gz, text);
    expect(self.metricsExpositionBytes).toEqual({ identity: text.length, gzip: gz.length });
  });
});
