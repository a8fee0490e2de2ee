import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { declaredFamilies, expectValidExposition } from "../test/helpers/exposition-check.js";
import { promtool } from "../test/helpers/prometheus.js";
import type { AgentStats } from "./agent.js";
import { AgentHttpServer } from "./http-server.js";
import type { OwnerStats } from "./owners/owner-annotator.js";
import { AGENT_METRICS, renderAgentMetrics } from "./self-metrics.js";

/** When the fake agent's collector last acknowledged a batch. */
const LAST_ACK_MS = Date.UTC(2024, 4, 1, 12, 0, 0, 250);

function fakeAgent(sampling: boolean, owners?: OwnerStats, acked = true) {
  const stats: AgentStats = {
    ticks: 40,
    ticksMissed: 3,
    samplesDropped: 5,
    windows: 12,
    gpus: 2,
    allocatedGpus: owners ? 1 : 0,
    owners,
    sourceRestarts: 1,
    sourceParseErrors: 0,
    sourceHungCalls: 0,
    shipper: {
      connected: true,
      buffered: 3,
      bufferBytes: 900,
      inFlight: 1,
      sent: 10,
      acked: 9,
      rejected: 1,
      dropped: 2,
      reconnects: 4,
      lastAckMs: acked ? LAST_ACK_MS : undefined,
    },
  };
  return { stats: () => stats, isSampling: () => sampling };
}

/** Owner sources as a node with a wedged kubelet, a bad mapping file and no host PIDs leaves them. */
const OWNERS: OwnerStats = {
  allocations: [
    {
      name: "pod_resources",
      where: "/var/lib/kubelet/pod-resources/kubelet.sock",
      ready: false,
      stats: {
        reads: 2,
        failures: { deadline: 3, allocatable_unavailable: 1 },
        rejected: { mig_index: 4 },
        staleDrops: 1,
        ownersDropped: 0,
        lastGoodMs: 1000,
      },
    },
    {
      name: "job_mapping",
      where: "/run/trueidle/jobs",
      ready: true,
      stats: {
        reads: 7,
        failures: {},
        rejected: { binary: 1, not_gpu_name: 2 },
        staleDrops: 0,
        ownersDropped: 5,
        lastGoodMs: 2000,
      },
    },
  ],
  processes: {
    hostRoot: "/host",
    hostPids: { visible: false, reason: "other_pid_namespace" },
    counters: {
      lookups: 9,
      cacheHits: 0,
      attributed: 0,
      vanished: 2,
      notVisible: 7,
      evicted: 0,
      uidsWithoutName: 0,
      unreadable: { cgroup_eacces: 1 },
      badInput: { status_malformed: 1, pid_invalid: 1 },
    },
  },
};

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
    expect(text).toContain("trueidle_agent_last_ack_timestamp_seconds 1714564800.25\n");
    const check = await promtool(["check", "metrics"], text);
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);
  });

  it("renders the owner sources' counters by source and reason, and promtool accepts the text", async () => {
    const text = renderAgentMetrics(fakeAgent(true, OWNERS));
    for (const line of [
      "trueidle_agent_owner_allocated_gpus 1",
      'trueidle_agent_owner_source_ready{source="pod_resources"} 0',
      'trueidle_agent_owner_source_ready{source="job_mapping"} 1',
      'trueidle_agent_owner_reads_total{source="job_mapping"} 7',
      'trueidle_agent_owner_read_failures_total{source="pod_resources",reason="deadline"} 3',
      'trueidle_agent_owner_read_failures_total{source="pod_resources",reason="allocatable_unavailable"} 1',
      'trueidle_agent_owner_rejected_total{source="pod_resources",reason="mig_index"} 4',
      'trueidle_agent_owner_rejected_total{source="job_mapping",reason="binary"} 1',
      'trueidle_agent_owner_rejected_total{source="job_mapping",reason="not_gpu_name"} 2',
      'trueidle_agent_owner_stale_drops_total{source="pod_resources"} 1',
      'trueidle_agent_owner_dropped_total{source="job_mapping"} 5',
      'trueidle_agent_owner_process_lookups_total{result="attributed"} 0',
      'trueidle_agent_owner_process_lookups_total{result="vanished"} 2',
      'trueidle_agent_owner_process_lookups_total{result="not_visible"} 7',
      'trueidle_agent_owner_process_read_errors_total{file="cgroup",reason="eacces"} 1',
      'trueidle_agent_owner_process_read_errors_total{file="status",reason="malformed"} 1',
      'trueidle_agent_owner_process_read_errors_total{file="pid",reason="invalid"} 1',
      "trueidle_agent_owner_host_pids_visible 0",
    ])
      expect(text).toContain(`\n${line}\n`);
    const check = await promtool(["check", "metrics"], text);
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);
  });

  it("without owner sources, shows no owner series beyond the allocated GPUs (0), and promtool accepts the text", async () => {
    const text = renderAgentMetrics(fakeAgent(true));
    expect(text).toContain("\ntrueidle_agent_owner_allocated_gpus 0\n");
    expect(text).toContain("# TYPE trueidle_agent_owner_read_failures_total counter\n");
    expect(
      text
        .split("\n")
        .filter((l) => l.startsWith("trueidle_agent_owner_") && !l.startsWith("trueidle_agent_owner_allocated_gpus ")),
    ).toEqual([]);
    const check = await promtool(["check", "metrics"], text);
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);
  });

  it("has no last-ack timestamp before the first ack", () => {
    const text = renderAgentMetrics(fakeAgent(true, undefined, false));
    expect(text).toContain("# TYPE trueidle_agent_last_ack_timestamp_seconds gauge\n");
    expect(text).not.toMatch(/^trueidle_agent_last_ack_timestamp_seconds /m);
  });

  it("serves its own metrics, then the process and Node.js metrics, each family once, and promtool accepts the page", async () => {
    const text = await (await fetch(`${await serve(true)}/metrics`)).text();
    const families = declaredFamilies(text);
    expect(families.slice(0, AGENT_METRICS.length)).toEqual(AGENT_METRICS.map((m) => m.name));
    for (const f of [
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "process_start_time_seconds",
      "nodejs_heap_size_used_bytes",
      "nodejs_eventloop_lag_seconds",
    ]) {
      expect(families.slice(AGENT_METRICS.length), f).toContain(f);
    }
    expect(text).toMatch(/^process_cpu_seconds_total \d+(\.\d{1,6})?$/m);
    await expectValidExposition(text);
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
