import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { declaredFamilies, expectValidExposition } from "../test/helpers/exposition-check.js";
import { FleetState } from "./fleet-state.js";
import { CollectorHttpServer } from "./http-server.js";
import { METRIC_TABLE } from "./metrics-table.js";
import { SelfMetrics } from "./self-metrics.js";
import { makeWindow } from "./testdata/windows.js";

let server: CollectorHttpServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

describe("collector /metrics", () => {
  it("serves the fleet and the collector's families, then the process and Node.js metrics, each family once, and promtool accepts the page", async () => {
    const fleet = new FleetState();
    fleet.applyWindow({ hostname: "node-1", labels: { site: "dc1" }, windowMs: 10_000 }, makeWindow());
    server = new CollectorHttpServer({ fleet, self: new SelfMetrics(), logger: silentLogger });
    const port = await server.listen({ host: "127.0.0.1", port: 0 });
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const families = declaredFamilies(text);
    // Without owners the table's owner families are not written.
    const own = METRIC_TABLE.filter((m) => m.scope !== "owner").map((m) => m.name);
    expect(families.slice(0, own.length)).toEqual(own);
    const rest = families.slice(own.length);
    for (const f of [
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "process_start_time_seconds",
      "process_open_fds",
      "nodejs_heap_size_used_bytes",
      "nodejs_eventloop_lag_p99_seconds",
      "nodejs_gc_duration_seconds",
    ]) {
      expect(rest, f).toContain(f);
    }
    expect(
      rest.every((f) => f.startsWith("process_") || f.startsWith("nodejs_")),
      rest.join(", "),
    ).toBe(true);
    await expectValidExposition(text);
  });
});
