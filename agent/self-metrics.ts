/**
 * The agent's own metrics, for sites that scrape nodes (`--http-listen`): one table of
 * name, type, help and how to read the value from the agent, rendered as Prometheus text.
 */
import { familyHeader, formatValue } from "../common/prom-text.js";
import type { AgentStats } from "./agent.js";

/** What the exposition reads; the Agent has these. */
export interface AgentMetricsSource {
  stats(): AgentStats;
  /** Milliseconds since the last ack, or since start when none came yet. */
  lastAckAgeMs(): number;
}

interface AgentMetric {
  name: string;
  type: "counter" | "gauge";
  help: string;
  value: (s: AgentStats, lastAckAgeS: number) => number;
}

/** When this process started, for process_start_time_seconds. */
const PROCESS_START_S = Math.round((Date.now() - process.uptime() * 1000) / 10) / 100;

export const AGENT_METRICS: readonly AgentMetric[] = [
  {
    name: "trueidle_agent_buffered_windows", type: "gauge",
    help: "Windows measured and not yet acknowledged by a collector (in memory, or on disk with --state-dir).",
    value: (s) => s.shipper.buffered,
  },
  {
    name: "trueidle_agent_buffer_bytes", type: "gauge",
    help: "Encoded size of the buffered windows, in bytes.",
    value: (s) => s.shipper.bufferBytes,
  },
  {
    name: "trueidle_agent_windows_total", type: "counter",
    help: "Windows this agent finished since it started.",
    value: (s) => s.windows,
  },
  {
    name: "trueidle_agent_windows_acked_total", type: "counter",
    help: "Windows a collector acknowledged since the agent started.",
    value: (s) => s.shipper.acked,
  },
  {
    name: "trueidle_agent_windows_dropped_total", type: "counter",
    help: "Windows dropped because the buffer was full (the oldest go first); each one is lost.",
    value: (s) => s.shipper.dropped,
  },
  {
    name: "trueidle_agent_windows_rejected_total", type: "counter",
    help: "Windows a collector rejected as invalid; each one is lost.",
    value: (s) => s.shipper.rejected,
  },
  {
    name: "trueidle_agent_reconnects_total", type: "counter",
    help: "Streams to a collector that broke or could not be opened, each followed by a reconnect.",
    value: (s) => s.shipper.reconnects,
  },
  {
    name: "trueidle_agent_connected", type: "gauge",
    help: "1 while a collector has welcomed this agent's stream, else 0.",
    value: (s) => (s.shipper.connected ? 1 : 0),
  },
  {
    name: "trueidle_agent_sampler_restarts_total", type: "counter",
    help: "Restarts of the GPU reading source (such as nvidia-smi) after it failed or stalled.",
    value: (s) => s.sourceRestarts,
  },
  {
    name: "trueidle_agent_source_bad_readings_total", type: "counter",
    help: "Lines or values from the GPU source that could not be used (an nvidia-smi line that does not parse, an implausible NVML value); each reads as missing.",
    value: (s) => s.sourceParseErrors,
  },
  {
    name: "trueidle_agent_driver_calls_hung", type: "gauge",
    help: "NVML calls that ran past their deadline and have not returned: the driver is hung; the GPUs concerned read unavailable.",
    value: (s) => s.sourceHungCalls,
  },
  {
    name: "trueidle_agent_ticks_missed_total", type: "counter",
    help: "Sampling instants skipped because a tick ran more than one interval late (overloaded or paused host).",
    value: (s) => s.ticksMissed,
  },
  {
    name: "trueidle_agent_samples_dropped_total", type: "counter",
    help: "GPU samples dropped because the wall clock stepped back into time this agent's windows covered already (NTP step, clock set by hand); one per GPU and sampling instant.",
    value: (s) => s.samplesDropped,
  },
  {
    name: "trueidle_agent_last_ack_age_seconds", type: "gauge",
    help: "Seconds since a collector last acknowledged a batch (since the agent started when none has yet).",
    value: (_s, age) => age,
  },
  {
    name: "trueidle_agent_gpus", type: "gauge",
    help: "GPUs in the agent's last sample.",
    value: (s) => s.gpus,
  },
  // The standard process metrics (the names every Prometheus client library uses), so the
  // agent's own cost is on the node's dashboards.
  {
    name: "process_cpu_seconds_total", type: "counter",
    help: "Total user and system CPU time spent in seconds, every thread of the agent (the NVML worker and the driver's work on it included).",
    value: () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    },
  },
  { name: "process_resident_memory_bytes", type: "gauge", help: "Resident memory size in bytes.", value: () => process.memoryUsage.rss() },
  {
    name: "process_start_time_seconds", type: "gauge", help: "Start time of the process since unix epoch in seconds.",
    value: () => PROCESS_START_S,
  },
];

export function renderAgentMetrics(agent: AgentMetricsSource): string {
  const stats = agent.stats();
  const ageS = agent.lastAckAgeMs() / 1000;
  let out = "";
  for (const m of AGENT_METRICS) {
    out += familyHeader(m.name, m.type, m.help) + `${m.name} ${formatValue(m.value(stats, ageS))}\n`;
  }
  return out;
}
