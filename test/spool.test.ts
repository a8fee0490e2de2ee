/**
 * The collector's disk spool with a real InfluxDB (Debian's influxd behind a TCP proxy that
 * a test takes down and brings back), a collector in this process and real gRPC clients:
 * acks from the spool while InfluxDB is away and every window in InfluxDB exactly once
 * after it drains; pushback when the spool is full, with the agent keeping its windows;
 * a spool kept over a restart; stop() settling writes in flight into the spool; and the
 * `trueidle collector` subprocess exiting 0 on SIGTERM (needs `npm run build`).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Shipper } from "../agent/shipper/shipper.js";
import { emptyStateSeconds, type GpuWindowRecord } from "../agent/window.js";
import { parseFlags } from "../cli/args.js";
import { collectorSpec, spoolOptionsFrom } from "../cli/collector-command.js";
import { startCollector, type Collector, type CollectorSpoolOptions } from "../collector/collector.js";
import { ensureSchema, RP_WINDOW } from "../collector/influx/schema.js";
import { batchRequest, helloRequest, makeWindow } from "../collector/testdata/windows.js";
import { RETRY_AFTER_METADATA_KEY } from "../common/grpc-service.js";
import { createLogger, silentLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import type { GpuWindow } from "../gen/trueidle/v1/ingest_pb.js";
import { eventually } from "./helpers/eventually.js";
import { influxQuery, rows, startInfluxd, type PrivateInfluxd } from "./helpers/influxdb.js";
import { Probe, ProbeFactory } from "./helpers/ingest-probe.js";
import { freePort } from "./helpers/ports.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";
import { startTrueidle } from "./helpers/trueidle-process.js";

let influx: PrivateInfluxd;
/** InfluxDB as the collector sees it: `down()` is InfluxDB stopped, `up()` started again. */
let proxy: TcpProxy;
beforeAll(async () => {
  influx = await startInfluxd();
  proxy = await TcpProxy.start({ targetPort: influx.port });
});
afterAll(async () => {
  await proxy?.close();
  await influx?.stop();
});

const running: Collector[] = [];
const probes = new ProbeFactory();
const cleanup: Array<() => Promise<void> | void> = [];
const tempDirs: string[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
  probes.close();
  await Promise.all(running.splice(0).map((c) => c.stop()));
  // InfluxDB back for the next test (up() refuses when the proxy already listens).
  await proxy.up().catch(() => undefined);
  for (const d of tempDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function spoolDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-spool-test-"));
  tempDirs.push(d);
  return path.join(d, "spool");
}

async function startSpooling(db: string, spool: CollectorSpoolOptions, logs: string[]): Promise<Collector> {
  const collector = await startCollector({
    grpcListen: "127.0.0.1:0",
    httpListen: "127.0.0.1:0",
    thresholds: DEFAULT_THRESHOLDS,
    logger: createLogger({ level: "debug", write: (l) => void logs.push(l) }),
    influx: { target: { baseUrl: `http://127.0.0.1:${proxy.port}`, database: db }, flushIntervalMs: 20 },
    spool: { spoolAfterMs: 300, ...spool },
  });
  running.push(collector);
  return collector;
}

async function metric(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const escaped = name.replace(/[{}"]/g, (c) => `\\${c}`);
  const m = new RegExp(`^${escaped} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`${name} is not in /metrics`);
  return Number(m[1]);
}

const logged = (logs: string[], re: RegExp): boolean =>
  logs.some((l) => re.test(String((JSON.parse(l) as { msg: unknown }).msg)));

/** One agent stream: replies in order and the final status (with its trailers). */
class Stream extends Probe {
  constructor(port: number) {
    super(probes.openCall(port));
  }

  async hello(host: string): Promise<void> {
    this.call.write(helloRequest(host, {}));
    expect((await this.next()).msg.case).toBe("welcome");
  }

  async batch(seq: number, windows: GpuWindow[]): Promise<void> {
    this.call.write(batchRequest(seq, windows));
    const r = await this.next();
    if (r.msg.case !== "ack") throw new Error(`expected an ack, got ${r.msg.case}`);
    expect(r.msg.value.seq).toBe(BigInt(seq));
    expect(r.msg.value.accepted).toBe(windows.length);
  }
}

const GPUS = 3;
const uuidOf = (g: number): string => `GPU-00000000-0000-0000-0000-${String(g).padStart(12, "0")}`;
const BASE = Math.floor(Date.now() / 10_000) * 10_000 - 2 * 3_600_000;

/** Windows of every GPU at `n` starts from start number `from`. */
function windows(from: number, n: number): GpuWindow[] {
  const out: GpuWindow[] = [];
  for (let k = from; k < from + n; k++) {
    for (let g = 0; g < GPUS; g++)
      out.push(
        makeWindow({
          uuid: uuidOf(g),
          index: g,
          startMs: BigInt(BASE + k * 10_000),
          activeS: k % 7,
          freeIdleS: 10 - (k % 7),
        }),
      );
  }
  return out;
}

/** Points per GPU in the database's gpu_window. */
async function pointsPerGpu(db: string): Promise<Record<string, number>> {
  const r = rows(
    await influxQuery(
      influx.url,
      `SELECT COUNT("observed_s") FROM "${db}"."${RP_WINDOW}"."gpu_window" GROUP BY "uuid"`,
      db,
    ),
  );
  return Object.fromEntries(r.map((x) => [String(x["uuid"]), Number(x["count"])]));
}

const expectAll = (starts: number): Record<string, number> =>
  Object.fromEntries(Array.from({ length: GPUS }, (_, g) => [uuidOf(g), starts]));

describe("the collector's disk spool", () => {
  it("acknowledges from the spool while InfluxDB is down, then drains it in order: every window in InfluxDB exactly once", async () => {
    const db = "spool_outage";
    await ensureSchema({ baseUrl: influx.url, database: db });
    const logs: string[] = [];
    const collector = await startSpooling(db, { dir: spoolDir() }, logs);
    const s = new Stream(collector.grpcPort);
    await s.hello("node-a");
    await s.batch(1, windows(0, 5));
    expect(await pointsPerGpu(db)).toEqual(expectAll(5));
    expect(await metric(collector.httpPort, "trueidle_spool_bytes")).toBe(0);

    await proxy.down();
    let bytes = 0;
    for (let b = 0; b < 6; b++) {
      await s.batch(2 + b, windows(5 + b * 10, 10));
      const now = await metric(collector.httpPort, "trueidle_spool_bytes");
      expect(now).toBeGreaterThan(bytes);
      bytes = now;
    }
    expect(await metric(collector.httpPort, "trueidle_spool_windows_total")).toBe(6 * 10 * GPUS);
    expect(logged(logs, /InfluxDB is slow or away \(a write to InfluxDB was not done within 300 ms\)/)).toBe(true);
    expect(await pointsPerGpu(db)).toEqual(expectAll(5));

    await proxy.up();
    await eventually("the spool drained", async () =>
      (await metric(collector.httpPort, "trueidle_spool_bytes")) === 0 &&
      logged(logs, /The spool is drained: 180 windows/)
        ? true
        : undefined,
    );
    expect(await pointsPerGpu(db)).toEqual(expectAll(65));

    // Direct again: acked once written, nothing more spooled.
    await s.batch(8, windows(65, 2));
    expect(await pointsPerGpu(db)).toEqual(expectAll(67));
    expect(await metric(collector.httpPort, "trueidle_spool_windows_total")).toBe(180);
    expect(logs.filter((l) => /"level":"error"/.test(l))).toEqual([]);
  });

  it("pushes agents back with RESOURCE_EXHAUSTED and a retry delay when the spool is full; the agent's windows arrive later", async () => {
    const db = "spool_full";
    await ensureSchema({ baseUrl: influx.url, database: db });
    await proxy.down();
    const logs: string[] = [];
    // About 30 lines of some 400 bytes.
    const collector = await startSpooling(db, { dir: spoolDir(), maxBytes: 12 * 1024 }, logs);

    const s = new Stream(collector.grpcPort);
    await s.hello("node-raw");
    await s.batch(1, windows(0, 4));
    s.call.write(batchRequest(2, windows(4, 10)));
    const st = await s.status;
    expect(st.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(st.details).toMatch(/the collector's spool is full while InfluxDB catches up/);
    const retryAfter = Number(st.metadata.get(RETRY_AFTER_METADATA_KEY)[0]);
    expect(retryAfter).toBeGreaterThanOrEqual(10_000);
    expect(retryAfter).toBeLessThanOrEqual(30_000);
    expect(await metric(collector.httpPort, 'trueidle_streams_refused_total{reason="spool_full"}')).toBe(1);

    // An agent with more windows than the spool holds: pushed back, it keeps them and comes back.
    const shipper = new Shipper({
      targets: [`127.0.0.1:${collector.grpcPort}`],
      host: { hostname: "node-agent", machineId: "m-agent", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger: silentLogger,
      maxWindowsPerBatch: 12,
      backoffInitialMs: 200,
      backoffMaxMs: 1_000,
    });
    cleanup.push(() => shipper.stop());
    shipper.start();
    const records = agentWindows(20);
    shipper.enqueue(records);
    await eventually("the agent pushed back", async () =>
      (await metric(collector.httpPort, 'trueidle_streams_refused_total{reason="spool_full"}')) >= 2 ? true : undefined,
    );
    expect(shipper.stats().buffered + shipper.stats().inFlight).toBeGreaterThan(0);
    expect(shipper.stats().dropped).toBe(0);

    await proxy.up();
    // The agent waits out the retry delay (10–30 s) before it comes back.
    expect(await shipper.drain(90_000)).toBe(true);
    await eventually("every window in InfluxDB", async () => {
      const got = await pointsPerGpu(db);
      return got[uuidOf(0)] === 4 && got["GPU-agent-0"] === 20 && got["GPU-agent-1"] === 20 ? got : undefined;
    });
    expect(shipper.stats().dropped).toBe(0);
  }, 150_000);

  it("keeps the spool when stopped while InfluxDB is down, and drains it at the next start with the same directory", async () => {
    const db = "spool_restart";
    await ensureSchema({ baseUrl: influx.url, database: db });
    const dir = spoolDir();
    await proxy.down();
    const logs: string[] = [];
    const first = await startSpooling(db, { dir }, logs);
    // Two collectors on one spool directory: the second is refused, naming the fix.
    await expect(startSpooling(db, { dir }, [])).rejects.toThrow(
      /is in use by another collector .*give each collector its own --spool-dir/,
    );
    const s = new Stream(first.grpcPort);
    await s.hello("node-r");
    for (let b = 0; b < 4; b++) await s.batch(1 + b, windows(b * 8, 8));
    await first.stop();
    expect((await s.status).code).toBe(status.UNAVAILABLE);
    expect(
      logged(
        logs,
        /The collector stopped: 0 windows were acknowledged as written to InfluxDB and 96 from the spool; 0 were written from the spool, and \d+ bytes stay in it for the next start/,
      ),
    ).toBe(true);
    expect(fs.existsSync(path.join(dir, "lock"))).toBe(false);
    expect(await pointsPerGpu(db)).toEqual({});

    await proxy.up();
    const logs2: string[] = [];
    const second = await startSpooling(db, { dir }, logs2);
    expect(logged(logs2, /The spool at .* holds \d+ bytes of windows from an earlier run/)).toBe(true);
    await eventually("the spool drained", async () =>
      (await metric(second.httpPort, "trueidle_spool_bytes")) === 0 && logged(logs2, /The spool is drained: 96 windows/)
        ? true
        : undefined,
    );
    expect(await pointsPerGpu(db)).toEqual(expectAll(32));
  });

  it("stop() moves writes in flight to the spool and acknowledges them before the streams end", async () => {
    const db = "spool_stop";
    await ensureSchema({ baseUrl: influx.url, database: db });
    const dir = spoolDir();
    const logs: string[] = [];
    // A long spool-after: the writes stay in flight, waiting for InfluxDB.
    const collector = await startSpooling(db, { dir, spoolAfterMs: 600_000 }, logs);
    const s = new Stream(collector.grpcPort);
    await s.hello("node-s");
    // Once a batch is written the schema is ready, so later writes are sent (and fail) rather than wait for it.
    await s.batch(1, windows(0, 1));
    await proxy.down();
    for (let b = 0; b < 3; b++) s.call.write(batchRequest(2 + b, windows(1 + b * 5, 5)));
    await eventually("a failed write attempt", async () =>
      (await metric(collector.httpPort, "trueidle_influx_write_errors_total")) >= 1 ? true : undefined,
    );
    expect(s.taken()).toEqual([]);

    await collector.stop();
    const st = await s.status;
    expect(st.code).toBe(status.UNAVAILABLE);
    const acks = s.taken().map((r) => (r.msg.case === "ack" ? Number(r.msg.value.seq) : r.msg.case));
    expect(acks).toEqual([2, 3, 4]);
    expect(logged(logs, /Moved 3 batches \(45 windows\) still waiting for InfluxDB to the spool at shutdown/)).toBe(
      true,
    );
    expect(
      logged(logs, /The collector stopped: 3 windows were acknowledged as written to InfluxDB and 45 from the spool/),
    ).toBe(true);

    await proxy.up();
    const logs2: string[] = [];
    await startSpooling(db, { dir }, logs2);
    await eventually("the windows in InfluxDB", async () => {
      const got = await pointsPerGpu(db);
      return got[uuidOf(0)] === 16 ? got : undefined;
    });
    expect(await pointsPerGpu(db)).toEqual(expectAll(16));
  });

  it("trueidle collector --spool-dir: on SIGTERM acknowledged windows stay in the spool and it exits 0 with a summary", async () => {
    const db = "spool_sigterm";
    await ensureSchema({ baseUrl: influx.url, database: db });
    const dir = spoolDir();
    const grpcPort = await freePort();
    const collector = startTrueidle([
      "collector",
      "--plaintext",
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      "127.0.0.1:0",
      "--influx-url",
      `http://127.0.0.1:${proxy.port}/${db}`,
      "--influx-flush-interval",
      "20ms",
      "--spool-dir",
      dir,
      "--spool-max-size",
      "64MiB",
      "--spool-after",
      "300ms",
      "--log-level",
      "info",
    ]);
    cleanup.push(async () => void (await collector.stop("SIGKILL")));
    await collector.waitForOutput(
      /agents are acknowledged once their windows are written, or in the spool at .* \(at most 64MiB\)/,
    );
    await proxy.down();
    const s = new Stream(grpcPort);
    await s.hello("node-t");
    await s.batch(1, windows(0, 4));
    await collector.waitForOutput(/InfluxDB is slow or away/);
    expect(await collector.stop("SIGTERM")).toBe(0);
    expect(collector.output()).toMatch(
      /The collector stopped: 0 windows were acknowledged as written to InfluxDB and 12 from the spool; 0 were written from the spool, and \d+ bytes stay in it for the next start/,
    );
    expect((await s.status).code).toBe(status.UNAVAILABLE);
  });

  it("--spool-dir needs --influx-url; --spool-max-size takes a size", () => {
    const v = parseFlags(
      collectorSpec,
      ["--spool-dir", "/var/lib/trueidle/spool", "--spool-max-size", "256MiB", "--spool-after", "2s"],
      {},
    );
    expect(() => spoolOptionsFrom(v, false)).toThrow(/--spool-dir needs --influx-url/);
    expect(spoolOptionsFrom(v, true)).toEqual({
      dir: "/var/lib/trueidle/spool",
      maxBytes: 256 * 1024 * 1024,
      spoolAfterMs: 2_000,
    });
    expect(spoolOptionsFrom(parseFlags(collectorSpec, [], {}), true)).toBeUndefined();
    expect(() => parseFlags(collectorSpec, ["--spool-max-size", "1k"], {})).toThrow(
      /--spool-max-size: must be at least 1048576 bytes/,
    );
  });
});

/** `n` windows of each of two GPUs of the agent's host, as the agent's pipeline makes them. */
function agentWindows(n: number): GpuWindowRecord[] {
  const out: GpuWindowRecord[] = [];
  for (let k = 0; k < n; k++) {
    for (let g = 0; g < 2; g++) {
      out.push({
        uuid: `GPU-agent-${g}`,
        index: g,
        model: "NVIDIA H100 80GB HBM3",
        driverVersion: "550.90.07",
        startMs: BASE + k * 10_000,
        durationMs: 10_000,
        observedS: 10,
        stateS: { ...emptyStateSeconds(), free_idle: 10 },
        reportedIdleS: 10,
        reportedBusyS: 0,
        realBusyS: 0,
        processesMax: 0,
        topHolders: [],
        last: {
          timeMs: BASE + k * 10_000 + 9_000,
          state: "free_idle",
          real: 0,
          realSource: "none",
          processes: 0,
          idleStreakS: 1,
        },
      });
    }
  }
  return out;
}
