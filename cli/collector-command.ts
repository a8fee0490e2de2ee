/** `trueidle collector`: receive windows over gRPC, serve Prometheus metrics, write InfluxDB history. */
import {
  deprecationsOf,
  formatHelp,
  parseFlags,
  UsageError,
  type CommandSpec,
  type FlagSpec,
  type FlagValues,
} from "./args.js";
import { LOG_FLAGS, loggerFrom, THRESHOLD_FLAGS, thresholdsFrom } from "./common-flags.js";
import { DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT } from "../common/grpc-service.js";
import type { Logger } from "../common/log.js";
import { startCollector, type CollectorInfluxOptions, type CollectorSpoolOptions } from "../collector/collector.js";
import { MIN_HOUR_RETENTION_MS, MIN_RAW_RETENTION_MS } from "../collector/influx/schema.js";
import { DEFAULT_MAX_AGENTS } from "../collector/agent-registry.js";
import { DEFAULT_MAX_GPUS } from "../collector/fleet-state.js";
import { DEFAULT_MAX_GRPC_CONNECTIONS_PER_ADDRESS, MAX_RECEIVE_MESSAGE_BYTES } from "../collector/grpc-server.js";
import { DEFAULT_MAX_HTTP_CONNECTIONS } from "../collector/http-server.js";
import { OWNER_LABELS, parseOwnerLabels, type OwnerLabel } from "../collector/owner-ledger.js";
import { DEFAULT_AGENT_RATE_LIMITS } from "../collector/rate-limit.js";
import { DEFAULT_WINDOW_LIMITS } from "../collector/validate.js";
import { parseInfluxUrl, readInfluxCredentials } from "../collector/influx/target.js";
import { waitForSignal } from "./signals.js";
import { COLLECTOR_SECURITY_FLAGS, collectorSecurityFrom } from "./security-flags.js";
import { errorMessage } from "../common/errors.js";

/** Limits on what agents may send (README "Limits"); each is enforced in the collector, see collector.ts. */
const LIMIT_FLAGS: FlagSpec[] = [
  {
    name: "max-agents",
    type: "number",
    min: 1,
    max: 1_000_000,
    default: String(DEFAULT_MAX_AGENTS),
    placeholder: "N",
    help: "Agent streams served at once (one per host); further agents get RESOURCE_EXHAUSTED and come back later.",
  },
  {
    name: "max-gpus",
    type: "number",
    min: 1,
    max: 10_000_000,
    default: String(DEFAULT_MAX_GPUS),
    placeholder: "N",
    help: "GPUs across all hosts (caps Prometheus series); windows of further GPUs are rejected as series_limit.",
  },
  {
    name: "max-gpus-per-host",
    type: "number",
    min: 1,
    max: 65_536,
    default: String(DEFAULT_WINDOW_LIMITS.maxGpusPerHost),
    placeholder: "N",
    help: "GPUs one host may report; windows of further GPUs are rejected as too_many_gpus.",
  },
  {
    name: "max-message-size",
    type: "size",
    min: MAX_RECEIVE_MESSAGE_BYTES,
    max: 64 * 1024 * 1024,
    default: "4MiB",
    help: "Largest message from an agent; a larger one ends its stream with RESOURCE_EXHAUSTED. An agent batch of 2,000 windows is about 1MB.",
  },
  {
    name: "max-windows-per-batch",
    type: "number",
    min: 1,
    max: 100_000,
    default: String(DEFAULT_WINDOW_LIMITS.maxWindowsPerBatch),
    placeholder: "N",
    help: "Windows in one batch; a larger batch ends the stream with INVALID_ARGUMENT.",
  },
  {
    name: "agent-rate-limit",
    type: "number",
    min: 1,
    max: 1_000_000,
    default: String(DEFAULT_AGENT_RATE_LIMITS.windowsPerS),
    placeholder: "N",
    help: "Windows per second per agent stream (burst: 10 s of it). Beyond it acks are held; an agent that does not slow down gets RESOURCE_EXHAUSTED.",
  },
  {
    name: "max-connections",
    type: "number",
    min: 1,
    max: 10_000_000,
    placeholder: "N",
    help: "Connections on the gRPC port at once (default: --max-agents plus 10 % or at least 1,000, within the file descriptors the process may hold); further ones are closed at once.",
  },
  {
    name: "max-connections-per-address",
    type: "number",
    min: 1,
    max: 10_000_000,
    default: String(DEFAULT_MAX_GRPC_CONNECTIONS_PER_ADDRESS),
    placeholder: "N",
    help: "Connections on the gRPC port from one source address; raise it when many agents reach the collector through one NAT or proxy.",
  },
  {
    name: "hello-timeout",
    type: "duration",
    min: 100,
    max: 600_000,
    default: "10s",
    help: "A new gRPC connection must open a stream, and a stream say Hello, within this; a connection without a stream for this long is closed.",
  },
  {
    name: "http-max-connections",
    type: "number",
    min: 4,
    max: 100_000,
    default: String(DEFAULT_MAX_HTTP_CONNECTIONS),
    placeholder: "N",
    help: "Connections on the HTTP port at once (a quarter of it from one address).",
  },
  {
    name: "max-window-age",
    type: "duration",
    min: 60_000,
    default: "7d",
    help: "Windows that started longer ago are rejected as too_old.",
  },
  {
    name: "max-window-future",
    type: "duration",
    min: 1_000,
    max: 86_400_000,
    default: "5m",
    help: "Windows that start this far after the collector's clock (agent clock skew) are rejected as in_future.",
  },
];

export const collectorSpec: CommandSpec = {
  name: "collector",
  summary: "trueidle collector — receive GPU windows from agents over gRPC and serve Prometheus metrics.",
  usage: "trueidle collector [flags]",
  flags: [
    {
      name: "grpc-listen",
      type: "string",
      default: `0.0.0.0:${DEFAULT_GRPC_PORT}`,
      placeholder: "HOST:PORT",
      help: "Address agents stream to.",
    },
    {
      name: "http-listen",
      type: "string",
      default: `0.0.0.0:${DEFAULT_HTTP_PORT}`,
      placeholder: "HOST:PORT",
      help: "Address of /metrics and /healthz.",
    },
    {
      name: "stale-after-windows",
      type: "number",
      min: 1,
      max: 1000,
      default: "3",
      placeholder: "N",
      help: "A GPU whose windows stop for this many window lengths gets trueidle_gpu_up 0.",
    },
    {
      name: "expire-after",
      type: "duration",
      min: 1000,
      default: "15m",
      help: "A GPU silent this long has its series removed.",
    },
    ...LIMIT_FLAGS,
    {
      name: "owner-labels",
      type: "string",
      default: OWNER_LABELS.join(","),
      placeholder: "LIST",
      help: `Owner fields that label trueidle_gpu_owner_info and trueidle_owner_state_seconds_total: a comma-separated subset of ${OWNER_LABELS.join(", ")}, or none (privacy, cardinality).`,
    },
    ...THRESHOLD_FLAGS,
    {
      name: "influx-url",
      type: "string",
      placeholder: "URL",
      help: "Write every window to this InfluxDB 1.x: http(s)://HOST:PORT/DATABASE (an empty path means database trueidle). Agents are acknowledged once their windows are written.",
    },
    {
      name: "influx-credentials-file",
      type: "string",
      placeholder: "FILE",
      help: "File whose first line is username:password for InfluxDB (or set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD).",
    },
    {
      name: "influx-raw-retention",
      type: "duration",
      min: MIN_RAW_RETENTION_MS,
      default: "30d",
      help: "How long InfluxDB keeps raw windows (retention policy gpu_window).",
    },
    {
      name: "influx-hour-retention",
      type: "duration",
      min: MIN_HOUR_RETENTION_MS,
      default: "730d",
      help: "How long InfluxDB keeps the hourly roll-up (retention policy gpu_hour).",
    },
    {
      name: "influx-batch-size",
      type: "number",
      min: 1,
      max: 100_000,
      default: "5000",
      placeholder: "N",
      help: "Points per InfluxDB write request.",
    },
    {
      name: "influx-flush-interval",
      type: "duration",
      min: 10,
      max: 60_000,
      default: "1s",
      help: "A window waits at most this long for its write batch to fill.",
    },
    {
      name: "spool-dir",
      type: "string",
      placeholder: "DIR",
      help: "Disk spool (needs --influx-url): while InfluxDB is away or slow, agents are acknowledged once their windows are here; it drains to InfluxDB in order. One collector per directory. Without it acks wait for InfluxDB.",
    },
    {
      name: "spool-max-size",
      type: "size",
      min: 1024 * 1024,
      default: "1GiB",
      help: "Most the spool holds; when full, agents are pushed back (RESOURCE_EXHAUSTED with a retry delay) and keep their windows.",
    },
    {
      name: "spool-after",
      type: "duration",
      min: 10,
      max: 600_000,
      default: "5s",
      help: "A write to InfluxDB not done within this goes to the spool instead.",
    },
    ...COLLECTOR_SECURITY_FLAGS,
    ...LOG_FLAGS,
  ],
  notes:
    "Thresholds set here are sent to every agent on connect, so the whole fleet classifies one way.\n\n" +
    "InfluxDB credentials never go on the command line: set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD, " +
    "or use --influx-credentials-file. At start the collector creates the database, the retention policies gpu_window " +
    "and gpu_hour and the continuous query cq_gpu_hour when they are missing (retrying in the background while InfluxDB " +
    "cannot be reached); while InfluxDB is away, agents keep their windows until they are written — or, with " +
    "--spool-dir, the collector keeps them in its disk spool and acknowledges them at once. On SIGTERM the collector " +
    "stops taking batches, settles those in flight (into the spool, or with up to 10 s to reach InfluxDB) and exits.\n\n" +
    "gRPC runs over TLS (--tls-cert, --tls-key; mutual TLS with --tls-client-ca) or, only when asked for with --plaintext, " +
    "unencrypted; one of the two is required. Tokens and passwords come only from files or the environment and are never logged.\n\n" +
    "The HTTP side takes HTTPS and basic auth either from --http-tls-cert, --http-tls-key and --http-basic-auth-file, or from " +
    "--web.config.file, the web configuration file of Prometheus and its exporters (TLS, client certificates, bcrypt users, " +
    "headers; see deploy/web-config.example.yml), not both.",
  examples: [
    "trueidle collector --tls-cert /etc/trueidle/collector.crt --tls-key /etc/trueidle/collector.key --tls-client-ca /etc/trueidle/ca.crt",
    "trueidle collector --plaintext --grpc-listen 0.0.0.0:9746 --http-listen 127.0.0.1:9745 --util-busy-percent 10",
    "TRUEIDLE_INFLUX_USERNAME=trueidle TRUEIDLE_INFLUX_PASSWORD=… trueidle collector --plaintext --influx-url http://influxdb:8086/trueidle",
  ],
};

/** The InfluxDB settings from the flags, or undefined without --influx-url; every problem as a UsageError. */
export function influxOptionsFrom(
  v: FlagValues,
  env: NodeJS.ProcessEnv,
  logger: Logger,
): CollectorInfluxOptions | undefined {
  const url = v["influx-url"] as string | undefined;
  const file = v["influx-credentials-file"] as string | undefined;
  if (url === undefined) {
    if (file !== undefined) throw new UsageError("--influx-credentials-file needs --influx-url");
    return undefined;
  }
  let where: { baseUrl: string; database: string };
  let creds: ReturnType<typeof readInfluxCredentials>;
  try {
    where = parseInfluxUrl(url);
    creds = readInfluxCredentials({ file, env });
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
  if (creds?.warning) logger.warn(`The InfluxDB credentials file is too open: ${creds.warning}.`);
  return {
    target: { ...where, username: creds?.username, password: creds?.password },
    rawRetentionMs: v["influx-raw-retention"] as number,
    hourRetentionMs: v["influx-hour-retention"] as number,
    batchSize: Math.floor(v["influx-batch-size"] as number),
    flushIntervalMs: v["influx-flush-interval"] as number,
  };
}

/** The spool settings from the flags, or undefined without --spool-dir. */
export function spoolOptionsFrom(v: FlagValues, hasInflux: boolean): CollectorSpoolOptions | undefined {
  const dir = v["spool-dir"] as string | undefined;
  if (dir === undefined) return undefined;
  if (!hasInflux)
    throw new UsageError("--spool-dir needs --influx-url: the spool holds windows on their way to InfluxDB");
  return { dir, maxBytes: v["spool-max-size"] as number, spoolAfterMs: v["spool-after"] as number };
}

export async function collectorCommand(argv: string[]): Promise<number> {
  const v = parseFlags(collectorSpec, argv);
  const logger = loggerFrom(v, { component: "collector" });
  for (const d of deprecationsOf(v)) logger.warn(d);
  const influx = influxOptionsFrom(v, process.env, logger);
  const spool = spoolOptionsFrom(v, influx !== undefined);
  const security = collectorSecurityFrom(v, process.env);
  security.announce(logger);
  const collector = await startCollector({
    grpcListen: v["grpc-listen"] as string,
    httpListen: v["http-listen"] as string,
    thresholds: thresholdsFrom(v),
    staleAfterWindows: v["stale-after-windows"] as number,
    expireAfterMs: v["expire-after"] as number,
    maxAgents: Math.floor(v["max-agents"] as number),
    maxGpus: Math.floor(v["max-gpus"] as number),
    maxGpusPerHost: Math.floor(v["max-gpus-per-host"] as number),
    maxMessageBytes: v["max-message-size"] as number,
    maxWindowsPerBatch: Math.floor(v["max-windows-per-batch"] as number),
    agentRateLimit: v["agent-rate-limit"] as number,
    maxConnections: v["max-connections"] === undefined ? undefined : Math.floor(v["max-connections"] as number),
    maxConnectionsPerAddress: Math.floor(v["max-connections-per-address"] as number),
    helloTimeoutMs: v["hello-timeout"] as number,
    httpMaxConnections: Math.floor(v["http-max-connections"] as number),
    ownerLabels: ownerLabelsFrom(v["owner-labels"] as string),
    maxWindowAgeMs: v["max-window-age"] as number,
    maxWindowFutureMs: v["max-window-future"] as number,
    logger,
    influx,
    spool,
    ...security.value,
  });
  await waitForSignal(logger);
  await collector.stop();
  return 0;
}

export const collectorHelp = (): string => formatHelp(collectorSpec);

function ownerLabelsFrom(text: string): OwnerLabel[] {
  try {
    return parseOwnerLabels(text);
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
}
