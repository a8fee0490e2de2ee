/** `trueidle collector`: receive windows over gRPC, serve Prometheus metrics. */
import { formatHelp, parseFlags, type CommandSpec } from "./args.js";
import { LOG_FLAGS, loggerFrom, THRESHOLD_FLAGS, thresholdsFrom } from "./common-flags.js";
import { DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT } from "../common/grpc-service.js";
import { startCollector } from "../collector/collector.js";
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
    ...LOG_FLAGS,
  ],
  notes: "Thresholds set here are sent to every agent on connect, so the whole fleet classifies one way.",
  examples: [
    "trueidle collector",
    "trueidle collector --grpc-listen 0.0.0.0:9746 --http-listen 127.0.0.1:9745 --util-busy-percent 10",
  ],
};

export async function collectorCommand(argv: string[]): Promise<number> {
  const v = parseFlags(collectorSpec, argv);
  const logger = loggerFrom(v, { component: "collector" });
  const collector = await startCollector({
    grpcListen: v["grpc-listen"] as string,
    httpListen: v["http-listen"] as string,
    thresholds: thresholdsFrom(v),
    staleAfterWindows: v["stale-after-windows"] as number,
    expireAfterMs: v["expire-after"] as number,
    logger,
  });
  await waitForSignal(logger);
  await collector.stop();
  return 0;
}

export const collectorHelp = (): string => formatHelp(collectorSpec);
