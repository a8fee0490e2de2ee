/** `trueidle report`: the capacity planner's report, read from the collector's InfluxDB history. */
import { accessSync, constants, statSync } from "node:fs";
import { rename, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { formatHelp, parseFlags, UsageError, type CommandSpec } from "./args.js";
import { errorMessage, TrueidleError } from "../common/errors.js";
import { PING_TIMEOUT_MS } from "../common/influx/client.js";
import { readInfluxCredentials } from "../common/influx/credentials.js";
import { buildReport, formatProgress, renderReport, type ReportFormat } from "../report/report.js";
import type { Measurement } from "../report/capacity.js";
import type { Progress } from "../report/influx-source.js";
import { REPORT_SETTINGS as R } from "../report/settings.js";
import { resolveRange } from "../report/time-range.js";
import { settingFlag } from "./setting-flags.js";

const TAG_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `--by site,model` → ["site", "model"]; every bad key named at once. */
export function parseBy(text: string): string[] {
  const keys = text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const problems: string[] = [];
  if (keys.length === 0) problems.push("needs at least one tag key, e.g. model or site,model");
  for (const k of keys) if (!TAG_KEY_RE.test(k)) problems.push(`"${k}" is not a tag key (letters, digits, _)`);
  const dup = keys.filter((k, i) => keys.indexOf(k) !== i);
  if (dup.length > 0) problems.push(`${[...new Set(dup)].join(", ")} given twice`);
  if (problems.length > 0) throw new Error(problems.join("; "));
  return keys;
}

export const reportSpec: CommandSpec = {
  name: "report",
  summary:
    "trueidle report — how much GPU capacity was really idle over a range, per group, from the InfluxDB history the collector writes.",
  usage:
    "trueidle report [--influx-url http://HOST:8086/DB] [--since 90d] [--until TIME] [--by site,model] [--format table|csv|json|html] [--out FILE]",
  flags: [
    settingFlag(R.influxUrl, {
      name: "influx-url",
      placeholder: "URL",
      help: "InfluxDB 1.x base URL; the path is the database. Credentials: TRUEIDLE_INFLUX_USERNAME / TRUEIDLE_INFLUX_PASSWORD or --influx-credentials-file.",
    }),
    {
      name: "influx-credentials-file",
      type: "string",
      placeholder: "FILE",
      help: "File whose first line is username:password, instead of TRUEIDLE_INFLUX_USERNAME / TRUEIDLE_INFLUX_PASSWORD (not both).",
    },
    settingFlag(R.since, {
      name: "since",
      placeholder: "TIME",
      help: "Start: a duration ago (90d, 36h) or an RFC 3339 time; rounded down to the hour.",
    }),
    {
      name: "until",
      type: "string",
      placeholder: "TIME",
      help: "End (exclusive): now, with the hour in progress marked partial; or a duration ago or an RFC 3339 time, rounded down to the hour [default: now].",
    },
    settingFlag(R.by, {
      name: "by",
      placeholder: "TAGS",
      help:
        "Comma-separated tag keys to group by: host, model, uuid, any configured label such as site or pool, or owner fields " +
        "(namespace, pod, container, job, user: GPU time by who held it, mixed with any other key).",
      check: (v) => void parseBy(v[v.length - 1]!),
    }),
    settingFlag(R.format, { name: "format", placeholder: "FORMAT", help: "Output format." }),
    { name: "out", type: "string", placeholder: "FILE", help: "Write the report to FILE instead of stdout." },
    settingFlag(R.pricePerGpuHour, {
      name: "price-per-gpu-hour",
      placeholder: "N",
      help: "Adds idle cost = real-idle GPU-hours x N.",
    }),
    settingFlag(R.measurement, {
      name: "measurement",
      placeholder: "NAME",
      help:
        "auto: fleet_hour where it has the --by keys and reaches back to --since; else gpu_window under 2 days, gpu_hour from 2 days. " +
        "The last two hours always come from gpu_window, as the roll-ups may not hold them yet.",
    }),
    settingFlag(R.queryTimeoutMs, {
      name: "timeout",
      placeholder: "DURATION",
      // Whole seconds, as the /ping bound below.
      formatDefault: (ms) => `${ms / 1000}s`,
      help: `Give up when InfluxDB has not answered one query within this long; a first /ping waits at most ${PING_TIMEOUT_MS / 1000}s.`,
    }),
    {
      name: "progress",
      type: "boolean",
      help: "Progress on stderr (default: only when stderr is a terminal); --progress=false hides it.",
    },
  ],
  notes: [
    "The report covers UTC hours [since, until); with --until now (the default) the hour in progress is in it up to now, marked partial in every format. --format html writes one self-contained file with charts;",
    "it needs --out FILE, or stdout redirected to a file or pipe. Progress never goes to stdout.",
  ].join("\n"),
  examples: [
    "trueidle report --influx-url http://influx:8086/trueidle --since 90d --by site,model",
    "trueidle report --since 2024-04-01T00:00:00Z --until 2024-07-01T00:00:00Z --by pool --format csv --out q2.csv",
    "trueidle report --since 30d --by site --format html --out report.html --price-per-gpu-hour 2.10",
    "trueidle report --since 7d --by namespace            # idle GPU-hours held per Kubernetes namespace",
  ],
};

export async function reportCommand(argv: string[]): Promise<number> {
  const v = parseFlags(reportSpec, argv);
  const format = v["format"] as ReportFormat;
  const out = v["out"] as string | undefined;
  if (format === "html" && out === undefined && process.stdout.isTTY) {
    throw new UsageError("--format html writes a whole HTML file: give --out FILE, or redirect stdout (> report.html)");
  }
  let range;
  try {
    range = resolveRange(v["since"] as string, v["until"] as string | undefined, Date.now());
  } catch (err) {
    if (err instanceof TrueidleError && err.code === "bad_input") throw new UsageError(err.message);
    throw err;
  }
  // Checked before any query: a report that takes minutes must not fail at the end for want of a folder.
  if (out !== undefined) checkOutPath(out);
  const showProgress = (v["progress"] as boolean | undefined) ?? process.stderr.isTTY === true;
  const tty = process.stderr.isTTY === true;
  let progressShown = false;
  const onProgress = showProgress
    ? (p: Progress): void => {
        progressShown = true;
        process.stderr.write(tty ? `\r${formatProgress(p)}\x1b[K` : `${formatProgress(p)}\n`);
      }
    : undefined;
  const credentials = readInfluxCredentials({ file: v["influx-credentials-file"] as string | undefined });
  if (credentials?.warning)
    process.stderr.write(`report: the InfluxDB credentials file is too open: ${credentials.warning}.\n`);
  let report;
  try {
    report = await buildReport({
      influxUrl: v["influx-url"] as string,
      credentials,
      range,
      by: parseBy(v["by"] as string),
      measurement: v["measurement"] as Measurement | "auto",
      pricePerGpuHour: v["price-per-gpu-hour"] as number | undefined,
      queryTimeoutMs: v["timeout"] as number,
      onProgress,
    });
  } finally {
    if (progressShown && tty) process.stderr.write("\n");
  }
  const text = await renderReport(report, format);
  if (out === undefined) {
    process.stdout.write(text);
  } else {
    // Written whole or not at all: a reader never sees half a report.
    const tmp = path.join(path.dirname(out), `.${path.basename(out)}.${process.pid}.tmp`);
    try {
      await writeFile(tmp, text);
      await rename(tmp, out);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {});
      throw new TrueidleError(
        "bad_config",
        `cannot write --out ${out}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`,
        { cause: err },
      );
    }
    process.stderr.write(
      `report: wrote ${out} (${Buffer.byteLength(text)} bytes, ${report.groups.length} groups, read ${report.measurement}).\n`,
    );
  }
  return 0;
}

/** `--out FILE` can be written: its folder exists and takes new files, and FILE is not a folder. */
export function checkOutPath(out: string): void {
  const dir = path.dirname(path.resolve(out));
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      code === "ENOENT"
        ? `--out ${out}: the folder ${dir} does not exist; create it first or write elsewhere`
        : `--out ${out}: cannot use the folder ${dir} (${errorMessage(err)})`,
    );
  }
  if (!isDir) throw new UsageError(`--out ${out}: ${dir} is not a folder`);
  try {
    if (statSync(out).isDirectory())
      throw new UsageError(`--out ${out} is a folder; give a file name, e.g. ${path.join(out, "report.csv")}`);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    // No such file yet: the report creates it.
  }
  try {
    accessSync(dir, constants.W_OK);
  } catch (err) {
    throw new UsageError(
      `--out ${out}: cannot create files in ${dir} (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`,
    );
  }
}

export const reportHelp = (): string => formatHelp(reportSpec);
