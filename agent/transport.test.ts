/**
 * The agent's transport against a real collector over real sockets: TLS with a given CA,
 * a server name override, mutual TLS, and the token as call metadata.
 */
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import {
  makeGenericClientConstructor,
  status,
  type Client,
  type ClientDuplexStream,
  type ServiceError,
} from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ingestServiceDefinition } from "../common/grpc-service.js";
import { silentLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import type { StreamRequest, StreamResponse } from "../gen/trueidle/v1/ingest_pb.js";
import { TokenSet } from "../collector/auth/tokens.js";
import { startCollector, type Collector, type CollectorOptions } from "../collector/collector.js";
import { helloRequest } from "../collector/testdata/windows.js";
import { makeTestCerts, type TestCerts } from "../test/helpers/certs.js";
import {
  buildAgentTransport,
  readAgentToken,
  silenceIpServerNameWarning,
  type AgentTransportConfig,
} from "./transport.js";

const IngestClient = makeGenericClientConstructor(ingestServiceDefinition, "IngestService");
const TOKEN = "0123456789abcdef0123456789abcdef";

let certs: TestCerts;
const running: Collector[] = [];
const clients: Client[] = [];
beforeAll(() => {
  certs = makeTestCerts();
  silenceIpServerNameWarning();
});
afterAll(() => certs?.cleanup());
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(running.splice(0).map((c) => c.stop()));
});

async function collector(extra: Partial<CollectorOptions>): Promise<Collector> {
  const c = await startCollector({
    grpcListen: "127.0.0.1:0",
    httpListen: "127.0.0.1:0",
    thresholds: DEFAULT_THRESHOLDS,
    logger: silentLogger,
    ...extra,
  });
  running.push(c);
  return c;
}

/** Opens a stream with the transport, says Hello; resolves "welcome" or the status code it ended with. */
function hello(target: string, cfg: AgentTransportConfig): Promise<"welcome" | status> {
  const t = buildAgentTransport(cfg);
  const client = new IngestClient(target, t.credentials, t.channelOptions);
  clients.push(client);
  const call = (
    client as unknown as { stream(md?: unknown): ClientDuplexStream<StreamRequest, StreamResponse> }
  ).stream(t.callMetadata);
  return new Promise((resolve) => {
    call.on("data", (msg: StreamResponse) => {
      if (msg.msg.case === "welcome") {
        resolve("welcome");
        call.cancel();
      }
    });
    call.on("error", (err: ServiceError) => resolve(err.code));
    call.write(helloRequest());
  });
}

const pem = (f: string): string => readFileSync(f, "utf8");

describe("agent transport", () => {
  it("talks TLS to a collector whose certificate the given CA signed, by IP and by --tls-server-name", async () => {
    const c = await collector({ grpcTls: { cert: pem(certs.serverCert), key: pem(certs.serverKey) } });
    expect(await hello(`127.0.0.1:${c.grpcPort}`, { plaintext: false, caFile: certs.caCert })).toBe("welcome");
    expect(
      await hello(`127.0.0.1:${c.grpcPort}`, { plaintext: false, caFile: certs.caCert, serverName: "localhost" }),
    ).toBe("welcome");
    expect(
      await hello(`127.0.0.1:${c.grpcPort}`, {
        plaintext: false,
        caFile: certs.caCert,
        serverName: "collector.example",
      }),
    ).toBe(status.UNAVAILABLE);
    expect(await hello(`127.0.0.1:${c.grpcPort}`, { plaintext: false, caFile: certs.otherCaCert })).toBe(
      status.UNAVAILABLE,
    );
    expect(await hello(`127.0.0.1:${c.grpcPort}`, { plaintext: true })).toBe(status.UNAVAILABLE);
  });

  it("needs a client certificate from the client CA under mutual TLS", async () => {
    const c = await collector({
      grpcTls: { cert: pem(certs.serverCert), key: pem(certs.serverKey), clientCa: pem(certs.caCert) },
    });
    const target = `127.0.0.1:${c.grpcPort}`;
    expect(
      await hello(target, {
        plaintext: false,
        caFile: certs.caCert,
        certFile: certs.clientCert,
        keyFile: certs.clientKey,
      }),
    ).toBe("welcome");
    expect(await hello(target, { plaintext: false, caFile: certs.caCert })).toBe(status.UNAVAILABLE);
    expect(
      await hello(target, {
        plaintext: false,
        caFile: certs.caCert,
        certFile: certs.otherClientCert,
        keyFile: certs.otherClientKey,
      }),
    ).toBe(status.UNAVAILABLE);
  });

  it("sends the token as authorization metadata; the collector refuses a stream without an accepted one", async () => {
    const c = await collector({ tokens: new TokenSet([{ name: "ci", token: TOKEN }]) });
    const target = `127.0.0.1:${c.grpcPort}`;
    expect(await hello(target, { plaintext: true, env: { TRUEIDLE_TOKEN: TOKEN } })).toBe("welcome");
    expect(await hello(target, { plaintext: true, env: {} })).toBe(status.UNAUTHENTICATED);
    expect(await hello(target, { plaintext: true, env: { TRUEIDLE_TOKEN: "f".repeat(32) } })).toBe(
      status.UNAUTHENTICATED,
    );
  });

  it("reads one token from a file and refuses bad configurations by name", () => {
    const file = path.join(certs.dir, "agent.token");
    writeFileSync(file, `# this agent's token\n${TOKEN}\n`);
    chmodSync(file, 0o600);
    expect(readAgentToken(file, {})).toEqual({ token: TOKEN, from: `--token-file ${file}`, warning: undefined });
    expect(() => readAgentToken(file, { TRUEIDLE_TOKEN: TOKEN })).toThrow(/both in TRUEIDLE_TOKEN and in --token-file/);
    writeFileSync(file, `${TOKEN}\n${TOKEN}\n`);
    expect(() => readAgentToken(file, {})).toThrow(/must hold exactly one token/);
    expect(() => readAgentToken(undefined, { TRUEIDLE_TOKEN: "short" })).toThrow(
      /^TRUEIDLE_TOKEN: a token must be at least 16/,
    );
    expect(() => buildAgentTransport({ plaintext: false, certFile: certs.clientCert })).toThrow(
      /--tls-cert and --tls-key go together/,
    );
    expect(() => buildAgentTransport({ plaintext: true, caFile: certs.caCert })).toThrow(/plaintext gRPC cannot take/);
    expect(() => buildAgentTransport({ plaintext: false, caFile: certs.serverKey })).toThrow(
      /^--tls-ca .* holds no PEM certificate/,
    );
    const t = buildAgentTransport({ plaintext: false, serverName: "collector.example", env: {} });
    expect(t.channelOptions).toEqual({
      "grpc.ssl_target_name_override": "collector.example",
      "grpc.default_authority": "collector.example",
    });
    expect(t.security).toBe("TLS");
    expect(t.callMetadata).toBeUndefined();
  });
});
