/**
 * The demo's InfluxDB: a private `influxd` (temp dir, loopback, free port) when one is
 * installed, an existing server given by `--influx-url`, or none (`--no-influx`, or no
 * influxd installed — then the demo says how to get it and runs without history).
 */
import { errorMessage, TrueidleError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { readInfluxCredentials } from "../common/influx/credentials.js";
import { describeTarget, influxTarget, type InfluxTarget } from "../common/influx/target.js";
import { parseInfluxUrl } from "../common/influx/url.js";
import {
  findInfluxd,
  INFLUXD_MISSING_HELP,
  serveAgainCommand,
  startPrivateInfluxd,
  type PrivateInfluxd,
} from "./private-influxd.js";
import { ensureHistorySchema } from "./history-sink.js";
import { iso, type TimeRange } from "../report/time-range.js";

/** How often the private server checks its continuous queries. */
const CQ_RUN_INTERVAL = "10s";

export interface DemoHistoryOptions {
  /** `--no-influx`: no history at all. */
  noInflux: boolean;
  /** `--influx-url`: an existing server instead of a private one. */
  influxUrl?: string | undefined;
  credentialsFile?: string | undefined;
  /** `--keep-data`: keep the private server's temp dir after the demo. */
  keepData: boolean;
  out: (line: string) => void;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  /** Finds the influxd executable (default: the installed one); injectable for tests. */
  findInfluxd?: () => string | undefined;
  /** The words that run trueidle from the user's shell (cli/invocation.ts), for printed commands. */
  trueidle: string;
}

export interface DemoHistory {
  target: InfluxTarget;
  /** What `--influx-url` takes to reach it, e.g. http://127.0.0.1:41234/trueidle. */
  influxUrl: string;
  /** The private server's temp dir; undefined for an existing server. */
  dir?: string | undefined;
  /**
   * Stops a private server (its data removed unless kept) and resolves once it has exited;
   * nothing to stop for an existing server. Safe twice. With kept data it prints how to serve
   * the data again and report on `reportRange` from it.
   */
  stop(reportRange?: TimeRange): Promise<void>;
}

/** Why there is no history, for a caller that needs one (`--backfill`). */
export type NoHistory = { reason: "disabled" | "not_installed" };

/** Starts the demo's history store (a private server, or none to start) and prints where it is and how to use it. */
export async function startDemoHistory(opts: DemoHistoryOptions): Promise<DemoHistory | NoHistory> {
  if (opts.noInflux) {
    opts.out("History: off (--no-influx).");
    return { reason: "disabled" };
  }
  if (opts.influxUrl !== undefined) {
    const parsed = parseInfluxUrl(opts.influxUrl);
    const cred = readInfluxCredentials({ file: opts.credentialsFile, env: opts.env ?? process.env });
    if (cred?.warning) opts.logger.warn(`InfluxDB credentials file: ${cred.warning}.`);
    const target = influxTarget(parsed, cred);
    await ensureHistorySchema(target, {});
    opts.out(`History: InfluxDB ${describeTarget(target)}.`);
    return { target, influxUrl: `${target.baseUrl}/${target.database}`, stop: async () => {} };
  }
  if (!(opts.findInfluxd ?? findInfluxd)()) {
    opts.out(
      `History: off. ${INFLUXD_MISSING_HELP} Or point the demo at a server with --influx-url http://HOST:8086/trueidle.`,
    );
    return { reason: "not_installed" };
  }
  let server: PrivateInfluxd;
  try {
    server = await startPrivateInfluxd({
      keepData: opts.keepData,
      cqRunInterval: CQ_RUN_INTERVAL,
      ownProcessGroup: true,
    });
  } catch (err) {
    throw new TrueidleError("unavailable", `the demo's private InfluxDB did not start: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const target: InfluxTarget = { baseUrl: server.url, database: "trueidle" };
  try {
    await ensureHistorySchema(target, {});
  } catch (err) {
    await server.stop();
    throw err;
  }
  opts.out(
    `History: private InfluxDB ${server.url}, database trueidle; data in ${server.dir}, ` +
      (opts.keepData ? "kept after the demo (--keep-data)." : "removed when the demo ends (--keep-data keeps it)."),
  );
  let stopped = false;
  return {
    target,
    influxUrl: `${server.url}/trueidle`,
    dir: server.dir,
    stop: async (reportRange) => {
      if (stopped) return;
      stopped = true;
      await server.stop();
      if (!opts.keepData) return;
      const again = await serveAgainCommand(server.dir, CQ_RUN_INTERVAL);
      opts.out(`InfluxDB data kept in ${server.dir}. Serve it again (on ${again.url}) with:`);
      opts.out(`  ${again.command}`);
      if (reportRange) {
        opts.out("and, while it runs, report on it with:");
        opts.out(`  ${reportCommand(opts.trueidle, `${again.url}/trueidle`, reportRange)}`);
      }
    },
  };
}

export function isHistory(h: DemoHistory | NoHistory): h is DemoHistory {
  return "target" in h;
}

/**
 * How to look at the history over `range` (whole UTC hours; its end may lie ahead, for a
 * demo still writing): a raw query of `measurement` and the report.
 */
export function historyHowTo(
  h: Pick<DemoHistory, "target" | "influxUrl">,
  trueidle: string,
  range: TimeRange,
  measurement: "gpu_window" | "gpu_hour",
): string[] {
  const from = measurement === "gpu_hour" ? "gpu_hour.gpu_hour" : "gpu_window";
  const q =
    `SELECT sum(observed_s) AS observed_s, sum(busy_phantom_s) AS busy_phantom_s FROM ${from} ` +
    `WHERE time >= '${iso(range.startMs)}' AND time < '${iso(range.endMs)}' GROUP BY site`;
  return [
    `  Query it:  curl -sG ${h.target.baseUrl}/query --data-urlencode db=${h.target.database} --data-urlencode "q=${q}"`,
    `  Report:    ${reportCommand(trueidle, h.influxUrl, range)}`,
  ];
}

/** The report over `range` (the report covers whole UTC hours [since, until)). */
export function reportCommand(trueidle: string, influxUrl: string, range: TimeRange): string {
  return `${trueidle} report --influx-url ${influxUrl} --since ${iso(range.startMs)} --until ${iso(range.endMs)} --by site,model`;
}
