/** `trueidle agent`: sample this host's GPUs and stream windows to a collector. */
import { formatHelp, parseFlags, type CommandSpec } from "./args.js";
import { checkWindow, LOG_FLAGS, loggerFrom, THRESHOLD_FLAGS, thresholdsFrom } from "./common-flags.js";
import { routeGrpcLogs } from "../common/grpc-log.js";
import type { Logger } from "../common/log.js";
import { Allocations, type AllocationSource } from "../agent/owners/allocations.js";
import { JobMappingSource } from "../agent/owners/job-mapping.js";
import { OwnerAnnotator } from "../agent/owners/owner-annotator.js";
import { DEFAULT_POD_RESOURCES_SOCKET, PodResourcesSource } from "../agent/owners/pod-resources.js";
import { ProcessOwners } from "../agent/owners/process-owners.js";
import { parseLabels } from "../common/labels.js";
import { UsageError } from "./args.js";
import { createSource, SOURCE_NAMES, type SourceName } from "../agent/sources/registry.js";
import { hostIdentity } from "../agent/host-identity.js";
import { quoteText, unsafeTextProblem } from "../common/text-safety.js";
import { Agent } from "../agent/agent.js";
import { SamplePipeline } from "../agent/pipeline.js";
import { renderOnceTable } from "./once-table.js";
import { DEFAULT_GRPC_PORT } from "../common/grpc-service.js";
import { endIfDriverHung, waitForSignal } from "./signals.js";
import { parseListenAddress } from "../common/listen-address.js";
import { AgentHttpServer } from "../agent/http-server.js";
import { FailureThrottle } from "../collector/auth/failure-throttle.js";
import {
  AGENT_HTTP_FLAGS,
  AGENT_TRANSPORT_FLAGS,
  agentHttpSecurityFrom,
  agentTransportFrom,
} from "./security-flags.js";
import { runWatch } from "./agent-watch.js";
import { AGENT_SETTINGS } from "../agent/settings.js";
import { settingFlag } from "./setting-flags.js";

export const agentSpec: CommandSpec = {
  name: "agent",
  summary: "trueidle agent — sample this host's NVIDIA GPUs, classify every second, and stream windows to a collector.",
  usage: "trueidle agent [flags]",
  flags: [
    {
      name: "collector",
      type: "list",
      default: `localhost:${DEFAULT_GRPC_PORT}`,
      placeholder: "HOST:PORT",
      help: "Collector gRPC address. A name with several addresses (a headless Service) spreads agents over them by host name and fails over within them; give several entries (or a comma list) to fail over to the next in turn. dns://SERVER/NAME:PORT asks that DNS server.",
    },
    {
      name: "source",
      type: "string",
      choices: SOURCE_NAMES,
      default: "auto",
      help: "Where readings come from: auto (NVML when libnvidia-ml.so.1 loads, else nvidia-smi), nvml, nvidia-smi, or sim.",
    },
    {
      name: "nvml-lib",
      type: "string",
      placeholder: "PATH",
      help: "NVML library to load instead of libnvidia-ml.so.1 from the loader's path (a driver in a non-standard place).",
    },
    settingFlag(AGENT_SETTINGS.nvidiaSmiPath, {
      name: "nvidia-smi",
      placeholder: "PATH",
      help: "nvidia-smi executable (any program that answers like nvidia-smi will do).",
    }),
    { name: "scenario", type: "string", placeholder: "FILE", help: "Scenario file for --source sim." },
    settingFlag(AGENT_SETTINGS.intervalMs, { name: "interval", help: "Sampling interval." }),
    settingFlag(AGENT_SETTINGS.windowMs, {
      name: "window",
      help: "Window length; windows align to wall-clock multiples.",
    }),
    settingFlag(AGENT_SETTINGS.processIntervalMs, {
      name: "process-interval",
      help: "How often compute processes are listed (NVML and nvidia-smi sources).",
    }),
    settingFlag(AGENT_SETTINGS.migIntervalMs, {
      name: "mig-interval",
      help: "How often the nvidia-smi source reads MIG instances (nvidia-smi -L and -q -x; costly on a big host), while a board may be in MIG mode. The NVML source needs no such setting.",
    }),
    settingFlag(AGENT_SETTINGS.podResourcesSocket, {
      name: "pod-resources-socket",
      placeholder: "PATH",
      help: "The kubelet's pod-resources socket: which pod each GPU is allocated to (used when it exists; needs no RBAC and no hostPID). A GPU allocated to a pod is held, idle while nothing runs on it.",
    }),
    {
      name: "job-mapping-dir",
      type: "string",
      placeholder: "DIR",
      help: "One file per GPU, named by its index or uuid, each line a job id and optionally a uid (what a Slurm prolog/epilog writes; the form of dcgm-exporter's HPC job mapping). A GPU with a job is held.",
    },
    settingFlag(AGENT_SETTINGS.hostRoot, {
      name: "host-root",
      placeholder: "DIR",
      help: "The host's root, to read /proc and /etc/passwd for who runs each GPU process (a DaemonSet mounts the host at /host and runs with hostPID: true).",
    }),
    {
      name: "label",
      type: "list",
      placeholder: "KEY=VALUE",
      help: "Host label such as site=eu-west or pool=training (at most 8).",
      check: (values) => void parseLabels(values),
    },
    {
      name: "hostname",
      type: "string",
      placeholder: "NAME",
      help: "Host name to report instead of this machine's.",
      check: (values) => hostnameCheck(values[values.length - 1] ?? ""),
    },
    {
      name: "once",
      type: "boolean",
      help: "Print a table of this host's GPUs as trueidle sees them and who holds each (waiting up to 2 s for the owner sources' first answers), then exit.",
    },
    {
      name: "watch",
      type: "boolean",
      help: "Print one JSON line per GPU per sample on stdout (state, real utilization and the readings behind them) until SIGINT or SIGTERM; no collector.",
    },
    settingFlag(AGENT_SETTINGS.maxBufferedWindows, {
      name: "max-buffered-windows",
      placeholder: "N",
      help: "Unacknowledged windows kept at most; the oldest beyond it are dropped and counted.",
    }),
    settingFlag(AGENT_SETTINGS.maxBufferBytes, {
      name: "max-buffer-size",
      placeholder: "SIZE",
      help:
        "Encoded size of unacknowledged windows kept at most; the oldest beyond it are dropped and counted. " +
        "With --state-dir each window counts 8 bytes more (its record header), and the files in DIR/buffer stay within " +
        "this size plus one segment file (a sixteenth of it, 64 KiB to 8 MiB).",
    }),
    {
      name: "state-dir",
      type: "string",
      placeholder: "DIR",
      help: "Keep unacknowledged windows on disk in DIR/buffer (fsynced in batches) so that they survive a restart; one agent per DIR.",
    },
    {
      name: "http-listen",
      type: "string",
      placeholder: "HOST:PORT",
      help: "Serve the agent's own /metrics and /healthz here: plain HTTP (bind to loopback or a management network), or HTTPS and basic auth with --web.config.file.",
      check: (values) => void parseListenAddress(values[values.length - 1] ?? "", "--http-listen"),
    },
    ...AGENT_HTTP_FLAGS,
    ...AGENT_TRANSPORT_FLAGS,
    ...THRESHOLD_FLAGS,
    ...LOG_FLAGS,
  ],
  notes:
    "Thresholds given here apply until the collector sends the fleet's own on connect.\n\n" +
    "gRPC runs over TLS (--tls, or --tls-ca FILE; mutual TLS with --tls-cert and --tls-key) or, only when asked for with " +
    "--plaintext, unencrypted; one of the two is required (not with --once or --watch). The token comes only from --token-file or " +
    "TRUEIDLE_TOKEN and is never logged.",
  examples: [
    "trueidle agent --once                                   # what does trueidle see on this node?",
    "trueidle agent --watch | jq -c '{gpu, state, real, real_source, util}'   # and why, every second",
    "trueidle agent --collector collector.example:9746 --tls-ca /etc/trueidle/ca.crt --token-file /etc/trueidle/agent.token --label site=eu-west",
    "trueidle agent --collector collector.example:9746 --tls-ca /etc/trueidle/ca.crt --tls-cert /etc/trueidle/agent.crt --tls-key /etc/trueidle/agent.key",
    "trueidle agent --plaintext --source sim --scenario demo/scenarios/gpu-a01.json --collector localhost:9746",
  ],
};

/** `--hostname`: refused here with the collector's rule for names rather than by the collector on every connect. */
function hostnameCheck(name: string): void {
  const problem = unsafeTextProblem(name);
  if (problem !== undefined) throw new Error(`${quoteText(name)} ${problem}`);
}

export async function agentCommand(argv: string[]): Promise<number> {
  const v = parseFlags(agentSpec, argv);
  const intervalMs = v["interval"] as number;
  const windowMs = v["window"] as number;
  checkWindow(intervalMs, windowMs);
  const source = v["source"] as SourceName;
  if (source === "sim" && !v["scenario"]) throw new UsageError("--source sim needs --scenario FILE");
  if (v["nvml-lib"] !== undefined && source !== "nvml" && source !== "auto") {
    throw new UsageError(`--nvml-lib applies to --source nvml or auto, not --source ${source}`);
  }
  const labels = parseLabels(v["label"] as string[]);
  const collectors = (v["collector"] as string[])
    .flatMap((c) => c.split(","))
    .map((c) => c.trim())
    .filter(Boolean);
  if (collectors.length === 0) throw new UsageError("--collector needs at least one HOST:PORT");
  if (v["once"] && v["watch"]) throw new UsageError("--once and --watch cannot be given together");
  const logger = loggerFrom(v, { component: "agent" });
  routeGrpcLogs(logger);
  const thresholds = thresholdsFrom(v);
  // --once and --watch talk to no collector, so they need no transport choice.
  const transport = v["once"] || v["watch"] ? undefined : agentTransportFrom(v, process.env);
  const httpSecurity = v["once"] || v["watch"] ? undefined : agentHttpSecurityFrom(v);
  const src = createSource({
    source,
    intervalMs,
    processIntervalMs: v["process-interval"] as number,
    migIntervalMs: v["mig-interval"] as number,
    nvidiaSmiPath: v["nvidia-smi"] as string,
    nvmlLibPath: v["nvml-lib"] as string | undefined,
    scenarioPath: v["scenario"] as string | undefined,
    logger,
  });

  if (v["once"]) {
    const owners = ownerAnnotatorFrom(v, logger, source !== "sim");
    try {
      await src.start();
      const now = Date.now();
      const readings = src.sample(now);
      // The owner sources read in the background and start once the GPUs are known (this
      // first annotate); the same readings are annotated again once they answered, or not.
      owners.start();
      owners.annotate(readings);
      await owners.firstAnswers(ONCE_OWNER_WAIT_MS);
      const pipeline = new SamplePipeline({ windowMs, intervalMs, thresholds });
      pipeline.ingest(now, owners.annotate(readings));
      process.stdout.write(
        renderOnceTable(pipeline.latest(), thresholds, src.describe?.() ?? src.name, {
          stats: owners.stats(),
          waitedMs: ONCE_OWNER_WAIT_MS,
        }),
      );
      return 0;
    } finally {
      await owners.stop();
      await src.stop();
    }
  }

  if (v["watch"]) {
    await runWatch({ source: src, intervalMs, windowMs, thresholds, logger, stop: waitForSignal(logger) });
    return 0;
  }

  const tx = transport!; // set whenever --once and --watch are not
  tx.announce(logger);
  httpSecurity?.announce(logger);
  const host = await hostIdentity(labels, v["hostname"] as string | undefined);
  const owners = ownerAnnotatorFrom(v, logger, source !== "sim");
  const agent = new Agent({
    source: src,
    host,
    collectors,
    intervalMs,
    windowMs,
    thresholds,
    logger,
    owners,
    maxBufferedWindows: v["max-buffered-windows"] as number,
    maxBufferBytes: v["max-buffer-size"] as number,
    stateDir: v["state-dir"] as string | undefined,
    credentials: tx.value.credentials,
    callMetadata: tx.value.callMetadata,
    channelOptions: tx.value.channelOptions,
  });
  if (v["state-dir"] === undefined) {
    logger.warn(
      "Windows not yet acknowledged are kept in memory only and are lost when the agent stops or restarts; set --state-dir DIR to keep them on disk.",
    );
  }
  const httpListen = v["http-listen"] as string | undefined;
  const http =
    httpListen === undefined
      ? undefined
      : new AgentHttpServer({
          agent,
          logger: logger.child({ component: "http" }),
          security: httpSecurity?.value,
          authThrottle: httpSecurity?.value.users ? new FailureThrottle() : undefined,
        });
  if (http && httpListen !== undefined) {
    const addr = parseListenAddress(httpListen, "--http-listen");
    const port = await http.listen(addr);
    logger.info(`Serving the agent's metrics over ${httpSecurity?.value.tls ? "HTTPS" : "HTTP"}.`, {
      listen: `${addr.host}:${port}`,
      paths: ["/metrics", "/healthz"],
    });
  }
  const ac = new AbortController();
  const stopSignal = waitForSignal(logger);
  try {
    await Promise.race([agent.start(ac.signal), stopSignal.then(() => ac.abort())]);
    await stopSignal;
    await agent.stop();
  } finally {
    await http?.stop();
  }
  endIfDriverHung(src, logger);
  return 0;
}

export const agentHelp = (): string => formatHelp(agentSpec);

/**
 * How long `--once` waits at most for the owner sources' first answers (the kubelet's List
 * call, a scan of the mapping directory, the owners of the GPU processes); a kubelet that
 * has not answered by then is reported as such.
 */
const ONCE_OWNER_WAIT_MS = 2_000;

/**
 * Owners from the flags: the kubelet's pod-resources socket (its default path is used when
 * it exists, quietly skipped when not), a job mapping directory when given, and the
 * owners of processes from the host's /proc (not for the simulator, whose pids are made up).
 */
function ownerAnnotatorFrom(v: Record<string, unknown>, logger: Logger, realProcesses: boolean): OwnerAnnotator {
  const log = logger.child({ component: "owners" });
  const processOwners = new ProcessOwners({ hostRoot: v["host-root"] as string, logger: log });
  const sources: AllocationSource[] = [];
  let annotator: OwnerAnnotator | undefined;
  const gpuByIndex = (): ReadonlyMap<number, string> => annotator?.gpuByIndex() ?? new Map();
  const socketPath = v["pod-resources-socket"] as string;
  sources.push(
    new PodResourcesSource({
      socketPath,
      configured: socketPath !== DEFAULT_POD_RESOURCES_SOCKET,
      gpuByIndex,
      logger: log,
    }),
  );
  const mappingDir = v["job-mapping-dir"] as string | undefined;
  if (mappingDir !== undefined) {
    sources.push(
      new JobMappingSource({
        dir: mappingDir,
        gpuByIndex,
        logger: log,
        userName: (uid: number) => processOwners.userNameOf(uid),
      }),
    );
  }
  // The simulator's pids are made up: looking them up would name whatever host process has the number.
  annotator = new OwnerAnnotator({
    allocations: new Allocations(sources),
    processOwners: realProcesses ? processOwners : undefined,
    logger: log,
  });
  return annotator;
}
