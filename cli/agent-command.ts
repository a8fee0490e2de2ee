/** `trueidle agent`: sample this host's GPUs and stream windows to a collector. */
import { formatHelp, parseFlags, type CommandSpec } from "./args.js";
import { checkWindow, LOG_FLAGS, loggerFrom, THRESHOLD_FLAGS, thresholdsFrom } from "./common-flags.js";
import { parseLabels } from "../common/labels.js";
import { UsageError } from "./args.js";
import { createSource, SOURCE_NAMES, type SourceName } from "../agent/sources/registry.js";
import { hostIdentity } from "../agent/host-identity.js";
import { Agent } from "../agent/agent.js";
import { SamplePipeline } from "../agent/pipeline.js";
import { renderOnceTable } from "./once-table.js";
import { DEFAULT_GRPC_PORT } from "../common/grpc-service.js";
import { waitForSignal } from "./signals.js";

export const agentSpec: CommandSpec = {
  name: "agent",
  summary: "trueidle agent — sample this host's NVIDIA GPUs, classify every second, and stream windows to a collector.",
  usage: "trueidle agent [flags]",
  flags: [
    { name: "collector", type: "list", default: `localhost:${DEFAULT_GRPC_PORT}`, placeholder: "HOST:PORT",
      help: "Collector gRPC address; give several (or a comma list) to fail over in turn." },
    { name: "source", type: "string", choices: SOURCE_NAMES, default: "nvidia-smi", help: "Where readings come from." },
    { name: "nvidia-smi", type: "string", default: "nvidia-smi", placeholder: "PATH",
      help: "nvidia-smi executable (any program that answers like nvidia-smi will do)." },
    { name: "scenario", type: "string", placeholder: "FILE", help: "Scenario file for --source sim." },
    { name: "interval", type: "duration", default: "1s", min: 100, max: 60_000, help: "Sampling interval." },
    { name: "window", type: "duration", default: "10s", min: 1000, max: 3_600_000, help: "Window length; windows align to wall-clock multiples." },
    { name: "process-interval", type: "duration", default: "5s", min: 500, max: 300_000, help: "How often compute processes are listed (nvidia-smi source)." },
    { name: "label", type: "list", placeholder: "KEY=VALUE", help: "Host label such as site=eu-west or pool=training (at most 8).",
      check: (values) => void parseLabels(values) },
    { name: "hostname", type: "string", placeholder: "NAME", help: "Host name to report instead of this machine's." },
    { name: "once", type: "boolean", help: "Print a table of this host's GPUs as trueidle sees them, then exit." },
    { name: "max-buffered-windows", type: "number", min: 100, max: 10_000_000, default: "200000", placeholder: "N",
      help: "Unacknowledged windows kept at most; the oldest beyond it are dropped and counted." },
    ...THRESHOLD_FLAGS,
    ...LOG_FLAGS,
  ],
  notes: "Thresholds given here apply until the collector sends the fleet's own on connect.",
  examples: [
    "trueidle agent --once                                   # what does trueidle see on this node?",
    "trueidle agent --collector collector.example:9746 --label site=eu-west --label pool=training",
    "trueidle agent --source sim --scenario demo/scenarios/gpu-a01.json --collector localhost:9746",
  ],
};

export async function agentCommand(argv: string[]): Promise<number> {
  const v = parseFlags(agentSpec, argv);
  const intervalMs = v["interval"] as number;
  const windowMs = v["window"] as number;
  checkWindow(intervalMs, windowMs);
  const source = v["source"] as SourceName;
  if (source === "sim" && !v["scenario"]) throw new UsageError("--source sim needs --scenario FILE");
  const labels = parseLabels(v["label"] as string[]);
  const collectors = (v["collector"] as string[]).flatMap((c) => c.split(",")).map((c) => c.trim()).filter(Boolean);
  if (collectors.length === 0) throw new UsageError("--collector needs at least one HOST:PORT");
  const logger = loggerFrom(v, { component: "agent" });
  const thresholds = thresholdsFrom(v);
  const src = createSource({
    source,
    intervalMs,
    processIntervalMs: v["process-interval"] as number,
    nvidiaSmiPath: v["nvidia-smi"] as string,
    scenarioPath: v["scenario"] as string | undefined,
    logger,
  });

  if (v["once"]) {
    try {
      await src.start();
      const pipeline = new SamplePipeline({ windowMs, intervalMs, thresholds });
      pipeline.ingest(Date.now(), src.sample(Date.now()));
      process.stdout.write(renderOnceTable(pipeline.latest(), thresholds));
      return 0;
    } finally {
      await src.stop();
    }
  }

  const host = await hostIdentity(labels, v["hostname"] as string | undefined);
  const agent = new Agent({
    source: src, host, collectors, intervalMs, windowMs, thresholds, logger,
    maxBufferedWindows: v["max-buffered-windows"] as number,
  });
  const ac = new AbortController();
  const stopSignal = waitForSignal(logger);
  await Promise.race([agent.start(ac.signal), stopSignal.then(() => ac.abort())]);
  await stopSignal;
  await agent.stop();
  return 0;
}

export const agentHelp = (): string => formatHelp(agentSpec);
