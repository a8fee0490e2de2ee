/**
 * The collector: gRPC ingest from agents → fleet state → Prometheus `/metrics` and
 * `/healthz`, and, with `influx` set, every accepted window to InfluxDB (acks wait until
 * the window is durable: written, or — with `spool` — in the disk spool, collector/spool/). `startCollector` validates its options (every problem at once), binds both
 * listeners and returns once they accept connections; the InfluxDB schema is set up in
 * the background, retried while InfluxDB cannot be reached.
 */
import { hostname } from "node:os";
import { TrueidleError, errorMessage } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { Thresholds } from "../common/types.js";
import {
  DEFAULT_EXPIRE_AFTER_MS,
  DEFAULT_MAX_GPUS,
  DEFAULT_STALE_AFTER_WINDOWS,
  FleetState,
  type FleetSummary,
} from "./fleet-state.js";
import { DEFAULT_HELLO_TIMEOUT_MS, DEFAULT_MAX_GRPC_CONNECTIONS_PER_ADDRESS, IngestServer } from "./grpc-server.js";
import { CollectorHttpServer, DEFAULT_MAX_HTTP_CONNECTIONS } from "./http-server.js";
import { openFilesLimit } from "../common/connection-guard.js";
import { routeGrpcLogs } from "../common/grpc-log.js";
import { FailureThrottle } from "./auth/failure-throttle.js";
import { OWNER_LABELS, OwnerLedger, type OwnerLabel } from "./owner-ledger.js";
import { parseListenAddress, type ListenAddress } from "../common/listen-address.js";
import { FleetBackfill } from "./influx/fleet-backfill.js";
import { LateRollup } from "./influx/late-rollup.js";
import { SchemaKeeper } from "./influx/schema-keeper.js";
import { describeTarget, type InfluxTarget } from "../common/influx/target.js";
import { InfluxWriter } from "./influx/writer.js";
import { SelfMetrics } from "./self-metrics.js";
import { formatSize } from "../common/size.js";
import type { DurableSink } from "./spool/durable-sink.js";
import { DEFAULT_SPOOL_AFTER_MS, DEFAULT_SPOOL_MAX_BYTES, SpoolingSink } from "./spool/spooling-sink.js";
import { WaitForInfluxSink } from "./spool/wait-for-influx-sink.js";
import type { HttpUsers } from "../common/http-auth.js";
import type { HttpTlsSettings } from "../common/http-security.js";
import type { ServerTls } from "./auth/server-tls.js";
import { StreamAuthenticator } from "./auth/stream-auth.js";
import type { TokenSet } from "./auth/tokens.js";
import { DEFAULT_WINDOW_LIMITS, type WindowLimits } from "./validate.js";
import { AgentRegistry, DEFAULT_MAX_AGENTS } from "./agent-registry.js";
import { burstFor, DEFAULT_AGENT_RATE_LIMITS, rateLimitsProblem, type AgentRateLimits } from "./rate-limit.js";
import {
  COLLECTOR_INFLUX_SETTINGS,
  COLLECTOR_SETTINGS,
  COLLECTOR_SPOOL_SETTINGS,
  GPU_SERIES_MODES,
  type GpuSeriesMode,
} from "./settings.js";
import { settingProblem, type NumericSetting, type Setting } from "../common/settings.js";
import { THRESHOLD_SETTINGS } from "../common/threshold-settings.js";

export type { FleetSummary } from "./fleet-state.js";

export interface CollectorOptions {
  /** gRPC listen address, HOST:PORT, e.g. "0.0.0.0:9746"; port 0 picks a free port. */
  grpcListen: string;
  /** HTTP listen address, HOST:PORT, e.g. "0.0.0.0:9745"; port 0 picks a free port. */
  httpListen: string;
  /** Thresholds pushed to every agent in Welcome. */
  thresholds: Thresholds;
  /** Window lengths without a fresh window before trueidle_gpu_up is 0 (default 3). */
  staleAfterWindows?: number | undefined;
  /** Time without a window before a GPU's series are removed (default 15 min). */
  expireAfterMs?: number | undefined;
  /** Distinct GPUs one host may report (default 64). */
  maxGpusPerHost?: number | undefined;
  /** Windows one batch may hold; a larger batch ends the stream (default 10,000). */
  maxWindowsPerBatch?: number | undefined;
  /** How old a window's start may be (default 7 days). */
  maxWindowAgeMs?: number | undefined;
  /** How far a window's start may lie ahead of the collector's clock (default 5 min). */
  maxWindowFutureMs?: number | undefined;
  /** GPUs (and roll-up groups) across all hosts; windows of further GPUs are refused as series_limit (default 100,000). */
  maxGpus?: number | undefined;
  /** Agent streams served at once, one per host; further agents get RESOURCE_EXHAUSTED (default 20,000). */
  maxAgents?: number | undefined;
  /** Largest message accepted, bytes; at least the default, 4 MiB (larger ones get RESOURCE_EXHAUSTED). */
  maxMessageBytes?: number | undefined;
  /** Windows per second per agent stream, with a burst of 10 s of it (default 2,000); acks are held beyond it. */
  agentRateLimit?: number | undefined;
  /** A new gRPC connection must open a stream, and a stream say Hello, within this; an idle connection is closed after it (default 10 s). */
  helloTimeoutMs?: number | undefined;
  /** Connections on the gRPC port at once (default: --max-agents plus 10 % or at least 1,000, within the process' file descriptors). */
  maxConnections?: number | undefined;
  /** Connections on the gRPC port from one source address (default 1,000). */
  maxConnectionsPerAddress?: number | undefined;
  /** Connections on the HTTP port at once (default 256; a quarter of it from one address). */
  httpMaxConnections?: number | undefined;
  /** Owner fields exported as labels of the owner series (default all: namespace, pod, container, job, user; [] for none). */
  ownerLabels?: readonly OwnerLabel[] | undefined;
  /** Per-GPU series on /metrics: full (default), states or off (docs/metrics.md). */
  gpuSeries?: GpuSeriesMode | undefined;
  /** A /metrics exposition whose render started less than this ago is served again (default 5 s; 0: render every scrape). */
  metricsCacheMaxAgeMs?: number | undefined;
  logger: Logger;
  /** Clock, Unix milliseconds; injectable for tests. */
  now?: (() => number) | undefined;
  /** Names this collector to agents and in logs (default HOSTNAME:PID). */
  collectorId?: string | undefined;
  /** Write every accepted window to this InfluxDB; acks wait for the writes. */
  influx?: CollectorInfluxOptions | undefined;
  /** With `influx`: acknowledge from this disk spool while InfluxDB is away or slow (collector/spool/). */
  spool?: CollectorSpoolOptions | undefined;
  /** gRPC over TLS (mutual TLS with `clientCa`); plaintext without it. */
  grpcTls?: ServerTls | undefined;
  /** When set, agents must present one of these tokens; others get UNAUTHENTICATED. */
  tokens?: TokenSet | undefined;
  /** HTTPS for /metrics, /healthz and / instead of HTTP (with a client certificate policy from a web configuration file). */
  httpTls?: HttpTlsSettings | undefined;
  /** When set, /metrics and / need one of these users' credentials; /healthz stays open. */
  httpBasicAuth?: HttpUsers | undefined;
  /** Headers added to every HTTP answer. */
  httpHeaders?: Readonly<Record<string, string>> | undefined;
}

export interface CollectorSpoolOptions {
  /** Spool directory, created (mode 0700) when missing; one collector per directory (locked). */
  dir: string;
  /** Bytes the spool holds at most; beyond it agents are pushed back (default 1 GiB). */
  maxBytes?: number | undefined;
  /** A write to InfluxDB not done within this goes to the spool instead (default 1.5 s). */
  spoolAfterMs?: number | undefined;
}

export interface CollectorInfluxOptions {
  target: InfluxTarget;
  /** Retention of raw windows (`gpu_window`, default 30 days). */
  rawRetentionMs?: number | undefined;
  /** Retention of the hourly roll-up (`gpu_hour`, default 730 days). */
  hourRetentionMs?: number | undefined;
  /** Points per write request (default 5,000). */
  batchSize?: number | undefined;
  /** A window waits at most this long for its batch to fill (default 250 ms). */
  flushIntervalMs?: number | undefined;
  /** Points the write queue holds at most (default 100,000). */
  maxQueuedPoints?: number | undefined;
  /** How often hours the continuous query no longer covers are rolled up (default 10 min). */
  lateRollupIntervalMs?: number | undefined;
  /** How often the fleet roll-up's group keys are checked and its back-fill resumed (default 60 s). */
  fleetCheckIntervalMs?: number | undefined;
}

export interface Collector {
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly collectorId: string;
  summary(): FleetSummary;
  /**
   * Graceful: stops taking streams and batches, settles the batches in flight (into the
   * spool, or with a grace to reach InfluxDB) and sends their acks, ends agent streams with
   * UNAVAILABLE, closes both servers and the spool (kept for the next start); safe twice.
   */
  stop(): Promise<void>;
}

interface ValidOptions {
  grpc: ListenAddress;
  http: ListenAddress;
  limits: WindowLimits;
  rateLimits: AgentRateLimits;
}

/** Every numeric option of `T` with the setting that bounds it: a numeric option without a setting does not compile. */
type NumericSettings<T> = {
  readonly [K in keyof T as Exclude<T[K], undefined> extends number ? K : never]-?: NumericSetting;
};
const OPTION_SETTINGS: NumericSettings<CollectorOptions> = COLLECTOR_SETTINGS;
const THRESHOLDS: NumericSettings<Thresholds> = THRESHOLD_SETTINGS;
const INFLUX_SETTINGS: NumericSettings<CollectorInfluxOptions> = COLLECTOR_INFLUX_SETTINGS;
/**
 * The spool's size is checked for a positive whole number only: the flag's floor
 * (--spool-max-size, 1 MiB) catches a unit slipped on the command line, while tests fill a
 * spool of a few KiB through this API.
 */
const SPOOL_SETTINGS: NumericSettings<CollectorSpoolOptions> = {
  ...COLLECTOR_SPOOL_SETTINGS,
  maxBytes: { ...COLLECTOR_SPOOL_SETTINGS.maxBytes, min: 1 },
};

/** Pushes a problem for each value of `values` that its setting refuses, named `prefix` + the option. */
function checkSettings(
  problems: string[],
  prefix: string,
  settings: Readonly<Record<string, Setting>>,
  values: object,
): void {
  for (const [name, s] of Object.entries(settings)) {
    if (s.kind === "text") continue;
    const p = settingProblem(prefix + name, s, (values as Record<string, number | undefined>)[name]);
    if (p !== undefined) problems.push(p);
  }
}

/** Every problem of the options at once, by name; throws a bad_config error if any. */
function validateOptions(opts: CollectorOptions): ValidOptions {
  const problems: string[] = [];
  const addr = (text: string, what: string): ListenAddress => {
    try {
      return parseListenAddress(text, what);
    } catch (err) {
      problems.push(errorMessage(err));
      return { host: "", port: 0 };
    }
  };
  const grpc = addr(opts.grpcListen, "grpcListen");
  const http = addr(opts.httpListen, "httpListen");
  checkSettings(problems, "", OPTION_SETTINGS, opts);
  if (opts.gpuSeries !== undefined && !GPU_SERIES_MODES.includes(opts.gpuSeries))
    problems.push(`gpuSeries must be one of ${GPU_SERIES_MODES.join(", ")} (got ${String(opts.gpuSeries)})`);
  const windowsPerS = opts.agentRateLimit ?? DEFAULT_AGENT_RATE_LIMITS.windowsPerS;
  const rateLimits: AgentRateLimits = { ...DEFAULT_AGENT_RATE_LIMITS, windowsPerS, windowBurst: burstFor(windowsPerS) };
  const maxWindowsPerBatch = opts.maxWindowsPerBatch ?? DEFAULT_WINDOW_LIMITS.maxWindowsPerBatch;
  if (windowsPerS > 0 && maxWindowsPerBatch > 0) {
    const p = rateLimitsProblem(rateLimits, maxWindowsPerBatch);
    if (p) problems.push(p);
  }
  const stale = opts.staleAfterWindows ?? DEFAULT_STALE_AFTER_WINDOWS;
  const expire = opts.expireAfterMs ?? DEFAULT_EXPIRE_AFTER_MS;
  if (expire < stale * 1_000)
    problems.push(`expireAfterMs (${expire}) must be at least staleAfterWindows × 1000 ms (${stale * 1000})`);
  checkSettings(problems, "thresholds.", THRESHOLDS, opts.thresholds);
  const influx = opts.influx;
  if (opts.spool) {
    if (!influx) problems.push("spool needs influx: the spool holds windows on their way to InfluxDB");
    if (typeof opts.spool.dir !== "string" || opts.spool.dir.trim() === "")
      problems.push("spool.dir must be a directory path");
    checkSettings(problems, "spool.", SPOOL_SETTINGS, opts.spool);
  }
  if (influx) checkSettings(problems, "influx.", INFLUX_SETTINGS, influx);
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
    rateLimits,
  };
}

/** Descriptors kept free of both listeners: InfluxDB requests, the spool, logs, Node itself. */
const RESERVED_FILE_DESCRIPTORS = 256;

/**
 * gRPC connections the collector takes at once: --max-connections, or --max-agents plus
 * 10 % for reconnects; either within the descriptors the process may hold (less the HTTP
 * connections and a reserve), with a warning naming the fix when the limit cuts it.
 */
async function grpcConnectionBudget(
  opts: CollectorOptions,
  httpMaxConnections: number,
  logger: Logger,
): Promise<number> {
  const agents = opts.maxAgents ?? DEFAULT_MAX_AGENTS;
  const wanted = opts.maxConnections ?? agents + Math.max(1_000, Math.ceil(agents / 10));
  const files = await openFilesLimit();
  if (files === undefined) return wanted;
  const room = files - httpMaxConnections - RESERVED_FILE_DESCRIPTORS;
  if (wanted <= room) return wanted;
  const budget = Math.max(16, room);
  logger.warn(
    `The collector takes at most ${budget} gRPC connections, not ${wanted}: the process may hold ${files} file descriptors. ` +
      `Raise the limit (systemd LimitNOFILE=, ulimit -n, the container runtime's nofile) to serve ${wanted}.`,
    { openFilesLimit: files, wanted, budget },
  );
  return budget;
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
    maxGpus: opts.maxGpus ?? DEFAULT_MAX_GPUS,
    logger,
  });
  const self = new SelfMetrics();
  const owners = new OwnerLedger(opts.ownerLabels ?? OWNER_LABELS, {
    maxGroups: opts.maxGpus ?? DEFAULT_MAX_GPUS,
    expireAfterMs: opts.expireAfterMs ?? DEFAULT_EXPIRE_AFTER_MS,
    logger,
  });
  let schema: SchemaKeeper | undefined;
  let writer: InfluxWriter | undefined;
  let late: LateRollup | undefined;
  let fleetBackfill: FleetBackfill | undefined;
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
    fleetBackfill = new FleetBackfill({
      target: io.target,
      logger: influxLog,
      schema,
      checkEveryMs: io.fleetCheckIntervalMs,
    });
  }
  let sink: DurableSink | undefined;
  if (writer) {
    const written = late ? (t: number): void => late.note(t) : undefined;
    sink = opts.spool
      ? await SpoolingSink.open({
          dir: opts.spool.dir,
          maxBytes: opts.spool.maxBytes,
          spoolAfterMs: opts.spool.spoolAfterMs,
          writer,
          written,
          counters: self,
          logger: logger.child({ part: "spool" }),
        })
      : new WaitForInfluxSink({ writer, written, logger });
  }
  const auth = opts.tokens ? new StreamAuthenticator({ tokens: opts.tokens, logger, now }) : undefined;
  routeGrpcLogs(logger);
  const httpMaxConnections = opts.httpMaxConnections ?? DEFAULT_MAX_HTTP_CONNECTIONS;
  const grpcConnections = await grpcConnectionBudget(opts, httpMaxConnections, logger);
  const grpcPerAddress = Math.min(
    grpcConnections,
    opts.maxConnectionsPerAddress ?? DEFAULT_MAX_GRPC_CONNECTIONS_PER_ADDRESS,
  );
  const grpc = new IngestServer(
    {
      fleet,
      self,
      thresholds: { ...opts.thresholds },
      collectorId,
      limits: Object.freeze(valid.limits),
      logger,
      now,
      influx: sink ? { sink } : undefined,
      owners: owners.enabled ? owners : undefined,
      agents: new AgentRegistry(opts.maxAgents ?? DEFAULT_MAX_AGENTS),
      rateLimits: Object.freeze(valid.rateLimits),
    },
    auth,
    {
      maxMessageBytes: opts.maxMessageBytes,
      helloTimeoutMs: opts.helloTimeoutMs,
      maxConnections: grpcConnections,
      maxConnectionsPerAddress: grpcPerAddress,
      connectionCounters: self.connections.grpc,
      authThrottle: auth ? new FailureThrottle() : undefined,
    },
  );
  const http = new CollectorHttpServer({
    fleet,
    self,
    logger,
    tls: opts.httpTls,
    basicAuth: opts.httpBasicAuth,
    headers: opts.httpHeaders,
    authThrottle: opts.httpBasicAuth ? new FailureThrottle() : undefined,
    maxConnections: httpMaxConnections,
    owners: owners.enabled ? owners : undefined,
    gpuSeries: opts.gpuSeries,
    metricsCacheMaxAgeMs: opts.metricsCacheMaxAgeMs,
  });

  let grpcPort: number;
  let httpPort: number;
  try {
    grpcPort = await grpc.listen(valid.grpc, opts.grpcTls);
    httpPort = await http.listen(valid.http);
  } catch (err) {
    await Promise.all([grpc.stop(), http.stop()]);
    schema?.stop();
    await sink?.stop();
    await writer?.stop();
    await late?.stop();
    await fleetBackfill?.stop();
    throw new TrueidleError("unavailable", errorMessage(err), { cause: err });
  }
  fleet.start();
  const grpcSecurity = opts.grpcTls ? (opts.grpcTls.clientCa !== undefined ? "mutual TLS" : "TLS") : "plaintext";
  logger.info(
    `The collector is listening for agents on gRPC port ${grpcPort} and for scrapes on HTTP port ${httpPort}.`,
    {
      collectorId,
      grpcListen: opts.grpcListen,
      httpListen: opts.httpListen,
      grpc_security: grpcSecurity + (opts.tokens ? `, ${opts.tokens.size} accepted agent token(s)` : ""),
      http_security:
        (opts.httpTls ? "HTTPS" : "HTTP") +
        (opts.httpTls?.clientAuth !== undefined && opts.httpTls.clientAuth !== "NoClientCert"
          ? `, client certificates ${opts.httpTls.clientAuth}`
          : "") +
        (opts.httpBasicAuth ? ", basic auth except /healthz" : ""),
      grpc_connections: `${grpcConnections} in all, ${grpcPerAddress} per address; a stream must say Hello within ${(opts.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS) / 1000} s`,
      http_connections: `${httpMaxConnections} in all, ${Math.max(1, Math.floor(httpMaxConnections / 4))} per address`,
    },
  );
  if (opts.influx && schema) {
    logger.info(
      `The collector writes every window to InfluxDB at ${describeTarget(opts.influx.target)}, retention policy gpu_window; ` +
        (opts.spool
          ? `agents are acknowledged once their windows are written, or in the spool at ${(sink as SpoolingSink).dir} ` +
            `(at most ${formatSize(opts.spool.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES)}) when InfluxDB is away or takes longer than ` +
            `${opts.spool.spoolAfterMs ?? DEFAULT_SPOOL_AFTER_MS} ms.`
          : "agents are acknowledged once their windows are written, so while InfluxDB is away or slow they keep them; " +
            "add --spool-dir DIR to acknowledge from a disk spool instead."),
      { influxUrl: opts.influx.target.baseUrl, database: opts.influx.target.database, spoolDir: opts.spool?.dir },
    );
    schema.start();
    sink?.start();
    late?.start();
    fleetBackfill?.start();
  }

  let stopping: Promise<void> | undefined;
  return {
    grpcPort,
    httpPort,
    collectorId,
    summary: () => fleet.summary(),
    stop: () => {
      stopping ??= (async () => {
        await fleet.stop();
        // No new streams or batches; the batches taken are settled — moved to the spool, or
        // given a grace to reach InfluxDB without one — and their acks written before the
        // streams end with UNAVAILABLE (grpc-js sends written messages before the status).
        const answered = grpc.beginStop();
        await sink?.beginStop();
        await answered;
        await Promise.all([grpc.stop(), http.stop()]);
        // The schema keeper stops first: writes still waiting for a schema give up. The
        // drainer stops before the writer (the spool is kept for the next start); the
        // writer then flushes only the requests already sent.
        schema?.stop();
        const spooled = await sink?.stop();
        await writer?.stop();
        await late?.stop();
        await fleetBackfill?.stop();
        if (spooled) {
          const left = spooled.spoolBytesLeft;
          logger.info(
            `The collector stopped: ${spooled.windowsWritten} windows were acknowledged as written to InfluxDB and ` +
              `${spooled.windowsSpooled} from the spool; ${spooled.windowsDrained} were written from the spool` +
              (opts.spool
                ? left > 0
                  ? `, and ${left} bytes stay in it for the next start.`
                  : ", which is empty."
                : "."),
            { collectorId, ...spooled },
          );
        } else {
          logger.info("The collector stopped.", { collectorId });
        }
      })();
      return stopping;
    },
  };
}
