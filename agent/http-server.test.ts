import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { promtool } from "../test/helpers/prometheus.js";
import type { AgentStats } from "./agent.js";
import { AgentHttpServer } from "./http-server.js";
import { AGENT_METRICS, renderAgentMetrics } from "./self-metrics.js";

function fakeAgent(sampling: boolean) {
  const stats: AgentStats = {
    ticks: 40, ticksMissed: 3, samplesDropped: 5, windows: 12, gpus: 2, sourceRestarts: 1, sourceParseErrors: 0, sourceHungCalls: 0,
    shipper: { connected: true, buffered: 3, bufferBytes: 900, inFlight: 1, sent: 10, acked: 9, rejected: 1, dropped: 2, reconnects: 4, lastAckMs: 1000 },
  };
  return { stats: () => stats, lastAckAgeMs: () => 2500, isSampling: () => sampling };
}

const servers: AgentHttpServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
});

async function serve(sampling: boolean): Promise<string> {
  const server = new AgentHttpServer({ agent: fakeAgent(sampling), logger: silentLogger });
  servers.push(server);
  const port = await server.listen({ host: "127.0.0.1", port: 0 });
  return `http://127.0.0.1:${port}`;
}

describe("agent self-metrics", () => {
  it("renders every metric of the table with its value, and promtool accepts the text", async () => {
    const text = renderAgentMetrics(fakeAgent(true));
    for (const m of AGENT_METRICS) expect(text).toContain(`# TYPE ${m.name} ${m.type}\n`);
    expect(text).toContain("trueidle_agent_buffered_windows 3\n");
    expect(text).toContain("trueidle_agent_buffer_bytes 900\n");
    expect(text).toContain("trueidle_agent_windows_total 12\n");
    expect(text).toContain("trueidle_agent_windows_dropped_total 2\n");
    expect(text).toContain("trueidle_agent_windows_rejected_total 1\n");
    expect(text).toContain("trueidle_agent_reconnects_total 4\n");
    expect(text).toContain("trueidle_agent_connected 1\n");
    expect(text).toContain("trueidle_agent_sampler_restarts_total 1\n");
    expect(text).toContain("trueidle_agent_samples_dropped_total 5\n");
    expect(text).toContain("trueidle_agent_last_ack_age_seconds 2.5\n");
    const check = await promtool(["check", "metrics"], text);
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);
  });

  it("reports the agent's own CPU, memory and start time under the standard process metric names", () => {
    const value = (text: string, name: string): number => {
      const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
      if (!m) throw new Error(`no ${name} in:\n${text}`);
      return Number(m[1]);
    };
    const before = process.cpuUsage();
    const first = renderAgentMetrics(fakeAgent(true));
    // Burn a little CPU: the counter must move by at least what this thread spent.
    const until = process.cpuUsage(before).user + 20_000;
    while (process.cpuUsage(before).user < until) Math.sqrt(Math.random());
    const second = renderAgentMetrics(fakeAgent(true));
    expect(first).toContain("# TYPE process_cpu_seconds_total counter\n");
    expect(value(second, "process_cpu_seconds_total") - value(first, "process_cpu_seconds_total")).toBeGreaterThanOrEqual(0.02);
    const cpu = process.cpuUsage();
    expect(value(second, "process_cpu_seconds_total")).toBeLessThanOrEqual((cpu.user + cpu.system) / 1e6);
    expect(value(second, "process_resident_memory_bytes")).toBeGreaterThan(10 * 1024 * 1024);
    const start = value(second, "process_start_time_seconds");
    expect(Math.abs(start - (Date.now() / 1000 - process.uptime()))).toBeLessThan(1);
  });

  it("serves /metrics and /healthz over HTTP", async () => {
    const url = await serve(true);
    const m = await fetch(`${url}/metrics`);
    expect(m.status).toBe(200);
    expect(m.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await m.text()).toContain("trueidle_agent_windows_total 12\n");
    const h = await fetch(`${url}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ status: "ok", connected: true, buffered_windows: 3 });
    expect((await fetch(`${url}/nope`)).status).toBe(404);
    expect((await fetch(`${url}/metrics`, { method: "POST" })).status).toBe(405);
  });

  it("answers /healthz with 503 while the agent does not sample", async () => {
    const url = await serve(false);
    const h = await fetch(`${url}/healthz`);
    expect(h.status).toBe(503);
    expect(((await h.json()) as { status: string }).status).toBe("not_sampling");
  });
});
