/**
 * Renders the fleet and the collector's own metrics as Prometheus text (format 0.0.4).
 *
 * Hand-rolled for speed: a collector carries well over 10,000 GPUs, about 25 series each.
 * Each GPU's escaped label string is built once and cached on its record (fleet-state
 * clears the cache when a label changes); the output is a list of string chunks of about
 * CHUNK_CHARS, which the HTTP server writes one by one instead of one huge string.
 *
 * Missing values (power not reported, ...) omit the series; they are never rendered as 0.
 */
import { GPU_STATES, type GpuState } from "../common/types.js";
import type { FleetGroup, FleetState, GpuRecord } from "./fleet-state.js";
import { METRICS, type MetricDef } from "./metrics-table.js";
import { escapeLabelValue, familyHeader, formatValue, labelPairs } from "../common/prom-text.js";
import { STREAM_REFUSAL_REASONS, type SelfMetrics } from "./self-metrics.js";
import { REJECTION_REASONS } from "./validate.js";

const CHUNK_CHARS = 64 * 1024;

class ChunkWriter {
  readonly chunks: string[] = [];
  private cur = "";

  write(s: string): void {
    this.cur += s;
    if (this.cur.length >= CHUNK_CHARS) {
      this.chunks.push(this.cur);
      this.cur = "";
    }
  }

  end(): string[] {
    if (this.cur) this.chunks.push(this.cur);
    this.cur = "";
    return this.chunks;
  }
}

const HEADERS = new Map<MetricDef, string>(
  Object.values(METRICS).map((m) => [m, familyHeader(m.name, m.type, m.help)]),
);
function header(m: MetricDef): string {
  return HEADERS.get(m) ?? familyHeader(m.name, m.type, m.help);
}

/** `,state="x"}` suffixes, built once. */
const STATE_SUFFIX: Record<GpuState, string> = Object.fromEntries(
  GPU_STATES.map((s) => [s, `,state="${s}"}`]),
) as Record<GpuState, string>;

function gpuLabels(rec: GpuRecord): string {
  if (rec.promLabels === undefined) {
    rec.promLabels = labelPairs([
      ["host", rec.host],
      ["gpu", String(rec.index)],
      ["uuid", rec.uuid],
      ["model", rec.model],
      ...rec.labels,
    ]);
  }
  return rec.promLabels;
}

function groupLabels(g: FleetGroup): string {
  if (g.promLabels === undefined) g.promLabels = labelPairs([["model", g.model], ...g.labels]);
  return g.promLabels;
}

/** Renders everything; returns chunks whose concatenation is the exposition. */
export function renderMetrics(fleet: FleetState, self: SelfMetrics): string[] {
  const out = new ChunkWriter();
  const now = fleet.now();
  const recs = [...fleet.gpus()];
  const labels = recs.map(gpuLabels);
  const current = recs.map((r) => fleet.currentState(r, now));

  /** One series per GPU: `name{labels} value`, skipped where `value` gives undefined. */
  const perGpu = (m: MetricDef, value: (r: GpuRecord) => number | undefined): void => {
    out.write(header(m));
    const prefix = `${m.name}{`;
    for (let i = 0; i < recs.length; i++) {
      const v = value(recs[i] as GpuRecord);
      if (v !== undefined) out.write(`${prefix}${labels[i]}} ${formatValue(v)}\n`);
    }
  };
  /** Five series per GPU, one per state. */
  const perGpuState = (m: MetricDef, value: (r: GpuRecord, s: GpuState, i: number) => number): void => {
    out.write(header(m));
    const prefix = `${m.name}{`;
    for (let i = 0; i < recs.length; i++) {
      const rec = recs[i] as GpuRecord;
      const head = prefix + labels[i];
      for (const s of GPU_STATES) out.write(`${head}${STATE_SUFFIX[s]} ${formatValue(value(rec, s, i))}\n`);
    }
  };

  out.write(header(METRICS.gpuInfo));
  for (let i = 0; i < recs.length; i++) {
    const rec = recs[i] as GpuRecord;
    out.write(`${METRICS.gpuInfo.name}{${labels[i]},driver="${escapeLabelValue(rec.driver)}"} 1\n`);
  }
  perGpu(METRICS.gpuUp, (r) => (fleet.isUp(r, now) ? 1 : 0));
  perGpu(METRICS.gpuObservedSeconds, (r) => r.observedS);
  perGpuState(METRICS.gpuStateSeconds, (r, s) => r.stateS[s]);
  perGpu(METRICS.gpuReportedIdleSeconds, (r) => r.reportedIdleS);
  perGpu(METRICS.gpuReportedBusySeconds, (r) => r.reportedBusyS);
  perGpu(METRICS.gpuRealBusySeconds, (r) => r.realBusyS);
  perGpuState(METRICS.gpuState, (_r, s, i) => (current[i] === s ? 1 : 0));
  perGpu(METRICS.gpuIdleStreakSeconds, (r) => r.idleStreakS);

  out.write(header(METRICS.gpuRealUtilization));
  for (let i = 0; i < recs.length; i++) {
    const rec = recs[i] as GpuRecord;
    out.write(`${METRICS.gpuRealUtilization.name}{${labels[i]},source="${rec.realSource}"} ${formatValue(rec.real)}\n`);
  }
  perGpu(METRICS.gpuReportedUtilization, (r) => r.reportedUtilization);
  perGpu(METRICS.gpuProcesses, (r) => r.processes);
  perGpu(METRICS.gpuPowerWatts, (r) => r.powerW);
  perGpu(METRICS.gpuPowerFloorWatts, (r) => r.powerFloorW);
  perGpu(METRICS.gpuMemoryUsedBytes, (r) => r.memUsedBytes);

  const counts = fleet.groupStateCounts(now);
  out.write(header(METRICS.fleetGpus));
  for (const [g, c] of counts) {
    const gl = groupLabels(g);
    for (const s of GPU_STATES) out.write(`${METRICS.fleetGpus.name}{${gl}${STATE_SUFFIX[s]} ${c[s]}\n`);
  }
  out.write(header(METRICS.fleetStateSeconds));
  for (const g of counts.keys()) {
    const gl = groupLabels(g);
    for (const s of GPU_STATES) {
      out.write(`${METRICS.fleetStateSeconds.name}{${gl}${STATE_SUFFIX[s]} ${formatValue(g.stateS[s])}\n`);
    }
  }

  const single = (m: MetricDef, v: number): void => out.write(`${header(m)}${m.name} ${formatValue(v)}\n`);
  single(METRICS.agentsConnected, self.agentsConnected);
  single(METRICS.windowsReceived, self.windowsReceived);
  out.write(header(METRICS.windowsRejected));
  for (const reason of REJECTION_REASONS) {
    out.write(`${METRICS.windowsRejected.name}{reason="${reason}"} ${formatValue(self.windowsRejected[reason])}\n`);
  }
  single(METRICS.influxPointsWritten, self.influxPointsWritten);
  single(METRICS.influxWriteErrors, self.influxWriteErrors);
  single(METRICS.spoolBytes, self.spoolBytes);
  single(METRICS.spooledWindows, self.spooledWindows);
  out.write(header(METRICS.streamsRefused));
  for (const reason of STREAM_REFUSAL_REASONS) {
    out.write(`${METRICS.streamsRefused.name}{reason="${reason}"} ${formatValue(self.streamsRefused[reason])}\n`);
  }
  single(METRICS.httpAuthFailures, self.httpAuthFailures);
  return out.end();
}

/** The whole exposition as one string (tests, small fleets). */
export function renderMetricsText(fleet: FleetState, self: SelfMetrics): string {
  return renderMetrics(fleet, self).join("");
}
