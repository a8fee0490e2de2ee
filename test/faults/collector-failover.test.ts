/**
 * Two collectors behind one address list (`--collector a,b`), both writing the same
 * InfluxDB. The one the agents stream to is killed with SIGKILL: they fail over to the
 * other. Then the first comes back and the second is killed: they fail over back. InfluxDB
 * must end up with every window the agents measured, exactly once.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { accountWindows, describeAccounting } from "../helpers/fleet-accounting.js";
import { eventually, Fleet, type CollectorNode } from "../helpers/fleet-harness.js";

const SCENARIOS = ["fault-a.json", "fault-b.json", "fault-c.json"];

describe("two collectors in one address list, one of them killed", () => {
  let fleet: Fleet | undefined;
  afterAll(async () => {
    await fleet?.stop();
  });

  async function connected(c: CollectorNode, n: number): Promise<void> {
    await eventually(
      `${n} agents connected to ${c.name}`,
      async () => ((await c.metric("trueidle_agents_connected")) === n ? true : undefined),
      90_000,
    );
  }

  it("agents fail over and InfluxDB holds every window once", async () => {
    fleet = await Fleet.start("collector-failover");
    const first = await fleet.startCollector();
    const second = await fleet.startCollector();
    const list = [first.address, second.address];
    await Promise.all(SCENARIOS.map((scenario) => fleet!.startAgent({ scenario, collectors: list })));
    await connected(first, SCENARIOS.length);
    expect(await second.metric("trueidle_agents_connected")).toBe(0);
    await sleep(3_000);

    await first.kill("SIGKILL");
    await connected(second, SCENARIOS.length);
    const onSecond = await second.metric("trueidle_windows_received_total");
    await eventually("windows received by the second collector", async () =>
      (await second.metric("trueidle_windows_received_total")) > onSecond + 20 ? true : undefined,
    );

    await first.start();
    await second.kill("SIGKILL");
    await connected(first, SCENARIOS.length);
    await sleep(3_000);

    await fleet.stopAgents();
    const report = accountWindows(await fleet.settledWindows(), fleet.agents);
    console.log(describeAccounting(report));
    expect(report.problems, fleet.output().slice(-20_000)).toEqual([]);
    expect(await first.stop()).toBe(0);
  }, 180_000);
});
