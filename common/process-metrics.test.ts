import { register } from "prom-client";
import { describe, expect, it } from "vitest";
import { declaredFamilies, expectValidExposition } from "../test/helpers/exposition-check.js";
import { processMetrics, ProcessMetrics } from "./process-metrics.js";

/** The value of an unlabelled series. */
function value(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`no ${name} in:\n${text}`);
  return Number(m[1]);
}

const metrics = processMetrics();

describe("process metrics", () => {
  it("renders prom-client's default families under their usual names, each once, and promtool accepts the text", async () => {
    const text = await metrics.render();
    const families = declaredFamilies(text);
    for (const f of [
      "process_cpu_user_seconds_total",
      "process_cpu_system_seconds_total",
      "process_cpu_seconds_total",
      "process_start_time_seconds",
      "process_resident_memory_bytes",
      "process_open_fds",
      "process_max_fds",
      "nodejs_eventloop_lag_seconds",
      "nodejs_eventloop_lag_p99_seconds",
      "nodejs_heap_size_used_bytes",
      "nodejs_active_handles",
      "nodejs_gc_duration_seconds",
      "nodejs_version_info",
    ])
      expect(families, f).toContain(f);
    // Gauges named like counters are left out; their plain names stay.
    for (const f of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"])
      expect(families, f).not.toContain(f);
    expect(text).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
    expect(text).toMatch(/^# TYPE nodejs_gc_duration_seconds histogram$/m);
    expect(text).toContain(`nodejs_version_info{version="${process.version}",`);
    await expectValidExposition(text);
  });

  it("counts the whole process's CPU time since it started, user and system from one reading", async () => {
    const before = process.cpuUsage();
    const first = await metrics.render();
    // Burn a little CPU: the counter must move by at least what this thread spent.
    const until = process.cpuUsage(before).user + 20_000;
    while (process.cpuUsage(before).user < until) Math.sqrt(Math.random());
    const second = await metrics.render();
    const after = process.cpuUsage();
    expect(value(first, "process_cpu_seconds_total")).toBeGreaterThanOrEqual((before.user + before.system) / 1e6);
    expect(
      value(second, "process_cpu_seconds_total") - value(first, "process_cpu_seconds_total"),
    ).toBeGreaterThanOrEqual(0.02);
    expect(value(second, "process_cpu_seconds_total")).toBeLessThanOrEqual((after.user + after.system) / 1e6);
    for (const text of [first, second]) {
      const [user, system, total] = ["user_", "system_", ""].map((k) => value(text, `process_cpu_${k}seconds_total`));
      expect(Math.round((user! + system!) * 1e6)).toBe(Math.round(total! * 1e6));
    }
  });

  it("gives the resident memory and the start time of this process", async () => {
    const text = await metrics.render();
    expect(value(text, "process_resident_memory_bytes")).toBeGreaterThan(10 * 1024 * 1024);
    expect(
      Math.abs(value(text, "process_start_time_seconds") - (Date.now() / 1000 - process.uptime())),
    ).toBeLessThanOrEqual(1);
  });

  it("is one set per process, kept out of prom-client's global registry", () => {
    expect(processMetrics()).toBe(metrics);
    expect(metrics).toBeInstanceOf(ProcessMetrics);
    expect(register.getMetricsAsArray()).toEqual([]);
  });
});

describe("process metrics without the event-loop delay monitor (the agent's)", () => {
  it("leaves out the monitor's seven gauges and keeps the lag measured at each scrape", async () => {
    const light = new ProcessMetrics({ eventLoopHistogram: false });
    const families = declaredFamilies(await light.render());
    expect(families).toContain("nodejs_eventloop_lag_seconds");
    expect(families).toContain("process_cpu_seconds_total");
    for (const s of ["min", "max", "mean", "stddev", "p50", "p90", "p99"])
      expect(families).not.toContain(`nodejs_eventloop_lag_${s}_seconds`);
    expect(declaredFamilies(await metrics.render())).toContain("nodejs_eventloop_lag_p99_seconds");
  });
});
