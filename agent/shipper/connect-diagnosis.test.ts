import * as http from "node:http";
import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import { diagnoseConnectFailure, probeTls, type ConnectProblem } from "./connect-diagnosis.js";
import { Shipper } from "./shipper.js";

/** What grpc-js reported (Node 20, grpc-js 1.14), each seen from a real misconfigured connection. */
const SEEN: Array<[string, boolean, ConnectProblem]> = [
  [
    "No connection established. Last error: Protocol error (2026-12-04T23:16:02.133Z). Resolution note: ",
    false,
    "not_grpc",
  ],
  [
    "No connection established. Last error: Error: 800CE6CF947F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:" +
      "../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n. Resolution note: ",
    true,
    "plaintext_server",
  ],
  [
    "No connection established. Last error: Failed to connect (2026-12-04T23:16:08.133Z). Resolution note: ",
    false,
    "closed",
  ],
  [
    "No connection established. Last error: Failed to connect (2026-12-04T23:30:35.110Z). Resolution note: ",
    true,
    "closed",
  ],
  [
    "No connection established. Last error: Error: unable to verify the first certificate. Resolution note: ",
    true,
    "untrusted_certificate",
  ],
  [
    "No connection established. Last error: Error: self-signed certificate in certificate chain. Resolution note: ",
    true,
    "untrusted_certificate",
  ],
  [
    "No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: " +
      "Host: collector.example. is not in the cert's altnames: DNS:localhost, IP Address:127.0.0.1. Resolution note: ",
    true,
    "name_mismatch",
  ],
  [
    "No connection established. Last error: Error: certificate has expired. Resolution note: ",
    true,
    "expired_certificate",
  ],
  [
    "No connection established. Last error: 800CE6CF947F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:" +
      "../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n (2026-12-04T23:16:23.150Z). Resolution note: ",
    true,
    "client_certificate_required",
  ],
  [
    "No connection established. Last error: Error: 800CE6CF947F0000:error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:" +
      "../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 48\n. Resolution note: ",
    true,
    "client_certificate_refused",
  ],
  [
    "No connection established. Last error: Error: 800CE6CF947F0000:error:0A000460:SSL routines:ssl3_read_bytes:tlsv1 alert no application protocol:" +
      "../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 120\n. Resolution note: ",
    true,
    "https_not_grpc",
  ],
  [
    "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ",
    false,
    "refused",
  ],
  [
    "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ",
    true,
    "refused",
  ],
  ["Name resolution failed for target dns:no-such-host.invalid:1", false, "unresolved"],
  [
    "No connection established. Last error: Error: connect EHOSTUNREACH 10.0.0.9:9746. Resolution note: ",
    false,
    "unreachable",
  ],
];

describe("diagnoseConnectFailure", () => {
  it("names the probable problem of every failure grpc-js reports for a misconfigured connection", () => {
    for (const [detail, tls, problem] of SEEN) {
      expect(diagnoseConnectFailure(detail, { target: "10.0.0.5:9746", tls })?.problem, detail).toBe(problem);
    }
  });

  it("says what to do, naming the address and the flags", () => {
    const http = diagnoseConnectFailure(SEEN[0]![0], { target: "10.0.0.5:9745", tls: false })!;
    expect(http.hint).toBe(
      "10.0.0.5:9745 does not speak gRPC: it is probably the collector's HTTP port (/metrics, 9745 by default); " +
        "point --collector at the collector's gRPC port (--grpc-listen, 9746 by default)",
    );
    expect(http.misconfigured).toBe(true);
    const plain = diagnoseConnectFailure(SEEN[1]![0], { target: "10.0.0.5:9746", tls: true })!;
    expect(plain.hint).toContain(
      "10.0.0.5:9746 answers in plaintext, not TLS: either the collector runs with --plaintext",
    );
    expect(diagnoseConnectFailure(SEEN[2]![0], { target: "t:1", tls: false })!.needsProbe).toBe(true);
    expect(diagnoseConnectFailure("some new failure", { target: "t:1", tls: false })).toBeUndefined();
  });
});

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

describe("probeTls", () => {
  it("tells a plaintext server from an address with nothing listening, and takes no port-less target", async () => {
    const server = http.createServer((_q, r) => r.end("hi"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    closers.push(() => server.close());
    expect(await probeTls(`127.0.0.1:${(server.address() as { port: number }).port}`)).toBe("not_tls");
    expect(await probeTls("127.0.0.1")).toBe("not_tls");
  });
});

describe("the shipper's connect failures", () => {
  it("says each new probable cause at once, then the minute rule holds for all", async () => {
    // Two bad collectors, tried in turn: a port nothing listens on and an HTTP server.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const refusedPort = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const server = http.createServer((_q, r) => r.end("hi"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    closers.push(() => server.close());
    const httpTarget = `127.0.0.1:${(server.address() as { port: number }).port}`;
    const logger = recordingLogger();
    let clock = 1_000_000;
    const s = new Shipper({
      targets: [`127.0.0.1:${refusedPort}`, httpTarget],
      host: { hostname: "h", machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger,
      backoffInitialMs: 20,
      backoffMaxMs: 40,
      now: () => clock,
    });
    closers.push(() => void s.stop());
    s.start();
    const failures = (): typeof logger.lines => logger.lines.filter((l) => l.msg.startsWith("Could not open a stream"));
    const until = async (what: string, ok: () => boolean): Promise<void> => {
      for (let i = 0; i < 600 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
      expect(ok(), `${what}: ${JSON.stringify(failures())}`).toBe(true);
    };
    await until("six failed attempts", () => failures().length >= 6);
    const loud = failures().filter((l) => l.level !== "debug");
    expect(loud.map((l) => [l.level, l.fields?.["problem"]])).toEqual([
      ["warn", "refused"],
      ["error", "not_grpc"],
    ]);
    // A minute on, the next failure is said again, whichever it is.
    clock += 60_000;
    const before = failures().length;
    await until("the next failure", () => failures().length > before);
    expect(failures()[before]!.level).not.toBe("debug");
  });
});
