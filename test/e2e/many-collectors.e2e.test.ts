/**
 * Many collectors behind one DNS name, the way a Kubernetes headless Service serves them:
 * three collector subprocesses on 127.0.0.1, .2 and .3 (one port), one InfluxDB, and a
 * DNS server answering the name with the three addresses. Twelve agents, each given the
 * one name (`dns://SERVER/NAME:PORT`), spread over the three by a hash of their host names
 * (agent/shipper/collector-choice.ts); a real Prometheus scrapes all three.
 *
 * Then the collector with the most agents is frozen (SIGSTOP) across a window boundary, so
 * that it holds windows it has neither counted nor acknowledged, and killed (SIGKILL): its
 * agents move to their next address and resend what it had not acknowledged. What this shows:
 *
 * - InfluxDB holds every window the agents measured exactly once (a window resent to a
 *   second collector overwrites the same point: same tags, same timestamp).
 * - For GPUs whose collector stayed up, Prometheus's `sum without(instance)` over the
 *   collectors equals InfluxDB exactly: nothing counted twice.
 * - For the GPUs that moved, the killed collector's final counters and the next one's add
 *   up to InfluxDB exactly: a window the killed one acknowledged is not resent, and one it
 *   held unacknowledged is resent and counted once, by the next. (A collector counts a
 *   window before its ack, so one that dies between the two leaves a window counted by
 *   it and again by the next; that gap is milliseconds wide and this test does not hit it.)
 * - Prometheus holds the killed collector's counters only as of its last scrape: what it
 *   counted after that died with it, and the sum over collectors falls short by that much.
 *   Exact totals come from InfluxDB (`trueidle report`).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { rankAddresses } from "../../agent/shipper/collector-choice.js";
import { startDnsServer, type DnsServer } from "../helpers/dns-server.js";
import { accountWindows, describeAccounting } from "../helpers/fleet-accounting.js";
import {
  eventually,
  Fleet,
  sumOf,
  WINDOW_MS,
  type AgentNode,
  type CollectorNode,
  type ExpositionSample,
} from "../helpers/fleet-harness.js";
import { freePort } from "../helpers/ports.js";
import { startPrometheus, type PrometheusHandle } from "../helpers/prometheus.js";

const NAME = "collectors.trueidle.test";
const ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const HOSTS = Array.from({ length: 12 }, (_, i) => `mc-${String(i + 1).padStart(2, "0")}`);
const EPSILON = 1e-6;

/** The JSON log records of an agent's current run with this message. */
function logLines(agent: AgentNode, msg: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of agent.current?.proc.output().split("\n") ?? []) {
    if (!line.startsWith("{")) continue;
    try {
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec["msg"] === msg) out.push(rec);
    } catch {
      // Not a log record.
    }
  }
  return out;
}

function perUuid(samples: readonly ExpositionSample[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples)
    if (s.name === "trueidle_gpu_observed_seconds_total") {
      const uuid = s.labels["uuid"] ?? "";
      out.set(uuid, (out.get(uuid) ?? 0) + s.value);
    }
  return out;
}

describe("three collectors behind one DNS name, one of them killed", () => {
  let fleet: Fleet | undefined;
  let dns: DnsServer | undefined;
  let prom: PrometheusHandle | undefined;
  afterAll(async () => {
    await prom?.stop();
    await fleet?.stop();
    await dns?.close();
  });

  it("agents spread over the three and fail over; InfluxDB holds every window once and Prometheus sums without counting twice", async () => {
    fleet = await Fleet.start("many-collectors");
    dns = await startDnsServer({ [NAME]: ADDRESSES });
    const port = await freePort();
    const collectors: CollectorNode[] = [];
    // Every /metrics rendered anew: the counters read just before the kill are the collector's own.
    const args = ["--metrics-cache-max-age", "0"];
    for (const ip of ADDRESSES) collectors.push(await fleet.startCollector({ grpcHost: ip, grpcPort: port, args }));
    prom = await startPrometheus({
      scrapeTargets: collectors.map((c) => `127.0.0.1:${c.httpPort}`),
      scrapeIntervalMs: 1000,
    });

    // Where each agent goes follows from its host name alone: every collector gets some.
    const plan = new Map(HOSTS.map((h) => [h, rankAddresses(ADDRESSES, h).map((a) => `${a}:${port}`)]));
    const firstOf = (h: string): string => plan.get(h)![0]!;
    for (const c of collectors) expect(HOSTS.filter((h) => firstOf(h) === c.address).length).toBeGreaterThan(0);

    const scenarios = path.join(fleet.dir, "scenarios");
    mkdirSync(scenarios);
    const entry = `dns://127.0.0.1:${dns.port}/${NAME}:${port}`;
    for (let i = 0; i < HOSTS.length; i += 4) {
      await Promise.all(
        HOSTS.slice(i, i + 4).map((host) => {
          const file = path.join(scenarios, `${host}.json`);
          writeFileSync(
            file,
            JSON.stringify({
              host,
              gpus: [
                {
                  model: "NVIDIA H100 80GB HBM3",
                  count: 2,
                  phases: [
                    { for: "3s", state: "active" },
                    { for: "4s", state: "held_idle" },
                  ],
                },
              ],
            }),
          );
          return fleet!.startAgent({ scenario: file, collectors: [entry] });
        }),
      );
    }
    const agents = new Map(fleet.agents.map((a) => [a.host, a]));
    for (const c of collectors) {
      const n = HOSTS.filter((h) => firstOf(h) === c.address).length;
      await eventually(`${n} agents connected to ${c.name}`, async () =>
        (await c.metric("trueidle_agents_connected")) === n ? true : undefined,
      );
    }
    for (const h of HOSTS) {
      const connected = logLines(agents.get(h)!, "Connected to the collector.");
      expect(connected.map((r) => [r["collector"], r["address"]])).toEqual([[entry, firstOf(h)]]);
    }
    expect(dns.queries.get(NAME)).toBeGreaterThanOrEqual(HOSTS.length);
    await sleep(4_000);

    // The collector with the most agents is stopped mid-window, when every window closed
    // at the last boundary is acknowledged and counted: its counters, read just before, are final.
    const victim = collectors.reduce((a, b) =>
      HOSTS.filter((h) => firstOf(h) === b.address).length > HOSTS.filter((h) => firstOf(h) === a.address).length
        ? b
        : a,
    );
    const moved = HOSTS.filter((h) => firstOf(h) === victim.address);
    const stayed = HOSTS.filter((h) => firstOf(h) !== victim.address);
    const survivors = collectors.filter((c) => c !== victim);
    while (Date.now() % WINDOW_MS < 400 || Date.now() % WINDOW_MS > 550) await sleep(20);
    const atKill = perUuid(await victim.metrics());
    // Frozen past the next window boundary, it takes in the windows its agents close there
    // and neither counts nor acknowledges them; then it dies with them unacknowledged.
    process.kill(victim.proc!.child.pid!, "SIGSTOP");
    await sleep(WINDOW_MS + 600);
    await victim.kill("SIGKILL");

    await eventually("every agent streaming to the two collectors left", async () => {
      let n = 0;
      for (const c of survivors) n += await c.metric("trueidle_agents_connected");
      return n === HOSTS.length ? true : undefined;
    });
    /** Windows each moved agent had not had acknowledged when it reached its next collector. */
    const resent = new Map<string, number>();
    for (const h of moved) {
      const lines = logLines(agents.get(h)!, "Connected to the collector.");
      expect(lines.map((r) => r["address"])).toEqual([firstOf(h), plan.get(h)![1]]);
      resent.set(h, Number(lines[1]!["buffered"]));
    }
    await sleep(4_000);

    await fleet.stopAgents();
    const windows = await fleet.settledWindows();
    const report = accountWindows(windows, fleet.agents);
    console.log(describeAccounting(report));
    expect(report.problems, fleet.output().slice(-20_000)).toEqual([]);
    const truth = await fleet.influxTotals();

    // Prometheus has scraped the survivors' final counters once its sum over them equals
    // what they serve now.
    const survivorCounts = new Map<string, number>();
    for (const c of survivors)
      for (const [uuid, v] of perUuid(await c.metrics())) survivorCounts.set(uuid, (survivorCounts.get(uuid) ?? 0) + v);
    const victimInstance = `127.0.0.1:${victim.httpPort}`;
    await prom.waitFor(
      `sum without(instance) (trueidle_gpu_observed_seconds_total{instance!="${victimInstance}"})`,
      (rs) =>
        rs.length === survivorCounts.size && rs.every((r) => r.value === survivorCounts.get(r.metric["uuid"] ?? "")),
    );
    const summed = await prom.query("sum without(instance) (last_over_time(trueidle_gpu_observed_seconds_total[10m]))");
    const prometheusSum = new Map(summed.map((r) => [r.metric["uuid"] ?? "", r.value]));
    const lastScraped = new Map(
      (await prom.query(`last_over_time(trueidle_gpu_observed_seconds_total{instance="${victimInstance}"}[10m])`)).map(
        (r) => [r.metric["uuid"] ?? "", r.value],
      ),
    );

    for (const h of stayed)
      for (const uuid of agents.get(h)!.uuids) {
        expect(prometheusSum.get(uuid), `${h} ${uuid}`).toBeCloseTo(truth.get(uuid)!.sum, 6);
      }
    const lines: string[] = [];
    for (const h of moved) {
      const uuids = agents.get(h)!.uuids;
      const total = (m: ReadonlyMap<string, number>): number => uuids.reduce((s, u) => s + (m.get(u) ?? 0), 0);
      const influx = uuids.reduce((s, u) => s + truth.get(u)!.sum, 0);
      const twice = total(atKill) + total(survivorCounts) - influx;
      const afterLastScrape = total(atKill) - total(lastScraped);
      lines.push(
        `${h}: InfluxDB ${influx.toFixed(1)} s; counted twice ${Math.abs(twice) < EPSILON ? "0" : twice.toFixed(1)} s (${resent.get(h)} windows unacknowledged when it reconnected); ` +
          `Prometheus ${total(prometheusSum).toFixed(1)} s, missing ${afterLastScrape.toFixed(1)} s counted after the killed collector's last scrape`,
      );
      // What the killed collector acknowledged was not resent, and what it held unacknowledged
      // was resent and counted once, by the collector the agent moved to.
      expect(resent.get(h), h).toBeGreaterThan(0);
      expect(Math.abs(twice), h).toBeLessThan(EPSILON);
      expect(afterLastScrape, h).toBeGreaterThanOrEqual(-EPSILON);
    }
    console.log(lines.join("\n"));
    expect(sumOf(await survivors[0]!.metrics(), "trueidle_windows_rejected_total")).toBe(0);
    for (const c of survivors) expect(await c.stop()).toBe(0);
  }, 240_000);
});
