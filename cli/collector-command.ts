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
import type { Logger } from "../common/log.js";
import { startCollector, type CollectorInfluxOptions, type CollectorSpoolOptions } from "../collector/collector.js";
import { OWNER_LABELS, parseOwnerLabels, type OwnerLabel } from "../collector/owner-ledger.js";
import {
  COLLECTOR_INFLUX_SETTINGS as INFLUX,
  COLLECTOR_SETTINGS as S,
  type GpuSeriesMode,
  COLLECTOR_SPOOL_SETTINGS as SPOOL,
} from "../collector/settings.js";
import { readInfluxCredentials } from "../common/influx/credentials.js";
import { influxTarget } from "../common/influx/target.js";
import { parseInfluxUrl, type InfluxUrl } from "../common/influx/url.js";
import { waitForSignal } from "./signals.js";
import { COLLECTOR_SECURITY_FLAGS, collectorSecurityFrom } from "./security-flags.js";
import { errorMessage } from "../common/errors.js";
import { settingFlag } from "./setting-flags.js";

/** Limits on what agents may send (README "Limits"); each is enforced in the collector, see collector.ts. */
const LIMIT_FLAGS: FlagSpec[] = [
  settingFlag(S.maxAgents, {
    name: "max-agents",
    placeholder: "N",
    help: "Agent streams served at once (one per host); further agents get RESOURCE_EXHAUSTED and come back later.",
  }),
  settingFlag(S.maxGpus, {
    name: "max-gpus",
    placeholder: "N",
    help: "GPUs across all hosts (caps Prometheus series); windows of further GPUs are rejected as series_limit.",
  }),
  settingFlag(S.maxGpusPerHost, {
    name: "max-gpus-per-host",
    placeholder: "N",
    help: "GPUs one host may report; windows of further GPUs are rejected as too_many_gpus.",
  }),
  settingFlag(S.maxMessageBytes, {
    name: "max-message-size",
    help: "Largest message from an agent; a larger one ends its stream with RESOURCE_EXHAUSTED. An agent batch of 2,000 windows is about 1MB.",
  }),
  settingFlag(S.maxWindowsPerBatch, {
    name: "max-windows-per-batch",
    placeholder: "N",
    help: "Windows in one batch; a larger batch ends the stream with INVALID_ARGUMENT.",
  }),
  settingFlag(S.agentRateLimit, {
    name: "agent-rate-limit",
    placeholder: "N",
    help: "Windows per second per agent stream (burst: 10 s of it). Beyond it acks are held; an agent that does not slow down gets RESOURCE_EXHAUSTED.",
  }),
  settingFlag(S.maxConnections, {
    name: "max-connections",
    placeholder: "N",
    help: "Connections on the gRPC port at once (default: --max-agents plus 10 % or at least 1,000, within the file descriptors the process may hold); further ones are closed at once.",
  }),
  settingFlag(S.maxConnectionsPerAddress, {
    name: "max-connections-per-address",
    placeholder: "N",
    help: "Connections on the gRPC port from one source address; raise it when many agents reach the collector through one NAT or proxy.",
  }),
  settingFlag(S.helloTimeoutMs, {
    name: "hello-timeout",
    help: "A new gRPC connection must open a stream, and a stream say Hello, within this; a connection without a stream for this long is closed.",
  }),
  settingFlag(S.httpMaxConnections, {
    name: "http-max-connections",
    placeholder: "N",
    help: "Connections on the HTTP port at once (a quarter of it from one address).",
  }),
  settingFlag(S.maxWindowAgeMs, {
    name: "max-window-age",
    help: "Windows that started longer ago are rejected as too_old.",
  }),
  settingFlag(S.maxWindowFutureMs, {
    name: "max-window-future",
    help: "Windows that start this far after the collector's clock (agent clock skew) are rejected as in_future.",
  }),
];

export const collectorSpec: CommandSpec = {
  name: "collector",
  summary: "trueidle collector — receive GPU windows from agents over gRPC and serve Prometheus metrics.",
  usage: "trueidle collector [flags]",
  flags: [
    settingFlag(S.grpcListen, { name: "grpc-listen", placeholder: "HOST:PORT", help: "Address agents stream to." }),
    settingFlag(S.httpListen, {
      name: "http-listen",
      placeholder: "HOST:PORT",
      help: "Address of /metrics and /healthz.",
    }),
    settingFlag(S.staleAfterWindows, {
      name: "stale-after-windows",
      placeholder: "N",
      help: "A GPU whose windows stop for this many window lengths gets trueidle_gpu_up 0.",
    }),
    settingFlag(S.expireAfterMs, { name: "expire-after", help: "A GPU silent this long has its series removed." }),
    ...LIMIT_FLAGS,
    settingFlag(S.ownerLabels, {
      name: "owner-labels",
      placeholder: "LIST",
      help: `Owner fields that label trueidle_gpu_owner_info and trueidle_owner_state_seconds_total: a comma-separated subset of ${OWNER_LABELS.join(", ")}, or none (privacy, cardinality).`,
    }),
    settingFlag(S.gpuSeries, {
      name: "gpu-series",
      placeholder: "MODE",
      help: "Per-GPU series on /metrics: full (every family), states (info, up, state, idle streak and the seconds counters) or off (fleet roll-ups only; the recording rules work in every mode).",
    }),
    settingFlag(S.metricsCacheMaxAgeMs, {
      name: "metrics-cache-max-age",
      help: "Scrapes within this of a render get that render again (two Prometheus replicas, a re-scrape cost one); a render under 100 ms only while nothing changed; 0 renders every scrape.",
    }),
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
    settingFlag(INFLUX.rawRetentionMs, {
      name: "influx-raw-retention",
      help: "How long InfluxDB keeps raw windows (retention policy gpu_window).",
    }),
    settingFlag(INFLUX.hourRetentionMs, {
      name: "influx-hour-retention",
      help: "How long InfluxDB keeps the hourly roll-up (retention policy gpu_hour).",
    }),
    settingFlag(INFLUX.batchSize, {
      name: "influx-batch-size",
      placeholder: "N",
      help: "Points per InfluxDB write request.",
    }),
    settingFlag(INFLUX.flushIntervalMs, {
      name: "influx-flush-interval",
      help: "A window waits at most this long for its write batch to fill.",
    }),
    {
      name: "spool-dir",
      type: "string",
      placeholder: "DIR",
      help: "Disk spool (needs --influx-url): while InfluxDB is away or slow, agents are acknowledged once their windows are here; it drains to InfluxDB in order. One collector per directory. Without it acks wait for InfluxDB.",
    },
    settingFlag(SPOOL.maxBytes, {
      name: "spool-max-size",
      help: "Most the spool holds; when full, agents are pushed back (RESOURCE_EXHAUSTED with a retry delay) and keep their windows.",
    }),
    settingFlag(SPOOL.spoolAfterMs, {
      name: "spool-after",
      help: "A write to InfluxDB not done within this goes to the spool instead.",
    }),
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
  let where: InfluxUrl;
  let creds: ReturnType<typeof readInfluxCredentials>;
  try {
    where = parseInfluxUrl(url);
    creds = readInfluxCredentials({ file, env });
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
  if (creds?.warning) logger.warn(`The InfluxDB credentials file is too open: ${creds.warning}.`);
  return {
    target: influxTarget(where, creds),
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
    gpuSeries: v["gpu-series"] as GpuSeriesMode,
    metricsCacheMaxAgeMs: v["metrics-cache-max-age"] as number,
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
