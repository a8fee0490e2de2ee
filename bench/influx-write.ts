/**
 * Collector write throughput into a real InfluxDB (a private influxd started for the run):
 * points per second from GpuWindow messages to points InfluxDB has taken.
 *
 * - **writer** — what the collector does: `HostLineEncoder.line` per window, one
 *   `InfluxWriter.submit` per host and window time (8 lines, as a live agent's batch; the
 *   event loop gets a turn every 100 batches, as separate gRPC messages give it), the
 *   writer batching them into 5,000-line requests, 2 in flight; timed until every
 *   submission has resolved, i.e. InfluxDB answered 204 for every line (the line encoding
 *   is inside the timing, unlike the two others).
 * - **bare POST** (the baseline) — the same points as line protocol built beforehand
 *   (untimed), POSTed with `fetch` in 5,000-line bodies, 2 in flight.
 * - **node-influx** — the same points as `IPoint` objects built beforehand, through
 *   node-influx's `writePoints` in batches of 5,000, 2 in flight: the library the issue
 *   names, measured to decide which to write with.
 *
 * Every side writes the same series and field values; each side and slice writes its own
 * time slots, so InfluxDB inserts rather than overwrites. Within a round the sides take
 * turns slice by slice (10,000 points each), the first side rotating. The self-check
 * counts the points in InfluxDB at the end.
 */
import { InfluxDB, FieldType, type IPoint } from "influx";
import { silentLogger } from "../common/log.js";
import type { GpuWindow } from "../gen/trueidle/v1/ingest_pb.js";
import { HostLineEncoder } from "../collector/influx/line-protocol.js";
import { ensureSchema, INTEGER_FIELDS, RP_WINDOW, WINDOW_FIELDS } from "../collector/influx/schema.js";
import type { InfluxTarget } from "../common/influx/target.js";
import { InfluxWriter } from "../collector/influx/writer.js";
import { findInfluxd, INFLUXD_MISSING_HELP, startPrivateInfluxd } from "../demo/private-influxd.js";
import { WINDOW_MS, benchHost, type BenchHost, type WindowTemplates } from "./fleet-windows.js";
import { collectGarbage, spread, type Spread } from "./harness.js";
import { GPUS_PER_HOST } from "./sim-hosts.js";

export interface InfluxWriteOptions {
  hosts: number;
  /** Window times per slice: each host sends one 8-window batch per time. */
  timesPerSlice: number;
  slicesPerRound: number;
  warmup: number;
  rounds: number;
}

export type InfluxWriteResult =
  | {
      skipped: false;
      influxdVersion: string;
      pointsPerRound: number;
      pointsPerSlice: number;
      batchSize: number;
      inFlight: number;
      writerPointsPerS: Spread;
      barePostPointsPerS: Spread;
      nodeInfluxPointsPerS: Spread;
      /** writer ÷ bare POST throughput, paired per slice (the two ran back to back). */
      ratio: Spread;
      /** node-influx ÷ bare POST throughput, paired per slice. */
      nodeInfluxRatio: Spread;
      influxdStartMs: number;
    }
  | { skipped: true; reason: string };

const BATCH = 5_000;
const IN_FLIGHT = 2;
const SIDES = ["writer", "bare", "node"] as const;
type Side = (typeof SIDES)[number];

/** Runs `n` async jobs, `limit` at a time. */
async function inParallel(n: number, limit: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) await job(next++);
    }),
  );
}

export async function runInfluxWriteBench(
  templates: WindowTemplates,
  o: InfluxWriteOptions,
): Promise<InfluxWriteResult> {
  if (!findInfluxd()) return { skipped: true, reason: INFLUXD_MISSING_HELP };
  const t0 = performance.now();
  const server = await startPrivateInfluxd({ cqRunInterval: "1h" });
  const influxdStartMs = performance.now() - t0;
  try {
    const target: InfluxTarget = { baseUrl: server.url, database: "bench" };
    await ensureSchema(target);
    const version = (await fetch(`${server.url}/ping`)).headers.get("x-influxdb-version") ?? "unknown";

    const hosts: BenchHost[] = Array.from({ length: o.hosts }, (_, h) => benchHost(h));
    const encoders = hosts.map((h) => new HostLineEncoder(h.hostname, h.labels));
    const timesPerSlice = o.timesPerSlice;
    // One window message per (host, time in a slice, GPU), reused with new start times.
    const windows: GpuWindow[][][] = hosts.map((h) =>
      Array.from({ length: timesPerSlice }, (_, k) =>
        Array.from({ length: GPUS_PER_HOST }, (_, g) => templates.window(h, g, k, 0)),
      ),
    );
    const pointsPerSlice = o.hosts * timesPerSlice * GPUS_PER_HOST;
    const pointsPerRound = pointsPerSlice * o.slicesPerRound;
    // Time slots within the 30-day raw retention: each side and slice its own minutes.
    const base = Math.floor(Date.now() / WINDOW_MS) * WINDOW_MS - 20 * 86_400_000;
    let slot = 0;
    const nextSlot = (): void => {
      const first = base + slot * timesPerSlice * WINDOW_MS;
      slot++;
      for (const perHost of windows)
        perHost.forEach((atTime, k) => {
          for (const w of atTime) w.startMs = BigInt(first + k * WINDOW_MS);
        });
    };
    /** The slice's windows in the order a fleet sends them: every host's batch for a time, then the next time. */
    const inOrder = (each: (h: number, batch: GpuWindow[]) => void): void => {
      for (let k = 0; k < timesPerSlice; k++) for (let h = 0; h < hosts.length; h++) each(h, windows[h]?.[k] ?? []);
    };

    const writeUrl = `${server.url}/write?db=bench&rp=${RP_WINDOW}&precision=ms`;
    const node = new InfluxDB({
      host: "127.0.0.1",
      port: server.port,
      database: "bench",
      schema: [
        {
          measurement: "gpu_window",
          fields: Object.fromEntries(
            WINDOW_FIELDS.map((f) => [f, INTEGER_FIELDS.has(f) ? FieldType.INTEGER : FieldType.FLOAT]),
          ),
          tags: ["host", "gpu", "uuid", "model", "cluster", "pool"],
        },
      ],
    });

    /** Milliseconds one side takes to write one slice; what is built beforehand is not timed. */
    const slice = async (side: Side, writer: InfluxWriter): Promise<number> => {
      nextSlot();
      if (side === "writer") {
        collectGarbage();
        const start = performance.now();
        const pending: Array<Promise<{ status: string }>> = [];
        let sinceYield = 0;
        const batches: Array<[number, GpuWindow[]]> = [];
        inOrder((h, batch) => batches.push([h, batch]));
        for (const [h, batch] of batches) {
          const enc = encoders[h] as HostLineEncoder;
          pending.push(writer.submit(batch.map((w) => enc.line(w))));
          // Agents' batches arrive as separate gRPC messages, so requests already sent make
          // progress between them: give the event loop a turn every 100 batches.
          if (++sinceYield === 100) {
            sinceYield = 0;
            await new Promise((r) => setImmediate(r));
          }
        }
        await writer.flush();
        const outcomes = await Promise.all(pending);
        const ms = performance.now() - start;
        if (outcomes.some((x) => x.status !== "done"))
          throw new Error(`a writer submission ended ${outcomes.find((x) => x.status !== "done")?.status}`);
        return ms;
      }
      if (side === "bare") {
        const lines: string[] = [];
        inOrder((h, batch) => {
          for (const w of batch) lines.push((encoders[h] as HostLineEncoder).line(w));
        });
        const bodies: string[] = [];
        for (let i = 0; i < lines.length; i += BATCH) bodies.push(`${lines.slice(i, i + BATCH).join("\n")}\n`);
        collectGarbage();
        const start = performance.now();
        await inParallel(bodies.length, IN_FLIGHT, async (i) => {
          const res = await fetch(writeUrl, {
            method: "POST",
            headers: { "content-type": "text/plain; charset=utf-8" },
            body: bodies[i]!,
          });
          if (res.status !== 204) throw new Error(`bare POST got HTTP ${res.status}: ${await res.text()}`);
        });
        return performance.now() - start;
      }
      const points: IPoint[] = [];
      inOrder((h, batch) => {
        for (const w of batch) points.push(toIPoint(hosts[h] as BenchHost, w));
      });
      collectGarbage();
      const start = performance.now();
      await inParallel(Math.ceil(points.length / BATCH), IN_FLIGHT, (i) =>
        node.writePoints(points.slice(i * BATCH, (i + 1) * BATCH), { precision: "ms", retentionPolicy: RP_WINDOW }),
      );
      return performance.now() - start;
    };

    // Within a round the sides take turns slice by slice, the first side rotating, so all
    // three see the same server state (cache size, compactions) as far as possible.
    const results: Array<Record<Side, number>> = [];
    /** Per measured slice: the two ratios to bare POST of sides that ran back to back. */
    const sliceRatios: Array<{ writer: number; node: number }> = [];
    let turn = 0;
    for (let r = 0; r < o.warmup + o.rounds; r++) {
      const writer = new InfluxWriter({ target, batchSize: BATCH, maxInFlight: IN_FLIGHT, logger: silentLogger });
      const ms: Record<Side, number> = { writer: 0, bare: 0, node: 0 };
      for (let sl = 0; sl < o.slicesPerRound; sl++, turn++) {
        const one: Record<Side, number> = { writer: 0, bare: 0, node: 0 };
        for (let i = 0; i < SIDES.length; i++) {
          const side = SIDES[(i + turn) % SIDES.length] as Side;
          one[side] = await slice(side, writer);
          ms[side] += one[side];
        }
        if (r >= o.warmup) sliceRatios.push({ writer: one.bare / one.writer, node: one.bare / one.node });
      }
      await writer.stop();
      const stats = writer.stats();
      if (stats.pointsWritten !== pointsPerRound || stats.failedRequests !== 0) {
        throw new Error(
          `the writer wrote ${stats.pointsWritten} of ${pointsPerRound} points (${stats.failedRequests} failed requests)`,
        );
      }
      if (r >= o.warmup)
        results.push({
          writer: pointsPerRound / (ms.writer / 1000),
          bare: pointsPerRound / (ms.bare / 1000),
          node: pointsPerRound / (ms.node / 1000),
        });
    }

    const counted = await fetch(
      `${server.url}/query?db=bench&q=${encodeURIComponent(`SELECT count("observed_s") FROM "${RP_WINDOW}"."gpu_window"`)}`,
    );
    const n = ((await counted.json()) as { results: Array<{ series?: Array<{ values: number[][] }> }> }).results[0]
      ?.series?.[0]?.values[0]?.[1];
    const want = pointsPerRound * SIDES.length * (o.warmup + o.rounds);
    if (n !== want) throw new Error(`InfluxDB holds ${n} points after the bench, expected ${want}`);

    return {
      skipped: false,
      influxdVersion: version,
      pointsPerRound,
      pointsPerSlice,
      batchSize: BATCH,
      inFlight: IN_FLIGHT,
      writerPointsPerS: spread(results.map((x) => x.writer)),
      barePostPointsPerS: spread(results.map((x) => x.bare)),
      nodeInfluxPointsPerS: spread(results.map((x) => x.node)),
      ratio: spread(sliceRatios.map((x) => x.writer)),
      nodeInfluxRatio: spread(sliceRatios.map((x) => x.node)),
      influxdStartMs,
    };
  } finally {
    await server.stop();
  }
}

function toIPoint(host: BenchHost, w: GpuWindow): IPoint {
  const fields: Record<string, number> = {
    observed_s: w.observedS,
    free_idle_s: w.freeIdleS,
    held_idle_s: w.heldIdleS,
    busy_phantom_s: w.busyPhantomS,
    active_s: w.activeS,
    unavailable_s: w.unavailableS,
    reported_idle_s: w.reportedIdleS,
    reported_busy_s: w.reportedBusyS,
    real_busy_s: w.realBusyS,
    processes_max: w.processesMax,
  };
  if (w.powerMeanW !== undefined) fields["power_w"] = w.powerMeanW;
  if (w.powerMaxW !== undefined) fields["power_max_w"] = w.powerMaxW;
  if (w.memUsedMaxBytes !== undefined) fields["mem_used_max_bytes"] = Number(w.memUsedMaxBytes);
  return {
    measurement: "gpu_window",
    tags: { host: host.hostname, gpu: String(w.index), uuid: w.uuid, model: w.model, ...host.labels },
    fields,
    timestamp: Number(w.startMs),
  };
}
