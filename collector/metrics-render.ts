/**
 * Renders the fleet and the collector's own metrics as Prometheus text (format 0.0.4).
 *
 * Hand-rolled for speed: a collector carries well over 10,000 GPUs, about 25 series each.
 * `gpuSeries` (--gpu-series) picks the per-GPU families: `full` every one, `states` the
 * state and seconds families (info, up, state, idle streak and the five counters) and the
 * owners of held GPUs, `off` none; the fleet roll-ups, owner groups and the collector's own
 * families are written in every mode. The per-board families (trueidle_mig_board_*, one set
 * per board in MIG mode, whose instances are the GPUs) are written in `full` and `states`.
 *
 * Each GPU's escaped label string is built once and cached on its record (fleet-state
 * clears the cache when a label changes); the output is a sequence of string chunks of about
 * CHUNK_CHARS, made one at a time as they are compressed (metrics-cache.ts; never one huge
 * string).
 *
 * Missing values (power not reported, ...) omit the series; they are never rendered as 0.
 * Values of families in seconds are rounded to the microsecond (formatSeconds): counters
 * summed from fractions of seconds carry no float residue such as 0.9521600000000001.
 *
 * The process and Node.js metrics (common/process-metrics.ts, prom-client's collectors) are
 * read when a render starts and appended once, after the collector's own families.
 */
import { GPU_STATES, type GpuState } from "../common/types.js";
import type { BoardRecord, FleetGroup, FleetState, GpuRecord } from "./fleet-state.js";
import { METRICS, type MetricDef } from "./metrics-table.js";
import { escapeLabelValue, familyHeader, formatSeconds, formatValue, labelPairs } from "../common/prom-text.js";
import { HTTP_REFUSAL_REASONS, STREAM_REFUSAL_REASONS, type SelfMetrics } from "./self-metrics.js";
import { CONNECTION_REFUSAL_REASONS } from "../common/connection-guard.js";
import { ownerLabelValues, type OwnerLedger } from "./owner-ledger.js";
import { REJECTION_REASONS } from "./validate.js";
import type { GpuSeriesMode } from "./settings.js";

const CHUNK_CHARS = 64 * 1024;

/** Collects text and hands it out in chunks of about CHUNK_CHARS. */
class Chunks {
  buf = "";
  /** The text so far when it is a chunk's worth, else undefined. */
  take(): string | undefined {
    if (this.buf.length < CHUNK_CHARS) return undefined;
    const out = this.buf;
    this.buf = "";
    return out;
  }
}

const HEADERS = new Map<MetricDef, string>(
  Object.values(METRICS).map((m) => [m, familyHeader(m.name, m.type, m.help)]),
);
function header(m: MetricDef): string {
  return HEADERS.get(m) ?? familyHeader(m.name, m.type, m.help);
}
/** How a family's values are written: seconds to the microsecond, the rest as they are. */
function formatterOf(m: MetricDef): (n: number) => string {
  return m.unit === "seconds" ? formatSeconds : formatValue;
}

/** `,state="x"}` suffixes, built once. */
const STATE_SUFFIX: Record<GpuState, string> = Object.fromEntries(
  GPU_STATES.map((s) => [s, `,state="${s}"}`]),
) as Record<GpuState, string>;

function gpuLabels(rec: GpuRecord): string {
  if (rec.promLabels === undefined) {
    const pairs: Array<readonly [string, string]> = [
      ["host", rec.host],
      ["gpu", String(rec.index)],
      ["uuid", rec.uuid],
      ["model", rec.model],
    ];
    // A MIG instance is a GPU of its own, with its board and profile beside its identity.
    if (rec.parentUuid !== "") pairs.push(["parent_uuid", rec.parentUuid], ["mig_profile", rec.migProfile]);
    rec.promLabels = labelPairs([...pairs, ...rec.labels]);
  }
  return rec.promLabels;
}

/** A board's labels: those of a whole GPU (a board in MIG mode has no board or profile above it). */
function boardLabels(b: BoardRecord): string {
  b.promLabels ??= labelPairs([
    ["host", b.host],
    ["gpu", String(b.index)],
    ["uuid", b.uuid],
    ["model", b.model],
    ...b.labels,
  ]);
  return b.promLabels;
}

function groupLabels(g: FleetGroup): string {
  if (g.promLabels === undefined) g.promLabels = labelPairs([["model", g.model], ...g.labels]);
  return g.promLabels;
}

/**
 * Renders everything as chunks of about CHUNK_CHARS whose concatenation is the exposition,
 * one chunk per step: the HTTP server writes each before it asks for the next, so memory
 * stays at a chunk or two whatever the fleet holds, and the event loop is free between
 * chunks. GPUs are those known when rendering starts; values are read as their family is
 * rendered. `tail` (the process metrics' text) comes last.
 */
export function* renderMetricsChunks(
  fleet: FleetState,
  self: SelfMetrics,
  owners?: OwnerLedger,
  tail = "",
  gpuSeries: GpuSeriesMode = "full",
): Generator<string, void, undefined> {
  const out = new Chunks();
  const now = fleet.now();
  // `off` writes nothing per GPU: the GPUs are walked once only, for trueidle_fleet_gpus.
  const recs = gpuSeries === "off" ? [] : [...fleet.gpus()];
  const current = recs.map((r) => fleet.currentState(r, now));
  const boards = gpuSeries === "off" ? [] : [...fleet.boards()];
  let chunk: string | undefined;

  /** One series per GPU: `name{labels} value`, skipped where `value` gives undefined. */
  function* perGpu(m: MetricDef, value: (r: GpuRecord) => number | undefined): Generator<string, void, undefined> {
    out.buf += header(m);
    const prefix = `${m.name}{`;
    const format = formatterOf(m);
    for (let i = 0; i < recs.length; i++) {
      const rec = recs[i] as GpuRecord;
      const v = value(rec);
      if (v !== undefined) out.buf += `${prefix}${gpuLabels(rec)}} ${format(v)}\n`;
      if ((chunk = out.take())) yield chunk;
    }
  }
  /** One series per board row, skipped where `value` gives undefined. */
  function* perBoard(m: MetricDef, value: (b: BoardRecord) => number | undefined): Generator<string, void, undefined> {
    out.buf += header(m);
    const prefix = `${m.name}{`;
    const format = formatterOf(m);
    for (const b of boards) {
      const v = value(b);
      if (v !== undefined) out.buf += `${prefix}${boardLabels(b)}} ${format(v)}\n`;
      if ((chunk = out.take())) yield chunk;
    }
  }
  /** Five series per GPU, one per state. */
  function* perGpuState(
    m: MetricDef,
    value: (r: GpuRecord, s: GpuState, i: number) => number,
  ): Generator<string, void, undefined> {
    out.buf += header(m);
    const prefix = `${m.name}{`;
    const format = formatterOf(m);
    for (let i = 0; i < recs.length; i++) {
      const rec = recs[i] as GpuRecord;
      const head = prefix + gpuLabels(rec);
      for (const s of GPU_STATES) out.buf += `${head}${STATE_SUFFIX[s]} ${format(value(rec, s, i))}\n`;
      if ((chunk = out.take())) yield chunk;
    }
  }

  if (gpuSeries !== "off") {
    out.buf += header(METRICS.gpuInfo);
    for (const rec of recs) {
      out.buf += `${METRICS.gpuInfo.name}{${gpuLabels(rec)},driver="${escapeLabelValue(rec.driver)}"} 1\n`;
      if ((chunk = out.take())) yield chunk;
    }
    yield* perGpu(METRICS.gpuUp, (r) => (fleet.isUp(r, now) ? 1 : 0));
    yield* perGpu(METRICS.gpuObservedSeconds, (r) => r.observedS);
    yield* perGpuState(METRICS.gpuStateSeconds, (r, s) => r.stateS[s]);
    yield* perGpu(METRICS.gpuReportedIdleSeconds, (r) => r.reportedIdleS);
    yield* perGpu(METRICS.gpuReportedBusySeconds, (r) => r.reportedBusyS);
    yield* perGpu(METRICS.gpuRealBusySeconds, (r) => r.realBusyS);
    yield* perGpuState(METRICS.gpuState, (_r, s, i) => (current[i] === s ? 1 : 0));
    yield* perGpu(METRICS.gpuIdleStreakSeconds, (r) => r.idleStreakS);
  }
  if (gpuSeries === "full") {
    out.buf += header(METRICS.gpuRealUtilization);
    for (const rec of recs) {
      out.buf += `${METRICS.gpuRealUtilization.name}{${gpuLabels(rec)},source="${rec.realSource}"} ${formatValue(rec.real)}\n`;
      if ((chunk = out.take())) yield chunk;
    }
    yield* perGpu(METRICS.gpuReportedUtilization, (r) => r.reportedUtilization);
    yield* perGpu(METRICS.gpuProcesses, (r) => r.processes);
    yield* perGpu(METRICS.gpuPowerWatts, (r) => r.powerW);
    yield* perGpu(METRICS.gpuPowerFloorWatts, (r) => r.powerFloorW);
    yield* perGpu(METRICS.gpuMemoryUsedBytes, (r) => r.memUsedBytes);
  }
  if (gpuSeries !== "off") {
    // Boards in MIG mode: their own figures, apart from every GPU family and roll-up.
    out.buf += header(METRICS.boardInfo);
    for (const b of boards) {
      out.buf += `${METRICS.boardInfo.name}{${boardLabels(b)},driver="${escapeLabelValue(b.driver)}"} 1\n`;
      if ((chunk = out.take())) yield chunk;
    }
    yield* perBoard(METRICS.boardUp, (b) => (fleet.boardUp(b, now) ? 1 : 0));
    yield* perBoard(METRICS.boardObservedSeconds, (b) => b.observedS);
    yield* perBoard(METRICS.boardUnavailableSeconds, (b) => b.unavailableS);
    yield* perBoard(METRICS.boardPowerWatts, (b) => b.powerW);
    yield* perBoard(METRICS.boardPowerFloorWatts, (b) => b.powerFloorW);
    yield* perBoard(METRICS.boardPowerLimitWatts, (b) => b.powerLimitW);
    const instances = boards.length === 0 ? undefined : fleet.boardInstanceCounts(now);
    yield* perBoard(METRICS.boardInstances, (b) => instances?.get(b) ?? 0);
  }

  const counts = fleet.groupStateCounts(fleet.now());
  out.buf += header(METRICS.fleetGpus);
  for (const [g, c] of counts) {
    const gl = groupLabels(g);
    for (const s of GPU_STATES) out.buf += `${METRICS.fleetGpus.name}{${gl}${STATE_SUFFIX[s]} ${c[s]}\n`;
    if ((chunk = out.take())) yield chunk;
  }
  out.buf += header(METRICS.fleetStateSeconds);
  for (const g of counts.keys()) {
    const gl = groupLabels(g);
    for (const s of GPU_STATES)
      out.buf += `${METRICS.fleetStateSeconds.name}{${gl}${STATE_SUFFIX[s]} ${formatSeconds(g.stateS[s])}\n`;
    if ((chunk = out.take())) yield chunk;
  }
  const perGroup = (m: MetricDef, value: (g: FleetGroup) => number): void => {
    out.buf += header(m);
    for (const g of counts.keys()) out.buf += `${m.name}{${groupLabels(g)}} ${formatSeconds(value(g))}\n`;
  };
  perGroup(METRICS.fleetObservedSeconds, (g) => g.observedS);
  if ((chunk = out.take())) yield chunk;
  perGroup(METRICS.fleetReportedIdleSeconds, (g) => g.reportedIdleS);
  if ((chunk = out.take())) yield chunk;
  perGroup(METRICS.fleetReportedBusySeconds, (g) => g.reportedBusyS);
  if ((chunk = out.take())) yield chunk;
  perGroup(METRICS.fleetRealBusySeconds, (g) => g.realBusyS);
  if ((chunk = out.take())) yield chunk;

  if (owners?.enabled) {
    const names = owners.labels;
    const ownerPairs = (values: readonly string[]): string =>
      labelPairs(names.map((n, i) => [n, values[i] ?? ""] as const));
    // Per held GPU: in `full` and `states`, not in `off`.
    out.buf += gpuSeries === "off" ? "" : header(METRICS.gpuOwnerInfo);
    for (let i = 0; gpuSeries !== "off" && i < recs.length; i++) {
      const state = current[i];
      // Owners are shown for held GPUs only: a free or stale GPU has none.
      if (state !== "held_idle" && state !== "active" && state !== "busy_phantom") continue;
      const rec = recs[i] as GpuRecord;
      if (rec.owners.length === 0) continue;
      const gpu = labelPairs([
        ["host", rec.host],
        ["gpu", String(rec.index)],
        ["uuid", rec.uuid],
      ]);
      // Owners that share their labels are one series.
      for (const values of ownerLabelValues(names, rec.owners))
        out.buf += `${METRICS.gpuOwnerInfo.name}{${gpu},${ownerPairs(values)}} 1\n`;
      if ((chunk = out.take())) yield chunk;
    }
    out.buf += header(METRICS.ownerStateSeconds);
    for (const g of owners.groups()) {
      g.promLabels ??= ownerPairs(g.values);
      for (const s of GPU_STATES)
        out.buf += `${METRICS.ownerStateSeconds.name}{${g.promLabels}${STATE_SUFFIX[s]} ${formatSeconds(g.stateS[s])}\n`;
      if ((chunk = out.take())) yield chunk;
    }
  }

  const single = (m: MetricDef, v: number): void => void (out.buf += `${header(m)}${m.name} ${formatValue(v)}\n`);
  const byLabel = <K extends string>(
    m: MetricDef,
    label: string,
    keys: readonly K[],
    values: Record<K, number>,
  ): void => {
    out.buf += header(m);
    for (const k of keys) out.buf += `${m.name}{${label}="${k}"} ${formatValue(values[k])}\n`;
  };
  single(METRICS.agentsConnected, self.agentsConnected);
  single(METRICS.windowsReceived, self.windowsReceived);
  byLabel(METRICS.windowsRejected, "reason", REJECTION_REASONS, self.windowsRejected);
  single(METRICS.windowsReplayed, self.windowsReplayed);
  single(METRICS.influxPointsWritten, self.influxPointsWritten);
  single(METRICS.influxWriteErrors, self.influxWriteErrors);
  single(METRICS.spoolBytes, self.spoolBytes);
  single(METRICS.spooledWindows, self.spooledWindows);
  byLabel(METRICS.streamsRefused, "reason", STREAM_REFUSAL_REASONS, self.streamsRefused);
  single(METRICS.httpAuthFailures, self.httpAuthFailures);
  byLabel(METRICS.httpRequestsRefused, "reason", HTTP_REFUSAL_REASONS, self.httpRefused);
  single(METRICS.scrapesAborted, self.scrapesAborted);
  single(METRICS.metricsRenders, self.metricsRenders);
  single(METRICS.metricsCacheHits, self.metricsCacheHits);
  single(METRICS.metricsRenderSeconds, self.metricsRenderSeconds);
  byLabel(METRICS.metricsExpositionBytes, "encoding", ["identity", "gzip"], self.metricsExpositionBytes);
  const listeners = ["grpc", "http"] as const;
  out.buf += header(METRICS.connectionsOpen);
  for (const l of listeners)
    out.buf += `${METRICS.connectionsOpen.name}{listener="${l}"} ${self.connections[l].open}\n`;
  out.buf += header(METRICS.connectionsRefused);
  for (const l of listeners) {
    for (const reason of CONNECTION_REFUSAL_REASONS) {
      out.buf += `${METRICS.connectionsRefused.name}{listener="${l}",reason="${reason}"} ${formatValue(self.connections[l].refused[reason])}\n`;
    }
  }
  out.buf += tail;
  if (out.buf) yield out.buf;
}

/** Every chunk at once (tests, benchmarks). */
export function renderMetrics(
  fleet: FleetState,
  self: SelfMetrics,
  owners?: OwnerLedger,
  tail?: string,
  gpuSeries?: GpuSeriesMode,
): string[] {
  return [...renderMetricsChunks(fleet, self, owners, tail, gpuSeries)];
}

/** The whole exposition as one string (tests, small fleets). */
export function renderMetricsText(
  fleet: FleetState,
  self: SelfMetrics,
  tail?: string,
  gpuSeries?: GpuSeriesMode,
): string {
  return renderMetrics(fleet, self, undefined, tail, gpuSeries).join("");
}
