/**
 * The agent's own metrics, for sites that scrape nodes (`--http-listen`): one table of
 * name, type, help and how to read the value from the agent, rendered as Prometheus text.
 * The process and Node.js metrics (process_cpu_seconds_total, ...) come after them, from
 * common/process-metrics.ts (agent/http-server.ts).
 */
import { familyHeader, formatSeconds, formatValue, labelPairs } from "../common/prom-text.js";
import type { AgentStats } from "./agent.js";
import type { OwnerStats } from "./owners/owner-annotator.js";

/** What the exposition reads; the Agent has these. */
export interface AgentMetricsSource {
  stats(): AgentStats;
}

/** One sample of a labelled family: its labels (valid label names) and value. */
export type LabelledValue = readonly [labels: Readonly<Record<string, string>>, value: number];

interface AgentMetric {
  name: string;
  type: "counter" | "gauge";
  help: string;
  /** The value; a labelled family's samples (none yet: just its HELP and TYPE); undefined: no sample. */
  value: (s: AgentStats) => number | readonly LabelledValue[] | undefined;
}

export const AGENT_METRICS: readonly AgentMetric[] = [
  {
    name: "trueidle_agent_buffered_windows",
    type: "gauge",
    help: "Windows measured and not yet acknowledged by a collector (in memory, or on disk with --state-dir).",
    value: (s) => s.shipper.buffered,
  },
  {
    name: "trueidle_agent_buffer_bytes",
    type: "gauge",
    help: "Encoded size of the buffered windows, in bytes.",
    value: (s) => s.shipper.bufferBytes,
  },
  {
    name: "trueidle_agent_windows_total",
    type: "counter",
    help: "Windows this agent finished since it started.",
    value: (s) => s.windows,
  },
  {
    name: "trueidle_agent_windows_acked_total",
    type: "counter",
    help: "Windows a collector acknowledged since the agent started.",
    value: (s) => s.shipper.acked,
  },
  {
    name: "trueidle_agent_windows_dropped_total",
    type: "counter",
    help: "Windows dropped because the buffer was full (the oldest go first); each one is lost.",
    value: (s) => s.shipper.dropped,
  },
  {
    name: "trueidle_agent_windows_rejected_total",
    type: "counter",
    help: "Windows a collector rejected as invalid; each one is lost.",
    value: (s) => s.shipper.rejected,
  },
  {
    name: "trueidle_agent_reconnects_total",
    type: "counter",
    help: "Streams to a collector that broke or could not be opened, each followed by a reconnect.",
    value: (s) => s.shipper.reconnects,
  },
  {
    name: "trueidle_agent_connected",
    type: "gauge",
    help: "1 while a collector has welcomed this agent's stream, else 0.",
    value: (s) => (s.shipper.connected ? 1 : 0),
  },
  {
    name: "trueidle_agent_sampler_restarts_total",
    type: "counter",
    help: "Restarts of the GPU reading source (such as nvidia-smi) after it failed or stalled.",
    value: (s) => s.sourceRestarts,
  },
  {
    name: "trueidle_agent_source_bad_readings_total",
    type: "counter",
    help: "Lines or values from the GPU source that could not be used (an nvidia-smi line that does not parse, an implausible NVML value); each reads as missing.",
    value: (s) => s.sourceParseErrors,
  },
  {
    name: "trueidle_agent_driver_calls_hung",
    type: "gauge",
    help: "NVML calls that ran past their deadline and have not returned: the driver is hung; the GPUs concerned read unavailable.",
    value: (s) => s.sourceHungCalls,
  },
  {
    name: "trueidle_agent_ticks_missed_total",
    type: "counter",
    help: "Sampling instants skipped because a tick ran more than one interval late (overloaded or paused host).",
    value: (s) => s.ticksMissed,
  },
  {
    name: "trueidle_agent_samples_dropped_total",
    type: "counter",
    help: "GPU samples dropped because the wall clock stepped back into time this agent's windows covered already (NTP step, clock set by hand); one per GPU and sampling instant.",
    value: (s) => s.samplesDropped,
  },
  {
    name: "trueidle_agent_last_ack_timestamp_seconds",
    type: "gauge",
    help: "When a collector last acknowledged a batch, in seconds since the Unix epoch; absent until the first ack. The age of the last ack is time() minus this.",
    value: (s) => (s.shipper.lastAckMs === undefined ? undefined : s.shipper.lastAckMs / 1000),
  },
  {
    name: "trueidle_agent_gpus",
    type: "gauge",
    help: "GPUs in the agent's last sample.",
    value: (s) => s.gpus,
  },
  // Owners (agent/owners/): where each source stands and what it could not use. `source` is
  // pod_resources (--pod-resources-socket) or job_mapping (--job-mapping-dir).
  {
    name: "trueidle_agent_owner_allocated_gpus",
    type: "gauge",
    help: "GPUs in the agent's last sample that a scheduler allocated to at least one pod or job (kubelet pod-resources, job mapping).",
    value: (s) => s.allocatedGpus,
  },
  {
    name: "trueidle_agent_owner_source_ready",
    type: "gauge",
    help: "1 while an owner source's last answer is current, else 0 (no answer yet, or older than its bound, so its allocations are dropped); by source.",
    value: (s) => bySource(s.owners, (a) => (a.ready ? 1 : 0)),
  },
  {
    name: "trueidle_agent_owner_reads_total",
    type: "counter",
    help: "Reads of an owner source that gave an answer (a List call to the kubelet, a scan of the mapping directory), by source.",
    value: (s) => bySource(s.owners, (a) => a.stats.reads),
  },
  {
    name: "trueidle_agent_owner_read_failures_total",
    type: "counter",
    help:
      "Reads of an owner source that gave no answer, by source and reason (pod_resources: socket_missing, which is expected on a node without a kubelet, " +
      "not_a_socket, permission_denied, deadline, unavailable, bad_answer, too_large, unimplemented, error, and allocatable_<reason> for GetAllocatableResources; " +
      "job_mapping: unreadable_dir, error).",
    value: (s) => bySourceAndKey(s.owners, (a) => a.stats.failures),
  },
  {
    name: "trueidle_agent_owner_rejected_total",
    type: "counter",
    help:
      "Parts of an owner source's answer left out as unusable, by source and reason: device ids the kubelet names that match no GPU (mig_index, gke_mig, " +
      "index_unknown, unknown, dra, bad_name; counted at every read), mapping files or lines refused (too_large, binary, not_a_file, unreadable_file, " +
      "not_gpu_name, index_unknown, bad_line, too_many_entries; counted once per file version).",
    value: (s) => bySourceAndKey(s.owners, (a) => a.stats.rejected),
  },
  {
    name: "trueidle_agent_owner_stale_drops_total",
    type: "counter",
    help: "Times an owner source's last answer grew older than its bound and its allocations were dropped until it answers again, by source.",
    value: (s) => bySource(s.owners, (a) => a.stats.staleDrops),
  },
  {
    name: "trueidle_agent_owner_dropped_total",
    type: "counter",
    help: "Owners left out of a read because a GPU had more pods or jobs than the per-GPU bound (16), counted at every read, by source.",
    value: (s) => bySource(s.owners, (a) => a.stats.ownersDropped),
  },
  {
    name: "trueidle_agent_owner_process_lookups_total",
    type: "counter",
    help:
      "Looks at who runs a GPU process (the host's /proc under --host-root), by result: attributed (an owner found), vanished (the process ended " +
      "before it was read), not_visible (the agent does not see the host's PIDs). Lookups that found nothing for another reason count in " +
      "trueidle_agent_owner_process_read_errors_total.",
    value: (s) => {
      const c = s.owners?.processes?.counters;
      if (c === undefined) return [];
      return [
        [{ result: "attributed" }, c.attributed],
        [{ result: "vanished" }, c.vanished],
        [{ result: "not_visible" }, c.notVisible],
      ];
    },
  },
  {
    name: "trueidle_agent_owner_process_read_errors_total",
    type: "counter",
    help:
      "Files about GPU processes that could not be read or were not what the kernel writes, by file (stat, cgroup, status, comm, passwd, pid) " +
      "and reason (an errno such as eacces, missing, too_large, binary, malformed, invalid); such processes are attributed without what the file says.",
    value: (s) => {
      const c = s.owners?.processes?.counters;
      if (c === undefined) return [];
      const out: LabelledValue[] = [];
      for (const counts of [c.unreadable, c.badInput]) {
        for (const [key, n] of Object.entries(counts)) {
          const cut = key.indexOf("_");
          out.push([{ file: cut < 0 ? key : key.slice(0, cut), reason: cut < 0 ? "unknown" : key.slice(cut + 1) }, n]);
        }
      }
      return out;
    },
  },
  {
    name: "trueidle_agent_owner_host_pids_visible",
    type: "gauge",
    help:
      "1 when --host-root's /proc shows the host's PIDs (GPU processes can be attributed), 0 when it does not (a container without hostPID: " +
      "owners then come from the schedulers only); absent before the first GPU process was looked up, and when process owners are off.",
    value: (s) => {
      const view = s.owners?.processes?.hostPids;
      return view === undefined ? undefined : view.visible ? 1 : 0;
    },
  },
];

/** The table's families as Prometheus text; values in seconds rounded to the microsecond. */
export function renderAgentMetrics(agent: AgentMetricsSource): string {
  const stats = agent.stats();
  let out = "";
  for (const m of AGENT_METRICS) {
    out += familyHeader(m.name, m.type, m.help);
    const format = m.name.includes("_seconds") ? formatSeconds : formatValue;
    const v = m.value(stats);
    if (typeof v === "number") out += `${m.name} ${format(v)}\n`;
    else for (const [labels, n] of v ?? []) out += `${m.name}{${labelPairs(Object.entries(labels))}} ${format(n)}\n`;
  }
  return out;
}

/** One sample per allocation source. */
function bySource(
  owners: OwnerStats | undefined,
  value: (a: OwnerStats["allocations"][number]) => number,
): LabelledValue[] {
  return (owners?.allocations ?? []).map((a) => [{ source: a.name }, value(a)]);
}

/** One sample per allocation source and reason it counted. */
function bySourceAndKey(
  owners: OwnerStats | undefined,
  counts: (a: OwnerStats["allocations"][number]) => Record<string, number>,
): LabelledValue[] {
  const out: LabelledValue[] = [];
  for (const a of owners?.allocations ?? [])
    for (const [reason, n] of Object.entries(counts(a))) out.push([{ source: a.name, reason }, n]);
  return out;
}
