/**
 * `/metrics` render time for a large fleet: `renderMetricsChunks` (what the HTTP server streams)
 * over a FleetState filled through the real ingest path.
 *
 * Baseline, in the same rounds: `JSON.stringify` of the same GPU records — a generic
 * serialisation of the same state, so the ratio says what the text format costs over it.
 */
import { FleetState } from "../collector/fleet-state.js";
import { renderMetrics, renderMetricsChunks } from "../collector/metrics-render.js";
import { SelfMetrics } from "../collector/self-metrics.js";
import { rounds, sink, spread, timed, type Spread } from "./harness.js";
import { GPUS_PER_HOST } from "./sim-hosts.js";
import { BENCH_NOW_MS, hostBatchWindows, openSession, sessionDeps } from "./collector-ingest.js";
import { type WindowTemplates, benchHost, encodeBatch } from "./fleet-windows.js";
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
  const fleet = new FleetState({ now: () => BENCH_NOW_MS });
  const self = new SelfMetrics();
  const deps = sessionDeps(fleet, self);
  // Two windows per GPU, so every counter has moved and the last-sample values are set.
  for (let h = 0; h < hostCount; h++) {
    const host = benchHost(h);
    const session = openSession(deps, host);
    const buf = encodeBatch(1, hostBatchWindows(templates, host, 0, 2));
    const step = session.handle({ ok: true, msg: ingestServiceDefinition.stream.requestDeserialize(buf) });
    if (
      step.kind !== "reply" ||
      step.response.msg.case !== "ack" ||
      step.response.msg.value.accepted !== 2 * GPUS_PER_HOST
    ) {
      throw new Error(`the collector did not accept every window of ${host.hostname}`);
    }
  }
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
