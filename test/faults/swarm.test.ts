/**
 * 300 agent connections on one collector: three processes of 100 in-process agents, each
 * agent with its own TCP connection and stream. Acks keep flowing to every agent, the
 * collector's memory stays under a generous bound, and at the end InfluxDB holds exactly
 * the windows the agents measured. (`npm run soak` runs the same for minutes.)
 */
import { afterAll, describe, expect, it } from "vitest";
import { compareCounters } from "../helpers/fleet-accounting.js";
import { eventually, Fleet } from "../helpers/fleet-harness.js";
import { SwarmProcess } from "../helpers/swarm-process.js";

const PROCESSES = 3;
const AGENTS_PER_PROCESS = 100;
const GPUS = 2;
/** Windows per GPU the swarm must have acknowledged after all agents connected. */
const WINDOWS_PER_GPU = 5;
const RSS_BOUND_BYTES = 400 * 1024 * 1024;

describe("300 agent connections on one collector", () => {
  let fleet: Fleet | undefined;
  const swarms: SwarmProcess[] = [];
  afterAll(async () => {
    for (const s of swarms) s.kill();
    await fleet?.stop();
  });

  it("acks flow to every agent, memory stays bounded, InfluxDB holds every window once", async () => {
    fleet = await Fleet.start("swarm");
    const collector = await fleet.startCollector();
    for (let p = 0; p < PROCESSES; p++) {
      swarms.push(
        new SwarmProcess({
          collector: collector.address,
          agents: AGENTS_PER_PROCESS,
          prefix: `swarm${p}`,
          gpus: GPUS,
          interval: "500ms",
          window: "5s",
        }),
      );
    }
    const rss: number[] = [];
    const sampler = setInterval(() => {
      if (collector.running) rss.push(collector.rss());
    }, 2_000);
    try {
      const total = PROCESSES * AGENTS_PER_PROCESS;
      await eventually(
        `${total} agents connected`,
        async () => ((await collector.metric("trueidle_agents_connected")) === total ? true : undefined),
        120_000,
        1_000,
      );
      const base = swarms.map((s) => s.last?.acked ?? 0);
      const want = AGENTS_PER_PROCESS * GPUS * WINDOWS_PER_GPU;
      const during = await Promise.all(
        swarms.map((s, i) =>
          s.waitFor(
            `${want} more windows acknowledged, to every agent`,
            (x) => x.acked >= base[i]! + want && x.acking === AGENTS_PER_PROCESS,
            180_000,
          ),
        ),
      );
      for (const d of during)
        expect(d).toMatchObject({ connected: AGENTS_PER_PROCESS, acking: AGENTS_PER_PROCESS, dropped: 0, rejected: 0 });
    } finally {
      clearInterval(sampler);
    }

    const finals = await Promise.all(swarms.map((s) => s.stop()));
    const measured = finals.reduce((n, f) => n + f.windows, 0);
    for (const f of finals) expect(f).toMatchObject({ acked: f.windows, buffered: 0, dropped: 0, rejected: 0 });

    const totals = await fleet.settle(120_000);
    expect(totals.size).toBe(PROCESSES * AGENTS_PER_PROCESS * GPUS);
    expect([...totals.values()].reduce((n, t) => n + t.count, 0)).toBe(measured);
    expect(compareCounters(await collector.metrics(), totals)).toEqual([]);

    const maxRss = Math.max(...rss);
    console.log(
      `${measured} windows from ${PROCESSES * AGENTS_PER_PROCESS} agents; collector RSS ${rss.length} samples, max ${(maxRss / 2 ** 20).toFixed(0)} MiB.`,
    );
    expect(rss.length).toBeGreaterThan(5);
    expect(maxRss).toBeLessThan(RSS_BOUND_BYTES);
    expect(collector.running).toBe(true);
  }, 300_000);
});
