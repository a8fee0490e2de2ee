/** `trueidle demo`: the demo fleet, end to end, with a live summary, and history in InfluxDB. */
import { formatHelp, parseFlags, UsageError, type CommandSpec } from "./args.js";
import { checkWindow, LOG_FLAGS, loggerFrom, THRESHOLD_FLAGS, thresholdsFrom } from "./common-flags.js";
import { DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT } from "../common/grpc-service.js";
import { formatDuration } from "../common/duration.js";
import { runDemo } from "../demo/demo.js";
import {
  BACKFILL_INTERVAL_MS,
  BACKFILL_WINDOW_MS,
  backfillSummary,
  MAX_BACKFILL_MS,
  runBackfill,
  type BackfillResult,
} from "../demo/backfill.js";
import { FleetHistoryModel, HISTORY_FLEET } from "../demo/fleet-history.js";
import { historyHowTo, isHistory, startDemoHistory } from "../demo/demo-history.js";
import { floorHour, HOUR_MS, type TimeRange } from "../report/time-range.js";
import { trueidleCommand } from "./invocation.js";
import { AGENT_SETTINGS } from "../agent/settings.js";
import { DEMO_SETTINGS } from "../demo/settings.js";
import { settingFlag } from "./setting-flags.js";

/** Signals that end the demo cleanly; a second one ends it at once. */
const STOP_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

export const demoSpec: CommandSpec = {
  name: "demo",
  summary:
    "trueidle demo — a collector and three simulated 8-GPU hosts streaming over real gRPC, with a live fleet summary every window; " +
    "history in a private InfluxDB, and --backfill to fill it with months of simulated fleet history.",
  usage: "trueidle demo [flags]",
  flags: [
    {
      name: "duration",
      type: "duration",
      min: 1000,
      placeholder: "DURATION",
      help: "Stop after this long (default: run until Ctrl-C).",
    },
    {
      name: "grpc-listen",
      type: "string",
      default: `127.0.0.1:${DEFAULT_GRPC_PORT}`,
      placeholder: "HOST:PORT",
      help: "Collector gRPC address.",
    },
    {
      name: "http-listen",
      type: "string",
      default: `127.0.0.1:${DEFAULT_HTTP_PORT}`,
      placeholder: "HOST:PORT",
      help: "Collector /metrics address.",
    },
    settingFlag(AGENT_SETTINGS.intervalMs, { name: "interval", help: "Sampling interval." }),
    settingFlag(AGENT_SETTINGS.windowMs, { name: "window", help: "Window length." }),
    { name: "no-influx", type: "boolean", help: "Run without InfluxDB history." },
    {
      name: "influx-url",
      type: "string",
      placeholder: "URL",
      help: "Use this InfluxDB 1.x (http://HOST:8086/DB) instead of a private one. Credentials: TRUEIDLE_INFLUX_USERNAME / TRUEIDLE_INFLUX_PASSWORD or --influx-credentials-file.",
    },
    {
      name: "influx-credentials-file",
      type: "string",
      placeholder: "FILE",
      help: "File whose first line is username:password, for --influx-url.",
    },
    {
      name: "keep-data",
      type: "boolean",
      help: "Keep the private InfluxDB's data after the demo, and print the commands that serve it again and report on it.",
    },
    {
      name: "backfill",
      type: "duration",
      min: BACKFILL_WINDOW_MS,
      max: MAX_BACKFILL_MS,
      placeholder: "DURATION",
      help: `First write this much simulated history of a 64-GPU fleet (up to ${formatDuration(MAX_BACKFILL_MS)}), ending now, into InfluxDB.`,
    },
    {
      name: "backfill-only",
      type: "boolean",
      help: "Exit after the backfill instead of going on with the live fleet (needs --influx-url or --keep-data).",
    },
    {
      name: "backfill-end",
      type: "string",
      placeholder: "TIME",
      help: "End the backfilled range here (RFC 3339 or Unix ms) instead of now; the same range and seed write the same points.",
    },
    settingFlag(DEMO_SETTINGS.seed, { name: "seed", help: "Seed of the simulated history." }),
    ...THRESHOLD_FLAGS,
    ...LOG_FLAGS.map((f) => (f.name === "log-level" ? { ...f, default: "warn" } : f)),
  ],
  notes: [
    "While it runs, scrape http://127.0.0.1:9745/metrics (or point Prometheus at it).",
    "",
    "History: with influxd installed (Debian/Ubuntu: apt-get install influxdb) the demo starts a private InfluxDB on",
    "loopback and prints how to query it and run `trueidle report` against it while the demo runs.",
    "",
    `--backfill samples the simulated fleet every ${formatDuration(BACKFILL_INTERVAL_MS)} into ${formatDuration(BACKFILL_WINDOW_MS)} windows with the agent's own`,
    "aggregator, writes them to gpu_window and rolls them up into gpu_hour. The fleet: 8 hosts x 8 GPUs in three",
    "sites; busy in office hours, quiet at night and at weekends; ap-south mostly idle; the L40S inference servers",
    "phantom-busy. Then that same fleet goes on live, its windows written by the collector, until Ctrl-C or",
    "--duration (the private InfluxDB stays up meanwhile for `trueidle report`); --backfill-only exits instead.",
  ].join("\n"),
  examples: [
    "trueidle demo",
    "trueidle demo --duration 60s",
    "trueidle demo --backfill 30d",
    "trueidle demo --backfill 90d --influx-url http://localhost:8086/trueidle --backfill-only",
    "npm run demo -- --window 5s --no-influx",
  ],
};

/** `--backfill-end`: RFC 3339 or Unix milliseconds. */
function parseEnd(text: string): number {
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(ms))
    throw new UsageError(`--backfill-end "${text}" is neither an RFC 3339 time nor Unix milliseconds`);
  return ms;
}

/**
 * The end of the range the printed report command covers: the end of the current UTC hour,
 * or of the next one when this one is nearly over, so that the command still finds the
 * first windows, which arrive a little after they are printed.
 */
function reportEnd(nowMs: number): number {
  return floorHour(nowMs + 15 * 60_000) + HOUR_MS;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const v = parseFlags(demoSpec, argv);
  const intervalMs = v["interval"] as number;
  const windowMs = v["window"] as number;
  checkWindow(intervalMs, windowMs);
  const backfillMs = v["backfill"] as number | undefined;
  const backfillOnly = v["backfill-only"] === true;
  const noInflux = v["no-influx"] === true;
  const keepData = v["keep-data"] === true;
  const influxUrl = v["influx-url"] as string | undefined;
  const endText = v["backfill-end"] as string | undefined;
  const problems: string[] = [];
  if (noInflux && influxUrl !== undefined) problems.push("--no-influx and --influx-url contradict each other");
  if (noInflux && backfillMs !== undefined)
    problems.push("--backfill writes to InfluxDB; it cannot be used with --no-influx");
  if (backfillOnly && backfillMs === undefined) problems.push("--backfill-only needs --backfill DURATION");
  if (backfillOnly && influxUrl === undefined && !keepData) {
    problems.push(
      "--backfill-only with the private InfluxDB would delete the history on exit; add --keep-data, or give --influx-url",
    );
  }
  if (endText !== undefined && backfillMs === undefined) problems.push("--backfill-end needs --backfill DURATION");
  if (keepData && (noInflux || influxUrl !== undefined))
    problems.push("--keep-data applies to the private InfluxDB only");
  if (v["influx-credentials-file"] !== undefined && influxUrl === undefined)
    problems.push("--influx-credentials-file needs --influx-url");
  const endMs = endText === undefined ? undefined : parseEnd(endText);
  if (endMs !== undefined && endMs > Date.now()) problems.push(`--backfill-end ${endText} is in the future`);
  if (problems.length > 0) throw new UsageError(problems.join("\n"));

  const logger = loggerFrom(v, { component: "demo" });
  const thresholds = thresholdsFrom(v);
  const ac = new AbortController();
  // However the demo ends (Ctrl-C, a closed terminal, kill, stdout closed by `| head`, an
  // error), the agents and the collector stop first, then the private InfluxDB they write
  // to, and its temp data goes (demo-history.ts, private-influxd.ts).
  let stdoutOpen = true;
  const out = (line: string): void => {
    if (stdoutOpen) process.stdout.write(`${line}\n`);
  };
  const onStdoutError = (): void => {
    stdoutOpen = false;
    ac.abort();
  };
  // Logs that cannot be written are dropped: they must not end the demo before its cleanup.
  const onStderrError = (): void => {};
  const onSignal = (): void => {
    if (ac.signal.aborted) process.exit(130);
    out("Stopping (Ctrl-C again ends at once).");
    ac.abort();
  };
  process.stdout.on("error", onStdoutError);
  process.stderr.on("error", onStderrError);
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  const trueidle = trueidleCommand();

  let history: Awaited<ReturnType<typeof startDemoHistory>> | undefined;
  /** What the printed report command covers: whole UTC hours, to the end of the current one. */
  let reportRange: TimeRange | undefined;
  try {
    history = await startDemoHistory({
      noInflux,
      influxUrl,
      keepData,
      out,
      logger,
      trueidle,
      credentialsFile: v["influx-credentials-file"] as string | undefined,
    });
    const seed = v["seed"] as number;
    let backfilled: BackfillResult | undefined;
    if (backfillMs !== undefined) {
      if (!isHistory(history)) {
        // Said above why; a backfill has nowhere to go.
        process.stderr.write(
          "trueidle demo: --backfill needs InfluxDB: install influxd (apt-get install influxdb) or give --influx-url.\n",
        );
        return 1;
      }
      try {
        backfilled = await runBackfill({
          target: history.target,
          durationMs: backfillMs,
          endMs,
          seed,
          thresholds,
          logger,
          progress: (line) => void process.stderr.write(`${line}\n`),
          signal: ac.signal,
        });
      } catch (err) {
        if (ac.signal.aborted) {
          out("Backfill stopped (Ctrl-C); what was written stays in InfluxDB.");
          return 130;
        }
        throw err;
      }
      out(backfillSummary(backfilled));
      reportRange = {
        startMs: floorHour(backfilled.fromMs),
        endMs: backfillOnly ? floorHour(backfilled.toMs - 1) + HOUR_MS : reportEnd(Date.now()),
      };
      out("See it:");
      for (const line of historyHowTo(history, trueidle, reportRange, "gpu_hour")) out(line);
      if (backfillOnly) return 0;
      out("");
    } else if (isHistory(history)) {
      const now = Date.now();
      reportRange = { startMs: floorHour(now), endMs: reportEnd(now) };
      for (const line of historyHowTo(history, trueidle, reportRange, "gpu_window")) out(line);
    }
    if (ac.signal.aborted) return 0;
    await runDemo({
      grpcListen: v["grpc-listen"] as string,
      httpListen: v["http-listen"] as string,
      intervalMs,
      windowMs,
      durationMs: v["duration"] as number | undefined,
      thresholds,
      logger,
      out,
      signal: ac.signal,
      influx: isHistory(history)
        ? {
            target: history.target,
            rawRetentionMs: backfilled?.rawRetentionMs,
            hourRetentionMs: backfilled?.hourRetentionMs,
          }
        : undefined,
      // After a backfill the same fleet goes on live, so the history runs on into the present.
      historyFleet: backfilled ? new FleetHistoryModel(HISTORY_FLEET, seed) : undefined,
    });
    if (reportRange) reportRange = { ...reportRange, endMs: reportEnd(Date.now()) };
    return 0;
  } finally {
    if (history !== undefined && isHistory(history)) await history.stop(reportRange);
    for (const sig of STOP_SIGNALS) process.removeListener(sig, onSignal);
    process.stdout.removeListener("error", onStdoutError);
    process.stderr.removeListener("error", onStderrError);
  }
}

export const demoHelp = (): string => formatHelp(demoSpec);
