/**
 * `npm run loadgen`: a fleet of simulated hosts against one collector, from one process
 * speaking the real protocol over real gRPC — one channel and stream per host, windows
 * shaped like real ones, acks checked — and what the collector costs under it.
 *
 *   npm run loadgen -- --gpus 50000 [--gpus-per-host 8] [--window 10s] [--duration 10m]
 *                      (--start-collector [--influx] [--cpu-prof DIR] | --collector HOST:PORT
 *                       (--plaintext | --tls-ca FILE) [--token-file FILE] [--metrics-url URL]
 *                       [--influx-url URL/DB])
 *                      [--labels site=4,pool=3] [--spread 10s] [--connect-rate 500]
 *                      [--sample-every 10s] [--scrape-every 1m] [--json]
 *
 * Each host closes a window for each of its GPUs at every multiple of --window on the
 * wall clock, late by an offset of its own within --spread (hosts' clocks and start times
 * differ), and sends them as one batch, with the shipper's flow (bench/loadgen-host.ts).
 * The generator's own CPU is process.cpuUsage(); the collector's comes from /proc (every
 * thread) when the generator started it, else from its process_cpu_seconds_total.
 *
 * Prints a table (and with --json one JSON object on stdout, the progress on stderr).
 * Exits 1 when a window was lost (made but not acknowledged after the drain; with
 * InfluxDB, acknowledged but not in InfluxDB, or there more than once), rejected, or when
 * the collector did not stop cleanly. A benchmark, not a test: nothing fails on time.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { MEASUREMENT_OWNER_WINDOW, MEASUREMENT_WINDOW, RP_WINDOW } from "../collector/influx/schema.js";
import { formatDuration, parseDuration } from "../common/duration.js";
import { errorMessage } from "../common/errors.js";
import {
  findInfluxd,
  INFLUXD_MISSING_HELP,
  startPrivateInfluxd,
  type PrivateInfluxd,
} from "../demo/private-influxd.js";
import { readProcessCpu } from "../scripts/gpu-truth/proc-cpu.mjs";
import { CollectorNode } from "../test/helpers/fleet-nodes.js";
import { influxQuery } from "../test/helpers/influxdb.js";
import { freePort } from "../test/helpers/ports.js";
import { environment, median, textTable } from "./harness.js";
import { summariseCpuProfile } from "./loadgen-profile.js";
import { LoadTotals, SimHost } from "./loadgen-host.js";
import { scrapeInWorker } from "./loadgen-scrape.mjs";
import { parseLabelSpread, simHost, WindowTemplates } from "./loadgen-windows.js";

const MiB = 2 ** 20;

const { values: flags } = parseArgs({
  options: {
    gpus: { type: "string", default: "1000" },
    "gpus-per-host": { type: "string", default: "8" },
    window: { type: "string", default: "10s" },
    duration: { type: "string", default: "2m" },
    collector: { type: "string" },
    "start-collector": { type: "boolean", default: false },
    influx: { type: "boolean", default: false },
    "influx-url": { type: "string" },
    "metrics-url": { type: "string" },
    plaintext: { type: "boolean", default: false },
    "tls-ca": { type: "string" },
    "token-file": { type: "string" },
    labels: { type: "string", default: "site=4,pool=3" },
    spread: { type: "string" },
    "connect-rate": { type: "string", default: "500" },
    "sample-every": { type: "string", default: "10s" },
    "scrape-every": { type: "string", default: "1m" },
    "drain-timeout": { type: "string", default: "3m" },
    "settle-quiet": { type: "string", default: "1m" },
    "settle-timeout": { type: "string", default: "10m" },
    "cpu-prof": { type: "string" },
    "collector-arg": { type: "string", multiple: true, default: [] },
    json: { type: "boolean", default: false },
  },
});

function fail(message: string): never {
  process.stderr.write(`loadgen: ${message}\n`);
  process.exit(2);
}

const gpus = Number(flags.gpus);
const gpusPerHost = Number(flags["gpus-per-host"]);
if (!Number.isInteger(gpus) || gpus < 1 || !Number.isInteger(gpusPerHost) || gpusPerHost < 1 || gpusPerHost > 64)
  fail("--gpus must be a positive integer and --gpus-per-host one from 1 to 64");
const hostCount = Math.ceil(gpus / gpusPerHost);
const totalGpus = hostCount * gpusPerHost;
const windowMs = parseDuration(flags.window);
const durationMs = parseDuration(flags.duration);
const spreadMs = flags.spread === undefined ? windowMs : parseDuration(flags.spread);
if (spreadMs < 0 || spreadMs > windowMs) fail("--spread must lie between 0 and --window");
const connectRate = Number(flags["connect-rate"]);
const sampleEveryMs = parseDuration(flags["sample-every"]);
const scrapeEveryMs = parseDuration(flags["scrape-every"]);
const drainTimeoutMs = parseDuration(flags["drain-timeout"]);
const settleQuietMs = parseDuration(flags["settle-quiet"]);
const settleTimeoutMs = parseDuration(flags["settle-timeout"]);
const labels = parseLabelSpread(flags.labels);
if (flags["start-collector"] === (flags.collector !== undefined))
  fail("give either --start-collector or --collector HOST:PORT");
if (flags.collector !== undefined && flags.plaintext === (flags["tls-ca"] !== undefined))
  fail("with --collector, give --plaintext or --tls-ca FILE");
if (flags.influx && !flags["start-collector"]) fail("--influx starts a private InfluxDB for --start-collector");
if (flags["cpu-prof"] !== undefined && !flags["start-collector"]) fail("--cpu-prof profiles a collector it starts");

const out = flags.json ? process.stderr : process.stdout;
const say = (line: string): void => void out.write(`${line}\n`);
const int = (n: number): string => Math.round(n).toLocaleString("en-US");
const fixed = (n: number | undefined, d = 1): string => (n === undefined || !Number.isFinite(n) ? "n/a" : n.toFixed(d));

/** The p-th percentile (0–100) of `xs`, nearest rank. */
function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/**
 * CPU the generator's scrape worker spent reading /metrics (gunzip, decode, scanning for a
 * few series): the measuring, not the load, so it is left out of the generator's CPU.
 */
let measuringUs = 0;
/** The generator's CPU so far, µs, less its measuring. */
const generatorUs = (): number => {
  const c = process.cpuUsage(cpu0);
  return c.user + c.system - measuringUs;
};

/** A /metrics scrape: time to the last byte, bytes on the wire and decoded. */
interface Scrape {
  atS: number;
  ms: number;
  wireBytes: number;
  bytes: number;
  gzip: boolean;
}

/** What the generator reads of the collector's /metrics (bench/loadgen-scrape.mjs sums them off its event loop). */
const SCRAPED = [
  "trueidle_influx_points_written_total",
  "trueidle_spool_bytes",
  "process_cpu_seconds_total",
  "process_resident_memory_bytes",
] as const;

/** A child process of ours by its command name (the private influxd), for its CPU. */
function childByComm(comm: string): number | undefined {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const c = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (c === comm && ppid === process.pid) return Number(name);
    } catch {
      // Gone meanwhile.
    }
  }
  return undefined;
}

const cpuNs = (pid: number | undefined): number | undefined => {
  if (pid === undefined) return undefined;
  const r = readProcessCpu([pid])[0];
  return r?.alive ? r.selfNs : undefined;
};

interface Sample {
  atS: number;
  acked: number;
  acksPerS: number;
  connected: number;
  unacked: number;
  collectorCores: number | undefined;
  influxCores: number | undefined;
  generatorCores: number;
  collectorRssBytes: number | undefined;
  loadavg1: number;
  /** p99 of the acks received since the previous sample, ms. */
  ackP99Ms?: number;
  /** Streams broken or refused so far. */
  breaks?: number;
}

// ---- the collector (and InfluxDB) -------------------------------------------------------

let collector: CollectorNode | undefined;
let influxd: PrivateInfluxd | undefined;
let workDir: string | undefined;
let target: string;
let metricsUrl: string | undefined;
let influxCheck: { base: string; db: string } | undefined;
const database = "loadgen";

if (flags["start-collector"]) {
  workDir = mkdtempSync(path.join(tmpdir(), "trueidle-loadgen-"));
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const argv = [
    "collector",
    "--plaintext",
    "--grpc-listen",
    `127.0.0.1:${grpcPort}`,
    "--http-listen",
    `127.0.0.1:${httpPort}`,
    // Every simulated host connects from 127.0.0.1.
    "--max-connections-per-address",
    String(hostCount + 1_000),
    "--max-agents",
    String(Math.max(20_000, hostCount + 100)),
  ];
  if (flags.influx) {
    if (!findInfluxd()) fail(INFLUXD_MISSING_HELP);
    influxd = await startPrivateInfluxd({ dir: path.join(workDir, "influxd") });
    argv.push("--influx-url", `${influxd.url}/${database}`, "--spool-dir", path.join(workDir, "spool"));
    influxCheck = { base: influxd.url, db: database };
  }
  argv.push(...(flags["collector-arg"] ?? []));
  const env: NodeJS.ProcessEnv = {};
  if (flags["cpu-prof"] !== undefined) {
    mkdirSync(path.resolve(flags["cpu-prof"]), { recursive: true });
    env["NODE_OPTIONS"] = `--import=${pathToFileURL(path.join(import.meta.dirname, "loadgen-cpu-prof.mjs")).href}`;
    env["LOADGEN_CPU_PROF_DIR"] = path.resolve(flags["cpu-prof"]);
  }
  collector = new CollectorNode("collector", grpcPort, httpPort, undefined, argv, env);
  try {
    await collector.start();
  } catch (err) {
    await influxd?.stop();
    fail(`the collector did not start (build it first: npm run build): ${errorMessage(err)}`);
  }
  target = collector.address;
  metricsUrl = `http://127.0.0.1:${httpPort}/metrics`;
} else {
  target = flags.collector!;
  metricsUrl = flags["metrics-url"];
  if (flags["influx-url"] !== undefined) {
    const u = new URL(flags["influx-url"]);
    const db = u.pathname.replace(/^\//, "");
    if (db === "") fail("--influx-url needs the database as its path: http://HOST:8086/DB");
    influxCheck = { base: `${u.protocol}//${u.host}`, db };
  }
}
const collectorPid = collector?.proc?.child.pid;
const influxPid = influxd ? childByComm("influxd") : undefined;
/** The collector's RSS before any host connects: what RSS per GPU is counted above. */
const rssIdleBytes = collectorPid ? (readProcessCpu([collectorPid])[0]?.rssKiB ?? 0) * 1024 : undefined;

// ---- the hosts --------------------------------------------------------------------------

const credentials =
  flags["tls-ca"] !== undefined
    ? grpc.credentials.createSsl(readFileSync(flags["tls-ca"]))
    : grpc.credentials.createInsecure();
let metadata: grpc.Metadata | undefined;
if (flags["token-file"] !== undefined) {
  metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${readFileSync(flags["token-file"], "utf8").trim()}`);
}

const totals = new LoadTotals();
const templates = new WindowTemplates(windowMs);
const hosts: SimHost[] = [];
for (let h = 0; h < hostCount; h++) {
  hosts.push(
    new SimHost(simHost(h, gpusPerHost, labels), {
      target,
      credentials,
      // As the shipper's channel: a connection of its own per host, the same keepalive.
      channelOptions: {
        "grpc.keepalive_time_ms": 20_000,
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.max_send_message_length": 8 * 1024 * 1024,
        "grpc.initial_reconnect_backoff_ms": 500,
        "grpc.max_reconnect_backoff_ms": 5_000,
        "grpc.use_local_subchannel_pool": 1,
      },
      metadata,
      windowMs,
      maxBatchesInFlight: 4,
      maxWindowsPerBatch: 2_000,
      responseTimeoutMs: 30_000,
      totals,
    }),
  );
}
/** Each host's lateness after a window boundary: its clock and start time, spread evenly. */
const offsets = hosts.map((_, h) =>
  spreadMs === 0 ? 0 : Math.floor((((h * 2_654_435_761) % 2 ** 32) / 2 ** 32) * spreadMs),
);
const order = hosts.map((_, h) => h).sort((a, b) => offsets[a]! - offsets[b]!);

say(
  `Load: ${int(totalGpus)} GPUs on ${int(hostCount)} hosts (${gpusPerHost} each, one stream each) → ${target}, ` +
    `${formatDuration(windowMs)} windows spread over ${formatDuration(spreadMs)}, ` +
    `${int((totalGpus * 1000) / windowMs)} windows/s, for ${formatDuration(durationMs)}` +
    `${collector ? (influxd ? ", collector started here with a private InfluxDB" : ", collector started here without InfluxDB") : ""}.`,
);

const t0 = Date.now();
const cpu0 = process.cpuUsage();
const loopDelay = monitorEventLoopDelay({ resolution: 20 });
loopDelay.enable();

// Connects at --connect-rate, as a fleet's agents come up over a while.
let connectCursor = 0;
const connectTimer = setInterval(() => {
  const n = Math.max(1, Math.round(connectRate / 20));
  for (let i = 0; i < n && connectCursor < hosts.length; i++) hosts[connectCursor++]!.connect();
  if (connectCursor >= hosts.length) clearInterval(connectTimer);
}, 50);

// Windows: the cohort ending at `boundary` is closed host by host, each at boundary + its offset.
let boundary = Math.ceil(Date.now() / windowMs) * windowMs;
/** The first cohort's window start: every cohort from it holds one window of every GPU. */
const firstStart = boundary - windowMs;
let cursor = 0;
let lastBoundary = Number.POSITIVE_INFINITY;
let cohorts = 0;
let generating = true;
let generationDone: () => void = () => undefined;
const generated = new Promise<void>((resolve) => {
  generationDone = resolve;
});
const windowTimer = setInterval(() => {
  const now = Date.now();
  while (generating) {
    const h = order[cursor]!;
    if (boundary + offsets[h]! > now) break;
    const host = hosts[h]!;
    const start = boundary - windowMs;
    const n = start / windowMs;
    const windows = [];
    for (let g = 0; g < gpusPerHost; g++) windows.push(templates.window(host.identity, g, n, start));
    host.enqueue(windows);
    if (++cursor === order.length) {
      cursor = 0;
      cohorts++;
      if (boundary >= lastBoundary) {
        generating = false;
        generationDone();
      }
      boundary += windowMs;
    }
  }
}, 20);
const timeoutTimer = setInterval(() => {
  const now = Date.now();
  for (const h of hosts) h.checkTimeout(now);
}, 1_000);

// ---- sampling ---------------------------------------------------------------------------

const samples: Sample[] = [];
const scrapes: Array<Scrape & { spoolBytes?: number | undefined; backlogPoints?: number | undefined }> = [];
/** The sums of SCRAPED in the last scrape. */
let lastScraped: Record<string, number | undefined> | undefined;
let prev = {
  at: Date.now(),
  acked: 0,
  collectorNs: cpuNs(collectorPid),
  influxNs: cpuNs(influxPid),
  genUs: 0,
  collectorCpuS: undefined as number | undefined,
  latencies: 0,
};

async function scrapeNow(): Promise<void> {
  if (!metricsUrl) return;
  try {
    const s = await scrapeInWorker(metricsUrl, SCRAPED);
    measuringUs += s.cpuUs;
    lastScraped = s.sums;
    const written = s.sums["trueidle_influx_points_written_total"];
    scrapes.push({
      atS: Math.round((Date.now() - t0) / 1000),
      ms: s.ms,
      wireBytes: s.wireBytes,
      bytes: s.bytes,
      gzip: s.gzip,
      spoolBytes: s.sums["trueidle_spool_bytes"],
      backlogPoints:
        influxCheck && written !== undefined ? totals.windowsAcked + totals.ownedAcked - written : undefined,
    });
  } catch (err) {
    measuringUs += (err as { cpuUs?: number }).cpuUs ?? 0;
    say(`  /metrics scrape failed: ${errorMessage(err)}`);
  }
}

function sample(): Sample {
  const now = Date.now();
  const dt = (now - prev.at) / 1000;
  const collectorNs = cpuNs(collectorPid);
  const influxNs = cpuNs(influxPid);
  const genUs = generatorUs();
  let collectorCores: number | undefined;
  if (collectorNs !== undefined && prev.collectorNs !== undefined)
    collectorCores = (collectorNs - prev.collectorNs) / 1e9 / dt;
  const collectorCpuS = lastScraped?.["process_cpu_seconds_total"];
  const s: Sample = {
    atS: Math.round((now - t0) / 1000),
    acked: totals.windowsAcked,
    acksPerS: (totals.windowsAcked - prev.acked) / dt,
    connected: totals.connected,
    unacked: hosts.reduce((n, h) => n + h.unacked, 0),
    collectorCores,
    influxCores:
      influxNs !== undefined && prev.influxNs !== undefined ? (influxNs - prev.influxNs) / 1e9 / dt : undefined,
    generatorCores: (genUs - prev.genUs) / 1e6 / dt,
    collectorRssBytes: collectorPid
      ? (readProcessCpu([collectorPid])[0]?.rssKiB ?? 0) * 1024
      : lastScraped?.["process_resident_memory_bytes"],
    loadavg1: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
  };
  const recent = totals.ackLatencyMs.slice(prev.latencies);
  s.ackP99Ms = percentile(recent, 99);
  s.breaks = [...totals.breaks.values()].reduce((a, b) => a + b, 0);
  prev = {
    at: now,
    acked: totals.windowsAcked,
    collectorNs,
    influxNs,
    genUs,
    collectorCpuS,
    latencies: totals.ackLatencyMs.length,
  };
  samples.push(s);
  say(
    `  ${s.atS}s: ${int(s.acksPerS)} windows acked/s, ${s.connected}/${hostCount} hosts connected, ${int(s.unacked)} unacked, ack p99 ${fixed(s.ackP99Ms, 0)} ms, ${s.breaks} breaks, ` +
      `collector ${fixed(s.collectorCores, 2)} cores RSS ${fixed((s.collectorRssBytes ?? Number.NaN) / MiB, 0)} MiB, ` +
      `${influxPid ? `influxd ${fixed(s.influxCores, 2)} cores, ` : ""}generator ${fixed(s.generatorCores, 2)} cores, loadavg ${s.loadavg1}`,
  );
  return s;
}

let scraping: Promise<void> | undefined;
let stopSignal = false;
process.once("SIGINT", () => {
  stopSignal = true;
});

const failures: string[] = [];
let steady: {
  atMs: number;
  acked: number;
  collectorNs?: number | undefined;
  cpuS?: number | undefined;
  genUs: number;
} = { atMs: 0, acked: 0, genUs: 0 };
let steadyEnd = steady;
let connectedAllAtS: number | undefined;
let drainMs: number | undefined;
let settleMs: number | undefined;
let influxCounts: { windows: number; owners: number } | undefined;
/** With windows missing from InfluxDB: the window starts that hold fewer than every GPU's window. */
let shortStarts: Array<{ startMs: number; windows: number }> = [];
let collectorExit: number | null | undefined;
let profileTop: string[] = [];

try {
  // Until every host said hello (or a minute more than the ramp needs).
  const connectDeadline = Date.now() + (hostCount / connectRate) * 1000 + 120_000;
  while (totals.connected < hostCount && Date.now() < connectDeadline && !stopSignal) await sleep(250);
  connectedAllAtS = (Date.now() - t0) / 1000;
  if (totals.connected < hostCount) failures.push(`only ${totals.connected} of ${hostCount} hosts connected`);
  say(`${totals.connected}/${hostCount} hosts connected after ${fixed(connectedAllAtS)} s.`);
  // One window of warm-up: every host's first cohort sent, so the steady span starts with streams open.
  await sleep(windowMs);
  await scrapeNow();
  const startCpuS = lastScraped?.["process_cpu_seconds_total"];
  sample();
  steady = {
    atMs: Date.now(),
    acked: totals.windowsAcked,
    collectorNs: cpuNs(collectorPid),
    cpuS: startCpuS,
    genUs: generatorUs(),
  };
  lastBoundary = Math.ceil((steady.atMs + durationMs) / windowMs) * windowMs;
  let nextSample = Date.now() + sampleEveryMs;
  let nextScrape = Date.now() + scrapeEveryMs;
  while (generating && !stopSignal) {
    await sleep(Math.max(0, Math.min(nextSample, nextScrape) - Date.now(), 100));
    // In the background, one at a time: a slow /metrics must not hold up the samples.
    if (Date.now() >= nextScrape && scraping === undefined) {
      nextScrape += scrapeEveryMs;
      scraping = scrapeNow().finally(() => {
        scraping = undefined;
      });
    }
    if (Date.now() >= nextSample) {
      nextSample += sampleEveryMs;
      sample();
    }
  }
  if (stopSignal) {
    generating = false;
    generationDone();
  }
  await generated;
  await scraping;
  await scrapeNow();
  // A last sample only over a span long enough for its rates to mean something.
  if (Date.now() - prev.at >= 1_000) sample();
  steadyEnd = {
    atMs: Date.now(),
    acked: totals.windowsAcked,
    collectorNs: cpuNs(collectorPid),
    cpuS: lastScraped?.["process_cpu_seconds_total"],
    genUs: generatorUs(),
  };

  say(`Generation ended after ${cohorts} windows per GPU; draining the hosts.`);
  const drainStart = Date.now();
  const drained = await Promise.race([
    Promise.all(hosts.map((h) => h.drained())).then(() => true),
    sleep(drainTimeoutMs).then(() => false),
  ]);
  drainMs = Date.now() - drainStart;
  if (!drained)
    failures.push(
      `the hosts still held ${hosts.reduce((n, h) => n + h.unacked, 0)} unacked windows after ${formatDuration(drainTimeoutMs)}`,
    );

  if (influxCheck) {
    // Done when InfluxDB holds every acknowledged window and owner point; else once the
    // spool is empty and InfluxDB's counts have not moved for --settle-quiet (a collector
    // may still be writing what it took back from its spool), or after --settle-timeout.
    const settleStart = Date.now();
    let last = "";
    let lastChangeMs = Date.now();
    for (;;) {
      const counts = await countInflux(influxCheck.base, influxCheck.db);
      influxCounts = counts;
      if (counts.windows === totals.windowsAcked && counts.owners === totals.ownedAcked) break;
      const key = JSON.stringify(counts);
      if (key !== last) {
        last = key;
        lastChangeMs = Date.now();
      } else if (Date.now() - lastChangeMs >= settleQuietMs) {
        // A fresh scrape: the spool as it is now.
        if (metricsUrl) await scrapeNow();
        if ((scrapes[scrapes.length - 1]?.spoolBytes ?? 0) === 0) break;
      }
      if (Date.now() - settleStart > settleTimeoutMs) {
        failures.push(`InfluxDB did not settle within ${formatDuration(settleTimeoutMs)}`);
        break;
      }
      await sleep(1_000);
    }
    settleMs = Date.now() - settleStart;
    if (influxCounts && influxCounts.windows < totals.windowsAcked)
      shortStarts = await startsShort(influxCheck.base, influxCheck.db);
  }
} catch (err) {
  failures.push(`the run broke off: ${errorMessage(err)}`);
} finally {
  clearInterval(connectTimer);
  clearInterval(windowTimer);
  clearInterval(timeoutTimer);
  for (const h of hosts) h.stop();
  loopDelay.disable();
  if (collector) {
    collectorExit = await collector.stop();
    if (collectorExit !== 0) failures.push(`the collector exited with ${collectorExit} on SIGTERM`);
    // For a run that lost or refused something: what the collector warned about, last first.
    const warnings = collector
      .output()
      .split("\n")
      .filter((l) => /"level":"(warn|error)"|^\S+ (WARN|ERROR) /.test(l));
    if (warnings.length > 0) {
      say(`The collector logged ${warnings.length} warnings and errors; the last ten:`);
      for (const l of warnings.slice(-10)) say(`  ${l.slice(0, 600)}`);
    }
  }
  await influxd?.stop();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  if (flags["cpu-prof"] !== undefined) {
    try {
      profileTop = summariseCpuProfile(path.resolve(flags["cpu-prof"]), 25);
    } catch (err) {
      say(`No CPU profile to summarise: ${errorMessage(err)}`);
    }
  }
}

async function countInflux(base: string, db: string): Promise<{ windows: number; owners: number }> {
  const count = async (m: string): Promise<number> => {
    const r = await influxQuery(base, `SELECT count("observed_s") FROM "${db}"."${RP_WINDOW}"."${m}"`, db);
    return Number(r[0]?.series?.[0]?.values?.[0]?.[1] ?? 0);
  };
  return { windows: await count(MEASUREMENT_WINDOW), owners: await count(MEASUREMENT_OWNER_WINDOW) };
}

/**
 * The window starts of the run whose count in InfluxDB is short of one window per GPU: where
 * the missing windows lie (every cohort was made for every host, each window once).
 */
async function startsShort(base: string, db: string): Promise<Array<{ startMs: number; windows: number }>> {
  const r = await influxQuery(
    base,
    `SELECT count("observed_s") FROM "${db}"."${RP_WINDOW}"."${MEASUREMENT_WINDOW}" ` +
      `WHERE time >= ${firstStart}ms AND time < ${firstStart + cohorts * windowMs}ms GROUP BY time(${windowMs}ms) fill(0)`,
    db,
  );
  return (r[0]?.series?.[0]?.values ?? [])
    .map(([t, n]) => ({ startMs: Number(t), windows: Number(n ?? 0) }))
    .filter((s) => s.windows < totalGpus);
}

// ---- accounting and the report ----------------------------------------------------------

const made = totals.windowsMade;
const accounted = totals.windowsAcked + totals.windowsRejected;
if (accounted < made) failures.push(`${made - accounted} windows made were neither acknowledged nor rejected`);
if (accounted > made) failures.push(`${accounted - made} acknowledgements more than windows made`);
if (totals.windowsRejected > 0)
  failures.push(
    `${totals.windowsRejected} windows rejected (${[...totals.rejectionReasons].map(([k, v]) => `${k} ×${v}`).join(", ")})`,
  );
if (influxCounts) {
  const lost = totals.windowsAcked - influxCounts.windows;
  if (lost > 0) {
    const where = shortStarts
      .slice(0, 20)
      .map((s) => `${new Date(s.startMs).toISOString().slice(11, 19)} ${int(totalGpus - s.windows)}`)
      .join(", ");
    failures.push(
      `${lost} acknowledged windows are not in InfluxDB; missing by window start (UTC): ${where || "none short"}` +
        (shortStarts.length > 20 ? ` and ${shortStarts.length - 20} starts more` : ""),
    );
  }
  if (lost < 0) failures.push(`InfluxDB holds ${-lost} windows more than were acknowledged`);
  const ownerLost = totals.ownedAcked - influxCounts.owners;
  if (ownerLost !== 0)
    failures.push(
      `gpu_owner_window holds ${influxCounts.owners} points, ${totals.ownedAcked} owned windows were acknowledged`,
    );
}

const spanS = (steadyEnd.atMs - steady.atMs) / 1000;
const spanAcked = steadyEnd.acked - steady.acked;
const collectorCpuS =
  steadyEnd.collectorNs !== undefined && steady.collectorNs !== undefined
    ? (steadyEnd.collectorNs - steady.collectorNs) / 1e9
    : steadyEnd.cpuS !== undefined && steady.cpuS !== undefined
      ? steadyEnd.cpuS - steady.cpuS
      : undefined;
const genCpuS = (steadyEnd.genUs - steady.genUs) / 1e6;
const steadySamples = samples.filter((s) => s.atS * 1000 >= steady.atMs - t0);
const rssMax = Math.max(...samples.map((s) => s.collectorRssBytes ?? 0));
const rssEnd = samples[samples.length - 1]?.collectorRssBytes;
const influxCores = steadySamples.map((s) => s.influxCores).filter((x): x is number => x !== undefined);
const lat = totals.ackLatencyMs;
const metricsScrapes = scrapes.slice(1);
const env = environment();

const result = {
  gpus: totalGpus,
  hosts: hostCount,
  gpusPerHost,
  windowMs,
  spreadMs,
  influx: influxCheck !== undefined,
  collectorStartedHere: collector !== undefined,
  steadySpanS: spanS,
  windowsPerGpu: cohorts,
  windowsMade: made,
  windowsSent: totals.windowsSent,
  windowsAcked: totals.windowsAcked,
  windowsRejected: totals.windowsRejected,
  ownedWindowsAcked: totals.ownedAcked,
  influxWindows: influxCounts?.windows,
  influxOwnerWindows: influxCounts?.owners,
  influxShortStarts: shortStarts,
  acksPerS: spanAcked / spanS,
  ackLatencyMs: { p50: percentile(lat, 50), p99: percentile(lat, 99), max: percentile(lat, 100), batches: lat.length },
  collectorCpuUsPerWindow: collectorCpuS === undefined ? undefined : (collectorCpuS * 1e6) / spanAcked,
  collectorCores: collectorCpuS === undefined ? undefined : collectorCpuS / spanS,
  collectorRssMaxBytes: rssMax || undefined,
  collectorRssEndBytes: rssEnd,
  rssPerGpuBytes: rssMax ? rssMax / totalGpus : undefined,
  collectorRssIdleBytes: rssIdleBytes,
  rssPerGpuAboveIdleBytes: rssMax && rssIdleBytes ? (rssMax - rssIdleBytes) / totalGpus : undefined,
  influxdCores: influxCores.length ? median(influxCores) : undefined,
  generatorCores: genCpuS / spanS,
  generatorEventLoopP99Ms: loopDelay.percentile(99) / 1e6,
  connectedAllAfterS: connectedAllAtS,
  connects: totals.connects,
  breaks: Object.fromEntries(totals.breaks),
  pushbacks: totals.pushbacks,
  drainMs,
  influxSettleMs: settleMs,
  spoolBytesMax: Math.max(0, ...scrapes.map((s) => s.spoolBytes ?? 0)),
  influxBacklogPointsMax: influxCheck ? Math.max(0, ...scrapes.map((s) => s.backlogPoints ?? 0)) : undefined,
  metrics: metricsScrapes.map(({ atS, ms, wireBytes, bytes, gzip }) => ({ atS, ms, wireBytes, bytes, gzip })),
  loadavg1: steadySamples.map((s) => s.loadavg1),
  samples,
  collectorExit,
  profileTop,
  failures,
  environment: env,
};

const scrapeRow = (xs: typeof metricsScrapes): string =>
  xs.length === 0
    ? "n/a"
    : `${fixed(median(xs.map((s) => s.ms)), 0)} ms, ${fixed(median(xs.map((s) => s.bytes)) / MiB, 1)} MiB` +
      (xs.some((s) => s.gzip) ? ` (${fixed(median(xs.map((s) => s.wireBytes)) / MiB, 1)} MiB gzip)` : " (no gzip)");
say("");
say(`Loadgen summary (${env.cpuModel}, ${env.cpuCount} CPUs, Node ${env.node}):`);
say(
  textTable([
    ["", "value"],
    ["GPUs / hosts (streams)", `${int(totalGpus)} / ${int(hostCount)}`],
    ["window, spread", `${formatDuration(windowMs)}, ${formatDuration(spreadMs)}`],
    ["InfluxDB", influxCheck ? (influxd ? "private influxd, same machine" : influxCheck.base) : "none"],
    ["steady span measured", `${fixed(spanS, 0)} s`],
    [
      "windows made / sent (with re-sends) / acked",
      `${int(made)} / ${int(totals.windowsSent)} / ${int(totals.windowsAcked)}`,
    ],
    ["windows rejected", int(totals.windowsRejected)],
    [
      "windows in InfluxDB (gpu_window; gpu_owner_window)",
      influxCounts
        ? `${int(influxCounts.windows)}; ${int(influxCounts.owners)} of ${int(totals.ownedAcked)} owned`
        : "n/a",
    ],
    ["acks/s (windows, steady span)", fixed(result.acksPerS, 0)],
    [
      "ack latency p50 / p99 / max (ms)",
      `${fixed(result.ackLatencyMs.p50, 0)} / ${fixed(result.ackLatencyMs.p99, 0)} / ${fixed(result.ackLatencyMs.max, 0)}`,
    ],
    ["collector CPU per window (µs)", fixed(result.collectorCpuUsPerWindow, 1)],
    ["collector CPU (cores, steady span)", fixed(result.collectorCores, 3)],
    ["collector RSS max / end (MiB)", `${fixed(rssMax / MiB, 0)} / ${fixed((rssEnd ?? Number.NaN) / MiB, 0)}`],
    [
      "collector RSS per GPU (KiB, max; above the idle RSS)",
      `${fixed((result.rssPerGpuBytes ?? Number.NaN) / 1024, 1)}; ${fixed((result.rssPerGpuAboveIdleBytes ?? Number.NaN) / 1024, 1)}`,
    ],
    ["collector RSS idle, before any host (MiB)", fixed((rssIdleBytes ?? Number.NaN) / MiB, 0)],
    ["influxd CPU (cores, median)", fixed(result.influxdCores, 3)],
    [
      "spool bytes max; points acked not yet written max",
      influxCheck ? `${int(result.spoolBytesMax)}; ${int(result.influxBacklogPointsMax ?? 0)}` : "n/a",
    ],
    [
      "drain after the last window; InfluxDB settled",
      `${fixed((drainMs ?? Number.NaN) / 1000, 1)} s; ${settleMs === undefined ? "n/a" : `${fixed(settleMs / 1000, 1)} s`}`,
    ],
    ["/metrics scrape (median): time, size", scrapeRow(metricsScrapes)],
    [
      "generator CPU (cores, less reading /metrics); event-loop delay p99",
      `${fixed(result.generatorCores, 3)}; ${fixed(result.generatorEventLoopP99Ms, 0)} ms`,
    ],
    ["connects / pushbacks / breaks", `${totals.connects} / ${totals.pushbacks} / ${JSON.stringify(result.breaks)}`],
  ]),
);
say(`  loadavg (1 min) over the span: ${result.loadavg1.map((x) => fixed(x, 2)).join(" ")}`);
if (profileTop.length > 0) {
  say("");
  say("Collector CPU profile, self time (top entries):");
  for (const line of profileTop) say(`  ${line}`);
}
say("");
say(
  failures.length === 0
    ? "Loadgen passed: every window made was acknowledged, none rejected" +
        (influxCounts ? ", InfluxDB holds each once." : ".")
    : `Loadgen FAILED:\n${failures.map((f) => `  - ${f}`).join("\n")}`,
);
if (flags.json) process.stdout.write(`${JSON.stringify(result)}\n`);
process.exitCode = failures.length === 0 ? 0 : 1;
// grpc-js channels may hold timers a moment after close; the figures are out.
setTimeout(() => process.exit(), 500).unref();
