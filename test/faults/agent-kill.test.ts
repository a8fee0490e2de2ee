/**
 * Agents killed with SIGKILL and started again with the same --state-dir: one while the
 * collector is unreachable, so it dies holding seconds of unacknowledged windows on disk;
 * one while it streams. The restarted agents replay their state dirs; InfluxDB must end up
 * with every window measured before the kill and after the restart, exactly once. Only the
 * window a kill cut short and the one a restart began in may be partial or absent.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { accountWindows, compareCounters, describeAccounting } from "../helpers/fleet-accounting.js";
import { eventually, Fleet, type AgentNode } from "../helpers/fleet-harness.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

describe("agents killed with SIGKILL and restarted with their state dir", () => {
  let fleet: Fleet | undefined;
  let proxy: TcpProxy | undefined;
  afterAll(async () => {
    await proxy?.close();
    await fleet?.stop();
  });

  it("replay every window they measured, and InfluxDB holds each once", async () => {
    fleet = await Fleet.start("agent-kill");
    const collector = await fleet.startCollector();
    proxy = await TcpProxy.start({ targetPort: collector.grpcPort });
    const p = proxy;
    const [a, b, c] = (await Promise.all(
      ["fault-a.json", "fault-b.json", "fault-c.json"].map((scenario) =>
        fleet!.startAgent({ scenario, collectors: [p.address], httpListen: true }),
      ),
    )) as [AgentNode, AgentNode, AgentNode];
    await eventually("three agents connected", async () =>
      (await collector.metric("trueidle_agents_connected")) === 3 ? true : undefined,
    );
    await eventually("windows in InfluxDB", async () =>
      (await fleet!.windowPoints()).length >= 20 ? true : undefined,
    );

    // The collector unreachable: windows pile up unacknowledged in the agents' state dirs.
    await p.down();
    const downAt = Date.now();
    await sleep(5_000);
    // Killed mid-window, just after the harness read how many windows it had finished.
    await a.kill();
    await sleep(1_500);
    await a.start();
    await sleep(2_000);
    await p.up();

    // Killed while connected and streaming.
    await eventually("three agents connected again", async () =>
      (await collector.metric("trueidle_agents_connected")) === 3 ? true : undefined,
    );
    await b.kill();
    await sleep(1_500);
    await b.start();
    await eventually("three agents connected after the restarts", async () =>
      (await collector.metric("trueidle_agents_connected")) === 3 ? true : undefined,
    );
    await sleep(3_000);

    await fleet.stopAgents();
    const report = accountWindows(await fleet.settledWindows(), fleet.agents);
    console.log(describeAccounting(report));
    expect(report.problems, fleet.output().slice(-20_000)).toEqual([]);
    // Agent a died holding seconds of windows the collector never saw: its restart loaded
    // them from the state dir, and the accounting above found every one in InfluxDB.
    expect(a.runs[0]!.endedAtMs! - downAt).toBeGreaterThan(4_000);
    expect(a.runs[1]!.proc.output()).toMatch(/Loaded windows that were not acknowledged before the last stop/);
    expect(a.runs).toHaveLength(2);
    expect(a.runs[0]!.measuredAtKill).toBeGreaterThan(0);
    expect(b.runs[0]!.measuredAtKill).toBeGreaterThan(0);
    expect(c.runs).toHaveLength(1);
    // One collector, never restarted: each window counted once, however often it came.
    expect(compareCounters(await collector.metrics(), await fleet.influxTotals())).toEqual([]);
  }, 180_000);
});
