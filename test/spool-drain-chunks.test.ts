/**
 * The spool drains every acknowledged window when its chunks end inside a segment: the real
 * SpoolingSink and InfluxWriter against a real InfluxDB (Debian's influxd behind a TCP proxy
 * that the test takes down and brings back). Small segments (a 1 MiB spool has 64 KiB ones)
 * and small chunks make many chunk ends fall inside a segment, and batches of very different
 * sizes make the next segment's first record fit into what is left of a chunk — the case in
 * which a read once went on in the next segment and the drainer consumed the rest of the
 * segment unwritten (load test: 8–22 % of acknowledged windows never in InfluxDB).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureSchema, RP_WINDOW } from "../collector/influx/schema.js";
import { InfluxWriter } from "../collector/influx/writer.js";
import { SpoolingSink } from "../collector/spool/spooling-sink.js";
import { createLogger } from "../common/log.js";
import { eventually } from "./helpers/eventually.js";
import { influxQuery, rows, startInfluxd, type PrivateInfluxd } from "./helpers/influxdb.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

let influx: PrivateInfluxd;
let proxy: TcpProxy;
let tmp: string;
beforeAll(async () => {
  influx = await startInfluxd();
  proxy = await TcpProxy.start({ targetPort: influx.port });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-spool-chunks-"));
});
afterAll(async () => {
  await proxy?.close();
  await influx?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const BASE = Math.floor(Date.now() / 10_000) * 10_000 - 2 * 3_600_000;
const GPUS = 8;
/**
 * Batch sizes in windows, in turn: records of a few sizes, so that the record that starts a
 * segment (the one that did not fit into the previous one) is often smaller than what is left
 * of a chunk.
 */
const SIZES = [8, 16, 8, 24, 8, 16, 8, 32];

/** Batch `b`'s lines: one window line per (GPU, start), every (uuid, start) once across batches. */
function batch(b: number, firstStart: number): string[] {
  const n = SIZES[b % SIZES.length] as number;
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = firstStart + Math.floor(i / GPUS);
    const g = i % GPUS;
    lines.push(
      `gpu_window,host=node-${b % 5},uuid=GPU-${String(g).padStart(8, "0")},idle_class=free_idle ` +
        `observed_s=10,active_s=${k % 7},free_idle_s=${10 - (k % 7)},batch=${b}i ${BASE + k * 10_000 + g}`,
    );
  }
  return lines;
}

async function windowsIn(db: string): Promise<number> {
  const r = rows(
    await influxQuery(influx.url, `SELECT COUNT("observed_s") FROM "${db}"."${RP_WINDOW}"."gpu_window"`, db),
  );
  return Number(r[0]?.["count"] ?? 0);
}

describe("draining the spool in chunks", () => {
  it("writes every spooled window to InfluxDB when chunks end inside segments and the next segment starts with a small record", async () => {
    const db = "spool_chunks";
    await ensureSchema({ baseUrl: influx.url, database: db });
    const logs: string[] = [];
    const logger = createLogger({ level: "debug", write: (l) => void logs.push(l) });
    const writer = new InfluxWriter({
      target: { baseUrl: `http://127.0.0.1:${proxy.port}`, database: db },
      logger,
      flushIntervalMs: 10,
      backoff: { initialMs: 20, maxMs: 200 },
    });
    const counters = { spoolBytes: 0, spooledWindows: 0 };
    const sink = await SpoolingSink.open({
      dir: path.join(tmp, "spool"),
      writer,
      logger,
      counters,
      // 64 KiB segments (a sixteenth of the bound), 16 KiB chunks: some 4 chunk ends per segment.
      maxBytes: 1024 * 1024,
      chunkBytes: 16 * 1024,
      spoolAfterMs: 50,
    });
    sink.start();
    try {
      await proxy.down();
      const stream = new AbortController();
      let windows = 0;
      let start = 0;
      // Each batch acknowledged (spooled) before the next: the spool's records in this order.
      for (let b = 0; windows < 6_000; b++) {
        const lines = batch(b, start);
        start += Math.ceil(lines.length / GPUS);
        expect(await sink.submit(lines, stream.signal)).toEqual({ status: "spooled" });
        windows += lines.length;
      }
      expect(counters.spooledWindows).toBe(windows);
      expect(counters.spoolBytes).toBeGreaterThan(5 * 64 * 1024);

      await proxy.up();
      await eventually("the spool drained", () =>
        logs.some((l) => /The spool is drained/.test(l)) && counters.spoolBytes === 0 ? true : undefined,
      );
      expect(await windowsIn(db)).toBe(windows);
    } finally {
      await sink.stop();
      await writer.stop();
    }
  });
});
