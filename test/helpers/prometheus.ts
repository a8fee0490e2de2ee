/**
 * The real Prometheus (Debian package `prometheus`) for integration tests: started on
 * 127.0.0.1 at a free port with its config and TSDB in a temp dir, queried over its HTTP
 * API. Also `promtool`, for checking rule files and exposition text.
 *
 * A missing binary is a loud error, never a skipped test: `npm test` installs both.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { constants as osConstants, tmpdir } from "node:os";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "./ports.js";

export const PROMETHEUS_BIN = "/usr/bin/prometheus";
export const PROMTOOL_BIN = "/usr/bin/promtool";

export interface PrometheusOptions {
  /** Targets of the one scrape job, as "127.0.0.1:PORT"; each serves /metrics. */
  scrapeTargets: string[];
  /** Scrape and rule evaluation interval; default 1000 ms. */
  scrapeIntervalMs?: number;
  /**
   * More settings of the one scrape job, e.g. `{ scheme: "https", basic_auth: {...},
   * tls_config: {...} }`; written as JSON, which YAML reads as is.
   */
  jobConfig?: Record<string, unknown>;
  /**
   * YAML appended at the top level of prometheus.yml. It must not repeat the keys the
   * helper writes: `global`, `rule_files`, `scrape_configs`.
   */
  extraConfig?: string;
  /** Rule files to load (absolute paths); evaluated every scrape interval. */
  ruleFiles?: string[];
}

/** One element of an instant vector (or a scalar, with no labels). */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface PrometheusHandle {
  /** Base URL, e.g. "http://127.0.0.1:41234". */
  url: string;
  port: number;
  /** Instant query through /api/v1/query; throws with Prometheus's own error text. */
  query(promql: string, timeMs?: number): Promise<PromSample[]>;
  /**
   * Polls `promql` until `predicate` holds and returns that result. On timeout it throws,
   * showing the last result (or query error) and the scrape targets' health.
   */
  waitFor(promql: string, predicate: (results: PromSample[]) => boolean, timeoutMs?: number): Promise<PromSample[]>;
  /** Whether there is at least one scrape target and every one is up. */
  targetsHealthy(): Promise<boolean>;
  /** The last lines Prometheus printed, for failure messages. */
  logs(): string;
  /** Stops Prometheus and removes its temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

export interface PromtoolResult {
  code: number;
  stdout: string;
  stderr: string;
}

const READY_TIMEOUT_MS = 60_000;
const REQUEST_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 5;
const LOG_TAIL_BYTES = 32 * 1024;

/** Starts Prometheus and waits until /-/ready answers 200. */
export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusHandle> {
  requireBinary(PROMETHEUS_BIN, "Prometheus");
  const intervalMs = opts.scrapeIntervalMs ?? 1000;
  if (!(Number.isInteger(intervalMs) && intervalMs > 0))
    throw new Error(`scrapeIntervalMs must be a positive integer, got ${intervalMs}`);

  const dir = mkdtempSync(path.join(tmpdir(), "trueidle-prometheus-"));
  const configPath = path.join(dir, "prometheus.yml");
  writeFileSync(configPath, renderConfig(opts, intervalMs));

  let lastFailure = "";
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const port = await freePort();
    const started = await startOnce(dir, configPath, port);
    if (started.ok) return started.handle;
    lastFailure = started.reason;
    // Another process took the port between freePort() and Prometheus binding it.
    if (!/address already in use/i.test(started.reason)) break;
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`Prometheus did not start: ${lastFailure}`);
}

/** Runs promtool with `args`, feeding `stdin` when given. Never throws for a non-zero exit. */
export function promtool(args: string[], stdin?: string): Promise<PromtoolResult> {
  requireBinary(PROMTOOL_BIN, "promtool");
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL_BIN, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const bySignal = signal === null ? 1 : 128 + (osConstants.signals[signal] ?? 0);
      resolve({ code: code ?? bySignal, stdout, stderr });
    });
    // promtool may exit before reading everything (e.g. on a usage error); that is its answer.
    child.stdin.on("error", () => undefined);
    child.stdin.end(stdin ?? "");
  });
}

function requireBinary(bin: string, what: string): void {
  if (existsSync(bin)) return;
  throw new Error(
    `${what} is not installed: ${bin} is missing. Install it with \`apt-get install prometheus\` ` +
      "(Debian 12), or run `npm test`, which installs it. Tests that need it are never skipped.",
  );
}

function renderConfig(opts: PrometheusOptions, intervalMs: number): string {
  const interval = `${intervalMs}ms`;
  const lines = [
    "global:",
    `  scrape_interval: ${interval}`,
    `  scrape_timeout: ${interval}`,
    `  evaluation_interval: ${interval}`,
    `rule_files: ${JSON.stringify(opts.ruleFiles ?? [])}`,
    "scrape_configs:",
    "  - job_name: test",
    "    static_configs:",
    `      - targets: ${JSON.stringify(opts.scrapeTargets)}`,
    ...Object.entries(opts.jobConfig ?? {}).map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`),
  ];
  if (opts.extraConfig !== undefined) lines.push(opts.extraConfig);
  return `${lines.join("\n")}\n`;
}

type StartResult = { ok: true; handle: PrometheusHandle } | { ok: false; reason: string };

async function startOnce(dir: string, configPath: string, port: number): Promise<StartResult> {
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${configPath}`,
      `--storage.tsdb.path=${path.join(dir, `data-${port}`)}`,
      "--storage.tsdb.retention.time=1h",
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=info",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );

  let log = "";
  const keep = (d: string): void => {
    log += d;
    if (log.length > LOG_TAIL_BYTES) log = log.slice(log.length - LOG_TAIL_BYTES);
  };
  child.stdout!.setEncoding("utf8").on("data", keep);
  child.stderr!.setEncoding("utf8").on("data", keep);
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) => {
    child.on("exit", (code, signal) => {
      exited = `exited with ${signal ?? `code ${code}`}`;
      resolve();
    });
    child.on("error", (err) => {
      exited = `failed to spawn: ${err.message}`;
      resolve();
    });
  });
  // If the test process dies without stop(), do not leave Prometheus or its files behind.
  const onExit = (): void => {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      process.removeListener("exit", onExit);
      await terminate(child, exit, () => exited !== undefined);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited !== undefined) {
      process.removeListener("exit", onExit);
      return { ok: false, reason: `${exited}; its log:\n${log}` };
    }
    if (await isReady(url)) break;
    if (Date.now() > deadline) {
      process.removeListener("exit", onExit);
      await terminate(child, exit, () => exited !== undefined);
      return { ok: false, reason: `not ready at ${url}/-/ready after ${READY_TIMEOUT_MS} ms; its log:\n${log}` };
    }
    await sleep(100);
  }

  const query = (promql: string, timeMs?: number) => instantQuery(url, promql, timeMs);
  const targetErrors = async (): Promise<string> => {
    try {
      const targets = await activeTargets(url);
      if (targets.length === 0) return "no scrape targets";
      return targets.map((t) => `${t.scrapeUrl}: ${t.health}${t.lastError ? ` (${t.lastError})` : ""}`).join("; ");
    } catch (err) {
      return `targets unknown: ${(err as Error).message}`;
    }
  };
  const handle: PrometheusHandle = {
    url,
    port,
    query,
    async waitFor(promql, predicate, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      let last = "no answer yet";
      for (;;) {
        try {
          const results = await query(promql);
          if (predicate(results)) return results;
          last = `result ${JSON.stringify(results)}`;
        } catch (err) {
          // A query Prometheus rejects as malformed will never succeed; say so now.
          if (err instanceof PrometheusQueryError && err.errorType === "bad_data") throw err;
          last = `error ${(err as Error).message}`;
        }
        if (Date.now() > until) {
          throw new Error(
            `timed out after ${timeoutMs} ms waiting for ${promql}; last ${last}; targets: ${await targetErrors()}`,
          );
        }
        await sleep(200);
      }
    },
    async targetsHealthy() {
      const targets = await activeTargets(url);
      return targets.length > 0 && targets.every((t) => t.health === "up");
    },
    logs: () => log,
    stop,
  };
  return { ok: true, handle };
}

/** SIGTERM, then SIGKILL if Prometheus has not exited after 10 s. */
async function terminate(child: ChildProcess, exit: Promise<void>, hasExited: () => boolean): Promise<void> {
  if (hasExited()) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  timer.unref();
  await exit;
  clearTimeout(timer);
}

async function isReady(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** A query Prometheus answered with an error; `errorType` is Prometheus's, e.g. "bad_data". */
export class PrometheusQueryError extends Error {
  readonly errorType: string;
  constructor(errorType: string, message: string) {
    super(message);
    this.name = "PrometheusQueryError";
    this.errorType = errorType;
  }
}

interface ApiResponse {
  status?: string;
  errorType?: string;
  error?: string;
  data?: unknown;
}

async function apiCall(url: string, init?: RequestInit): Promise<unknown> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const text = await res.text();
  let body: ApiResponse;
  try {
    body = JSON.parse(text) as ApiResponse;
  } catch {
    throw new Error(`Prometheus answered ${res.status} with non-JSON: ${text.slice(0, 500)}`);
  }
  if (body.status !== "success") {
    throw new PrometheusQueryError(
      body.errorType ?? `http_${res.status}`,
      `Prometheus error (${body.errorType ?? res.status}): ${body.error ?? text}`,
    );
  }
  return body.data;
}

async function instantQuery(url: string, promql: string, timeMs?: number): Promise<PromSample[]> {
  const form = new URLSearchParams({ query: promql });
  if (timeMs !== undefined) form.set("time", String(timeMs / 1000));
  let data: { resultType?: string; result?: unknown };
  try {
    data = (await apiCall(`${url}/api/v1/query`, { method: "POST", body: form })) as typeof data;
  } catch (err) {
    if (err instanceof PrometheusQueryError) {
      throw new PrometheusQueryError(err.errorType, `${err.message} (query: ${promql})`);
    }
    throw err;
  }
  switch (data.resultType) {
    case "vector":
      return (data.result as Array<{ metric: Record<string, string>; value: [number, string] }>).map((r) => ({
        metric: r.metric,
        value: Number(r.value[1]),
      }));
    case "scalar": {
      const [, v] = data.result as [number, string];
      return [{ metric: {}, value: Number(v) }];
    }
    default:
      throw new Error(`query ${promql} returned a ${data.resultType}, not an instant vector or scalar`);
  }
}

interface Target {
  scrapeUrl: string;
  health: string;
  lastError: string;
}

async function activeTargets(url: string): Promise<Target[]> {
  const data = (await apiCall(`${url}/api/v1/targets?state=active`)) as { activeTargets?: Target[] };
  return data.activeTargets ?? [];
}
