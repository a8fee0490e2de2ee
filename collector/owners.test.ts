/**
 * Owners through the collector, over real gRPC: windows that say who held their GPUs
 * become `trueidle_gpu_owner_info` for the GPUs held now and
 * `trueidle_owner_state_seconds_total` by owner, with the owner fields --owner-labels
 * names; replays count nothing twice, and the exposition passes promtool.
 */
import { afterEach, describe, expect, it } from "vitest";
import { GpuState, OwnerSource, RealSource } from "../gen/trueidle/v1/ingest_pb.js";
import { promtool } from "../test/helpers/prometheus.js";
import type { Collector, CollectorOptions } from "./collector.js";
import { TestCollectors } from "./testdata/test-collectors.js";
import { batchRequest, helloRequest, makeWindow, T0 } from "./testdata/windows.js";

const harness = new TestCollectors();
afterEach(() => harness.stopAll());
const start = (extra: Partial<CollectorOptions> = {}): ReturnType<TestCollectors["start"]> => harness.start(extra);
const scrape = async (c: Collector): Promise<string> => (await fetch(`http://127.0.0.1:${c.httpPort}/metrics`)).text();
const lines = (text: string, name: string): string[] =>
  text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`))
    .sort();

const pod = { via: OwnerSource.POD_RESOURCES, namespace: "ml", pod: "trainer-0", container: "main" };
const alice = { via: OwnerSource.PROCESS, user: "alice", job: "88", pid: 4242, command: "python3" };

/** GPU 0 allocated to a pod and idle, GPU 1 free, GPU 2 busy with alice's process. */
function windows(startMs: number) {
  const start = BigInt(startMs);
  return [
    makeWindow(
      {
        uuid: "GPU-0",
        index: 0,
        startMs: start,
        freeIdleS: 0,
        heldIdleS: 10,
        heldByAllocationS: 10,
        owners: [{ ...pod, observedS: 10, heldIdleS: 10 }],
      },
      { state: GpuState.HELD_IDLE, heldBy: 4 },
    ),
    makeWindow({ uuid: "GPU-1", index: 1, startMs: start }),
    makeWindow(
      {
        uuid: "GPU-2",
        index: 2,
        startMs: start,
        freeIdleS: 0,
        activeS: 10,
        realBusyS: 8,
        heldByProcessS: 10,
        processesMax: 1,
        owners: [{ ...alice, observedS: 10, activeS: 10 }],
      },
      { state: GpuState.ACTIVE, real: 0.8, realSource: RealSource.SM_ACTIVE, processes: 1, heldBy: 1 },
    ),
  ];
}

async function send(c: Collector, seq: number, startMs: number): Promise<void> {
  const p = harness.probes.open(c.grpcPort);
  p.send(helloRequest("gpu-node-1"));
  expect((await p.next()).msg.case).toBe("welcome");
  p.send(batchRequest(seq, windows(startMs)));
  const ack = await p.next();
  expect(ack.msg.case === "ack" && ack.msg.value.accepted).toBe(3);
  p.call.end();
}

describe("owners on the collector", () => {
  it("shows the owners of held GPUs and sums their seconds by owner and state, once per window", async () => {
    const { collector } = await start();
    await send(collector, 1, T0);
    await send(collector, 1, T0); // the same windows again: replays
    const text = await scrape(collector);
    expect(lines(text, "trueidle_gpu_owner_info")).toEqual([
      'trueidle_gpu_owner_info{host="gpu-node-1",gpu="0",uuid="GPU-0",namespace="ml",pod="trainer-0",container="main",job="",user=""} 1',
      'trueidle_gpu_owner_info{host="gpu-node-1",gpu="2",uuid="GPU-2",namespace="",pod="",container="",job="88",user="alice"} 1',
    ]);
    const seconds = lines(text, "trueidle_owner_state_seconds_total").filter((l) => !l.endsWith(" 0"));
    expect(seconds).toEqual([
      'trueidle_owner_state_seconds_total{namespace="",pod="",container="",job="88",user="alice",state="active"} 10',
      'trueidle_owner_state_seconds_total{namespace="ml",pod="trainer-0",container="main",job="",user="",state="held_idle"} 10',
    ]);
    const check = await promtool(["check", "metrics"], text);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });

  it("labels owners with the fields --owner-labels names only, and leaves out owners with none of them", async () => {
    const { collector } = await start({ ownerLabels: ["namespace"] });
    await send(collector, 1, T0);
    const text = await scrape(collector);
    expect(lines(text, "trueidle_gpu_owner_info")).toEqual([
      'trueidle_gpu_owner_info{host="gpu-node-1",gpu="0",uuid="GPU-0",namespace="ml"} 1',
    ]);
    expect(lines(text, "trueidle_owner_state_seconds_total").filter((l) => !l.endsWith(" 0"))).toEqual([
      'trueidle_owner_state_seconds_total{namespace="ml",state="held_idle"} 10',
    ]);
  });

  it("exports no owner series with --owner-labels none", async () => {
    const { collector } = await start({ ownerLabels: [] });
    await send(collector, 1, T0);
    const text = await scrape(collector);
    expect(text).not.toContain("trueidle_gpu_owner_info");
    expect(text).not.toContain("trueidle_owner_state_seconds_total");
  });
});
