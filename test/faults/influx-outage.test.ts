/**
 * InfluxDB stopped for 60 s under a running fleet, then started again from its data. The
 * collector appends what it cannot write to its disk spool and acknowledges it, so agents
 * keep getting acks and buffer nothing; once InfluxDB is back the spool drains in order.
 * InfluxDB must end up with every window the agents measured, exactly once, and agree with
 * the collector's counters.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { accountWindows, compareCounters, describeAccounting } from "../helpers/fleet-accounting.js";
import { eventually, Fleet, sumOf, type AgentNode } from "../helpers/fleet-harness.js";

const OUTAGE_MS = 60_000;
/** An ack no older than this during the outage shows acks continue (the spool takes a write after 5 s). */
const ACK_AGE_BOUND_S = 20;

describe("InfluxDB stopped for 60 s, then started", () => {
  let fleet: Fleet | undefined;
  afterAll(async () => {
    await fleet?.stop();
  });

  it("acks continue through the spool, the spool drains, and InfluxDB holds every window once", async () => {
    fleet = await Fleet.start("influx-outage");
    const collector = await fleet.startCollector();
    const agents: AgentNode[] = await Promise.all(
      ["fault-a.json", "fault-b.json", "fault-c.json"].map((scenario) =>
        fleet!.startAgent({ scenario, collectors: [collector.address], httpListen: true }),
      ),
    );
    await eventually("three agents connected", async () =>
      (await collector.metric("trueidle_agents_connected")) === 3 ? true : undefined,
    );
    await eventually("windows in InfluxDB", async () =>
      (await fleet!.windowPoints()).length >= 30 ? true : undefined,
    );

    await fleet.stopInflux();
    const outageEnd = Date.now() + OUTAGE_MS;
    let maxAckAge = 0;
    let maxBuffered = 0;
    let maxSpoolBytes = 0;
    while (Date.now() < outageEnd) {
      await sleep(2_000);
      for (const a of agents) {
        const m = await a.metrics();
        // Absent before the first ack: no sample reads as an ack at the epoch, an age that fails the bound.
        maxAckAge = Math.max(maxAckAge, Date.now() / 1000 - sumOf(m, "trueidle_agent_last_ack_timestamp_seconds"));
        maxBuffered = Math.max(maxBuffered, sumOf(m, "trueidle_agent_buffered_windows"));
      }
      maxSpoolBytes = Math.max(maxSpoolBytes, await collector.metric("trueidle_spool_bytes"));
    }
    const spooled = await collector.metric("trueidle_spool_windows_total");
    // A minute of windows of nine GPUs went to the spool, and agents kept being acknowledged.
    expect(spooled).toBeGreaterThan(9 * 40);
    expect(maxSpoolBytes).toBeGreaterThan(0);
    expect(maxAckAge).toBeLessThan(ACK_AGE_BOUND_S);
    expect(maxBuffered).toBeLessThan(9 * 20);

    await fleet.startInflux();
    await eventually(
      "the spool drained",
      async () => ((await collector.metric("trueidle_spool_bytes")) === 0 ? true : undefined),
      120_000,
      1_000,
    );
    await sleep(3_000);

    await fleet.stopAgents();
    const report = accountWindows(await fleet.settledWindows(), fleet.agents);
    console.log(
      `${describeAccounting(report)}\n${spooled} windows spooled; largest spool ${maxSpoolBytes} bytes; oldest ack ${maxAckAge} s; most buffered on an agent ${maxBuffered}.`,
    );
    expect(report.problems, fleet.output().slice(-20_000)).toEqual([]);
    expect(compareCounters(await collector.metrics(), await fleet.influxTotals())).toEqual([]);
    expect(await collector.stop()).toBe(0);
  }, 300_000);
});
