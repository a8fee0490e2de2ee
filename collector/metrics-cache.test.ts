/**
 * /metrics rendered at most once per --metrics-cache-max-age and kept gzip-compressed: real
 * HTTP requests to a real CollectorHttpServer, the answers read and gunzipped by node:zlib.
 */
import { request } from "node:http";
import { gunzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { expectValidExposition } from "../test/helpers/exposition-check.js";
import { eventually } from "../test/helpers/eventually.js";
import { FleetState } from "./fleet-state.js";
import { CollectorHttpServer } from "./http-server.js";
import { acceptsGzip } from "./metrics-cache.js";
import { SelfMetrics } from "./self-metrics.js";
import { makeWindow } from "./testdata/windows.js";

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
