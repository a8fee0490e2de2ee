/**
 * `npm run soak`: many agents on one collector for minutes, with real processes — a
 * private InfluxDB, a collector subprocess with a disk spool, and agent swarms
 * (test/swarm/agent-swarm.mjs: in-process agents, each with its own connection).
 *
 *   npm run soak -- [--duration 5m] [--agents 300] [--processes 3] [--gpus 2]
 *                   [--interval 500ms] [--window 5s] [--sample-every 10s] [--max-rss-mib 400]
 *
 * Every sample it prints the collector's RSS (from /proc) and heap (a probe preloaded into
 * the collector prints process.memoryUsage()), acks per second and how many agents had an
 * ack within the last two windows. At the end the agents drain and it counts: windows the
 * agents measured, acknowledged, and held by InfluxDB (count per GPU), and the collector's
 * counters against InfluxDB's sums. It prints a summary table and exits 1 when a window was
 * lost or doubled, an agent stopped getting acks, or the RSS passed the bound.
 *
 * Fleets of tens of thousands of GPUs are more than agent processes on one machine can
 * simulate; `--load-generator` runs the load generator's hosts instead (bench/loadgen.ts:
 * one process, one real gRPC stream per host, windows shaped like an agent's), with its
 * own private InfluxDB and collector (spool on), and applies the same verdict:
 *
 *   npm run soak -- --load-generator --agents 6250 --gpus 8 --window 10s --duration 10m
 *
 * In both modes the collector's RSS must stay flat: its peak over the second half of the
 * run at most RSS_GROWTH_ALLOWED above its peak over the first half (after every agent
 * connected), and below --max-rss-mib (default 400 MiB with agent swarms, 1536 with the
 * load generator).
 *
 * Kept out of `npm test` for its length; test/faults/swarm.test.ts runs a short one there.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { environment, median, textTable } from "../bench/harness.js";
import { formatDuration, parseDuration } from "../common/duration.js";
import { compareCounters } from "../test/helpers/fleet-accounting.js";
import { eventually, Fleet, type CollectorNode } from "../test/helpers/fleet-harness.js";
import { SwarmProcess, type SwarmStats } from "../test/helpers/swarm-process.js";
import { REPO_ROOT } from "../test/helpers/trueidle-process.js";

const PROBE = path.join(REPO_ROOT, "scripts", "soak-memory-probe.mjs");
const MiB = 2 ** 20;

interface Sample {
  elapsedS: number;
  acksPerS: number;
  rssBytes: number;
  heapUsedBytes: number | undefined;
  /** Agents with an ack within the last two windows, over all swarms. */
  acking: number;
  connected: number;
  buffered: number;
}

const { values: flags } = parseArgs({
  options: {
    duration: { type: "string", default: "5m" },
    agents: { type: "string", default: "300" },
    processes: { type: "string", default: "3" },
    gpus: { type: "string", default: "2" },
    interval: { type: "string", default: "500ms" },
    window: { type: "string", default: "5s" },
    "sample-every": { type: "string", default: "10s" },
    "max-rss-mib": { type: "string" },
    "load-generator": { type: "boolean", default: false },
  },
});
const durationMs = parseDuration(flags.duration);
const sampleEveryMs = parseDuration(flags["sample-every"]);
const agents = Number(flags.agents);
const processes = Number(flags.processes);
const gpus = Number(flags.gpus);
const loadGenerator = flags["load-generator"];
const maxRssBytes = Number(flags["max-rss-mib"] ?? (loadGenerator ? 1536 : 400)) * MiB;
/** The RSS peak of a run's second half may pass its first half's by this share at most. */
const RSS_GROWTH_ALLOWED = 0.1;
if (
  ![agents, processes, gpus].every((n) => Number.isInteger(n) && n > 0) ||
  (!loadGenerator && agents % processes !== 0)
) {
  throw new Error("--agents, --processes and --gpus must be positive integers, --agents a multiple of --processes");
}
const perProcess = agents / processes;

/**
 * Why the RSS did not stay flat, or undefined: `rss` sampled in order after every agent
 * connected; the second half's peak against the first half's.
 */
function rssGrowthProblem(rss: readonly number[]): string | undefined {
  if (rss.length < 4) return undefined;
  const half = Math.floor(rss.length / 2);
  const first = Math.max(...rss.slice(0, half));
  const second = Math.max(...rss.slice(half));
  if (second <= first * (1 + RSS_GROWTH_ALLOWED)) return undefined;
  return `the collector's RSS kept growing: its peak over the second half of the run (${mib(second)} MiB) is ${(
    (second / first - 1) * 100
  ).toFixed(0)} % above the first half's (${mib(first)} MiB), more than ${RSS_GROWTH_ALLOWED * 100} %`;
}

/** The collector's last heap figure from the preloaded probe, if it printed one. */
function heapUsed(collector: CollectorNode): number | undefined {
  const out = collector.proc?.output() ?? "";
  const at = out.lastIndexOf('{"soak_memory"');
  if (at < 0) return undefined;
  try {
    return (JSON.parse(out.slice(at, out.indexOf("\n", at))) as { soak_memory: { heap_used: number } }).soak_memory
      .heap_used;
  } catch {
    return undefined;
  }
}

const sum = (
  xs: readonly SwarmStats[],
  key: "acked" | "acking" | "connected" | "buffered" | "windows" | "dropped" | "rejected" | "reconnects",
): number => xs.reduce((n, s) => n + s[key], 0);
const mib = (b: number | undefined): string => (b === undefined ? "n/a" : (b / MiB).toFixed(0));
const int = (n: number): string => n.toLocaleString("en-US");
const say = (line: string): void => void process.stdout.write(`${line}\n`);

if (loadGenerator) {
  process.exitCode = await soakWithLoadGenerator();
  process.exit();
}

const fleet = await Fleet.start("soak");
const swarms: SwarmProcess[] = [];
process.once("SIGINT", () => {
  for (const s of swarms) s.kill();
  void fleet.stop().finally(() => process.exit(130));
});

try {
  const collector = await fleet.startCollector({
    env: { NODE_OPTIONS: `--import=${pathToFileURL(PROBE).href}`, SOAK_PROBE_EVERY_MS: "2000" },
  });
  say(
    `Soak: ${agents} agents (${processes} processes × ${perProcess}), ${gpus} GPUs each, ${flags.interval} samples, ${flags.window} windows, for ${formatDuration(durationMs)}.`,
  );
  for (let p = 0; p < processes; p++) {
    swarms.push(
      new SwarmProcess({
        collector: collector.address,
        agents: perProcess,
        prefix: `soak${p}`,
        gpus,
        interval: flags.interval,
        window: flags.window,
        statsEvery: "1s",
      }),
    );
  }
  await eventually(
    `${agents} agents connected`,
    async () => ((await collector.metric("trueidle_agents_connected")) === agents ? true : undefined),
    300_000,
    1_000,
  );
  const rssAtStart = collector.rss();
  const heapAtStart = heapUsed(collector);
  say(`All ${agents} agents connected; collector RSS ${mib(rssAtStart)} MiB, heap ${mib(heapAtStart)} MiB.`);

  const samples: Sample[] = [];
  const t0 = Date.now();
  let prevAcked = sum(
    swarms.map((s) => s.last!),
    "acked",
  );
  let prevAt = t0;
  while (Date.now() - t0 < durationMs) {
    await sleep(Math.min(sampleEveryMs, durationMs - (Date.now() - t0)));
    const now = Date.now();
    const stats = swarms.map((s) => s.last!);
    const acked = sum(stats, "acked");
    const sample: Sample = {
      elapsedS: Math.round((now - t0) / 1000),
      acksPerS: ((acked - prevAcked) * 1000) / (now - prevAt),
      rssBytes: collector.rss(),
      heapUsedBytes: heapUsed(collector),
      acking: sum(stats, "acking"),
      connected: sum(stats, "connected"),
      buffered: sum(stats, "buffered"),
    };
    samples.push(sample);
    prevAcked = acked;
    prevAt = now;
    say(
      `  ${sample.elapsedS}s: ${sample.acksPerS.toFixed(1)} acks/s, ${sample.acking}/${agents} agents acked lately, ${sample.buffered} buffered, RSS ${mib(sample.rssBytes)} MiB, heap ${mib(sample.heapUsedBytes)} MiB`,
    );
  }

  say("Stopping the agents (each drains its last windows).");
  const finals = await Promise.all(swarms.map((s) => s.stop()));
  const totals = await fleet.settle(300_000);
  const inInflux = [...totals.values()].reduce((n, t) => n + t.count, 0);
  const measured = sum(finals, "windows");
  const acked = sum(finals, "acked");
  const counterProblems = compareCounters(await collector.metrics(), totals);
  const received = await collector.metric("trueidle_windows_received_total");
  const spooled = await collector.metric("trueidle_spool_windows_total");
  const rssAtEnd = collector.rss();
  const heapAtEnd = heapUsed(collector);
  const collectorExit = await collector.stop();

  const rates = samples.map((s) => s.acksPerS);
  const maxRss = Math.max(rssAtStart, ...samples.map((s) => s.rssBytes));
  const heaps = samples.map((s) => s.heapUsedBytes).filter((h): h is number => h !== undefined);
  const minActing = Math.min(...samples.map((s) => s.acking));
  const rssGrowth = rssGrowthProblem(samples.map((s) => s.rssBytes));
  const lost = Math.max(0, measured - inInflux);
  const extra = Math.max(0, inInflux - measured);
  const failures = [
    ...(lost > 0 ? [`${lost} windows the agents measured are not in InfluxDB`] : []),
    ...(extra > 0 ? [`InfluxDB holds ${extra} windows more than the agents measured`] : []),
    ...(acked !== measured ? [`the agents measured ${measured} windows but had ${acked} acknowledged`] : []),
    ...counterProblems,
    ...(minActing < agents
      ? [`at one sample only ${minActing} of ${agents} agents had an ack within two windows`]
      : []),
    ...(maxRss > maxRssBytes ? [`the collector's RSS reached ${mib(maxRss)} MiB, above ${mib(maxRssBytes)} MiB`] : []),
    ...(rssGrowth ? [rssGrowth] : []),
    ...(collectorExit !== 0 ? [`the collector exited with ${collectorExit} on SIGTERM`] : []),
  ];

  const env = environment();
  say("");
  say(`Soak summary (${env.cpuModel}, ${env.cpuCount} CPUs, Node ${env.node}):`);
  say(
    textTable([
      ["", "value"],
      ["agents (connections, one stream each)", `${agents} in ${processes} processes`],
      ["GPUs", int(agents * gpus)],
      ["duration after all connected", formatDuration(durationMs)],
      ["windows measured by the agents", int(measured)],
      ["windows acknowledged to the agents", int(acked)],
      ["windows received by the collector", int(received)],
      ["windows in InfluxDB (count over all GPUs)", int(inInflux)],
      ["lost / extra", `${lost} / ${extra}`],
      [
        "collector counters equal InfluxDB sums",
        counterProblems.length === 0 ? `yes, all ${totals.size} GPUs` : `no, ${counterProblems.length} GPUs differ`,
      ],
      [
        "acks/s (median, min, max over samples)",
        `${median(rates).toFixed(1)}, ${Math.min(...rates).toFixed(1)}, ${Math.max(...rates).toFixed(1)}`,
      ],
      ["agents acked within two windows (lowest sample)", `${minActing} of ${agents}`],
      [
        "agent reconnects / dropped / rejected",
        `${sum(finals, "reconnects")} / ${sum(finals, "dropped")} / ${sum(finals, "rejected")}`,
      ],
      ["windows spooled (InfluxDB slow)", int(spooled)],
      ["collector RSS MiB (start, max, end)", `${mib(rssAtStart)}, ${mib(maxRss)}, ${mib(rssAtEnd)}`],
      [
        "collector heap used MiB (start, max, end)",
        `${mib(heapAtStart)}, ${mib(heaps.length ? Math.max(...heaps) : undefined)}, ${mib(heapAtEnd)}`,
      ],
    ]),
  );
  say("");
  say(
    failures.length === 0
      ? "Soak passed: nothing lost, nothing doubled, acks flowed to every agent, memory bounded."
      : `Soak FAILED:\n${failures.map((f) => `  - ${f}`).join("\n")}`,
  );
  process.exitCode = failures.length === 0 ? 0 : 1;
} catch (err) {
  process.stderr.write(
    `The soak could not run to the end: ${(err as Error).stack ?? String(err)}\n${fleet.output().slice(-8_000)}\n`,
  );
  process.exitCode = 1;
} finally {
  for (const s of swarms) s.kill();
  await fleet.stop();
}

interface LoadgenResult {
  gpus: number;
  hosts: number;
  steadySpanS: number;
  windowsMade: number;
  windowsAcked: number;
  windowsRejected: number;
  influxWindows: number | undefined;
  acksPerS: number;
  ackLatencyMs: { p50: number; p99: number; max: number };
  collectorCores: number | undefined;
  collectorCpuUsPerWindow: number | undefined;
  collectorRssMaxBytes: number | undefined;
  connectedAllAfterS: number | undefined;
  connects: number;
  breaks: Record<string, number>;
  spoolBytesMax: number;
  influxdCores: number | undefined;
  samples: Array<{ atS: number; collectorRssBytes: number | undefined }>;
  failures: string[];
}

/** The soak over the load generator's hosts (see the file's comment); the exit code. */
async function soakWithLoadGenerator(): Promise<number> {
  const args = [
    "--import",
    "tsx",
    path.join(REPO_ROOT, "bench", "loadgen.ts"),
    "--start-collector",
    "--influx",
    "--gpus",
    String(agents * gpus),
    "--gpus-per-host",
    String(gpus),
    "--window",
    flags.window,
    "--duration",
    flags.duration,
    "--sample-every",
    flags["sample-every"],
    "--json",
  ];
  say(
    `Soak: ${int(agents)} load-generator hosts × ${gpus} GPUs (${int(agents * gpus)}), ${flags.window} windows, ` +
      `for ${formatDuration(durationMs)} after every host connected (bench/loadgen.ts; its progress follows).`,
  );
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "inherit"] });
  const forward = (): void => void child.kill("SIGINT");
  process.once("SIGINT", forward);
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString("utf8")));
  const code = await new Promise<number>((resolve) => child.once("close", (c) => resolve(c ?? 1)));
  process.off("SIGINT", forward);
  const last = out.trim().split("\n").pop() ?? "";
  let r: LoadgenResult;
  try {
    r = JSON.parse(last) as LoadgenResult;
  } catch {
    process.stderr.write(`The load generator exited ${code} without its result.\n`);
    return 1;
  }
  const connectedAt = r.connectedAllAfterS ?? 0;
  const rss = r.samples
    .filter((x) => x.atS >= connectedAt && x.collectorRssBytes !== undefined)
    .map((x) => x.collectorRssBytes as number);
  const maxRss = Math.max(0, ...rss);
  const growth = rssGrowthProblem(rss);
  const failures = [
    ...r.failures,
    ...(r.windowsMade !== r.windowsAcked
      ? [`the hosts made ${r.windowsMade} windows but had ${r.windowsAcked} acknowledged`]
      : []),
    ...(r.influxWindows !== r.windowsAcked
      ? [`InfluxDB holds ${r.influxWindows ?? "n/a"} windows, ${r.windowsAcked} were acknowledged`]
      : []),
    ...(growth ? [growth] : []),
    ...(maxRss > maxRssBytes ? [`the collector's RSS reached ${mib(maxRss)} MiB, above ${mib(maxRssBytes)} MiB`] : []),
    ...(code !== 0 && r.failures.length === 0 ? [`the load generator exited ${code}`] : []),
  ];
  const third = Math.max(1, Math.floor(rss.length / 3));
  const env = environment();
  say("");
  say(`Soak summary, load generator (${env.cpuModel}, ${env.cpuCount} CPUs, Node ${env.node}):`);
  say(
    textTable([
      ["", "value"],
      ["hosts (connections, one stream each) × GPUs", `${int(r.hosts)} × ${gpus} = ${int(r.gpus)}`],
      ["steady span measured", formatDuration(Math.round(r.steadySpanS) * 1000)],
      ["windows made by the hosts", int(r.windowsMade)],
      ["windows acknowledged to the hosts", int(r.windowsAcked)],
      ["windows in InfluxDB (count over all GPUs)", r.influxWindows === undefined ? "n/a" : int(r.influxWindows)],
      ["acks/s (windows, steady span)", r.acksPerS.toFixed(0)],
      ["ack latency p50 / p99 / max (ms)", `${r.ackLatencyMs.p50} / ${r.ackLatencyMs.p99} / ${r.ackLatencyMs.max}`],
      [
        "collector CPU (cores; µs per window)",
        `${r.collectorCores?.toFixed(3) ?? "n/a"}; ${r.collectorCpuUsPerWindow?.toFixed(1) ?? "n/a"}`,
      ],
      ["influxd CPU (cores, median)", r.influxdCores?.toFixed(3) ?? "n/a"],
      [
        "collector RSS MiB (first third max, last third max, max)",
        `${mib(Math.max(...rss.slice(0, third)))}, ${mib(Math.max(...rss.slice(-third)))}, ${mib(maxRss)}`,
      ],
      ["spool bytes max", int(r.spoolBytesMax)],
      ["connects / breaks", `${int(r.connects)} / ${JSON.stringify(r.breaks)}`],
    ]),
  );
  say("");
  say(
    failures.length === 0
      ? "Soak passed: windows made = acknowledged = in InfluxDB, RSS flat."
      : `Soak FAILED:\n${failures.map((f) => `  - ${f}`).join("\n")}`,
  );
  return failures.length === 0 ? 0 : 1;
}
