/**
 * The collector: gRPC ingest from agents → fleet state → Prometheus `/metrics` and
 * `/healthz`, and, with `influx` set, every accepted window to InfluxDB (acks wait for
 * the write). `startCollector` validates its options (every problem at once), binds both
 * listeners and returns once they accept connections; the InfluxDB schema is set up in
 * the background, retried while InfluxDB cannot be reached.
 */
import { hostname } from "node:os";
import { TrueidleError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { Thresholds } from "../common/types.js";
import { DEFAULT_EXPIRE_AFTER_MS, DEFAULT_STALE_AFTER_WINDOWS, FleetState, type FleetSummary } from "./fleet-state.js";
import { IngestServer } from "./grpc-server.js";
import { CollectorHttpServer } from "./http-server.js";
import { parseListenAddress, type ListenAddress } from "./listen-address.js";
import { LateRollup } from "./influx/late-rollup.js";
import { SchemaKeeper } from "./influx/schema-keeper.js";
import { DEFAULT_HOUR_RETENTION_MS, DEFAULT_RAW_RETENTION_MS, MIN_HOUR_RETENTION_MS, MIN_RAW_RETENTION_MS } from "./influx/schema.js";
import { describeTarget, type InfluxTarget } from "./influx/target.js";
import { InfluxWriter } from "./influx/writer.js";
import { SelfMetrics } from "./self-metrics.js";
import { DEFAULT_WINDOW_LIMITS, type WindowLimits } from "./validate.js";

export type { FleetSummary } from "./fleet-state.js";

export interface CollectorOptions {
  /** gRPC listen address, HOST:PORT, e.g. "0.0.0.0:9746"; port 0 picks a free port. */
  grpcListen: string;
  /** HTTP listen address, HOST:PORT, e.g. "0.0.0.0:9745"; port 0 picks a free port. */
  httpListen: string;
  /** Thresholds pushed to every agent in Welcome. */
  thresholds: Thresholds;
  /** Window lengths without a fresh window before trueidle_gpu_up is 0 (default 3). */
  staleAfterWindows?: number;
  /** Time without a window before a GPU's series are removed (default 15 min). */
  expireAfterMs?: number;
  /** Distinct GPUs one host may report (default 64). */
  maxGpusPerHost?: number;
  /** Windows one batch may hold; a larger batch ends the stream (default 10,000). */
  maxWindowsPerBatch?: number;
  /** How old a window's start may be (default 7 days). */
  maxWindowAgeMs?: number;
  /** How far a window's start may lie ahead of the collector's clock (default 5 min). */
  maxWindowFutureMs?: number;
  logger: Logger;
  /** Clock, Unix milliseconds; injectable for tests. */
  now?: () => number;
  /** Names this collector to agents and in logs (default HOSTNAME:PID). */
  collectorId?: string;
  /** Write every accepted window to this InfluxDB; acks wait for the writes. */
  influx?: CollectorInfluxOptions | undefined;
}

export interface CollectorInfluxOptions {
  target: InfluxTarget;
  /** Retention of raw windows (`gpu_window`, default 30 days). */
  rawRetentionMs?: number | undefined;
  /** Retention of the hourly roll-up (`gpu_hour`, default 730 days). */
  hourRetentionMs?: number | undefined;
  /** Points per write request (default 5,000). */
  batchSize?: number | undefined;
  /** A window waits at most this long for its batch to fill (default 1 s). */
  flushIntervalMs?: number | undefined;
  /** Points the write queue holds at most (default 100,000). */
  maxQueuedPoints?: number | undefined;
  /** How often hours the continuous query no longer covers are rolled up (default 10 min). */
  lateRollupIntervalMs?: number | undefined;
}

export interface Collector {
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly collectorId: string;
  summary(): FleetSummary;
  /** Graceful: stops accepting, ends agent streams with UNAVAILABLE, closes both servers; safe twice. */
  stop(): Promise<void>;
}

interface ValidOptions {
  grpc: ListenAddress;
  http: ListenAddress;
  limits: WindowLimits;
}

/** Every problem of the options at once, by name; throws a bad_config error if any. */
function validateOptions(opts: CollectorOptions): ValidOptions {
  const problems: string[] = [];
  const addr = (text: string, what: string): ListenAddress => {
    try {
      return parseListenAddress(text, what);
    } catch (err) {
      problems.push(err instanceof Error ? err.message : String(err));
      return { host: "", port: 0 };
    }
  };
  const grpc = addr(opts.grpcListen, "grpcListen");
  const http = addr(opts.httpListen, "httpListen");
  const positive = (name: string, v: number | undefined, integer: boolean): void => {
    if (v === undefined) return;
    if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
      problems.push(`${name} must be a positive ${integer ? "integer" : "number"} (got ${v})`);
    }
  };
  positive("staleAfterWindows", opts.staleAfterWindows, false);
  positive("expireAfterMs", opts.expireAfterMs, false);
  positive("maxGpusPerHost", opts.maxGpusPerHost, true);
  positive("maxWindowsPerBatch", opts.maxWindowsPerBatch, true);
  positive("maxWindowAgeMs", opts.maxWindowAgeMs, false);
  positive("maxWindowFutureMs", opts.maxWindowFutureMs, false);
  const stale = opts.staleAfterWindows ?? DEFAULT_STALE_AFTER_WINDOWS;
  const expire = opts.expireAfterMs ?? DEFAULT_EXPIRE_AFTER_MS;
  if (expire < stale * 1_000) problems.push(`expireAfterMs (${expire}) must be at least staleAfterWindows × 1000 ms (${stale * 1000})`);
  const t = opts.thresholds;
  if (!(t.utilBusyPercent > 0 && t.utilBusyPercent <= 100)) problems.push(`thresholds.utilBusyPercent must be in (0, 100] (got ${t.utilBusyPercent})`);
  if (!(t.realActiveRatio > 0 && t.realActiveRatio <= 1)) problems.push(`thresholds.realActiveRatio must be in (0, 1] (got ${t.realActiveRatio})`);
  if (!(Number.isSafeInteger(t.heldMemoryBytes) && t.heldMemoryBytes >= 0)) {
    problems.push(`thresholds.heldMemoryBytes must be a non-negative integer (got ${t.heldMemoryBytes})`);
  }
  const influx = opts.influx;
  if (influx) {
    const raw = influx.rawRetentionMs ?? DEFAULT_RAW_RETENTION_MS;
    const hour = influx.hourRetentionMs ?? DEFAULT_HOUR_RETENTION_MS;
    if (!(Number.isFinite(raw) && raw >= MIN_RAW_RETENTION_MS)) problems.push(`influx.rawRetentionMs must be at least ${MIN_RAW_RETENTION_MS} ms, 2 hours (got ${raw})`);
    if (!(Number.isFinite(hour) && hour >= MIN_HOUR_RETENTION_MS)) problems.push(`influx.hourRetentionMs must be at least ${MIN_HOUR_RETENTION_MS} ms, 1 hour (got ${hour})`);
    positive("influx.batchSize", influx.batchSize, true);
    positive("influx.flushIntervalMs", influx.flushIntervalMs, false);
    positive("influx.maxQueuedPoints", influx.maxQueuedPoints, true);
    positive("influx.lateRollupIntervalMs", influx.lateRollupIntervalMs, false);
  }
  if (problems.length > 0) throw new TrueidleError("bad_config", `bad collector options: ${problems.join("; ")}`);
  return {
    grpc,
    http,
    limits: {
      maxFutureMs: opts.maxWindowFutureMs ?? DEFAULT_WINDOW_LIMITS.maxFutureMs,
      maxAgeMs: opts.maxWindowAgeMs ?? DEFAULT_WINDOW_LIMITS.maxAgeMs,
      maxWindowsPerBatch: opts.maxWindowsPerBatch ?? DEFAULT_WINDOW_LIMITS.maxWindowsPerBatch,
      maxGpusPerHost: opts.maxGpusPerHost ?? DEFAULT_WINDOW_LIMITS.maxGpusPerHost,
    },
  };
}

export async function startCollector(opts: CollectorOptions): Promise<Collector> {
  const valid = validateOptions(opts);
  const now = opts.now ?? Date.now;
  const collectorId = opts.collectorId ?? `${hostname()}:${process.pid}`;
  const logger = opts.logger;
  const fleet = new FleetState({
    now,
    staleAfterWindows: opts.staleAfterWindows,
    expireAfterMs: opts.expireAfterMs,
    maxGpusPerHost: valid.limits.maxGpusPerHost,
  });
  const self = new SelfMetrics();
  let schema: SchemaKeeper | undefined;
  let writer: InfluxWriter | undefined;
  let late: LateRollup | undefined;
  if (opts.influx) {
    const io = opts.influx;
    const influxLog = logger.child({ part: "influx" });
    schema = new SchemaKeeper({
      target: io.target,
      logger: influxLog,
      rawRetentionMs: io.rawRetentionMs,
      hourRetentionMs: io.hourRetentionMs,
    });
    writer = new InfluxWriter({
      target: io.target,
      batchSize: io.batchSize,
      flushIntervalMs: io.flushIntervalMs,
      maxQueuedPoints: io.maxQueuedPoints,
      // At stop only requests already sent are still being written (queued windows are
      // withdrawn with their streams; the agents hold them), so the grace can be short.
      stopTimeoutMs: 5_000,
      logger: influxLog,
      counters: self,
      schema,
    });
    late = new LateRollup({ target: io.target, logger: influxLog, intervalMs: io.lateRollupIntervalMs });
  }
  const grpc = new IngestServer({
    fleet,
    self,
    thresholds: { ...opts.thresholds },
    collectorId,
    limits: Object.freeze(valid.limits),
    logger,
    now,
    influx: writer ? { writer, written: late ? (t) => late.note(t) : undefined } : undefined,
  });
  const http = new CollectorHttpServer({ fleet, self, logger });

  let grpcPort: number;
  let httpPort: number;
  try {
    grpcPort = await grpc.listen(valid.grpc);
    httpPort = await http.listen(valid.http);
  } catch (err) {
    await Promise.all([grpc.stop(), http.stop()]);
    schema?.stop();
    await writer?.stop();
    await late?.stop();
    throw new TrueidleError("unavailable", err instanceof Error ? err.message : String(err), { cause: err });
  }
  fleet.startSweeper();
  logger.info(`The collector is listening for agents on gRPC port ${grpcPort} and for scrapes on HTTP port ${httpPort}.`, {
    collectorId,
    grpcListen: opts.grpcListen,
    httpListen: opts.httpListen,
  });
  if (opts.influx && schema) {
    logger.info(
      `The collector writes every window to InfluxDB at ${describeTarget(opts.influx.target)}, retention policy gpu_window; ` +
        "agents are acknowledged once their windows are written.",
      { influxUrl: opts.influx.target.baseUrl, database: opts.influx.target.database },
    );
    schema.start();
    late?.start();
  }

  let stopping: Promise<void> | undefined;
  return {
    grpcPort,
    httpPort,
    collectorId,
    summary: () => fleet.summary(),
    stop: () => {
      stopping ??= (async () => {
        fleet.stop();
        // Streams end first: their windows still queued for InfluxDB are withdrawn (the
        // agents hold them), then what is already being written is flushed. The schema
        // keeper stops before: writes still waiting for a schema that never came give up.
        await Promise.all([grpc.stop(), http.stop()]);
        schema?.stop();
        await writer?.stop();
        await late?.stop();
        logger.info("The collector stopped.", { collectorId });
      })();
      return stopping;
    },
  };
}
