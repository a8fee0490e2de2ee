#!/usr/bin/env node
/**
 * Many agents in one process, for load tests: N in-process Agent instances with the sim
 * source, each with its own host name, its own GPUs and its own gRPC connection and
 * stream to the collector.
 *
 *   agent-swarm.mjs --collector HOST:PORT [--agents 100] [--prefix swarm] [--gpus 2]
 *                   [--interval 500ms] [--window 5s] [--stats-every 2s] [--token-file FILE]
 *                   [--log-level error]
 *
 * Prints one JSON line of totals on stdout every --stats-every:
 *   {"t":…,"agents":100,"started":100,"connected":100,"acking":100,"windows":…,"acked":…,
 *    "buffered":…,"dropped":…,"rejected":…,"reconnects":…,"rss_bytes":…}
 * `acking` counts the agents that had an ack within the last two window lengths.
 * On SIGTERM or SIGINT every agent stops — ships its partial windows and waits for their
 * acks — and a last line with "final":true and the same totals is printed; exit 0.
 * `windows` counts what the agents measured, `acked` what the collector acknowledged.
 *
 * Plain JavaScript on the compiled code in dist/ (`npm run build`), like the fake nvidia-smi.
 */
import { readFileSync } from "node:fs";
import { Metadata } from "@grpc/grpc-js";
import { Agent } from "../../dist/agent/agent.js";
import { SimSource } from "../../dist/agent/sources/sim/sim-source.js";
import { parseScenario } from "../../dist/agent/sim/scenario.js";
import { parseDuration } from "../../dist/common/duration.js";
import { createLogger } from "../../dist/common/log.js";
import { DEFAULT_THRESHOLDS } from "../../dist/common/types.js";

const USAGE =
  "usage: agent-swarm.mjs --collector HOST:PORT [--agents N] [--prefix NAME] [--gpus N] [--interval D] [--window D] [--stats-every D] [--token-file FILE] [--log-level L]";

function parseArgs(argv) {
  const opts = {
    collector: undefined,
    agents: 100,
    prefix: "swarm",
    gpus: 2,
    interval: "500ms",
    window: "5s",
    statsEvery: "2s",
    tokenFile: undefined,
    logLevel: "error",
  };
  const names = {
    "--collector": "collector",
    "--agents": "agents",
    "--prefix": "prefix",
    "--gpus": "gpus",
    "--interval": "interval",
    "--window": "window",
    "--stats-every": "statsEvery",
    "--token-file": "tokenFile",
    "--log-level": "logLevel",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || argv[i + 1] === undefined) fail(`${USAGE}\nunknown or incomplete flag: ${argv[i]}`);
    opts[key] = argv[i + 1];
  }
  if (!opts.collector) fail(USAGE);
  opts.agents = Number(opts.agents);
  opts.gpus = Number(opts.gpus);
  if (!(Number.isInteger(opts.agents) && opts.agents > 0) || !(Number.isInteger(opts.gpus) && opts.gpus > 0))
    fail(`${USAGE}\n--agents and --gpus must be positive integers`);
  return opts;
}

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const intervalMs = parseDuration(opts.interval);
const windowMs = parseDuration(opts.window);
const statsEveryMs = parseDuration(opts.statsEvery);
const logger = createLogger({ level: opts.logLevel });

let callMetadata;
if (opts.tokenFile) {
  callMetadata = new Metadata();
  callMetadata.set("authorization", `Bearer ${readFileSync(opts.tokenFile, "utf8").trim()}`);
}

const agents = [];
for (let i = 0; i < opts.agents; i++) {
  const host = `${opts.prefix}-${String(i).padStart(3, "0")}`;
  // Phases differ by agent, so the swarm's GPUs are not all in one state at once.
  const scenario = parseScenario(
    {
      host,
      gpus: [
        {
          model: "NVIDIA H100 80GB HBM3",
          count: opts.gpus,
          phases: [
            { for: `${20 + (i % 7) * 5}s`, state: "active", noise: 0.05 },
            { for: `${10 + (i % 5) * 5}s`, state: i % 2 === 0 ? "held_idle" : "busy_phantom" },
            { for: "15s", state: "free_idle" },
          ],
        },
      ],
    },
    host,
  );
  agents.push(
    new Agent({
      source: new SimSource(scenario),
      host: { hostname: host, machineId: host, labels: { swarm: opts.prefix } },
      collectors: [opts.collector],
      intervalMs,
      windowMs,
      thresholds: DEFAULT_THRESHOLDS,
      logger: logger.child({ host }),
      callMetadata,
      // A pool per agent: each agent gets its own TCP connection, as on separate hosts,
      // instead of grpc-js sharing one connection among all channels to one address.
      channelOptions: { "grpc.use_local_subchannel_pool": 1 },
    }),
  );
}

let started = 0;
function totals() {
  const now = Date.now();
  const t = {
    t: new Date(now).toISOString(),
    agents: agents.length,
    started,
    connected: 0,
    acking: 0,
    windows: 0,
    acked: 0,
    buffered: 0,
    dropped: 0,
    rejected: 0,
    reconnects: 0,
  };
  for (const a of agents) {
    const s = a.stats();
    t.windows += s.windows;
    t.acked += s.shipper.acked;
    t.buffered += s.shipper.buffered;
    t.dropped += s.shipper.dropped;
    t.rejected += s.shipper.rejected;
    t.reconnects += s.shipper.reconnects;
    if (s.shipper.connected) t.connected++;
    if (s.shipper.lastAckMs !== undefined && now - s.shipper.lastAckMs <= 2 * windowMs) t.acking++;
  }
  t.rss_bytes = process.memoryUsage.rss();
  return t;
}

const print = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const statsTimer = setInterval(() => print(totals()), statsEveryMs);

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  logger.info("The swarm is stopping.", { signal });
  // The stats timer keeps running (and the process alive) while the agents drain.
  await Promise.all(agents.map((a) => a.stop(30_000)));
  clearInterval(statsTimer);
  print({ ...totals(), final: true });
  process.exit(0);
}
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));

// Started a few milliseconds apart, as a fleet coming up is never perfectly simultaneous.
for (const a of agents) {
  if (stopping) break;
  await a.start();
  started++;
  await new Promise((r) => setTimeout(r, 5));
}
print(totals());
