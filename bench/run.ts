/**
 * `npm run bench`: collector ingest, `/metrics` render (10,000 GPUs; and 50,000 by
 * --gpu-series mode, through the cache with gzip, beside prom-client), agent per-sample CPU, collector
 * writes into a private InfluxDB, spool appends (write + fdatasync) and the agent's whole
 * process by GPU source (NVML on the stub with a real driver's call costs, the nvidia-smi
 * loop, the simulator) beside a bare Node process, each against a baseline measured in
 * the same run. Prints a table and writes
 * `.bench/results.json`. Exits non-zero only when a self-check fails (a window refused, a
 * line the parser could not read, a spooled record that does not read back, an agent of
 * section (f) whose GPUs are not in their scenario's states), never because of a time. Section (f) needs gcc and
 * a built dist/; without them the run stops at the start and says so.
 *
 * `--quick` runs fewer rounds (a smoke test of the bench itself; figures are noisier).
 * `--report-year` adds section (d), `trueidle report` over a year × 1,000 GPUs of history
 * (several minutes: see report-year.ts, which also runs alone, and its flags `--keep`,
 * `--data DIR`, `--hosts N`, `--days N`, `--runs N`); it writes `.bench/report-year.json`.
 */
import { runFleetMemoryBench, type FleetMemoryResult } from "./fleet-memory.js";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runAgentBench, type AgentBenchResult } from "./agent-sample.js";
import { runIngestCase, type IngestCaseResult } from "./collector-ingest.js";
import { WindowTemplates } from "./fleet-windows.js";
import {
  AGENT_PROCESS_FULL,
  AGENT_PROCESS_QUICK,
  agentProcessLines,
  checkAgentProcessBench,
  runAgentProcessBench,
  type AgentProcessBenchResult,
} from "./agent-process.js";
import { environment, sink, textTable as table, type Spread } from "./harness.js";
import { runInfluxWriteBench, type InfluxWriteResult } from "./influx-write.js";
import {
  metricsScaleLines,
  runMetricsBench,
  runMetricsScaleBench,
  type MetricsRenderResult,
  type MetricsScaleResult,
} from "./metrics-render.js";
import {
  parseReportYearArgs,
  reportYearLines,
  runReportYearBench,
  writeReportYearJson,
  type ReportYearResult,
} from "./report-year.js";
import { runSpoolAppendBench, type SpoolAppendResult } from "./spool-append.js";

/** Targets of the design, reported (never asserted). */
const TARGETS = {
  ingestToDecodeRatioAtLeast: 0.5,
  agentCpuUsPerSampleBelow: 50,
  influxWriterToBarePostAtLeast: 0.8,
  spoolAppendToBareAtLeast: 0.33,
};

const quick = process.argv.includes("--quick");
const reportYear = process.argv.includes("--report-year");
const WARMUP = quick ? 1 : 2;
const ROUNDS = quick ? 3 : 9;
/** Section (f): see agent-process.ts for why the warm-up is two minutes. */
const AGENT_PROCESS = quick ? AGENT_PROCESS_QUICK : AGENT_PROCESS_FULL;

const fmtInt = (x: number): string => Math.round(x).toLocaleString("en-US");
const fmt = (x: number, digits = 2): string => x.toFixed(digits);
const range = (s: Spread, f: (x: number) => string): string => `${f(s.min)}–${f(s.max)}`;

async function main(): Promise<void> {
  const started = performance.now();
  checkAgentProcessBench();
  const env = environment();
  const out: string[] = [];
  const say = (s = ""): void => {
    out.push(s);
    console.log(s);
  };
  say(
    `trueidle bench — node ${env.node} (V8 ${env.v8}), ${env.cpuModel} × ${env.cpuCount}, ${env.platform}/${env.arch}`,
  );
  say(
    `${ROUNDS} measured rounds after ${WARMUP} warm-up; median shown, min–max in brackets; baselines measured in the same rounds${env.gcBetweenRounds ? "; GC forced before each timed section" : ""}.`,
  );
  say();

  const templates = new WindowTemplates();
  const ingestCases = [
    {
      name: "live: 1,000 hosts × 8 GPUs, batch = 1 host's 8 windows",
      hosts: 1_000,
      windowsPerGpu: 1,
      batchesPerHost: 2,
      batchesPerSlice: 50,
    },
    {
      name: "backlog: 8 hosts × 8 GPUs, batch = 2,000 windows",
      hosts: 8,
      windowsPerGpu: 250,
      batchesPerHost: 1,
      batchesPerSlice: 1,
    },
  ];
  const ingest: IngestCaseResult[] = ingestCases.map((c) => runIngestCase(templates, c, WARMUP, ROUNDS));
  say("(a) Collector ingest: decode → validate → fleet state → ack, vs bare fromBinary of the same bytes");
  say(
    table([
      [
        "case",
        "windows/round",
        "B/window",
        "ingest windows/s",
        "decode windows/s",
        "ratio",
        "ratio range",
        "target ≥ 0.5",
      ],
      ...ingest.map((r) => [
        r.name,
        fmtInt(r.windowsPerRound),
        fmtInt(r.bytesPerWindow),
        fmtInt(r.ingestWindowsPerS.median),
        fmtInt(r.decodeWindowsPerS.median),
        fmt(r.ratio.median, 3),
        `[${range(r.ratio, (x) => fmt(x, 3))}]`,
        r.ratio.median >= TARGETS.ingestToDecodeRatioAtLeast ? "met" : "NOT met",
      ]),
    ]),
  );
  say();

  const metrics: MetricsRenderResult = runMetricsBench(templates, 10_000, WARMUP, ROUNDS);
  say(
    `(a) /metrics render, ${fmtInt(metrics.gpus)} GPUs on ${fmtInt(metrics.hosts)} hosts, vs JSON.stringify of the same GPU records`,
  );
  say(
    table([
      ["", "median ms", "range ms", "output MiB", "series"],
      [
        "renderMetrics",
        fmt(metrics.renderMs.median, 1),
        `[${range(metrics.renderMs, (x) => fmt(x, 1))}]`,
        fmt(metrics.expositionBytes / 2 ** 20),
        fmtInt(metrics.series),
      ],
      [
        "JSON.stringify",
        fmt(metrics.jsonStringifyMs.median, 1),
        `[${range(metrics.jsonStringifyMs, (x) => fmt(x, 1))}]`,
        fmt(metrics.jsonBytes / 2 ** 20),
        "",
      ],
      ["ratio render ÷ JSON", fmt(metrics.ratio.median), `[${range(metrics.ratio, (x) => fmt(x))}]`, "", ""],
    ]),
  );
  say(`  first render (builds every GPU's label string): ${fmt(metrics.firstRenderMs, 1)} ms`);
  say();

  // 50,000 GPUs: a few rounds suffice (each full render is hundreds of ms, prom-client's seconds).
  const metricsScale: MetricsScaleResult = await runMetricsScaleBench(templates, 50_000, 1, quick ? 2 : 5);
  for (const line of metricsScaleLines(metricsScale, table)) say(line);
  say();

  // What a GPU costs the collector's heap, and that expiry gives it back.
  const memory: FleetMemoryResult = runFleetMemoryBench(templates, quick ? 10_000 : 50_000);
  say(
    `(a3) Collector heap per GPU, ${fmtInt(memory.gpus)} GPUs filled through ingest and scraped once, vs the JSON of the same records`,
  );
  say(
    table([
      ["", "bytes per GPU", "whole fleet MiB"],
      ["FleetState (heap after GC)", fmtInt(memory.heapPerGpuBytes), fmt(memory.heapMiB, 1)],
      ["JSON.stringify of the records", fmtInt(memory.jsonPerGpuBytes), ""],
      ["ratio heap ÷ JSON", fmt(memory.ratio), ""],
      ["left after every GPU expired", fmtInt(memory.afterExpiryPerGpuBytes), ""],
    ]),
  );
  say();

  const agent: AgentBenchResult = runAgentBench({ ticks: 3_000, warmup: WARMUP, rounds: ROUNDS });
  say(
    `(b) Agent CPU per GPU-sample: ${fmtInt(agent.samplesPerRound)} samples a round (${agent.gpusPerTick} GPUs × ${fmtInt(agent.samplesPerRound / agent.gpusPerTick)} ticks, ${agent.fields.length} fields, ~${agent.meanLineChars} chars a line, ${fmtInt(agent.errorLinesPerRound)} error lines)`,
  );
  say(
    table([
      ["", "median CPU µs", "range µs", "target < 50 µs"],
      [
        "lines → parse → classify → aggregate, per sample",
        fmt(agent.fullUsPerSample.median),
        `[${range(agent.fullUsPerSample, (x) => fmt(x))}]`,
        agent.fullUsPerSample.median < TARGETS.agentCpuUsPerSampleBelow ? "met" : "NOT met",
      ],
      [
        "  of which parseQueryGpuLine alone, per line",
        fmt(agent.parseUsPerLine.median),
        `[${range(agent.parseUsPerLine, (x) => fmt(x))}]`,
        "",
      ],
      [
        'baseline line.split(", "), per line',
        fmt(agent.splitUsPerLine.median, 3),
        `[${range(agent.splitUsPerLine, (x) => fmt(x, 3))}]`,
        "",
      ],
      [
        "ratio whole path ÷ split",
        fmt(agent.ratioToSplit.median, 1),
        `[${range(agent.ratioToSplit, (x) => fmt(x, 1))}]`,
        "",
      ],
    ]),
  );
  const share = Object.entries(agent.stateShare)
    .map(([s, x]) => `${s} ${fmt(x * 100, 0)}%`)
    .join(", ");
  say(`  ${fmtInt(agent.windowsPerRound)} windows a round; GPU-seconds by state: ${share}`);
  say();

  const influx: InfluxWriteResult = await runInfluxWriteBench(templates, {
    hosts: 625,
    timesPerSlice: 2,
    slicesPerRound: quick ? 2 : 4,
    warmup: 1,
    rounds: quick ? 2 : 5,
  });
  if (influx.skipped) {
    say(`(c) InfluxDB writes: skipped — ${influx.reason}`);
  } else {
    say(
      `(c) Collector writes into InfluxDB ${influx.influxdVersion} (private influxd, loopback): ${fmtInt(influx.pointsPerRound)} points a round in slices of ${fmtInt(influx.pointsPerSlice)}, ${fmtInt(influx.batchSize)} lines a request, ${influx.inFlight} in flight`,
    );
    say(
      table([
        ["", "median points/s", "range points/s", "÷ bare POST (per slice)", "ratio range", "target ≥ 0.8"],
        [
          "InfluxWriter: encode windows, batch, POST, wait for 204",
          fmtInt(influx.writerPointsPerS.median),
          `[${range(influx.writerPointsPerS, fmtInt)}]`,
          fmt(influx.ratio.median),
          `[${range(influx.ratio, (x) => fmt(x))}]`,
          influx.ratio.median >= TARGETS.influxWriterToBarePostAtLeast ? "met" : "NOT met",
        ],
        [
          "baseline: bare POST of the same lines, built beforehand",
          fmtInt(influx.barePostPointsPerS.median),
          `[${range(influx.barePostPointsPerS, fmtInt)}]`,
          "1",
          "",
          "",
        ],
        [
          "node-influx writePoints of the same points",
          fmtInt(influx.nodeInfluxPointsPerS.median),
          `[${range(influx.nodeInfluxPointsPerS, fmtInt)}]`,
          fmt(influx.nodeInfluxRatio.median),
          `[${range(influx.nodeInfluxRatio, (x) => fmt(x))}]`,
          "",
        ],
      ]),
    );
    say();
  }

  const spool: SpoolAppendResult = await runSpoolAppendBench(templates, {
    agents: 200,
    burstsPerRound: 25,
    serialRecords: 500,
    warmup: WARMUP,
    rounds: ROUNDS,
  });
  say(
    `(e) Spool appends (SegmentLog: write + fdatasync, group commit) into ${spool.tmpDir}: ${fmtInt(spool.recordsPerRound)} records a round, ${spool.burstsPerRound} bursts of ${spool.agents} concurrent appends; a record = one batch of ${spool.linesPerRecord} lines (~${fmtInt(spool.meanLineBytes)} B a line, ${fmtInt(spool.bytesPerRecord)} B on disk)`,
  );
  say(
    table([
      [
        "",
        "records/round",
        "median records/s",
        "range records/s",
        "MiB/s",
        "fsyncs/round",
        "÷ bare (per round)",
        "ratio range",
        "target ≥ 0.33",
      ],
      [
        `SegmentLog.append, ${spool.agents} concurrent a burst`,
        fmtInt(spool.recordsPerRound),
        fmtInt(spool.groupRecordsPerS.median),
        `[${range(spool.groupRecordsPerS, fmtInt)}]`,
        fmt(spool.groupMiBPerS.median, 1),
        fmtInt(spool.groupSyncsPerRound.median),
        fmt(spool.ratio.median, 3),
        `[${range(spool.ratio, (x) => fmt(x, 3))}]`,
        spool.ratio.median >= TARGETS.spoolAppendToBareAtLeast ? "met" : "NOT met",
      ],
      [
        "SegmentLog.append one at a time",
        fmtInt(spool.serialRecordsPerRound),
        fmtInt(spool.serialRecordsPerS.median),
        `[${range(spool.serialRecordsPerS, fmtInt)}]`,
        fmt(spool.serialMiBPerS.median, 1),
        fmtInt(spool.serialSyncsPerRound.median),
        fmt(spool.serialRatio.median, 3),
        `[${range(spool.serialRatio, (x) => fmt(x, 3))}]`,
        "",
      ],
      [
        "baseline: bare writev + fdatasync a burst, same bytes",
        fmtInt(spool.recordsPerRound),
        fmtInt(spool.bareRecordsPerS.median),
        `[${range(spool.bareRecordsPerS, fmtInt)}]`,
        fmt(spool.bareMiBPerS.median, 1),
        fmtInt(spool.bareSyncsPerRound),
        "1",
        "",
        "",
      ],
    ]),
  );
  say();

  const agentProcess: AgentProcessBenchResult = await runAgentProcessBench(AGENT_PROCESS);
  for (const line of agentProcessLines(agentProcess, table)) say(line);
  say();

  let year: ReportYearResult | undefined;
  if (reportYear) {
    year = await runReportYearBench({
      ...parseReportYearArgs(process.argv.slice(2)),
      progress: (line) => process.stderr.write(`${line}\n`),
    });
    for (const line of reportYearLines(year)) say(line);
    writeReportYearJson(year);
    say("  summary also written to .bench/report-year.json");
    say();
  }

  const durationS = (performance.now() - started) / 1000;
  const file = join(dirname(fileURLToPath(import.meta.url)), "..", ".bench", "results.json");
  mkdirSync(dirname(file), { recursive: true });
  const summary = {
    schema: "trueidle-bench/1",
    finishedAt: new Date().toISOString(),
    durationS: Math.round(durationS * 10) / 10,
    environment: env,
    warmupRounds: WARMUP,
    measuredRounds: ROUNDS,
    targets: TARGETS,
    collector: {
      ingest: ingest.map((r) => ({ ...r, targetMet: r.ratio.median >= TARGETS.ingestToDecodeRatioAtLeast })),
      metricsRender: metrics,
      metricsScale,
      fleetMemory: memory,
    },
    agent: { ...agent, targetMet: agent.fullUsPerSample.median < TARGETS.agentCpuUsPerSampleBelow },
    influxWrite: influx.skipped
      ? influx
      : { ...influx, targetMet: influx.ratio.median >= TARGETS.influxWriterToBarePostAtLeast },
    spoolAppend: { ...spool, targetMet: spool.ratio.median >= TARGETS.spoolAppendToBareAtLeast },
    agentProcess,
    ...(year ? { reportYear: year } : {}),
    sink: sink.value,
  };
  // Six significant digits are more than the noise allows; the rest would only be noise.
  const tidy = (_key: string, v: unknown): unknown =>
    typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(6)) : v;
  writeFileSync(file, `${JSON.stringify(summary, tidy, 2)}\n`);
  say(`Finished in ${fmt(durationS, 1)} s; summary written to .bench/results.json.`);
  // Measuring the wrong path fails the run (see the README), never a time.
  if (year && !year.skipped && year.selfCheckProblems.length > 0) process.exitCode = 1;
  if (agentProcess.problems.length > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
