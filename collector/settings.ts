/**
 * The collector's settings (common/settings.ts), named as the options of startCollector
 * (collector.ts): the defaults its parts fall back to, the bounds validateOptions checks,
 * and the defaults and bounds of `trueidle collector`'s flags (cli/collector-command.ts
 * builds them from here). The numeric ones are checked in the order given, every problem at
 * once.
 */
import { DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT } from "../common/grpc-service.js";
import { OWNER_LABELS } from "../common/owner-fields.js";
import type { NumericSetting, Setting } from "../common/settings.js";

const MiB = 1024 * 1024;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** What an agent may send in one message: agents size their batches to fit it (agent/shipper/). */
const AGENT_MESSAGE_BYTES = 4 * MiB;

export const COLLECTOR_SETTINGS = {
  grpcListen: { kind: "text", default: `0.0.0.0:${DEFAULT_GRPC_PORT}`, meaning: "Address agents stream to." },
  httpListen: { kind: "text", default: `0.0.0.0:${DEFAULT_HTTP_PORT}`, meaning: "Address of /metrics and /healthz." },
  staleAfterWindows: {
    kind: "number",
    default: 3,
    min: 1,
    max: 1000,
    meaning: "Window lengths without a fresh window before a GPU's trueidle_gpu_up is 0.",
  },
  expireAfterMs: {
    kind: "duration",
    default: 15 * 60_000,
    min: 1000,
    meaning: "Time without a window before a GPU's series are removed.",
  },
  maxGpusPerHost: {
    kind: "integer",
    default: 64,
    min: 1,
    max: 65_536,
    meaning: "Distinct GPUs one host may report; windows of further GPUs are refused.",
  },
  maxWindowsPerBatch: {
    kind: "integer",
    default: 10_000,
    min: 1,
    max: 100_000,
    meaning: "Windows one batch may hold; a larger batch ends the stream.",
  },
  maxWindowAgeMs: { kind: "duration", default: 7 * DAY_MS, min: 60_000, meaning: "How old a window's start may be." },
  maxWindowFutureMs: {
    kind: "duration",
    default: 5 * 60_000,
    min: 1_000,
    max: DAY_MS,
    meaning: "How far a window's start may lie ahead of the collector's clock (agent clock skew).",
  },
  maxGpus: {
    kind: "integer",
    // About 20 series per GPU: 2 million series, what one Prometheus holds comfortably.
    default: 100_000,
    min: 1,
    max: 10_000_000,
    meaning: "GPUs (and roll-up groups) across all hosts; windows of further GPUs are refused as series_limit.",
  },
  maxAgents: {
    kind: "integer",
    default: 20_000,
    min: 1,
    max: 1_000_000,
    meaning: "Agent streams served at once, one per host; further agents get RESOURCE_EXHAUSTED.",
  },
  maxMessageBytes: {
    kind: "size",
    default: AGENT_MESSAGE_BYTES,
    min: AGENT_MESSAGE_BYTES,
    max: 64 * MiB,
    meaning: "Largest message accepted; at least what agents may send (larger ones get RESOURCE_EXHAUSTED).",
  },
  agentRateLimit: {
    kind: "number",
    // Drains the backlog of a 64-GPU host with 10 s windows 300× faster than it grows (collector/rate-limit.ts).
    default: 2_000,
    min: 1,
    max: 1_000_000,
    meaning: "Windows per second per agent stream, with a burst of 10 s of it; acks are held beyond it.",
  },
  helloTimeoutMs: {
    kind: "duration",
    default: 10_000,
    min: 100,
    max: 600_000,
    meaning: "A new gRPC connection must open a stream, and a stream say Hello, within this.",
  },
  maxConnections: {
    kind: "integer",
    min: 1,
    max: 10_000_000,
    meaning:
      "Connections on the gRPC port at once (default: maxAgents plus 10 % or at least 1,000, within the process' file descriptors).",
  },
  maxConnectionsPerAddress: {
    kind: "integer",
    default: 1_000,
    min: 1,
    max: 10_000_000,
    meaning: "Connections on the gRPC port from one source address.",
  },
  httpMaxConnections: {
    kind: "integer",
    default: 256,
    min: 4,
    max: 100_000,
    meaning: "Connections on the HTTP port at once (a quarter of it from one address).",
  },
  gpuSeries: {
    kind: "text",
    default: "full",
    choices: ["full", "states", "off"] as const,
    meaning:
      "Per-GPU series on /metrics: full (every family), states (info, up, state, idle streak and the seconds counters) or off (fleet roll-ups only).",
  },
  metricsCacheMaxAgeMs: {
    kind: "duration",
    default: 5_000,
    // No lower bound but 0, which the duration parser already holds to.
    max: 600_000,
    meaning:
      "A /metrics exposition younger than this is served again instead of rendered anew; one that took under 100 ms only while nothing changed (0: render every scrape).",
  },
  ownerLabels: {
    kind: "text",
    default: OWNER_LABELS.join(","),
    meaning: "Owner fields exported as labels of the owner series (a comma-separated subset, or none).",
  },
} satisfies Record<string, Setting>;

/** Which per-GPU families /metrics carries (docs/metrics.md lists each mode's families). */
export type GpuSeriesMode = (typeof COLLECTOR_SETTINGS.gpuSeries.choices)[number];
export const GPU_SERIES_MODES: readonly GpuSeriesMode[] = COLLECTOR_SETTINGS.gpuSeries.choices;

/** The settings of startCollector's `influx` options. */
export const COLLECTOR_INFLUX_SETTINGS = {
  rawRetentionMs: {
    kind: "duration",
    default: 30 * DAY_MS,
    // The raw policy must outlive the continuous query's two-hour look-back.
    min: 2 * HOUR_MS,
    meaning: "How long InfluxDB keeps raw windows (retention policy gpu_window).",
  },
  hourRetentionMs: {
    kind: "duration",
    default: 730 * DAY_MS,
    // InfluxDB's own minimum for a retention policy.
    min: HOUR_MS,
    meaning: "How long InfluxDB keeps the hourly roll-up (retention policy gpu_hour).",
  },
  batchSize: { kind: "integer", default: 5_000, min: 1, max: 100_000, meaning: "Points per InfluxDB write request." },
  flushIntervalMs: {
    kind: "duration",
    // A small fleet's batch is acknowledged about this long after it came (once written);
    // a large fleet fills batches of batchSize well within it.
    default: 250,
    min: 10,
    max: 60_000,
    meaning: "A window waits at most this long for its write batch to fill.",
  },
  maxQueuedPoints: { kind: "integer", default: 100_000, min: 1, meaning: "Points the write queue holds at most." },
  lateRollupIntervalMs: {
    kind: "duration",
    min: 0,
    minExclusive: true,
    meaning:
      "How often hours the continuous query no longer covers are rolled up (default: as often as the query runs).",
  },
  fleetCheckIntervalMs: {
    kind: "duration",
    default: 60_000,
    min: 0,
    minExclusive: true,
    meaning:
      "How often the fleet roll-up's group keys are checked against the GPUs' tags, and its back-fill from gpu_hour resumed.",
  },
} satisfies Record<string, NumericSetting>;

/** The settings of startCollector's `spool` options. */
export const COLLECTOR_SPOOL_SETTINGS = {
  maxBytes: {
    kind: "size",
    default: 1024 * MiB,
    min: MiB,
    meaning: "Bytes the spool holds at most; beyond it agents are pushed back.",
  },
  spoolAfterMs: {
    kind: "duration",
    // Acks come within this (and a spool append) whatever InfluxDB does: well under the
    // agents' 30 s answer timeout, above a healthy write's flush interval and round trip.
    default: 1_500,
    min: 10,
    max: 600_000,
    meaning: "A write to InfluxDB not done within this goes to the spool instead.",
  },
} satisfies Record<string, NumericSetting>;
