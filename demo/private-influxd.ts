/**
 * A private InfluxDB 1.x server for the demo and the tests: Debian's `influxd` started on
 * loopback, on free ports, with its data in a temp dir that is removed on stop.
 *
 * The demo starts it in a process group of its own: Ctrl-C in a terminal signals the whole
 * foreground group, and influxd must outlive the collector that writes to it, so the demo
 * stops it itself, last.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { TrueidleError, errorMessage } from "../common/errors.js";

export const INFLUXD_CANDIDATES = ["/usr/bin/influxd", "/usr/local/bin/influxd"];

export interface PrivateInfluxd {
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  port: number;
  dir: string;
  /** The last lines influxd printed, for error messages. */
  logs(): string;
  /** Stops influxd (SIGTERM, SIGKILL after a grace) and removes its data unless kept. Safe twice. */
  stop(): Promise<void>;
}

/** The influxd executable, or undefined when none is installed. */
export function findInfluxd(): string | undefined {
  return INFLUXD_CANDIDATES.find((p) => existsSync(p));
}

export const INFLUXD_MISSING_HELP =
  "influxd (InfluxDB 1.x) is not installed. On Debian or Ubuntu: `sudo apt-get install influxdb` " +
  "(the tests' `npm test` installs it for you).";

export interface StartInfluxdOptions {
  /** Keep the data dir on stop (for a demo the user wants to query afterwards). */
  keepData?: boolean | undefined;
  /**
   * Use this directory (created when missing) instead of a fresh temp dir, e.g. to serve
   * kept data again; always kept on stop. Default: a new temp dir.
   */
  dir?: string | undefined;
  /** How often continuous queries are checked; default 1s so tests see roll-ups quickly. */
  cqRunInterval?: string | undefined;
  startTimeoutMs?: number | undefined;
  /**
   * Start influxd in a process group of its own, so that signals for the terminal's
   * foreground group (Ctrl-C, a closed terminal) reach only this process, which then stops
   * influxd when it is done with it. Default: the caller's group.
   */
  ownProcessGroup?: boolean | undefined;
}

export interface InfluxdConfig {
  dir: string;
  httpPort: number;
  rpcPort: number;
  cqRunInterval: string;
}

/** Writes `DIR/influxdb.conf` for data in DIR, served on loopback; returns its path. */
export function writeInfluxdConfig(c: InfluxdConfig): string {
  const conf = path.join(c.dir, "influxdb.conf");
  writeFileSync(
    conf,
    [
      "reporting-disabled = true",
      `bind-address = "127.0.0.1:${c.rpcPort}"`,
      "[meta]",
      `  dir = "${path.join(c.dir, "meta")}"`,
      "[data]",
      `  dir = "${path.join(c.dir, "data")}"`,
      `  wal-dir = "${path.join(c.dir, "wal")}"`,
      "  query-log-enabled = false",
      "[http]",
      `  bind-address = "127.0.0.1:${c.httpPort}"`,
      "  log-enabled = false",
      "  max-body-size = 0",
      "[continuous_queries]",
      "  enabled = true",
      "  log-enabled = false",
      `  run-interval = "${c.cqRunInterval}"`,
      "[monitor]",
      "  store-enabled = false",
      "[subscriber]",
      "  enabled = false",
      "",
    ].join("\n"),
  );
  return conf;
}

/**
 * For data kept after its server stopped: a config on loopback ports free now, and the
 * command that serves the data with it. The ports the data was served on before were
 * chosen for that run and may be taken since.
 */
export async function serveAgainCommand(dir: string, cqRunInterval = "10s"): Promise<{ command: string; url: string }> {
  const bin = findInfluxd() ?? "influxd";
  const httpPort = await freeLoopbackPort();
  let rpcPort = await freeLoopbackPort();
  while (rpcPort === httpPort) rpcPort = await freeLoopbackPort();
  const conf = writeInfluxdConfig({ dir, httpPort, rpcPort, cqRunInterval });
  return { command: `${bin} -config ${conf}`, url: `http://127.0.0.1:${httpPort}` };
}

export async function startPrivateInfluxd(opts: StartInfluxdOptions = {}): Promise<PrivateInfluxd> {
  const bin = findInfluxd();
  if (!bin) throw new TrueidleError("not_found", INFLUXD_MISSING_HELP);
  let lastErr: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      return await startOnce(bin, opts);
    } catch (err) {
      lastErr = err;
      // A port taken between choosing and binding: try others.
      if (!/address already in use/i.test(errorMessage(err))) break;
    }
  }
  throw lastErr;
}

async function startOnce(bin: string, opts: StartInfluxdOptions): Promise<PrivateInfluxd> {
  const dir = opts.dir !== undefined ? path.resolve(opts.dir) : mkdtempSync(path.join(tmpdir(), "trueidle-influxd-"));
  if (opts.dir !== undefined) mkdirSync(dir, { recursive: true });
  const keepData = opts.keepData === true || opts.dir !== undefined;
  const httpPort = await freeLoopbackPort();
  const rpcPort = await freeLoopbackPort();
  const conf = writeInfluxdConfig({ dir, httpPort, rpcPort, cqRunInterval: opts.cqRunInterval ?? "1s" });
  const child: ChildProcess = spawn(bin, ["-config", conf], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, INFLUXDB_REPORTING_DISABLED: "true" },
    detached: opts.ownProcessGroup === true,
  });
  let out = "";
  const keep = (b: Buffer): void => {
    out += b.toString("utf8");
    if (out.length > 64_000) out = out.slice(-32_000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const url = `http://127.0.0.1:${httpPort}`;
  let stopped = false;
  let removed = keepData;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    }
    if (!removed) {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      removed = true;
      process.removeListener("exit", onExit);
    }
  };
  // The process exiting before stop() is done (a second Ctrl-C, process.exit, an uncaught
  // error): kill influxd and remove its data; influxd may still be closing files as it
  // dies, hence the retries.
  const onExit = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (!removed) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
      } catch {
        // Left in the temp dir.
      }
    }
  };
  process.on("exit", onExit);
  if (removed) child.once("exit", () => process.removeListener("exit", onExit));

  const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      throw new TrueidleError("unavailable", `influxd exited while starting: ${out.slice(-1500)}`);
    }
    try {
      const res = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 204) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new TrueidleError(
        "unavailable",
        `influxd did not answer /ping within ${opts.startTimeoutMs ?? 20_000} ms: ${out.slice(-1500)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, port: httpPort, dir, logs: () => out.slice(-4000), stop };
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.once("error", reject);
    s.listen({ host: "127.0.0.1", port: 0 }, () => {
      const a = s.address();
      if (a === null || typeof a === "string") return reject(new Error("no TCP address"));
      s.close(() => resolve(a.port));
    });
  });
}
