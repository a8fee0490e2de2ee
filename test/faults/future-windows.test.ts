/**
 * Windows from a clock that jumps, over real sockets: a collector subprocess writing to a
 * real InfluxDB, and a raw gRPC client sending what an agent whose clock ran ahead and
 * then stepped back would send — one window stamped 4m50s ahead (inside
 * --max-window-future), then the GPU's normal windows, which fall in the gap the future
 * window left. The client is a grpc-js stream that sends each batch once the previous one
 * is acknowledged, as an agent does. Each normal window must be counted once, a replay acknowledged without
 * being counted again (but counted as a replay), and a window that partly overlaps time
 * already counted refused as `overlap`, counted, logged and kept out of InfluxDB.
 */
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { batchRequest, helloRequest, makeWindow } from "../../collector/testdata/windows.js";
import type { GpuWindow, StreamResponse } from "../../gen/trueidle/v1/ingest_pb.js";
import { eventually, Fleet, sumOf, type CollectorNode } from "../helpers/fleet-harness.js";
import { ProbeFactory } from "../helpers/ingest-probe.js";

const HOST = "clock-jumper";
const UUID = "GPU-cccccccc-0000-0000-0000-000000000001";
const WINDOW_MS = 10_000;

type Ack = { seq: bigint; accepted: number; rejections: [number, string, string][] };

function acks(responses: readonly StreamResponse[]): Ack[] {
  const out: Ack[] = [];
  for (const r of responses) {
    if (r.msg.case !== "ack") continue;
    const a = r.msg.value;
    out.push({ seq: a.seq, accepted: a.accepted, rejections: a.rejections.map((x) => [x.index, x.reason, x.field]) });
  }
  return out;
}

describe("windows from a clock that jumps, through a collector subprocess and InfluxDB", () => {
  let fleet: Fleet;
  let collector: CollectorNode;
  const probes = new ProbeFactory();

  beforeAll(async () => {
    fleet = await Fleet.start("future-windows");
    collector = await fleet.startCollector();
  });
  afterAll(async () => {
    probes.close();
    await fleet?.stop();
  });

  it("counts every window a future-stamped one skipped over, counts replays as replays, and refuses a partial overlap", async () => {
    const now = Date.now();
    const base = Math.floor(now / WINDOW_MS) * WINDOW_MS - 60_000;
    const at = (ms: number, init: Parameters<typeof makeWindow>[0] = {}): GpuWindow =>
      makeWindow({ uuid: UUID, startMs: BigInt(ms), ...init });
    // 4m50s ahead of the window the agent's clock should have stamped next, and within 5 min of now.
    const future = at(base + 60_000 + 290_000);
    const normal = Array.from({ length: 6 }, (_, k) => at(base + (k + 1) * WINDOW_MS));
    // Straddles the end of the time counted so far: half of it was counted, half not.
    const overlapping = at(base + 65_000);
    const before = await collector.metrics();

    const batches = [
      [at(base)],
      [future],
      normal.slice(0, 3),
      normal.slice(3),
      // Re-sent after a lost ack: two normal windows and the future one.
      [normal[0]!, normal[1]!, future],
      [overlapping],
    ];
    const probe = probes.open(collector.grpcPort);
    probe.send(helloRequest(HOST, {}, WINDOW_MS));
    expect((await probe.next()).msg.case).toBe("welcome");
    // One batch at a time, each sent once the previous is acknowledged, as an agent does.
    const answers: Ack[] = [];
    for (const [i, windows] of batches.entries()) {
      probe.send(batchRequest(i + 1, windows));
      answers.push(...acks([await probe.next()]));
    }
    probe.call.end();
    expect((await probe.status).code).toBe(status.OK);
    expect(answers).toEqual([
      { seq: 1n, accepted: 1, rejections: [] },
      { seq: 2n, accepted: 1, rejections: [] },
      { seq: 3n, accepted: 3, rejections: [] },
      { seq: 4n, accepted: 3, rejections: [] },
      { seq: 5n, accepted: 3, rejections: [] },
      { seq: 6n, accepted: 0, rejections: [[0, "overlap", "windows[0].start_ms"]] },
    ]);

    // Eight distinct windows of 10 s, each counted once; the replays and the refused one not at all.
    const after = await collector.metrics();
    const gpu = { host: HOST, uuid: UUID };
    expect(sumOf(after, "trueidle_gpu_observed_seconds_total", gpu)).toBe(80);
    expect(sumOf(after, "trueidle_gpu_state_seconds_total", { ...gpu, state: "free_idle" })).toBe(80);
    expect(sumOf(after, "trueidle_gpu_reported_idle_seconds_total", gpu)).toBe(80);
    const delta = (name: string, match: Record<string, string> = {}): number =>
      sumOf(after, name, match) - sumOf(before, name, match);
    expect(delta("trueidle_windows_received_total")).toBe(12);
    expect(delta("trueidle_windows_replayed_total")).toBe(3);
    expect(delta("trueidle_windows_rejected_total", { reason: "overlap" })).toBe(1);
    expect(delta("trueidle_windows_rejected_total")).toBe(1);

    // InfluxDB holds each window once (the replays overwrote themselves), and not the refused one.
    const points = await eventually("the eight windows in InfluxDB", async () => {
      const p = (await fleet.windowPoints()).filter((w) => w.uuid === UUID);
      return p.length >= 8 ? p : undefined;
    });
    await fleet.settle();
    const times = (await fleet.windowPoints())
      .filter((w) => w.uuid === UUID)
      .map((w) => w.timeMs - base)
      .sort((a, b) => a - b);
    expect(times).toEqual([0, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 350_000]);
    expect(points.every((w) => w.observedS === 10 && w.host === HOST)).toBe(true);

    // The refusal is logged with host, GPU and the overlap.
    const warn = collector
      .output()
      .split("\n")
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return undefined;
        }
      })
      .find((l) => l?.["level"] === "warn" && String(l["msg"]).includes("refused as overlap"));
    expect(warn, collector.output().slice(-4_000)).toMatchObject({
      host: HOST,
      uuid: UUID,
      startMs: base + 65_000,
      durationMs: WINDOW_MS,
    });
    expect(String(warn?.["msg"])).toContain(
      `from ${new Date(base + 65_000).toISOString()} to ${new Date(base + 75_000).toISOString()} partly overlaps time the GPU's windows already covered ` +
        `(${new Date(base).toISOString()} to ${new Date(base + 70_000).toISOString()})`,
    );
    expect(collector.running).toBe(true);
  }, 120_000);
});
