/**
 * The collector is killed with SIGKILL mid-stream, twice — once while agents stream, once
 * while they replay what it had not acknowledged — and started again on the same ports
 * and spool dir. Agents keep every unacknowledged window and send it again; InfluxDB must
 * end up with every window the agents measured, exactly once.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { accountWindows, describeAccounting } from "../helpers/fleet-accounting.js";
import { eventually, Fleet, type CollectorNode } from "../helpers/fleet-harness.js";

const SCENARIOS = ["fault-a.json", "fault-b.json", "fault-c.json"];

describe("the collector killed with SIGKILL and restarted", () => {
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

  it("loses no window and doubles none", async () => {
    fleet = await Fleet.start("collector-kill");
    const collector = await fleet.startCollector();
    await Promise.all(SCENARIOS.map((scenario) => fleet!.startAgent({ scenario, collectors: [collector.address] })));
    await connected(collector, SCENARIOS.length);
    await eventually("windows in InfluxDB", async () =>
      (await fleet!.windowPoints()).length >= 30 ? true : undefined,
    );

    // Killed while windows stream; agents buffer what it did not acknowledge meanwhile.
    await collector.kill("SIGKILL");
    await sleep(3_000);
    await collector.start();
    await connected(collector, SCENARIOS.length);
    // Killed again at once, while the agents replay their backlog.
    await collector.kill("SIGKILL");
    await sleep(2_000);
    await collector.start();
    await connected(collector, SCENARIOS.length);
    const before = (await fleet.windowPoints()).length;
    await eventually("windows flowing after the restarts", async () =>
      (await fleet!.windowPoints()).length >= before + 30 ? true : undefined,
    );

    await fleet.stopAgents();
    const report = accountWindows(await fleet.settledWindows(), fleet.agents);
    console.log(describeAccounting(report));
    expect(report.problems, fleet.output().slice(-20_000)).toEqual([]);
    expect(collector.starts).toBe(3);
    expect(await collector.stop()).toBe(0);
  }, 180_000);
});
