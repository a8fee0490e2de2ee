/**
 * `trueidle demo` as a user runs it: the real binary as a subprocess, a collector and three
 * simulated 8-GPU hosts over real gRPC, on free ports with 2 s windows.
 *
 * What the demo promises and these tests check from its printed summary:
 * 24 GPUs; every one of the five states shows up; one GPU gets lost and comes back;
 * real idle is above reported idle in every row; `--duration` and Ctrl-C both end it
 * cleanly (exit 0) with the "Whole run" line. While it runs, /metrics carries the metric
 * families of DESIGN.md, and the collector writes every window to the demo's private
 * InfluxDB, whose temp dir goes when the demo ends; `--no-influx` runs without it.
 *
 * Timing: gpu-a01 GPU 7 repeats active 10 s, lost 10 s, free 10 s, aligned to the Unix
 * epoch. From any start instant, 46 s of rows hold a row without the loss, then one with
 * it, then one after recovery (the worst start, just inside the lost phase, needs about
 * 43 s: the rest of that loss, a whole cycle, then the next loss).
 */
import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { describe, it } from "vitest";
import { influxQuery, rows as influxRows } from "./helpers/influxdb.js";
import { freePort } from "./helpers/ports.js";
import { REPO_ROOT, startTrueidle, type StartOptions, type TrueidleProcess } from "./helpers/trueidle-process.js";

const GPUS = 24;
const STATES = ["active", "busy_phantom", "held_idle", "free_idle", "unavailable"] as const;
type State = (typeof STATES)[number];

/** Metric families DESIGN.md names; each must be declared with `# TYPE` on /metrics. */
const FAMILIES = [
  "trueidle_gpu_info",
  "trueidle_gpu_up",
  "trueidle_gpu_observed_seconds_total",
  "trueidle_gpu_state_seconds_total",
  "trueidle_gpu_reported_idle_seconds_total",
  "trueidle_gpu_reported_busy_seconds_total",
  "trueidle_gpu_real_busy_seconds_total",
  "trueidle_gpu_state",
  "trueidle_gpu_idle_streak_seconds",
  "trueidle_gpu_real_utilization_ratio",
  "trueidle_gpu_reported_utilization_ratio",
  "trueidle_gpu_processes",
  "trueidle_gpu_power_watts",
  "trueidle_gpu_power_floor_watts",
  "trueidle_gpu_memory_used_bytes",
  "trueidle_fleet_gpus",
  "trueidle_fleet_state_seconds_total",
  "trueidle_agents_connected",
  "trueidle_windows_received_total",
  "trueidle_windows_rejected_total",
  "trueidle_influx_points_written_total",
  "trueidle_influx_write_errors_total",
  "trueidle_spool_bytes",
];

const HEADER =
  /^time\s+GPUs\s+up\s+real idle\s+reported idle\s+hidden idle\s+active\s+busy_phantom\s+held_idle\s+free_idle\s+unavailable$/m;
const ROW = /^(\d\d:\d\d:\d\d)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/;
/** A summary row once the whole fleet has reported. */
const FULL_ROW = new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\s+${GPUS}\\s`, "m");
const HISTORY =
  /^History: private InfluxDB (http:\/\/127\.0\.0\.1:\d+), database trueidle; data in (\S+), removed when the demo ends \(--keep-data keeps it\)\.$/m;
const WHOLE_RUN = /^Whole run: (\d+\.\d)% really idle, (\d+\.\d)% reported idle, over (\d+) GPU-seconds observed\.$/m;

interface Row {
  line: string;
  gpus: number;
  up: number;
  /** Percentages; undefined where the row prints "-" (no window arrived since the last row). */
  realIdle: number | undefined;
  reportedIdle: number | undefined;
  hiddenIdle: number | undefined;
  byState: Record<State, number>;
}

function percent(cell: string): number | undefined {
  if (cell === "-") return undefined;
  const m = /^[+-]?\d+\.\d%$/.exec(cell);
  if (!m) throw new Error(`not a percentage: ${cell}`);
  return Number.parseFloat(cell);
}

function parseRows(output: string): Row[] {
  const rows: Row[] = [];
  for (const line of output.split("\n")) {
    const m = ROW.exec(line);
    if (!m) continue;
    const n = (i: number): number => Number(m[i]);
    rows.push({
      line,
      gpus: n(2),
      up: n(3),
      realIdle: percent(m[4]!),
      reportedIdle: percent(m[5]!),
      hiddenIdle: percent(m[6]!),
      byState: { active: n(7), busy_phantom: n(8), held_idle: n(9), free_idle: n(10), unavailable: n(11) },
    });
  }
  return rows;
}

interface Sample {
  name: string;
  labels: string;
  value: number;
}

/** Samples of Prometheus text exposition (comments skipped). */
function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    out.push({ name: m[1]!, labels: m[2] ?? "", value: Number(m[3]) });
  }
  return out;
}

function label(s: Sample, key: string): string | undefined {
  return new RegExp(`[{,]${key}="([^"]*)"`).exec(s.labels)?.[1];
}

/** Started as from a shell in the checkout, not through npm (which changes the printed commands). */
const NOT_THROUGH_NPM: NodeJS.ProcessEnv = { npm_command: undefined, npm_package_name: undefined, INIT_CWD: undefined };

async function startDemo(
  extra: string[],
  options: StartOptions = {},
): Promise<{ proc: TrueidleProcess; httpPort: number }> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const proc = startTrueidle(
    [
      "demo",
      "--window",
      "2s",
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      ...extra,
    ],
    NOT_THROUGH_NPM,
    options,
  );
  return { proc, httpPort };
}

/** Runs a printed command line as a user would paste it, from the checkout. */
function runShell(command: string, timeoutMs = 60_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn("sh", ["-c", command], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...NOT_THROUGH_NPM },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (b: Buffer) => (output += b.toString("utf8")));
    child.stderr.on("data", (b: Buffer) => (output += b.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Whether something answers HTTP at `url` now. */
async function answers(url: string): Promise<boolean> {
  try {
    await fetch(url, { signal: AbortSignal.timeout(5000) });
    return true;
  } catch {
    return false;
  }
}

const REPORT_LINE =
  /^ {2}Report: {4}(node bin\/trueidle\.js report --influx-url \S+ --since (\S+) --until (\S+) --by site,model)$/m;

describe.concurrent("trueidle demo", () => {
  it("shows all five states, a GPU lost and back, real idle above reported, /metrics, and stops after --duration", {
    timeout: 90_000,
  }, async ({ expect }) => {
    const { proc, httpPort } = await startDemo(["--duration", "46s"]);
    try {
      await proc.waitForOutput(FULL_ROW, 30_000);
      // History: a private InfluxDB the collector writes every window to.
      const history = HISTORY.exec(proc.output());
      expect(history, proc.output()).not.toBeNull();
      const [, influxUrl, influxDir] = history!;
      expect(existsSync(influxDir!)).toBe(true);
      // The report command is printed as it runs from where the demo was started (the
      // checkout, without npm), over whole hours that hold the demo's windows.
      const report = REPORT_LINE.exec(proc.output());
      expect(report, proc.output()).not.toBeNull();
      expect(report![1]).toContain(`--influx-url ${influxUrl}/trueidle `);
      let hosts: unknown[] = [];
      for (let i = 0; i < 100 && hosts.length < 3; i++) {
        hosts = influxRows(
          await influxQuery(influxUrl!, "SHOW TAG VALUES FROM gpu_window WITH KEY = host", "trueidle"),
        ).map((r) => r["value"]);
        if (hosts.length < 3) await new Promise((r) => setTimeout(r, 200));
      }
      expect(hosts).toEqual(["gpu-a01", "gpu-b01", "gpu-c01"]);
      const reported = await runShell(report![1]!);
      expect(reported.code, reported.output).toBe(0);
      for (const site of ["eu-west", "us-east"]) expect(reported.output).toContain(site);
      const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
      expect(res.status).toBe(200);
      const text = await res.text();
      for (const f of FAMILIES) expect(text, `family ${f}`).toMatch(new RegExp(`^# TYPE ${f} (gauge|counter)$`, "m"));
      expect(text).toMatch(/^trueidle_agents_connected 3$/m);
      const samples = parseExposition(text);

      const info = samples.filter((s) => s.name === "trueidle_gpu_info");
      expect(info).toHaveLength(GPUS);
      expect(new Set(info.map((s) => label(s, "host")))).toEqual(new Set(["gpu-a01", "gpu-b01", "gpu-c01"]));
      for (const s of info) expect(label(s, "site"), s.labels).toMatch(/^(eu-west|us-east)$/);

      // Every GPU is in exactly one current state.
      const current = samples.filter((s) => s.name === "trueidle_gpu_state" && s.value === 1);
      expect(current).toHaveLength(GPUS);
      expect(new Set(current.map((s) => label(s, "uuid"))).size).toBe(GPUS);
      for (const s of current) expect(STATES).toContain(label(s, "state"));
      const fleet = samples.filter((s) => s.name === "trueidle_fleet_gpus");
      expect(fleet.reduce((a, s) => a + s.value, 0)).toBe(GPUS);

      const code = await proc.exited;
      const output = proc.output();
      expect(code, output).toBe(0);
      expect(output).toContain("3 simulated hosts, 24 GPUs, window 2s.");
      expect(output).toContain("Running for 46s (Ctrl-C stops sooner).");
      expect(output).toMatch(HEADER);

      const rows = parseRows(output);
      expect(rows.length, output).toBeGreaterThan(0);
      for (const r of rows) {
        expect(r.gpus, r.line).toBe(GPUS);
        // The lost GPU's agent keeps sending windows: unavailable comes from its readings, not from silence.
        expect(r.up, r.line).toBe(GPUS);
        expect(
          STATES.reduce((a, s) => a + r.byState[s], 0),
          r.line,
        ).toBe(GPUS);
      }
      for (const s of STATES)
        expect(
          rows.some((r) => r.byState[s] > 0),
          `a row with ${s} > 0:\n${output}`,
        ).toBe(true);

      // The lost GPU: a row without the loss, a later row with it, a later row after recovery.
      const u = rows.map((r) => r.byState.unavailable);
      const rise = u.findIndex((x, i) => i > 0 && x > Math.min(...u.slice(0, i)));
      const fall = rise < 0 ? -1 : u.findIndex((x, i) => i > rise && x < u[rise]!);
      expect(rise, `unavailable rises:\n${output}`).toBeGreaterThan(0);
      expect(fall, `unavailable falls back after rising:\n${output}`).toBeGreaterThan(rise);

      // Busy-phantom and persistence-off GPUs are idle that utilization calls busy: real idle > reported idle.
      const measured = rows.filter((r) => r.realIdle !== undefined);
      expect(measured.length, output).toBeGreaterThan(0);
      for (const r of measured) {
        expect(r.realIdle!, r.line).toBeGreaterThan(r.reportedIdle!);
        expect(r.hiddenIdle!, r.line).toBeCloseTo(r.realIdle! - r.reportedIdle!, 0);
      }

      const whole = WHOLE_RUN.exec(output);
      expect(whole, output).not.toBeNull();
      expect(Number(whole![1])).toBeGreaterThan(Number(whole![2]));
      expect(Number(whole![3])).toBeGreaterThan(0);
      expect(output.indexOf("Whole run:")).toBeGreaterThan(output.lastIndexOf(rows.at(-1)!.line));
      // The private InfluxDB's temp dir goes with the demo.
      expect(existsSync(HISTORY.exec(output)![2]!)).toBe(false);
    } finally {
      await proc.stop("SIGKILL");
    }
  });

  it("stops cleanly on Ctrl-C (SIGINT) with the whole-run line", { timeout: 60_000 }, async ({ expect }) => {
    const { proc } = await startDemo(["--no-influx"]);
    try {
      await proc.waitForOutput(/^History: off \(--no-influx\)\.$/m, 30_000);
      await proc.waitForOutput(/^Running until Ctrl-C\.$/m, 30_000);
      await proc.waitForOutput(FULL_ROW, 30_000);
      const code = await proc.stop("SIGINT", 20_000);
      const output = proc.output();
      expect(code, output).toBe(0);
      const whole = WHOLE_RUN.exec(output);
      expect(whole, output).not.toBeNull();
      expect(Number(whole![3]), output).toBeGreaterThan(0);
      // A clean stop logs no error (the demo logs at warn and above).
      expect(output).not.toContain(`"level":"error"`);
    } finally {
      await proc.stop("SIGKILL");
    }
  });
});

/** The private InfluxDB the demo printed: its URL and temp dir. */
function privateHistory(output: string): { url: string; dir: string } {
  const m = HISTORY.exec(output);
  if (!m) throw new Error(`no private InfluxDB line in:\n${output}`);
  return { url: m[1]!, dir: m[2]! };
}

/** Log lines at warn or error printed after `from`. */
function warningsAfter(output: string, from: number): string[] {
  return output
    .slice(from)
    .split("\n")
    .filter((l) => /"level":"(warn|error)"/.test(l));
}

/**
 * However the demo ends, it stops its agents and collector before its private InfluxDB
 * (nothing is lost or complained about) and removes the InfluxDB's temp data. The demo
 * runs as from a terminal, leading a process group of its own, and the terminal's signals
 * go to the whole group, as Ctrl-C and a closed terminal send them.
 */
describe.concurrent("trueidle demo stops cleanly", () => {
  it("on Ctrl-C in a terminal: influxd outlives the collector, no warning or lost window, the temp data goes", {
    timeout: 120_000,
  }, async ({ expect }) => {
    const { proc } = await startDemo([], { ownProcessGroup: true });
    try {
      await proc.waitForOutput(FULL_ROW, 60_000);
      const { url, dir } = privateHistory(proc.output());
      const from = proc.output().length;
      process.kill(-proc.child.pid!, "SIGINT");
      const code = await proc.exited;
      const output = proc.output();
      expect(code, output).toBe(0);
      expect(output).toMatch(WHOLE_RUN);
      expect(warningsAfter(output, from), output).toEqual([]);
      expect(existsSync(dir), output).toBe(false);
      expect(await answers(`${url}/ping`), "influxd is stopped").toBe(false);
    } finally {
      await proc.stop("SIGKILL");
    }
  });

  for (const [name, signals, exitCode] of [
    ["on SIGTERM", ["SIGTERM"], 0],
    ["when the terminal closes (SIGHUP)", ["SIGHUP"], 0],
    ["on a second Ctrl-C, which ends it at once", ["SIGINT", "SIGINT"], 130],
  ] as const) {
    it(`${name}: influxd stopped and its temp data gone`, { timeout: 120_000 }, async ({ expect }) => {
      const { proc } = await startDemo([], { ownProcessGroup: true });
      try {
        await proc.waitForOutput(FULL_ROW, 60_000);
        const { url, dir } = privateHistory(proc.output());
        for (const [i, sig] of signals.entries()) {
          // Signals of one kind sent together may arrive as one: the second goes once the
          // demo has taken the first.
          if (i > 0) await proc.waitForOutput(/^Stopping \(Ctrl-C again/m, 30_000);
          process.kill(-proc.child.pid!, sig);
        }
        const code = await proc.exited;
        const output = proc.output();
        expect(code, output).toBe(exitCode);
        expect(existsSync(dir), output).toBe(false);
        expect(await answers(`${url}/ping`), "influxd is stopped").toBe(false);
      } finally {
        await proc.stop("SIGKILL");
      }
    });
  }

  it("when its stdout is closed (`| head`): it stops as on Ctrl-C instead of dying of EPIPE", {
    timeout: 120_000,
  }, async ({ expect }) => {
    const { proc } = await startDemo([]);
    try {
      await proc.waitForOutput(FULL_ROW, 60_000);
      const { url, dir } = privateHistory(proc.output());
      const from = proc.output().length;
      proc.child.stdout!.destroy();
      const code = await proc.exited;
      const output = proc.output();
      expect(code, output).toBe(0);
      expect(output).not.toContain("EPIPE");
      expect(warningsAfter(output, from), output).toEqual([]);
      expect(existsSync(dir), output).toBe(false);
      expect(await answers(`${url}/ping`), "influxd is stopped").toBe(false);
    } finally {
      await proc.stop("SIGKILL");
    }
  });

  it("on an error after influxd started (the gRPC port taken): exit 1 with the reason, temp data gone", {
    timeout: 120_000,
  }, async ({ expect }) => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    const port = (taken.address() as { port: number }).port;
    const httpPort = await freePort();
    const proc = startTrueidle(
      ["demo", "--window", "2s", "--grpc-listen", `127.0.0.1:${port}`, "--http-listen", `127.0.0.1:${httpPort}`],
      NOT_THROUGH_NPM,
    );
    try {
      const code = await proc.exited;
      const output = proc.output();
      expect(code, output).toBe(1);
      expect(output).toMatch(/^trueidle demo: .*127\.0\.0\.1:\d+/m);
      const { url, dir } = privateHistory(output);
      expect(existsSync(dir), output).toBe(false);
      expect(await answers(`${url}/ping`), "influxd is stopped").toBe(false);
    } finally {
      await proc.stop("SIGKILL");
      taken.close();
    }
  });

  it("with --keep-data: prints an influxd command that serves the kept data, and a report command that reads it", {
    timeout: 120_000,
  }, async ({ expect }) => {
    const { proc } = await startDemo(["--keep-data", "--duration", "6s"]);
    let influxd: ReturnType<typeof spawn> | undefined;
    let dir: string | undefined;
    try {
      const code = await proc.exited;
      const output = proc.output();
      expect(code, output).toBe(0);
      const m =
        /^InfluxDB data kept in (\S+)\. Serve it again \(on (\S+)\) with:\n {2}(.+)\nand, while it runs, report on it with:\n {2}(.+)$/m.exec(
          output,
        );
      expect(m, output).not.toBeNull();
      const [, keptDir, url, serve, report] = m!;
      dir = keptDir;
      expect(output).toContain(`data in ${keptDir}, kept after the demo (--keep-data).`);
      expect(report).toMatch(
        /^node bin\/trueidle\.js report --influx-url \S+\/trueidle --since \S+ --until \S+ --by site,model$/,
      );
      influxd = spawn("sh", ["-c", `exec ${serve}`], { cwd: REPO_ROOT, stdio: "ignore" });
      for (let i = 0; i < 300 && !(await answers(`${url}/ping`)); i++) await new Promise((r) => setTimeout(r, 100));
      const reported = await runShell(report!);
      expect(reported.code, reported.output).toBe(0);
      for (const site of ["eu-west", "us-east"]) expect(reported.output).toContain(site);
    } finally {
      await proc.stop("SIGKILL");
      if (influxd && influxd.exitCode === null) {
        influxd.kill("SIGTERM");
        await new Promise((r) => influxd!.once("exit", r));
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });
});
