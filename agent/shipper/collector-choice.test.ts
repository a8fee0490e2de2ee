import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { readFileSync } from "node:fs";
import { ingestServiceDefinition } from "../../common/grpc-service.js";
import { StreamResponseSchema, type StreamRequest, type StreamResponse } from "../../gen/trueidle/v1/ingest_pb.js";
import { recordingLogger } from "../../common/log.js";
import { makeTestCerts, type TestCerts } from "../../test/helpers/certs.js";
import { startDnsServer, type DnsServer } from "../../test/helpers/dns-server.js";
import { freePort } from "../../test/helpers/ports.js";
import { eventually } from "../../test/helpers/eventually.js";
import {
  CollectorChooser,
  parseCollectorEntry,
  rankAddresses,
  resolveWithDns,
  type ResolveCollector,
} from "./collector-choice.js";
import { Shipper } from "./shipper.js";

const THREE = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const hosts = (n: number): string[] =>
  Array.from({ length: n }, (_, i) => `gpu-node-${String(i + 1).padStart(3, "0")}`);

describe("collector entries", () => {
  it("reads names, addresses and gRPC's dns: forms, and hands anything else to grpc-js", () => {
    expect(parseCollectorEntry("collectors.example:9746")).toEqual({
      kind: "name",
      given: "collectors.example:9746",
      host: "collectors.example",
      port: 9746,
      dnsServer: undefined,
    });
    expect(parseCollectorEntry("dns://10.96.0.10:53/trueidle.svc:9746")).toMatchObject({
      kind: "name",
      host: "trueidle.svc",
      port: 9746,
      dnsServer: "10.96.0.10:53",
    });
    expect(parseCollectorEntry("dns:///trueidle.svc:9746")).toMatchObject({ kind: "name", dnsServer: undefined });
    expect(parseCollectorEntry("dns:trueidle.svc:9746")).toMatchObject({ kind: "name", host: "trueidle.svc" });
    expect(parseCollectorEntry("127.0.0.2:9746")).toMatchObject({ kind: "address", host: "127.0.0.2" });
    expect(parseCollectorEntry("[::1]:9746")).toMatchObject({ kind: "address", host: "::1", port: 9746 });
    for (const other of ["unix:/run/trueidle.sock", "collectors.example", "ipv4:127.0.0.1:1,127.0.0.2:1", "h:99999"])
      expect(parseCollectorEntry(other)).toEqual({ kind: "passthrough", given: other });
  });
});

describe("ranking addresses by host name", () => {
  it("spreads hosts evenly, keeps each host's choice, and moves only a removed address's hosts", () => {
    const first = new Map(hosts(300).map((h) => [h, rankAddresses(THREE, h)[0]!]));
    const per = THREE.map((a) => [...first.values()].filter((f) => f === a).length);
    for (const n of per) expect(n).toBeGreaterThan(70); // 100 each when even
    for (const h of hosts(300)) expect(rankAddresses([...THREE].reverse(), h)[0]).toBe(first.get(h));
    const without = THREE.filter((a) => a !== "127.0.0.2");
    for (const [h, f] of first) if (f !== "127.0.0.2") expect(rankAddresses(without, h)[0]).toBe(f);
  });
});

describe("CollectorChooser", () => {
  function fixed(records: Record<string, string[]>): ResolveCollector & { calls: number } {
    const fn = Object.assign(
      async (entry: { host: string }) => {
        fn.calls++;
        const found = records[entry.host];
        if (!found) throw new Error(`getaddrinfo ENOTFOUND ${entry.host}`);
        return found;
      },
      { calls: 0 },
    );
    return fn;
  }

  it("goes to the host's first address, then its next ones, then the next entry, and back after a welcome", async () => {
    const resolve = fixed({ "collectors.svc": THREE, backup: ["10.0.0.9"] });
    const chooser = new CollectorChooser(["collectors.svc:9746", "backup:9746"], "gpu-node-007", resolve);
    const order = rankAddresses(THREE, "gpu-node-007").map((a) => `${a}:9746`);
    const c1 = await chooser.next();
    expect(c1).toEqual({
      collector: "collectors.svc:9746",
      target: order[0],
      serverName: "collectors.svc",
      authority: "collectors.svc:9746",
    });
    chooser.failedAt(c1);
    expect(chooser.hasUntried()).toBe(true);
    const c2 = await chooser.next();
    expect(c2.target).toBe(order[1]);
    chooser.failedAt(c2);
    const c3 = await chooser.next();
    expect(c3.target).toBe(order[2]);
    chooser.failedAt(c3);
    expect(chooser.hasUntried()).toBe(false);
    const c4 = await chooser.next();
    expect(c4).toMatchObject({ collector: "backup:9746", target: "10.0.0.9:9746", serverName: "backup" });
    chooser.failedAt(c4);
    expect((await chooser.next()).target).toBe(order[0]);
    // Resolved on every try (twice where an entry was used up), so a new collector is found;
    // after a welcome every address may be tried again.
    expect(resolve.calls).toBe(7);
    chooser.welcomed();
    expect((await chooser.next()).target).toBe(order[0]);
    const four = [...THREE, "127.0.0.4"];
    const grown = new CollectorChooser(["collectors.svc:9746"], "gpu-node-007", fixed({ "collectors.svc": four }));
    const wanted = rankAddresses(four, "gpu-node-007")[0]!;
    expect((await grown.next()).target).toBe(`${wanted}:9746`);
  });

  it("hands a name it cannot resolve to grpc-js as given, and addresses go as they are", async () => {
    const chooser = new CollectorChooser(["nowhere.invalid:9746", "[::1]:9746"], "h", fixed({}));
    const c = await chooser.next();
    expect(c).toMatchObject({ collector: "nowhere.invalid:9746", target: "nowhere.invalid:9746" });
    expect(c.resolveError).toMatch(/ENOTFOUND/);
    expect(c.serverName).toBeUndefined();
    chooser.failedAt(c);
    expect(await chooser.next()).toEqual({ collector: "[::1]:9746", target: "[::1]:9746" });
  });

  describe("through a DNS server (dns://SERVER/NAME:PORT)", () => {
    let dns: DnsServer;
    beforeAll(async () => {
      dns = await startDnsServer({ "collectors.trueidle.test": [...THREE, "::1"] });
    });
    afterAll(async () => {
      await dns.close();
    });

    it("finds every A and AAAA record, and a name the server does not know fails", async () => {
      const entry = parseCollectorEntry(`dns://127.0.0.1:${dns.port}/collectors.trueidle.test:9746`);
      if (entry.kind !== "name") throw new Error("not a name entry");
      expect((await resolveWithDns(entry)).sort()).toEqual([...THREE, "::1"].sort());
      await expect(resolveWithDns({ ...entry, host: "other.trueidle.test" })).rejects.toThrow(/ENOTFOUND/);
    });
  });
});

describe("agents streaming to a name with three addresses", () => {
  let certs: TestCerts;
  const servers: grpc.Server[] = [];
  const streamsAt = new Map<string, string[]>();
  let port: number;

  beforeAll(async () => {
    certs = makeTestCerts();
    port = await freePort();
    // TLS with a certificate for "localhost" only: a stream to 127.0.0.2 or .3 is welcomed
    // only when the agent checks the certificate against the name, not the address.
    const creds = grpc.ServerCredentials.createSsl(null, [
      { private_key: readFileSync(certs.serverKey), cert_chain: readFileSync(certs.serverCert) },
    ]);
    for (const ip of THREE) {
      const server = new grpc.Server();
      server.addService(ingestServiceDefinition, {
        stream: (call: grpc.ServerDuplexStream<StreamRequest, StreamResponse>) => {
          call.on("data", (m: StreamRequest) => {
            if (m.msg.case !== "hello") return;
            streamsAt.set(ip, [...(streamsAt.get(ip) ?? []), m.msg.value.host?.hostname ?? ""]);
            call.write(create(StreamResponseSchema, { msg: { case: "welcome", value: { collectorId: ip } } }));
          });
          call.on("error", () => {});
        },
      });
      await new Promise<void>((res, rej) => server.bindAsync(`${ip}:${port}`, creds, (e) => (e ? rej(e) : res())));
      servers.push(server);
    }
  });
  afterAll(() => {
    for (const s of servers) s.forceShutdown();
    certs.cleanup();
  });

  it("an address that does not answer is passed over at once, without a warning", async () => {
    const dead = "127.0.0.4"; // nothing listens there
    const pair = [dead, "127.0.0.2"];
    // Not one of the hosts of the next test, which counts the streams each server took.
    const hostname = hosts(50)
      .map((h) => `lone-${h}`)
      .find((h) => rankAddresses(pair, h)[0] === dead)!;
    const log = recordingLogger();
    const shipper = new Shipper({
      targets: [`localhost:${port}`],
      host: { hostname, machineId: "", labels: {} },
      agentVersion: "test",
      source: "sim",
      windowMs: 10_000,
      logger: log,
      credentials: grpc.credentials.createSsl(readFileSync(certs.caCert)),
      resolveCollector: async () => pair,
      backoffInitialMs: 60_000,
    });
    try {
      shipper.start();
      await eventually("connected", async () => (shipper.stats().connected ? true : undefined));
      expect(log.lines.filter((l) => l.level === "warn" || l.level === "error")).toEqual([]);
      expect(log.lines.find((l) => l.msg === "Connected to the collector.")?.fields).toMatchObject({
        address: `127.0.0.2:${port}`,
      });
      expect(log.lines.some((l) => l.level === "debug" && /trying its next/.test(l.msg))).toBe(true);
    } finally {
      await shipper.stop();
    }
  });

  it("spread by host name, with the name kept for TLS, and each moves to its next address when its collector goes", async () => {
    const resolveCollector: ResolveCollector = async () => THREE;
    const credentials = grpc.credentials.createSsl(readFileSync(certs.caCert));
    const names = hosts(12);
    const logs = names.map(() => recordingLogger());
    const shippers = names.map(
      (hostname, i) =>
        new Shipper({
          targets: [`localhost:${port}`],
          host: { hostname, machineId: "", labels: {} },
          agentVersion: "test",
          source: "sim",
          windowMs: 10_000,
          logger: logs[i]!,
          credentials,
          resolveCollector,
          backoffInitialMs: 50,
          backoffMaxMs: 200,
        }),
    );
    try {
      for (const s of shippers) s.start();
      await eventually("every agent connected", async () =>
        shippers.every((s) => s.stats().connected) ? true : undefined,
      );
      const expected = names.map((h) => rankAddresses(THREE, h)[0]!);
      for (const ip of THREE) {
        const mine = names.filter((_, i) => expected[i] === ip).sort();
        expect(mine.length).toBeGreaterThan(0);
        expect([...(streamsAt.get(ip) ?? [])].filter((h) => names.includes(h)).sort()).toEqual(mine);
      }
      for (const [i, log] of logs.entries()) {
        const line = log.lines.find((r) => r.msg === "Connected to the collector.");
        expect(line?.fields).toMatchObject({ collector: `localhost:${port}`, address: `${expected[i]}:${port}` });
      }

      // The first address's collector goes: its agents move to their second address, the others stay.
      const gone = THREE[0]!;
      const moved = names.filter((_, i) => expected[i] === gone);
      const before = new Map(THREE.map((ip) => [ip, streamsAt.get(ip)?.length ?? 0]));
      servers[0]!.forceShutdown();
      await eventually("the agents of the collector gone reconnected", async () => {
        const again = THREE.slice(1).reduce((n, ip) => n + (streamsAt.get(ip)?.length ?? 0) - before.get(ip)!, 0);
        return again === moved.length && shippers.every((s) => s.stats().connected) ? true : undefined;
      });
      for (const h of moved) {
        const second = rankAddresses(THREE, h)[1]!;
        expect(streamsAt.get(second)).toContain(h);
      }
    } finally {
      await Promise.all(shippers.map((s) => s.stop()));
    }
  }, 60_000);
});
