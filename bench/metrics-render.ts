/**
 * `/metrics` render time for a large fleet: `renderMetricsChunks` (what the HTTP server streams)
 * over a FleetState filled through the real ingest path.
 *
 * Baseline, in the same rounds: `JSON.stringify` of the same GPU records — a generic
 * serialisation of the same state, so the ratio says what the text format costs over it.
 *
 * At scale (runMetricsScaleBench, 50,000 GPUs): each --gpu-series mode, the cache with gzip
 * (first render, cached gzip and text scrapes, peak memory), and prom-client 15 rendering the
 * same series from a Registry of its own, paired per round. Runs alone too (see the end).
 */
import { fileURLToPath } from "node:url";
import { Counter, Gauge, Registry } from "prom-client";
import { GPU_STATES } from "../common/types.js";
import { FleetState, type GpuRecord } from "../collector/fleet-state.js";
import { MetricsCache } from "../collector/metrics-cache.js";
import { renderMetrics, renderMetricsChunks } from "../collector/metrics-render.js";
import { METRICS, type MetricDef } from "../collector/metrics-table.js";
import { SelfMetrics } from "../collector/self-metrics.js";
import { GPU_SERIES_MODES, type GpuSeriesMode } from "../collector/settings.js";
import { collectGarbage, rounds, sink, spread, textTable, timed, type Spread } from "./harness.js";
import { GPUS_PER_HOST } from "./sim-hosts.js";
import { BENCH_NOW_MS, hostBatchWindows, openSession, sessionDeps } from "./collector-ingest.js";
import { WindowTemplates, benchHost, encodeBatch } from "./fleet-windows.js";
import { ingestServiceDefinition } from "../common/grpc-service.js";

export interface MetricsRenderResult {
  gpus: number;
  hosts: number;
  series: number;
  expositionBytes: number;
  jsonBytes: number;
  renderMs: Spread;
  jsonStringifyMs: Spread;
  /** Render time ÷ JSON.stringify time, paired per round. */
  ratio: Spread;
  /** The first render, which also builds every GPU's label string (after a restart or relabel). */
  firstRenderMs: number;
}

export function runMetricsBench(
  templates: WindowTemplates,
  gpus: number,
  warmup: number,
  measured: number,
): MetricsRenderResult {
  const hostCount = Math.ceil(gpus / GPUS_PER_HOST);
  // Two windows per GPU, so every counter has moved and the last-sample values are set.
  const { fleet, self } = benchFleet(templates, gpus);
  if (fleet.size !== hostCount * GPUS_PER_HOST)
    throw new Error(`the fleet holds ${fleet.size} GPUs, expected ${hostCount * GPUS_PER_HOST}`);

  let text = "";
  const first = timed(() => {
    text = renderMetrics(fleet, self).join("");
  });
  const series = text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  const jsonBytes = Buffer.byteLength(JSON.stringify([...fleet.gpus()]));

  const render = (): number =>
    timed(() => {
      let n = 0;
      for (const chunk of renderMetricsChunks(fleet, self)) n += chunk.length;
      sink.value += n;
    }).wallMs;
  const json = (): number =>
    timed(() => {
      sink.value += JSON.stringify([...fleet.gpus()]).length;
    }).wallMs;
  const results = rounds(warmup, measured, (r) => {
    if (r % 2 === 0) {
      const j = json();
      return { m: render(), j };
    }
    const m = render();
    return { m, j: json() };
  });
  return {
    gpus: fleet.size,
    hosts: hostCount,
    series,
    expositionBytes: Buffer.byteLength(text),
    jsonBytes,
    renderMs: spread(results.map((x) => x.m)),
    jsonStringifyMs: spread(results.map((x) => x.j)),
    ratio: spread(results.map((x) => x.m / x.j)),
    firstRenderMs: first.wallMs,
  };
}

// ------------------------------------------------------------------ at scale: modes, cache, gzip, prom-client

export interface MetricsModeResult {
  mode: GpuSeriesMode;
  series: number;
  bytes: number;
  renderMs: Spread;
}

export interface MetricsScaleResult {
  gpus: number;
  hosts: number;
  modes: MetricsModeResult[];
  /** `full` through the cache (metrics-cache.ts): a first render with gzip, read to its end as a gzip scraper reads it. */
  gzipFirstMs: Spread;
  gzipBytes: number;
  /** A second gzip scrape within --metrics-cache-max-age: the kept chunks. */
  gzipCachedMs: Spread;
  /** A text scrape of the kept exposition: gunzipped for it, chunk by chunk. */
  identityCachedMs: Spread;
  /** Most memory in use (heap + buffers) above what the fleet holds, over a first render with gzip and a text scrape of it. */
  peakExtraMiB: number;
  /** prom-client 15 rendering the same `full` series (same families, labels and values) from a Registry of its own. */
  promClientMs: Spread;
  promClientBytes: number;
  /** Our `full` render time ÷ prom-client's, paired per round (below 0.2: at least 5× the throughput). */
  ratioToPromClient: Spread;
  promClientGpus: number;
}

/** A FleetState of `gpus` GPUs filled through the real ingest path, two windows per GPU. */
export function benchFleet(templates: WindowTemplates, gpus: number): { fleet: FleetState; self: SelfMetrics } {
  const hostCount = Math.ceil(gpus / GPUS_PER_HOST);
  const fleet = new FleetState({ now: () => BENCH_NOW_MS, maxGpus: Math.max(100_000, gpus) });
  const self = new SelfMetrics();
  const deps = sessionDeps(fleet, self);
  for (let h = 0; h < hostCount; h++) {
    const host = benchHost(h);
    const session = openSession(deps, host);
    const buf = encodeBatch(1, hostBatchWindows(templates, host, 0, 2));
    const step = session.handle({ ok: true, msg: ingestServiceDefinition.stream.requestDeserialize(buf) });
    if (
      step.kind !== "reply" ||
      step.response.msg.case !== "ack" ||
      step.response.msg.value.accepted !== 2 * GPUS_PER_HOST
    )
      throw new Error(`the collector did not accept every window of ${host.hostname}`);
  }
  return { fleet, self };
}

/** Reads an async source to its end; bytes read. */
async function drain(chunks: AsyncIterable<Buffer>): Promise<number> {
  let n = 0;
  for await (const c of chunks) n += c.length;
  return n;
}

async function timedAsync(fn: () => Promise<void>): Promise<number> {
  collectGarbage();
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/**
 * prom-client's Registry holding the same series as our `full` exposition's per-GPU and
 * fleet families (values set once, as a prom-client exporter would hold them).
 */
function promClientRegistry(fleet: FleetState): Registry {
  const registry = new Registry();
  const recs = [...fleet.gpus()];
  const extra = [...new Set(recs.flatMap((r) => r.labels.map(([k]) => k)))].sort();
  const gpuLabelNames = ["host", "gpu", "uuid", "model", ...extra];
  const labelsOf = (r: GpuRecord): Record<string, string> => {
    const l: Record<string, string> = { host: r.host, gpu: String(r.index), uuid: r.uuid, model: r.model };
    for (const [k, v] of r.labels) l[k] = v;
    return l;
  };
  const make = (m: MetricDef, more: string[] = []): Gauge | Counter => {
    const names = [...(m.scope === "gpu" ? gpuLabelNames : ["model", ...extra]), ...more];
    return m.type === "counter"
      ? new Counter({ name: m.name, help: m.help, labelNames: names, registers: [registry] })
      : new Gauge({ name: m.name, help: m.help, labelNames: names, registers: [registry] });
  };
  const set = (metric: Gauge | Counter, labels: Record<string, string>, v: number | undefined): void => {
    if (v === undefined) return;
    if (metric instanceof Counter) metric.inc(labels, v);
    else metric.set(labels, v);
  };
  const now = fleet.now();
  const M = METRICS;
  const info = make(M.gpuInfo, ["driver"]);
  const perGpu: Array<[MetricDef, (r: GpuRecord) => number | undefined]> = [
    [M.gpuUp, (r) => (fleet.isUp(r, now) ? 1 : 0)],
    [M.gpuObservedSeconds, (r) => r.observedS],
    [M.gpuReportedIdleSeconds, (r) => r.reportedIdleS],
    [M.gpuReportedBusySeconds, (r) => r.reportedBusyS],
    [M.gpuRealBusySeconds, (r) => r.realBusyS],
    [M.gpuIdleStreakSeconds, (r) => r.idleStreakS],
    [M.gpuReportedUtilization, (r) => r.reportedUtilization],
    [M.gpuProcesses, (r) => r.processes],
    [M.gpuPowerWatts, (r) => r.powerW],
    [M.gpuPowerFloorWatts, (r) => r.powerFloorW],
    [M.gpuMemoryUsedBytes, (r) => r.memUsedBytes],
  ];
  const single = perGpu.map(([m, f]) => [make(m), f] as const);
  const stateSeconds = make(M.gpuStateSeconds, ["state"]);
  const state = make(M.gpuState, ["state"]);
  const real = make(M.gpuRealUtilization, ["source"]);
  for (const r of recs) {
    const l = labelsOf(r);
    set(info, { ...l, driver: r.driver }, 1);
    for (const [metric, f] of single) set(metric, l, f(r));
    const current = fleet.currentState(r, now);
    for (const s of GPU_STATES) {
      set(stateSeconds, { ...l, state: s }, r.stateS[s]);
      set(state, { ...l, state: s }, current === s ? 1 : 0);
    }
    set(real, { ...l, source: r.realSource }, r.real);
  }
  const fleetGpus = make(M.fleetGpus, ["state"]);
  const fleetStateSeconds = make(M.fleetStateSeconds, ["state"]);
  for (const [g, c] of fleet.groupStateCounts(now)) {
    const l: Record<string, string> = { model: g.model };
    for (const k of extra) l[k] = "";
    for (const [k, v] of g.labels) l[k] = v;
    for (const s of GPU_STATES) {
      set(fleetGpus, { ...l, state: s }, c[s]);
      set(fleetStateSeconds, { ...l, state: s }, g.stateS[s]);
    }
  }
  return registry;
}

/**
 * /metrics at `gpus` GPUs: each --gpu-series mode rendered as text; `full` through the cache
 * with gzip (first render, then a cached gzip scrape and a cached text scrape); and
 * prom-client rendering the same `full` series at `promClientGpus` GPUs beside our renderer
 * at that size, paired per round.
 */
export async function runMetricsScaleBench(
  templates: WindowTemplates,
  gpus: number,
  warmup: number,
  measured: number,
  promClientGpus = gpus,
): Promise<MetricsScaleResult> {
  const { fleet, self } = benchFleet(templates, gpus);
  const modes: MetricsModeResult[] = [];
  for (const mode of GPU_SERIES_MODES) {
    let series = 0;
    let bytes = 0;
    for (const chunk of renderMetricsChunks(fleet, self, undefined, "", mode)) {
      bytes += Buffer.byteLength(chunk);
      for (let i = chunk.indexOf("\n"); i !== -1; i = chunk.indexOf("\n", i + 1)) if (chunk[i + 1] !== "#") series++;
    }
    const rs = rounds(mode === "off" ? warmup + 5 : warmup, mode === "off" ? measured * 5 : measured, () =>
      timed(() => {
        let n = 0;
        for (const chunk of renderMetricsChunks(fleet, self, undefined, "", mode)) n += chunk.length;
        sink.value += n;
      }),
    );
    modes.push({ mode, series, bytes, renderMs: spread(rs.map((r) => r.wallMs)) });
  }

  const processStub = { render: async () => "" };
  const first: number[] = [];
  const cached: number[] = [];
  const identity: number[] = [];
  let gzipBytes = 0;
  let peak = 0;
  for (let r = 0; r < warmup + measured; r++) {
    const cache = new MetricsCache({ fleet, self, process: processStub, gpuSeries: "full", maxAgeMs: 600_000 });
    collectGarbage();
    const base = memoryInUse();
    const sampler = setInterval(() => (peak = Math.max(peak, memoryInUse() - base)), 5);
    const f = await timedAsync(async () => {
      gzipBytes = await drain(cache.exposition().gzip());
    });
    const c = await timedAsync(async () => {
      sink.value += await drain(cache.exposition().gzip());
    });
    const i = await timedAsync(async () => {
      sink.value += await drain(cache.exposition().identity());
    });
    clearInterval(sampler);
    if (r >= warmup) {
      first.push(f);
      cached.push(c);
      identity.push(i);
    }
  }

  const small = promClientGpus === gpus ? { fleet, self } : benchFleet(templates, promClientGpus);
  const registry = promClientRegistry(small.fleet);
  let promClientBytes = 0;
  const pairs: Array<{ ours: number; theirs: number }> = [];
  for (let r = 0; r < warmup + measured; r++) {
    const theirs = await timedAsync(async () => {
      const text = await registry.metrics();
      promClientBytes = Buffer.byteLength(text);
    });
    const ours = timed(() => {
      let n = 0;
      for (const chunk of renderMetricsChunks(small.fleet, small.self, undefined, "", "full")) n += chunk.length;
      sink.value += n;
    }).wallMs;
    if (r >= warmup) pairs.push({ ours, theirs });
  }
  return {
    gpus: fleet.size,
    hosts: Math.ceil(gpus / GPUS_PER_HOST),
    modes,
    gzipFirstMs: spread(first),
    gzipBytes,
    gzipCachedMs: spread(cached),
    identityCachedMs: spread(identity),
    peakExtraMiB: peak / 2 ** 20,
    promClientMs: spread(pairs.map((p) => p.theirs)),
    promClientBytes,
    ratioToPromClient: spread(pairs.map((p) => p.ours / p.theirs)),
    promClientGpus: small.fleet.size,
  };
}

/** Heap in use plus Buffers and other off-heap memory V8 knows of. */
function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

/** The section's lines, for bench/run.ts and for running this file alone. */
export function metricsScaleLines(r: MetricsScaleResult, table: (rows: string[][]) => string): string[] {
  const f = (x: number, d = 1): string => x.toFixed(d);
  const n = (x: number): string => Math.round(x).toLocaleString("en-US");
  const rg = (s: Spread, d = 1): string => `[${f(s.min, d)}–${f(s.max, d)}]`;
  const byMode = (m: GpuSeriesMode): MetricsModeResult => r.modes.find((x) => x.mode === m)!;
  return [
    `(a2) /metrics at ${n(r.gpus)} GPUs on ${n(r.hosts)} hosts: --gpu-series modes, the cache with gzip, and prom-client on the same series`,
    table([
      ["", "median ms", "range ms", "series", "MiB", "target"],
      ...r.modes.map((m) => [
        `render --gpu-series ${m.mode} (text)`,
        f(m.renderMs.median),
        rg(m.renderMs),
        n(m.series),
        f(m.bytes / 2 ** 20),
        m.mode === "off" ? `≤ 20 ms: ${m.renderMs.median <= 20 ? "met" : "NOT met"}` : "",
      ]),
      [
        "full, first scrape with gzip (render + compress)",
        f(r.gzipFirstMs.median),
        rg(r.gzipFirstMs),
        "",
        f(r.gzipBytes / 2 ** 20),
        `≤ 3 s: ${r.gzipFirstMs.median <= 3000 ? "met" : "NOT met"}`,
      ],
      [
        "full, second gzip scrape (cached)",
        f(r.gzipCachedMs.median, 2),
        rg(r.gzipCachedMs, 2),
        "",
        "",
        `≤ 20 ms: ${r.gzipCachedMs.median <= 20 ? "met" : "NOT met"}`,
      ],
      [
        "full, text scrape of the cached gzip (gunzip)",
        f(r.identityCachedMs.median),
        rg(r.identityCachedMs),
        "",
        "",
        "",
      ],
    ]),
    `  peak memory above the fleet's over a first render with gzip and the scrapes of it: ${f(r.peakExtraMiB)} MiB (text: ${f(byMode("full").bytes / 2 ** 20)} MiB)`,
    table([
      [`full, ${n(r.promClientGpus)} GPUs`, "median ms", "range ms", "MiB", "target"],
      [
        "prom-client 15 Registry.metrics()",
        f(r.promClientMs.median),
        rg(r.promClientMs),
        f(r.promClientBytes / 2 ** 20),
        "",
      ],
      [
        "ratio ours ÷ prom-client",
        f(r.ratioToPromClient.median, 3),
        rg(r.ratioToPromClient, 3),
        "",
        `≤ 0.2 (≥ 5× throughput): ${r.ratioToPromClient.median <= 0.2 ? "met" : "NOT met"}`,
      ],
    ]),
  ];
}

/** Alone: `node --import tsx bench/metrics-render.ts [--gpus N] [--prom-client-gpus N] [--quick]`. */
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (name: string, def: number): number => {
    const i = process.argv.indexOf(name);
    return i === -1 ? def : Number(process.argv[i + 1]);
  };
  const quick = process.argv.includes("--quick");
  const gpus = arg("--gpus", 50_000);
  runMetricsScaleBench(new WindowTemplates(), gpus, quick ? 1 : 2, quick ? 3 : 7, arg("--prom-client-gpus", gpus))
    .then((r) => {
      for (const line of metricsScaleLines(r, textTable)) console.log(line);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}
