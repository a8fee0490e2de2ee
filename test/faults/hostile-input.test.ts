/**
 * Hostile input against a collector that requires tokens: bytes that are not protobuf, a
 * frame cut short, a frame past the size limit, Hellos no agent would send, windows with
 * impossible values, and wrong, missing or malformed tokens (raw HTTP/2, and a real agent
 * with a wrong token). The collector answers each with its status, counts it, and stays up:
 * /healthz answers 200 and a good agent's windows all reach InfluxDB.
 */
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeWindow } from "../../collector/testdata/windows.js";
import { accountWindows, describeAccounting } from "../helpers/fleet-accounting.js";
import { eventually, Fleet, SCENARIO_DIR, sumOf, type CollectorNode } from "../helpers/fleet-harness.js";
import { batchPayload, grpcFrame, helloPayload, rawGrpcCall, type RawGrpcOptions } from "../helpers/raw-grpc.js";
import { startTrueidle, type TrueidleProcess } from "../helpers/trueidle-process.js";

const GOOD_TOKEN = "4f2a9c0d6e8b1a3f5c7e9d0b2a4c6e8f";
const OTHER_TOKEN = "0000111122223333444455556666777788889999";
const AUTH: RawGrpcOptions = { authorization: `Bearer ${GOOD_TOKEN}` };

describe("hostile input to a collector that requires tokens", () => {
  let fleet: Fleet;
  let collector: CollectorNode;
  let address: string;
  const extra: TrueidleProcess[] = [];
  /** Streams this test expects the collector to have refused, by reason. */
  const refused = { invalid: 0, unauthenticated: 0 };

  beforeAll(async () => {
    fleet = await Fleet.start("hostile-input");
    const tokens = path.join(fleet.dir, "tokens");
    writeFileSync(tokens, `# agents of the fault tests\nfleet:${GOOD_TOKEN}\n`, { mode: 0o600 });
    collector = await fleet.startCollector({ args: ["--agent-tokens-file", tokens] });
    address = collector.address;
  });
  afterAll(async () => {
    await Promise.all(extra.map((p) => p.stop("SIGKILL")));
    await fleet?.stop();
  });

  it("answers garbage with INVALID_ARGUMENT and an oversized frame with RESOURCE_EXHAUSTED", async () => {
    const garbage = await rawGrpcCall(
      address,
      [grpcFrame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02, 0x03]))],
      AUTH,
    );
    expect(garbage).toMatchObject({ grpcStatus: status.INVALID_ARGUMENT, responses: [] });
    expect(garbage.grpcMessage).toMatch(/could not be decoded as trueidle\.v1\.StreamRequest/);
    refused.invalid++;

    const oversized = await rawGrpcCall(address, [grpcFrame(Buffer.alloc(5 * 1024 * 1024, 0x41))], AUTH);
    expect(oversized).toMatchObject({ grpcStatus: status.RESOURCE_EXHAUSTED, responses: [] });
    expect(oversized.grpcMessage).toMatch(/larger than max/);
  });

  it("reads nothing from a frame cut short: the Hello is welcomed, the truncated batch never acknowledged", async () => {
    const received = await collector.metric("trueidle_windows_received_total");
    const whole = Buffer.from(
      batchPayload({
        seq: 1n,
        windows: [
          makeWindow({ uuid: "GPU-aaaaaaaa-0000-0000-0000-000000000001", startMs: BigInt(Date.now() - 60_000) }),
        ],
      }),
    );
    // The length prefix promises the whole batch; half of it follows, then the request ends.
    const cut = grpcFrame(whole.subarray(0, whole.length >> 1), whole.length);
    const r = await rawGrpcCall(address, [grpcFrame(helloPayload({ hostname: "raw-truncated" })), cut], AUTH);
    expect(r.responses.map((m) => m.msg.case)).toEqual(["welcome"]);
    // grpc-js drops an incomplete last message when the request side ends; the call then ends normally.
    expect(r.grpcStatus).toBe(status.OK);
    expect(await collector.metric("trueidle_windows_received_total")).toBe(received);
  });

  it("refuses hostile Hellos with INVALID_ARGUMENT naming the field, and welcomes odd but valid labels", async () => {
    const nine = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, "v"]));
    const cases: Array<[Parameters<typeof helloPayload>[0], RegExp]> = [
      [{ hostname: "h", labels: { site: "dc1\nx=1" } }, /hello\.host\.labels\["site"\]: .*control characters/],
      [{ hostname: "h", labels: { "Site-Name": "x" } }, /hello\.host\.labels\["Site-Name"\]/],
      [{ hostname: "h", labels: { host: "spoof" } }, /hello\.host\.labels\["host"\]: .*reserved/],
      [{ hostname: "h", labels: { __name__: "x" } }, /hello\.host\.labels\["__name__"\]/],
      [{ hostname: "h", labels: { site: "x".repeat(10_000) } }, /hello\.host\.labels\["site"\]: .*longer than/],
      [{ hostname: "h", labels: nine }, /hello\.host\.labels holds 9 labels/],
      [{ hostname: "evil\u0000host" }, /hello\.host\.hostname/],
      [{ hostname: "x".repeat(1_000) }, /hello\.host\.hostname/],
      [{ hostname: "" }, /hello\.host\.hostname/],
      [{ hostname: "h", windowMs: 0 }, /hello\.window_ms/],
      [{ hostname: "h", labels: { le: "0.5" } }, /hello\.host\.labels\["le"\]: .*reserved/],
      [{ hostname: "h", labels: { quantile: "0.9" } }, /hello\.host\.labels\["quantile"\]: .*reserved/],
      [{ hostname: "h", labels: { time: "x" } }, /hello\.host\.labels\["time"\]: .*reserved/],
      [{ hostname: "gpu-a01\u202e10a-upg" }, /hello\.host\.hostname holds a bidi control character \(U\+202E\)/],
      [{ hostname: "h", labels: { site: "dc\u00851" } }, /hello\.host\.labels\["site"\]: .*U\+0085/],
      [
        { hostname: "h", labels: Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`k${i}`, "v".repeat(120)])) },
        /hello\.host: the host name and labels take \d+ bytes/,
      ],
    ];
    for (const [hello, message] of cases) {
      const r = await rawGrpcCall(address, [grpcFrame(helloPayload(hello))], AUTH);
      expect({ status: r.grpcStatus, message: r.grpcMessage }, JSON.stringify(hello).slice(0, 200)).toEqual({
        status: status.INVALID_ARGUMENT,
        message: expect.stringMatching(message),
      });
      refused.invalid++;
    }
    // A batch before any Hello, and a Hello twice.
    const early = await rawGrpcCall(address, [grpcFrame(batchPayload({ seq: 1n, windows: [] }))], AUTH);
    expect(early).toMatchObject({
      grpcStatus: status.INVALID_ARGUMENT,
      grpcMessage: expect.stringMatching(/before hello/),
    });
    const twice = await rawGrpcCall(
      address,
      [grpcFrame(helloPayload({ hostname: "h" })), grpcFrame(helloPayload({ hostname: "h" }))],
      AUTH,
    );
    expect(twice).toMatchObject({
      grpcStatus: status.INVALID_ARGUMENT,
      grpcMessage: expect.stringMatching(/hello was sent twice/),
    });
    refused.invalid += 2;

    const odd = await rawGrpcCall(
      address,
      [
        grpcFrame(
          helloPayload({ hostname: "odd host, =\"'", labels: { site: 'dc "1", rack=7 \\ é 💥', pool: "a,b c" } }),
        ),
      ],
      AUTH,
    );
    expect(odd.responses.map((m) => m.msg.case)).toEqual(["welcome"]);
    expect(odd.grpcStatus).toBe(status.OK);
  });

  it("refuses impossible windows one by one, with a reason each, and counts them", async () => {
    const before = await collector.metrics();
    const now = Date.now();
    const start = BigInt(Math.floor(now / 10_000) * 10_000 - 60_000);
    const windows = [
      makeWindow({ uuid: "GPU-bbbbbbbb-0000-0000-0000-000000000001", startMs: start, observedS: Number.NaN }),
      makeWindow({ uuid: "GPU-bbbbbbbb-0000-0000-0000-000000000002", startMs: start, observedS: -10 }),
      makeWindow({ uuid: "GPU-bbbbbbbb-0000-0000-0000-000000000003", startMs: BigInt(now + 86_400_000) }),
      makeWindow({ uuid: "GPU-bbbbbbbb-0000-0000-0000-000000000004", startMs: BigInt(now - 400 * 86_400_000) }),
      makeWindow({ uuid: "not a uuid\n", startMs: start }),
      makeWindow({ uuid: "GPU-bbbbbbbb-0000-0000-0000-000000000006", startMs: start, powerMeanW: 1e12 }),
    ];
    const r = await rawGrpcCall(
      address,
      [
        grpcFrame(helloPayload({ hostname: "raw-windows", windowMs: 10_000 })),
        grpcFrame(batchPayload({ seq: 1n, windows })),
      ],
      AUTH,
    );
    expect(r.grpcStatus).toBe(status.OK);
    const ack = r.responses[1]?.msg;
    expect(ack?.case).toBe("ack");
    if (ack?.case !== "ack") return;
    expect(ack.value.accepted).toBe(0);
    expect(ack.value.rejections.map((x) => [x.index, x.reason, x.field])).toEqual([
      [0, "bad_number", "windows[0].observed_s"],
      [1, "bad_number", "windows[1].observed_s"],
      [2, "in_future", "windows[2].start_ms"],
      [3, "too_old", "windows[3].start_ms"],
      [4, "bad_uuid", "windows[4].uuid"],
      [5, "bad_number", "windows[5].power_mean_w"],
    ]);
    const after = await collector.metrics();
    const rejected = (reason: string) =>
      sumOf(after, "trueidle_windows_rejected_total", { reason }) -
      sumOf(before, "trueidle_windows_rejected_total", { reason });
    expect({
      bad_number: rejected("bad_number"),
      in_future: rejected("in_future"),
      too_old: rejected("too_old"),
      bad_uuid: rejected("bad_uuid"),
    }).toEqual({ bad_number: 3, in_future: 1, too_old: 1, bad_uuid: 1 });
  });

  it("refuses a wrong, missing or malformed token with UNAUTHENTICATED, and never says which tokens it takes", async () => {
    const hello = [grpcFrame(helloPayload({ hostname: "intruder" }))];
    for (const authorization of [
      undefined,
      `Bearer ${OTHER_TOKEN}`,
      `Bearer ${GOOD_TOKEN}x`,
      `Basic ${Buffer.from(`fleet:${GOOD_TOKEN}`).toString("base64")}`,
      "Bearer",
      GOOD_TOKEN,
    ]) {
      const r = await rawGrpcCall(address, hello, { authorization });
      expect({ auth: authorization, status: r.grpcStatus, welcomed: r.responses.length }).toEqual({
        auth: authorization,
        status: status.UNAUTHENTICATED,
        welcomed: 0,
      });
      expect(r.grpcMessage).not.toContain(GOOD_TOKEN);
      refused.unauthenticated++;
    }
    expect(collector.proc!.output()).not.toContain(GOOD_TOKEN);
    expect(collector.proc!.output()).not.toContain(OTHER_TOKEN);
  });

  it("keeps header values grpc-js rejects out of the log, whole or in part, and logs such lines a few a minute at most", async () => {
    const before = collector.proc!.output().length;
    // A tab makes grpc-js refuse the header value; it used to log the value whole, token and all.
    const tabbed = await rawGrpcCall(address, [grpcFrame(helloPayload({ hostname: "tabbed" }))], {
      authorization: `Bearer\t${GOOD_TOKEN}`,
    });
    expect(tabbed.grpcStatus).toBe(status.UNAUTHENTICATED);
    refused.unauthenticated++;
    // Fifty streams with 8 KB of junk in a header grpc-js refuses.
    const junk = "j\t".repeat(4 * 1024);
    for (let i = 0; i < 50; i++) {
      const r = await rawGrpcCall(address, [grpcFrame(helloPayload({ hostname: `junk-${i}` }))], {
        ...AUTH,
        headers: { "x-junk": junk },
      });
      expect(r.responses[0]?.msg.case).toBe("welcome");
    }
    await eventually("grpc-js' lines in the collector's log", async () =>
      collector.proc!.output().slice(before).includes("gRPC library:") ? true : undefined,
    );
    const lines = collector
      .proc!.output()
      .slice(before)
      .split("\n")
      .filter((l) => l.includes("gRPC library:"));
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(10);
    for (const l of lines) {
      expect(l).toMatch(/metadata entry (authorization|x-junk): \[redacted\]/);
      expect(l.length).toBeLessThan(1_000);
    }
    expect(collector.proc!.output()).not.toContain(GOOD_TOKEN);
    expect(collector.proc!.output()).not.toContain(GOOD_TOKEN.slice(0, 12));
    expect(collector.proc!.output()).not.toContain("j\\tj\\tj");
  });

  it("stays up: /healthz answers 200, counts every refusal, and a good agent's windows all reach InfluxDB", async () => {
    const wrongFile = path.join(fleet.dir, "wrong-token");
    writeFileSync(wrongFile, `${OTHER_TOKEN}\n`, { mode: 0o600 });
    const goodFile = path.join(fleet.dir, "good-token");
    writeFileSync(goodFile, `${GOOD_TOKEN}\n`, { mode: 0o600 });
    const intruder = startTrueidle([
      "agent",
      "--plaintext",
      "--source",
      "sim",
      "--scenario",
      path.join(SCENARIO_DIR, "fault-c.json"),
      "--hostname",
      "fault-c",
      "--interval",
      "100ms",
      "--window",
      "1s",
      "--collector",
      address,
      "--token-file",
      wrongFile,
    ]);
    extra.push(intruder);
    const good = await fleet.startAgent({
      scenario: "fault-a.json",
      collectors: [address],
      args: ["--token-file", goodFile],
    });
    await intruder.waitForOutput(/The collector refused this agent's stream/, 60_000);
    await eventually("the good agent's windows in InfluxDB", async () =>
      (await fleet.windowPoints()).length >= 5 * good.uuids.length ? true : undefined,
    );
    const intruderExit = await intruder.stop("SIGTERM");
    await fleet.stopAgents();

    // Only the good agent is accounted for: a window of the intruder's GPUs in InfluxDB would be reported.
    const report = accountWindows(await fleet.settledWindows(), [good]);
    console.log(describeAccounting(report));
    expect(report.problems, fleet.output().slice(-10_000)).toEqual([]);

    expect(collector.running).toBe(true);
    expect((await fetch(`http://127.0.0.1:${collector.httpPort}/healthz`)).status).toBe(200);
    const m = await collector.metrics();
    expect(sumOf(m, "trueidle_streams_refused_total", { reason: "invalid" })).toBe(refused.invalid);
    // The raw attempts, and at least one of the intruding agent's.
    expect(sumOf(m, "trueidle_streams_refused_total", { reason: "unauthenticated" })).toBeGreaterThan(
      refused.unauthenticated,
    );
    expect(sumOf(m, "trueidle_streams_refused_total", { reason: "internal" })).toBe(0);
    // The refused agent, stopped while holding windows no collector took, still exits cleanly.
    expect(intruderExit, intruder.output().slice(-4_000)).toBe(0);
  }, 120_000);
});
