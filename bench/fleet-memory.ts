/**
 * What a GPU costs the collector in memory: a FleetState filled through the real ingest
 * path (Hello, batches of real windows, each GPU's record, its covered spans, its group),
 * rendered once so every GPU's cached label string exists, as on a collector that is
 * scraped. Heap after a full collection, per GPU, at a fleet size; then every GPU expires
 * and the heap must come back (expiry frees what ingest took).
 *
 * Baseline, in the same run: the bytes of `JSON.stringify` of the same records, a generic
 * serialisation of the same state, so the ratio says what the live form costs over the
 * information it holds.
 *
 *   node --import tsx bench/fleet-memory.ts [GPUS]     (default 50,000)
 */
import { pathToFileURL } from "node:url";
import { FleetState } from "../collector/fleet-state.js";
import { renderMetricsChunks } from "../collector/metrics-render.js";
import { SelfMetrics } from "../collector/self-metrics.js";
import { ingestServiceDefinition } from "../common/grpc-service.js";
import { BENCH_NOW_MS, hostBatchWindows, openSession, sessionDeps } from "./collector-ingest.js";
import { benchHost, encodeBatch, WindowTemplates } from "./fleet-windows.js";
import { collectGarbage, gcAvailable, sink } from "./harness.js";
import { GPUS_PER_HOST } from "./sim-hosts.js";

export interface FleetMemoryResult {
  gpus: number;
  /** Heap held by the fleet, per GPU, after a full collection. */
  heapPerGpuBytes: number;
  /** The same for the whole fleet, MiB. */
  heapMiB: number;
  /** JSON.stringify of the same records, per GPU (the baseline). */
  jsonPerGpuBytes: number;
  /** heapPerGpuBytes ÷ jsonPerGpuBytes. */
  ratio: number;
  /** Heap still held after every GPU expired and was swept, per GPU of the fleet (≈ 0 when expiry frees everything). */
  afterExpiryPerGpuBytes: number;
}

/** Batches per host: enough windows that every GPU's spans, counters and last values are set, as after minutes of traffic. */
const BATCHES = 6;

export function runFleetMemoryBench(templates: WindowTemplates, gpus: number): FleetMemoryResult {
  if (!gcAvailable) throw new Error("the fleet memory bench needs a garbage collector it can call (--expose-gc)");
  // A small fleet first, filled and expired the same way: the code is compiled and every
  // lazily built table exists before the baseline is taken, so they are not counted per GPU.
  fill(templates, 2_000, heapNow());
  const base = heapNow();
  const r = fill(templates, gpus, base);
  // Measured out here, with the swept fleet still referenced: what expiry left behind.
  const after = heapNow() - base;
  sink.value += r.fleet.size;
  return {
    gpus: r.gpus,
    heapPerGpuBytes: r.held / r.gpus,
    heapMiB: r.held / 2 ** 20,
    jsonPerGpuBytes: r.jsonBytes / r.gpus,
    ratio: r.held / r.jsonBytes,
    afterExpiryPerGpuBytes: Math.max(0, after) / r.gpus,
  };
}

function heapNow(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

/** Fills a fleet of `gpus`, measures what it holds over `base`, then expires every GPU. */
function fill(
  templates: WindowTemplates,
  gpus: number,
  base: number,
): { fleet: FleetState; gpus: number; held: number; jsonBytes: number } {
  const hostCount = Math.ceil(gpus / GPUS_PER_HOST);
  let now = BENCH_NOW_MS;
  const fleet = new FleetState({ now: () => now });
  const self = new SelfMetrics();
  const deps = { ...sessionDeps(fleet, self), now: () => now };
  for (let h = 0; h < hostCount; h++) {
    const host = benchHost(h);
    const session = openSession(deps, host);
    for (let b = 0; b < BATCHES; b++) {
      const buf = encodeBatch(b + 1, hostBatchWindows(templates, host, 2 * b, 2));
      const step = session.handle({ ok: true, msg: ingestServiceDefinition.stream.requestDeserialize(buf) });
      if (step.kind !== "reply" || step.response.msg.case !== "ack")
        throw new Error(`the collector did not take batch ${b + 1} of ${host.hostname}`);
    }
    session.close("bench done");
  }
  const n = hostCount * GPUS_PER_HOST;
  if (fleet.size !== n) throw new Error(`the fleet holds ${fleet.size} GPUs, expected ${n}`);
  // One scrape: every GPU's label string is built and cached, as on a scraped collector.
  for (const chunk of renderMetricsChunks(fleet, self)) sink.value += chunk.length;
  const held = heapNow() - base;
  const jsonBytes = Buffer.byteLength(JSON.stringify([...fleet.gpus()]));

  now += fleet.expireAfterMs + 60_000;
  const removed = fleet.sweep(now);
  if (fleet.size !== 0 || removed !== n) throw new Error(`expiry left ${fleet.size} of ${n} GPUs`);
  return { fleet, gpus: n, held, jsonBytes };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const gpus = Number(process.argv[2] ?? 50_000);
  const r = runFleetMemoryBench(new WindowTemplates(), gpus);
  console.log(
    `${r.gpus} GPUs: heap ${r.heapMiB.toFixed(1)} MiB, ${Math.round(r.heapPerGpuBytes)} bytes per GPU ` +
      `(${r.ratio.toFixed(2)} × its JSON, ${Math.round(r.jsonPerGpuBytes)} bytes); after expiry ` +
      `${Math.round(r.afterExpiryPerGpuBytes)} bytes per GPU still held`,
  );
}
