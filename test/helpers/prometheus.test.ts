/**
 * Proves the Prometheus harness against the real Prometheus: it scrapes a tiny exposition
 * server started here, evaluates a rule file, and answers queries (and query errors).
 */
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./ports.js";
import { promtool, startPrometheus, type PrometheusHandle } from "./prometheus.js";

/** Each scrape raises the counter by this much, so every scraped value is a multiple of it. */
const STEP = 5;

function exposition(count: number): string {
  return [
    "# HELP harness_requests_total Requests served by the harness test server.",
    "# TYPE harness_requests_total counter",
    `harness_requests_total{path="/metrics"} ${count}`,
    "# HELP harness_temperature_celsius A fixed gauge.",
    "# TYPE harness_temperature_celsius gauge",
    "harness_temperature_celsius 42.5",
    "",
  ].join("\n");
}

const RULES = `groups:
  - name: harness
    rules:
      - record: path:harness_requests:rate10s
        expr: rate(harness_requests_total[10s])
`;

describe("freePort", () => {
  it("returns a port that can be bound on 127.0.0.1", async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    await new Promise((resolve) => server.close(resolve));
  });
});

describe("promtool", () => {
  it("accepts a valid exposition and rejects a broken one", async () => {
    const good = await promtool(["check", "metrics"], exposition(10));
    expect(good.code, good.stderr).toBe(0);
    const bad = await promtool(["check", "metrics"], "harness_requests_total{path= 1\n");
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/error/i);
  });
});

describe("startPrometheus", () => {
  let server: Server;
  let scrapes = 0;
  let prom: PrometheusHandle;
  let dir: string;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url !== "/metrics") {
        res.writeHead(404).end();
        return;
      }
      scrapes++;
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(exposition(scrapes * STEP));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("test server has no TCP address");

    dir = mkdtempSync(path.join(tmpdir(), "trueidle-harness-"));
    const rules = path.join(dir, "rules.yml");
    writeFileSync(rules, RULES);
    const check = await promtool(["check", "rules", rules]);
    expect(check.code, check.stdout + check.stderr).toBe(0);

    prom = await startPrometheus({
      scrapeTargets: [`127.0.0.1:${address.port}`],
      scrapeIntervalMs: 500,
      ruleFiles: [rules],
      extraConfig: "storage:\n  tsdb:\n    out_of_order_time_window: 10m",
    });
  });

  afterAll(async () => {
    await prom?.stop();
    await new Promise((resolve) => server?.close(resolve));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("scrapes the target and returns its samples", async () => {
    const up = await prom.waitFor('up{job="test"}', (r) => r.length === 1 && r[0]!.value === 1, 30_000);
    expect(up[0]!.metric["instance"]).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(await prom.targetsHealthy()).toBe(true);

    const gauge = await prom.query("harness_temperature_celsius");
    expect(gauge).toEqual([
      { metric: expect.objectContaining({ __name__: "harness_temperature_celsius", job: "test" }), value: 42.5 },
    ]);

    const counter = await prom.query("harness_requests_total");
    expect(counter).toHaveLength(1);
    expect(counter[0]!.metric["path"]).toBe("/metrics");
    expect(counter[0]!.value % STEP).toBe(0);
    expect(counter[0]!.value).toBeGreaterThan(0);
    expect(counter[0]!.value).toBeLessThanOrEqual(scrapes * STEP);
  });

  it("computes rate() of the increasing counter", async () => {
    const rate = await prom.waitFor(
      "rate(harness_requests_total[10s])",
      (r) => r.length === 1 && r[0]!.value > 0,
      30_000,
    );
    expect(Number.isFinite(rate[0]!.value)).toBe(true);
    const scalar = await prom.query("scalar(harness_temperature_celsius) * 2");
    expect(scalar).toEqual([{ metric: {}, value: 85 }]);
  });

  it("loads rule files and extra config", async () => {
    const recorded = await prom.waitFor(
      "path:harness_requests:rate10s",
      (r) => r.length === 1 && r[0]!.value > 0,
      30_000,
    );
    expect(recorded[0]!.metric["path"]).toBe("/metrics");
    const res = await fetch(`${prom.url}/api/v1/status/config`);
    const body = (await res.json()) as { data: { yaml: string } };
    expect(body.data.yaml).toContain("out_of_order_time_window: 10m");
  });

  it("answers a query at a given time", async () => {
    // Long before Prometheus started there is no sample.
    expect(await prom.query("harness_temperature_celsius", Date.now() - 3_600_000)).toEqual([]);
  });

  it("throws Prometheus's error text for a bad query, at once even inside waitFor", async () => {
    await expect(prom.query("rate(harness_requests_total[")).rejects.toThrow(
      /bad_data.*parse error.*rate\(harness_requests_total\[/s,
    );
    await expect(prom.waitFor("sum(", () => true, 60_000)).rejects.toThrow(/parse error/);
  });

  it("waitFor times out showing the last result", async () => {
    await expect(prom.waitFor("harness_temperature_celsius", (r) => r[0]?.value === 1, 500)).rejects.toThrow(
      /timed out after 500 ms waiting for harness_temperature_celsius; last result .*42\.5.*targets: http:\/\/127\.0\.0\.1:\d+\/metrics: up/,
    );
  });
});

describe("PrometheusHandle.stop", () => {
  it("stops Prometheus, and is safe twice", async () => {
    const prom = await startPrometheus({ scrapeTargets: [] });
    expect((await fetch(`${prom.url}/-/ready`)).status).toBe(200);
    expect(await prom.targetsHealthy()).toBe(false);
    await prom.stop();
    await prom.stop();
    await expect(fetch(`${prom.url}/-/ready`)).rejects.toThrow();
  });
});
