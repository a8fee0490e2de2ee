/** `trueidle collector`: receive windows over gRPC, serve Prometheus metrics, write InfluxDB history. */
import { formatHelp, parseFlags, UsageError, type CommandSpec, type FlagValues } from "./args.js";
import { LOG_FLAGS, loggerFrom, THRESHOLD_FLAGS, thresholdsFrom } from "./common-flags.js";
import { DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT } from "../common/grpc-service.js";
import type { Logger } from "../common/log.js";
import { startCollector, type CollectorInfluxOptions } from "../collector/collector.js";
import { MIN_HOUR_RETENTION_MS, MIN_RAW_RETENTION_MS } from "../collector/influx/schema.js";
import { parseInfluxUrl, readInfluxCredentials } from "../collector/influx/target.js";
import { waitForSignal } from "./signals.js";

export const collectorSpec: CommandSpec = {
  name: "collector",
  summary: "trueidle collector — receive GPU windows from agents over gRPC and serve Prometheus metrics.",
  usage: "trueidle collector [flags]",
  flags: [
    { name: "grpc-listen", type: "string", default: `0.0.0.0:${DEFAULT_GRPC_PORT}`, placeholder: "HOST:PORT", help: "Address agents stream to." },
    { name: "http-listen", type: "string", default: `0.0.0.0:${DEFAULT_HTTP_PORT}`, placeholder: "HOST:PORT", help: "Address of /metrics and /healthz." },
    { name: "stale-after-windows", type: "number", min: 1, max: 1000, default: "3", placeholder: "N",
      help: "A GPU whose windows stop for this many window lengths gets trueidle_gpu_up 0." },
    { name: "expire-after", type: "duration", min: 1000, default: "15m", help: "A GPU silent this long has its series removed." },
    ...THRESHOLD_FLAGS,
    { name: "influx-url", type: "string", placeholder: "URL",
      help: "Write every window to this InfluxDB 1.x: http(s)://HOST:PORT/DATABASE (an empty path means database trueidle). Agents are acknowledged once their windows are written." },
    { name: "influx-credentials-file", type: "string", placeholder: "FILE",
      help: "File whose first line is username:password for InfluxDB (or set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD)." },
    { name: "influx-raw-retention", type: "duration", min: MIN_RAW_RETENTION_MS, default: "30d",
      help: "How long InfluxDB keeps raw windows (retention policy gpu_window)." },
    { name: "influx-hour-retention", type: "duration", min: MIN_HOUR_RETENTION_MS, default: "730d",
      help: "How long InfluxDB keeps the hourly roll-up (retention policy gpu_hour)." },
    { name: "influx-batch-size", type: "number", min: 1, max: 100_000, default: "5000", placeholder: "N",
      help: "Points per InfluxDB write request." },
    { name: "influx-flush-interval", type: "duration", min: 10, max: 60_000, default: "1s",
      help: "A window waits at most this long for its write batch to fill." },
    ...LOG_FLAGS,
  ],
  notes:
    "Thresholds set here are sent to every agent on connect, so the whole fleet classifies one way.\n\n" +
    "InfluxDB credentials never go on the command line: set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD, " +
    "or use --influx-credentials-file. At start the collector creates the database, the retention policies gpu_window " +
    "and gpu_hour and the continuous query cq_gpu_hour when they are missing (retrying in the background while InfluxDB " +
    "cannot be reached); while InfluxDB is away, agents keep their windows until they are written.",
  examples: [
    "trueidle collector",
    "trueidle collector --grpc-listen 0.0.0.0:9746 --http-listen 127.0.0.1:9745 --util-busy-percent 10",
    "TRUEIDLE_INFLUX_USERNAME=trueidle TRUEIDLE_INFLUX_PASSWORD=… trueidle collector --influx-url http://influxdb:8086/trueidle",
  ],
};

/** The InfluxDB settings from the flags, or undefined without --influx-url; every problem as a UsageError. */
export function influxOptionsFrom(v: FlagValues, env: NodeJS.ProcessEnv, logger: Logger): CollectorInfluxOptions | undefined {
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
    throw new UsageError(err instanceof Error ? err.message : String(err));
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

export async function collectorCommand(argv: string[]): Promise<number> {
  const v = parseFlags(collectorSpec, argv);
  const logger = loggerFrom(v, { component: "collector" });
  const influx = influxOptionsFrom(v, process.env, logger);
  const collector = await startCollector({
    grpcListen: v["grpc-listen"] as string,
    httpListen: v["http-listen"] as string,
    thresholds: thresholdsFrom(v),
    staleAfterWindows: v["stale-after-windows"] as number,
    expireAfterMs: v["expire-after"] as number,
    logger,
    influx,
  });
  await waitForSignal(logger);
  await collector.stop();
  return 0;
}

export const collectorHelp = (): string => formatHelp(collectorSpec);
