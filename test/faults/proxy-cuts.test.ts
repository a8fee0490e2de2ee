/**
 * A TCP proxy between the agents and the collector resets every connection every 2.5 s for
 * about half a minute. Agents reconnect and send again what was not acknowledged; InfluxDB
 * must end up with every window the agents measured exactly once, and the collector's
 * counters with each window counted once.
 */
import { afterAll, describe, expect, it } from "vitest";
import { accountWindows, compareCounters, describeAccounting } from "../helpers/fleet-accounting.js";
import { eventually, Fleet } from "../helpers/fleet-harness.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const CUT_EVERY_MS = 2_500;
/** Cut rounds before the proxy calms down: about 30 s. */
const CUT_ROUNDS = 12;

describe("connections between agents and the collector cut every few seconds", () => {
  let fleet: Fleet | undefined;
  let proxy: TcpProxy | undefined;
  afterAll(async () => {
    await proxy?.close();
    await fleet?.stop();
  });

  it("InfluxDB holds every measured window exactly once", async () => {
    fleet = await Fleet.start("proxy-cuts");
    const collector = await fleet.startCollector();
    proxy = await TcpProxy.start({ targetPort: collector.grpcPort });
    const p = proxy;
    await Promise.all(
      ["fault-a.json", "fault-b.json", "fault-c.json"].map((scenario) =>
        fleet!.startAgent({ scenario, collectors: [p.address] }),
      ),
    );
    await eventually("three agents connected", async () =>
      (await collector.metric("trueidle_agents_connected")) === 3 ? true : undefined,
    );

    p.cutEvery(CUT_EVERY_MS);
    await eventually(
      `${CUT_ROUNDS} rounds of cuts`,
      () => (p.cutRounds >= CUT_ROUNDS ? true : undefined),
      120_000,
      500,
    );
    p.stopCutting();
    // Every round found the agents' connections open again: they reconnected each time.
    expect(p.cut).toBeGreaterThanOrEqual(CUT_ROUNDS);
    expect(p.accepted).toBeGreaterThan(CUT_ROUNDS);

    await eventually("three agents connected again", async () =>
      (await collector.metric("trueidle_agents_connected")) === 3 ? true : undefined,
    );
    await fleet.stopAgents();
    const points = await fleet.settledWindows();
    const report = accountWindows(points, fleet.agents);
    console.log(`${describeAccounting(report)}\n${p.cut} connections cut in ${p.cutRounds} rounds.`);
    expect(report.problems, fleet.output().slice(-20_000)).toEqual([]);
    expect(report.points).toBeGreaterThan(0);
    expect(compareCounters(await collector.metrics(), await fleet.influxTotals())).toEqual([]);
  }, 180_000);
});
