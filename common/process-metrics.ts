/**
 * The process and Node.js metrics that Prometheus operators expect on every `/metrics` of a
 * Node program: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
 * `process_start_time_seconds`, `process_open_fds`, `nodejs_heap_*`, `nodejs_eventloop_lag_*`,
 * `nodejs_gc_duration_seconds` and the rest of prom-client's default collectors, under
 * prom-client's names and with its settings.
 *
 * - They live in a registry of this module's own, never prom-client's global one, and are
 *   read when a scrape asks (render()); no JavaScript runs for them between scrapes. Two
 *   things watch the process meanwhile: a PerformanceObserver that records each garbage
 *   collection, and Node's event-loop delay monitor (perf_hooks.monitorEventLoopDelay), a
 *   native timer that prom-client starts at its default resolution of 10 ms and that feeds
 *   `nodejs_eventloop_lag_{min,max,mean,stddev,p50,p90,p99}_seconds`. The resolution stays at
 *   that default: Node's histogram records the whole interval between two ticks of the
 *   monitor, so a coarser one would raise every one of those readings by as much (at 1 s the
 *   "lag" reads 1 s), unlike any other Node program's.
 * - An agent has no such monitor (`eventLoopHistogram: false`): a hundred wake-ups a second
 *   cost a process that wakes once a second several times its own work (measured: 184 µs of
 *   CPU per GPU-sample became 655). Its monitor is set to a resolution that never ticks and
 *   the seven histogram gauges are left out; `nodejs_eventloop_lag_seconds`, measured at each
 *   scrape, stays.
 * - One set per process, made by the first HTTP server that serves them (an agent only has
 *   one with --http-listen): they describe the process, and prom-client's collectors cannot
 *   be stopped once started, so a second set would only double the observers.
 * - `process_cpu_{user_,system_,}seconds_total` are the process's whole CPU time since it
 *   started, as process.cpuUsage() gives it: every thread (the agent's NVML worker thread
 *   included), not child processes (nvidia-smi). prom-client's own counters add up the CPU
 *   time between scrapes from the moment they were made, which leaves out start-up and sums
 *   fractions; these are set from one reading at each scrape.
 * - They are written by common/prom-text.ts like every other series, values of `_seconds`
 *   families rounded to the microsecond (formatSeconds).
 */
import { collectDefaultMetrics, Counter, Registry } from "prom-client";
import { familyHeader, formatSeconds, formatValue, labelPairs } from "./prom-text.js";

const CPU_COUNTERS = [
  {
    name: "process_cpu_user_seconds_total",
    help: "Total user CPU time spent in seconds, every thread of the process, since it started.",
    read: (u: NodeJS.CpuUsage) => u.user,
  },
  {
    name: "process_cpu_system_seconds_total",
    help: "Total system CPU time spent in seconds, every thread of the process, since it started.",
    read: (u: NodeJS.CpuUsage) => u.system,
  },
  {
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds, every thread of the process, since it started.",
    read: (u: NodeJS.CpuUsage) => u.user + u.system,
  },
] as const;

/** prom-client's gauges with a counter's suffix, left out. */
const LINTED_GAUGES = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
] as const;

/** The gauges fed by Node's event-loop delay monitor. */
const EVENT_LOOP_HISTOGRAM_GAUGES = ["min", "max", "mean", "stddev", "p50", "p90", "p99"].map(
  (s) => `nodejs_eventloop_lag_${s}_seconds`,
);
/** A monitor resolution that never ticks in a process's life (about 11.6 days), in ms. */
const NEVER_MS = 1_000_000_000;

export interface ProcessMetricsOptions {
  /** Node's event-loop delay monitor and its seven gauges (default true; see the module comment). */
  eventLoopHistogram?: boolean | undefined;
}

export class ProcessMetrics {
  private readonly registry = new Registry();

  constructor(opts: ProcessMetricsOptions = {}) {
    const histogram = opts.eventLoopHistogram ?? true;
    collectDefaultMetrics({
      register: this.registry,
      ...(histogram ? {} : { eventLoopMonitoringPrecision: NEVER_MS }),
    });
    if (!histogram) for (const name of EVENT_LOOP_HISTOGRAM_GAUGES) this.registry.removeSingleMetric(name);
    // prom-client also writes the active handles, requests and resources as gauges named
    // `…_total`, which promtool's lint (and the naming rules) refuse for a gauge; the same
    // figures stay under their plain names (nodejs_active_handles, …).
    for (const name of LINTED_GAUGES) this.registry.removeSingleMetric(name);
    // One reading sets all three, in the collect of the first: a registry reads its families
    // in the order they were registered, so the other two are read after it.
    const setAll = (): void => {
      const usage = process.cpuUsage();
      counters.forEach((c, i) => {
        c.reset();
        c.inc(CPU_COUNTERS[i]!.read(usage) / 1e6);
      });
    };
    const counters = CPU_COUNTERS.map(({ name, help }, i) => {
      this.registry.removeSingleMetric(name);
      return new Counter({ name, help, registers: [this.registry], ...(i === 0 ? { collect: setAll } : {}) });
    });
  }

  /** The families as Prometheus text (format 0.0.4), read now. */
  async render(): Promise<string> {
    let out = "";
    const families = await this.registry.getMetricsAsJSON();
    // process_* first, as other exporters write them; the CPU counters were registered last.
    families.sort((a, b) => Number(!a.name.startsWith("process_")) - Number(!b.name.startsWith("process_")));
    for (const family of families) {
      const format = family.name.includes("_seconds") ? formatSeconds : formatValue;
      out += familyHeader(family.name, String(family.type), family.help);
      for (const v of family.values as Array<{
        value: number;
        labels: Record<string, string | number | undefined>;
        metricName?: string;
      }>) {
        const labels = Object.entries(v.labels).flatMap(([k, x]) => (x === undefined ? [] : [[k, String(x)] as const]));
        const name = v.metricName ?? family.name;
        out += `${name}${labels.length > 0 ? `{${labelPairs(labels)}}` : ""} ${format(v.value)}\n`;
      }
    }
    return out;
  }
}

let shared: ProcessMetrics | undefined;

/** This process's set, made at the first call with that call's options (see the module comment). */
export function processMetrics(opts: ProcessMetricsOptions = {}): ProcessMetrics {
  shared ??= new ProcessMetrics(opts);
  return shared;
}
