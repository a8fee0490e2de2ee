/**
 * The load generator (`npm run loadgen`, bench/loadgen.ts) as a user runs it, small: 200
 * GPUs on 25 simulated hosts for about half a minute against a collector subprocess it
 * starts with a private InfluxDB. Its accounting must hold — every window made was
 * acknowledged, none rejected, InfluxDB holds each acknowledged window once (and one
 * gpu_owner_window point per acknowledged window that carried an owner) — and its figures
 * must be there. Nothing here is timed: the figures are the benchmark's, not the test's.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/trueidle-process.js";

interface LoadgenResult {
  gpus: number;
  hosts: number;
  windowsPerGpu: number;
  windowsMade: number;
  windowsAcked: number;
  windowsRejected: number;
  ownedWindowsAcked: number;
  influxWindows: number;
  influxOwnerWindows: number;
  ackLatencyMs: { p50: number; p99: number; batches: number };
  collectorCpuUsPerWindow: number;
  collectorRssMaxBytes: number;
  metrics: Array<{ bytes: number }>;
  breaks: Record<string, number>;
  failures: string[];
}

function runLoadgen(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join("bench", "loadgen.ts"), ...args], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("npm run loadgen", () => {
  it("200 GPUs against a real collector and InfluxDB: every window acknowledged once and in InfluxDB once", async () => {
    const run = await runLoadgen([
      "--gpus",
      "200",
      "--window",
      "5s",
      "--duration",
      "20s",
      "--start-collector",
      "--influx",
      "--sample-every",
      "5s",
      "--scrape-every",
      "10s",
      "--json",
    ]);
    const context = `exit ${run.code}\n${run.stderr.slice(-6_000)}`;
    expect(run.code, context).toBe(0);
    const r = JSON.parse(run.stdout.trim().split("\n").pop() ?? "{}") as LoadgenResult;
    expect(r.failures, context).toEqual([]);
    expect(r.gpus).toBe(200);
    expect(r.hosts).toBe(25);
    expect(r.windowsPerGpu).toBeGreaterThanOrEqual(4);
    expect(r.windowsMade).toBe(r.gpus * r.windowsPerGpu);
    expect(r.windowsAcked).toBe(r.windowsMade);
    expect(r.windowsRejected).toBe(0);
    expect(r.influxWindows).toBe(r.windowsAcked);
    // Owners ride on the windows of held GPUs, and each became its own point.
    expect(r.ownedWindowsAcked).toBeGreaterThan(0);
    expect(r.influxOwnerWindows).toBe(r.ownedWindowsAcked);
    expect(r.ackLatencyMs.batches).toBeGreaterThanOrEqual(r.hosts * r.windowsPerGpu);
    expect(r.ackLatencyMs.p50).toBeGreaterThan(0);
    expect(r.ackLatencyMs.p99).toBeGreaterThanOrEqual(r.ackLatencyMs.p50);
    expect(r.collectorCpuUsPerWindow).toBeGreaterThan(0);
    expect(r.collectorRssMaxBytes).toBeGreaterThan(0);
    expect(r.metrics.length).toBeGreaterThan(0);
    expect(r.breaks).toEqual({});
    expect(run.stderr).toMatch(/Loadgen passed/);
  }, 240_000);
});
