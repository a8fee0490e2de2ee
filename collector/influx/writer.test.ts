/**
 * The writer against a scripted HTTP server on a real socket: batching, the retry table,
 * the bounded queue, withdrawal and stop. (Against a real InfluxDB: test/influx-history.test.ts.)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { gunzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, type Logger } from "../../common/log.js";
import { InfluxWriter, type InfluxWriterOptions, type SchemaGate } from "./writer.js";

interface Seen {
  url: string;
  headers: IncomingMessage["headers"];
  lines: string[];
}

type Answer = { status: number; body?: string; headers?: Record<string, string> } | "hang";

/** An HTTP server that records each request and answers with `answer(request, n)`. */
async function scriptedServer(
  answer: (seen: Seen, n: number) => Answer,
): Promise<{ url: string; seen: Seen[]; server: Server; release: () => void }> {
  const seen: Seen[] = [];
  const hanging: ServerResponse[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      let body = Buffer.concat(chunks);
      if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
      const s: Seen = {
        url: req.url ?? "",
        headers: req.headers,
        lines: body
          .toString("utf8")
          .split("\n")
          .filter((l) => l !== ""),
      };
      seen.push(s);
      const a = answer(s, seen.length);
      if (a === "hang") {
        hanging.push(res);
        return;
      }
      res.writeHead(a.status, { "content-type": "application/json", ...(a.headers ?? {}) });
      res.end(a.body ?? "");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("no address");
  servers.push(server);
  return {
    url: `http://127.0.0.1:${addr.port}`,
    seen,
    server,
    release: () => {
      for (const r of hanging.splice(0)) {
        r.writeHead(204);
        r.end();
      }
    },
  };
}

const servers: Server[] = [];
const writers: InfluxWriter[] = [];
afterEach(async () => {
  await Promise.all(writers.splice(0).map((w) => w.stop()));
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

function capture(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  return {
    lines,
    logger: createLogger({ level: "debug", write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
  };
}

function writer(
  url: string,
  extra: Partial<InfluxWriterOptions> = {},
): {
  w: InfluxWriter;
  counters: { influxPointsWritten: number; influxWriteErrors: number };
  logs: Array<Record<string, unknown>>;
} {
  const { logger, lines } = capture();
  const counters = { influxPointsWritten: 0, influxWriteErrors: 0 };
  const w = new InfluxWriter({
    target: { baseUrl: url, database: "trueidle" },
    logger,
    counters,
    backoff: { initialMs: 1, maxMs: 5 },
    flushIntervalMs: 60_000,
    ...extra,
  });
  writers.push(w);
  return { w, counters, logs: lines };
}

const points = (n: number, tag = "a"): string[] =>
  Array.from({ length: n }, (_, i) => `m,t=${tag} v=${i} ${1_000 + i}`);

describe("InfluxWriter", () => {
  it("posts full batches at once and the rest on flush, to db, rp gpu_window and precision ms", async () => {
    const srv = await scriptedServer(() => ({ status: 204 }));
    const { w, counters } = writer(srv.url, { batchSize: 5 });
    const done = w.submit(points(12));
    await w.flush();
    expect(await done).toEqual({ status: "done", written: 12, rejected: 0 });
    expect(srv.seen.map((s) => s.lines.length)).toEqual([5, 5, 2]);
    expect(srv.seen.flatMap((s) => s.lines)).toEqual(points(12));
    expect(srv.seen[0]?.url).toBe("/write?db=trueidle&rp=gpu_window&precision=ms");
    expect(counters).toEqual({ influxPointsWritten: 12, influxWriteErrors: 0 });
  });

  it("sends a partial batch once its oldest line has waited the flush interval", async () => {
    const srv = await scriptedServer(() => ({ status: 204 }));
    const { w } = writer(srv.url, { batchSize: 1000, flushIntervalMs: 20 });
    expect(await w.submit(points(3))).toEqual({ status: "done", written: 3, rejected: 0 });
    expect(srv.seen).toHaveLength(1);
  });

  it("keeps a batch under batchBytes", async () => {
    const srv = await scriptedServer(() => ({ status: 204 }));
    const { w } = writer(srv.url, { batchSize: 1000, batchBytes: 45 });
    const lines = points(6); // 15 bytes each with the newline: three a request
    const done = w.submit(lines);
    await w.flush();
    await done;
    expect(srv.seen.map((s) => s.lines.length)).toEqual([3, 3]);
  });

  it("splits a batch InfluxDB finds too large (413) in halves until it fits", async () => {
    const srv = await scriptedServer((s) =>
      s.lines.length > 2 ? { status: 413, body: '{"error":"Request Entity Too Large"}' } : { status: 204 },
    );
    const { w, counters } = writer(srv.url, { batchSize: 8 });
    const done = w.submit(points(8));
    await w.flush();
    expect(await done).toEqual({ status: "done", written: 8, rejected: 0 });
    expect(srv.seen.map((s) => s.lines.length)).toEqual([8, 4, 2, 2, 4, 2, 2]);
    expect(counters).toEqual({ influxPointsWritten: 8, influxWriteErrors: 3 });
  });

  it("drops a single line that is still too large, and counts and logs it", async () => {
    const srv = await scriptedServer(() => ({ status: 413, body: '{"error":"Request Entity Too Large"}' }));
    const { w, counters, logs } = writer(srv.url);
    const done = w.submit(points(1));
    await w.flush();
    expect(await done).toEqual({ status: "done", written: 0, rejected: 1 });
    expect(counters.influxWriteErrors).toBe(1);
    expect(logs.some((l) => l["level"] === "error" && /single line as too large/.test(String(l["msg"])))).toBe(true);
  });

  it("drops a batch refused with 400, counts it, and logs an ERROR with the status and InfluxDB's error", async () => {
    const srv = await scriptedServer(() => ({
      status: 400,
      body: '{"error":"unable to parse \'m v=\': missing field value"}',
    }));
    const { w, counters, logs } = writer(srv.url);
    const done = w.submit(points(4));
    await w.flush();
    expect(await done).toEqual({ status: "done", written: 0, rejected: 4 });
    expect(srv.seen).toHaveLength(1);
    expect(counters).toEqual({ influxPointsWritten: 0, influxWriteErrors: 1 });
    expect(w.stats().pointsDropped).toBe(4);
    const err = logs.find((l) => l["level"] === "error");
    expect(err?.["msg"]).toMatch(/HTTP 400: unable to parse 'm v=': missing field value.*dropped and counted/);
    expect(err?.["status"]).toBe(400);
  });

  it("counts what a partial write kept and what it dropped", async () => {
    const srv = await scriptedServer(() => ({
      status: 400,
      body: '{"error":"partial write: field type conflict: input field \\"v\\" on measurement \\"m\\" is type integer, already exists as type float dropped=1"}',
    }));
    const { w, counters, logs } = writer(srv.url);
    const done = w.submit(points(5));
    await w.flush();
    expect((await done).status).toBe("done");
    expect(counters).toEqual({ influxPointsWritten: 4, influxWriteErrors: 1 });
    expect(w.stats().pointsDropped).toBe(1);
    expect(logs.find((l) => l["level"] === "error")?.["msg"]).toMatch(/refused 1 of 5 points .*field type conflict/);
  });

  it.each([
    [429, { "retry-after": "0" }],
    [500, {}],
    [503, {}],
    [401, {}],
  ])("retries after %i and resolves once written", async (status, headers) => {
    const srv = await scriptedServer((_s, n) =>
      n <= 2 ? { status, body: '{"error":"busy"}', headers } : { status: 204 },
    );
    const { w, counters, logs } = writer(srv.url);
    const done = w.submit(points(3));
    await w.flush();
    expect(await done).toEqual({ status: "done", written: 3, rejected: 0 });
    expect(srv.seen).toHaveLength(3);
    expect(counters).toEqual({ influxPointsWritten: 3, influxWriteErrors: 2 });
    expect(logs.some((l) => /retrying with backoff/.test(String(l["msg"])))).toBe(true);
    expect(logs.some((l) => /succeed again after 2 failed attempts/.test(String(l["msg"])))).toBe(true);
  });

  it("asks for the schema again when the database is missing, and waits for it before retrying", async () => {
    const srv = await scriptedServer((_s, n) =>
      n === 1 ? { status: 404, body: '{"error":"database not found: \\"trueidle\\""}' } : { status: 204 },
    );
    const events: string[] = [];
    let ready = true;
    let open: (() => void) | undefined;
    const schema: SchemaGate = {
      ready: () =>
        ready
          ? Promise.resolve()
          : new Promise<void>((r) => {
              open = r;
            }),
      invalidate: (reason) => {
        events.push(`invalidate: ${reason}`);
        ready = false;
        setTimeout(() => {
          ready = true;
          events.push("ready");
          open?.();
        }, 10);
      },
    };
    const { w } = writer(srv.url, { schema });
    const done = w.submit(points(2));
    await w.flush();
    expect(await done).toEqual({ status: "done", written: 2, rejected: 0 });
    expect(events).toEqual(['invalidate: database not found: "trueidle"', "ready"]);
    expect(srv.seen).toHaveLength(2);
  });

  it("refuses a submission that does not fit the bounded queue, whole, and counts it", async () => {
    const srv = await scriptedServer(() => ({ status: 204 }));
    const { w, counters, logs } = writer(srv.url, { batchSize: 100, maxQueuedPoints: 3 });
    const first = w.submit(points(2));
    expect(await w.submit(points(2, "b"))).toEqual({ status: "queue_full" });
    expect(counters.influxWriteErrors).toBe(1);
    expect(w.stats()).toMatchObject({ queuedPoints: 2, queueFull: 1 });
    expect(logs.some((l) => l["level"] === "warn" && /queue is full/.test(String(l["msg"])))).toBe(true);
    await w.flush();
    expect(await first).toEqual({ status: "done", written: 2, rejected: 0 });
    expect(srv.seen.flatMap((s) => s.lines)).toEqual(points(2));
  });

  it("withdraws the queued lines of an aborted submission; lines already sent finish", async () => {
    const srv = await scriptedServer(() => ({ status: 204 }));
    const { w } = writer(srv.url, { batchSize: 100 });
    const ctl = new AbortController();
    const gone = w.submit(points(3, "gone"), ctl.signal);
    const kept = w.submit(points(2, "kept"));
    ctl.abort();
    expect(await gone).toEqual({ status: "withdrawn" });
    await w.flush();
    expect(await kept).toEqual({ status: "done", written: 2, rejected: 0 });
    expect(srv.seen.flatMap((s) => s.lines)).toEqual(points(2, "kept"));
  });

  it("does not retry a failed request nobody waits for any more", async () => {
    const ctl = new AbortController();
    const srv = await scriptedServer(() => {
      ctl.abort();
      return { status: 503, body: '{"error":"down"}' };
    });
    const { w } = writer(srv.url, { backoff: { initialMs: 60_000, maxMs: 60_000 } });
    const done = w.submit(points(2), ctl.signal);
    await w.flush();
    expect(await done).toEqual({ status: "withdrawn" });
    expect(srv.seen).toHaveLength(1);
    expect(w.stats()).toMatchObject({ inFlightRequests: 0, failedRequests: 1 });
  });

  it("stop() flushes what is queued; later submissions resolve stopped", async () => {
    const srv = await scriptedServer(() => ({ status: 204 }));
    const { w } = writer(srv.url, { batchSize: 100 });
    const done = w.submit(points(4));
    await w.stop();
    expect(await done).toEqual({ status: "done", written: 4, rejected: 0 });
    expect(await w.submit(points(1))).toEqual({ status: "stopped" });
    await w.stop();
  });

  it("stop() gives up after stopTimeoutMs while InfluxDB keeps failing; nothing unwritten resolves done", async () => {
    const srv = await scriptedServer(() => ({ status: 503, body: '{"error":"down"}' }));
    const { w, logs } = writer(srv.url, { stopTimeoutMs: 200, backoff: { initialMs: 20, maxMs: 50 } });
    const done = w.submit(points(2));
    await w.stop();
    expect(await done).toEqual({ status: "stopped" });
    expect(logs.some((l) => l["level"] === "error" && /Stopped writing to InfluxDB/.test(String(l["msg"])))).toBe(true);
  });

  it("times a request out and retries it", async () => {
    const srv = await scriptedServer((_s, n) => (n === 1 ? "hang" : { status: 204 }));
    const { w, counters } = writer(srv.url, { requestTimeoutMs: 200 });
    const done = w.submit(points(2));
    await w.flush();
    expect(await done).toEqual({ status: "done", written: 2, rejected: 0 });
    expect(counters.influxWriteErrors).toBe(1);
    srv.release();
  });

  it("sends credentials as Basic auth and can gzip the body", async () => {
    const srv = await scriptedServer(() => ({ status: 204 }));
    const { logger } = capture();
    const w = new InfluxWriter({
      target: { baseUrl: srv.url, database: "d b", username: "u", password: "p" },
      retentionPolicy: "gpu_hour",
      gzip: true,
      logger,
    });
    writers.push(w);
    const done = w.submit(points(2));
    await w.flush();
    await done;
    expect(srv.seen[0]?.headers["authorization"]).toBe(`Basic ${Buffer.from("u:p").toString("base64")}`);
    expect(srv.seen[0]?.headers["content-encoding"]).toBe("gzip");
    expect(srv.seen[0]?.lines).toEqual(points(2));
    expect(srv.seen[0]?.url).toBe("/write?db=d+b&rp=gpu_hour&precision=ms");
  });
});
