/**
 * What an agent says when it cannot open a stream, with real processes over real sockets:
 * `trueidle agent` subprocesses pointed at `trueidle collector` subprocesses (plaintext,
 * TLS with HTTPS on the HTTP side, mutual TLS) the wrong way — the HTTP port, TLS against
 * plaintext and back, an untrusted CA, a wrong name, a missing or foreign client
 * certificate, a closed port. Each says what is probably wrong and what to do, in one
 * line, once; retries of the same failure go to debug until a minute has passed.
 */
import { chmodSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCerts, type TestCerts } from "./helpers/certs.js";
import { freePort } from "./helpers/ports.js";
import { REPO_ROOT, startTrueidle, type TrueidleProcess } from "./helpers/trueidle-process.js";

const SCENARIO = path.join(REPO_ROOT, "demo", "scenarios", "gpu-a01.json");

let certs: TestCerts;

beforeAll(() => {
  certs = makeTestCerts();
  for (const k of [certs.serverKey, certs.clientKey, certs.otherClientKey]) chmodSync(k, 0o600);
});
afterAll(() => certs?.cleanup());

/** Registers a clean-up with the test that runs it (the tests run concurrently). */
type Finally = (fn: () => Promise<void>) => void;

/** Stopped when the test that started it ends. */
function owned(onFinished: Finally, proc: TrueidleProcess): TrueidleProcess {
  onFinished(async () => void (await proc.stop()));
  return proc;
}

async function startCollector(onFinished: Finally, args: string[]): Promise<{ grpcPort: number; httpPort: number }> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const proc = owned(
    onFinished,
    startTrueidle([
      "collector",
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      ...args,
    ]),
  );
  await proc.waitForOutput(/The collector is listening for agents/);
  return { grpcPort, httpPort };
}

function startAgent(onFinished: Finally, target: string, args: string[]): TrueidleProcess {
  return owned(
    onFinished,
    startTrueidle(
      [
        "agent",
        "--source",
        "sim",
        "--scenario",
        SCENARIO,
        "--collector",
        target,
        "--hostname",
        "misconfigured",
        "--interval",
        "100ms",
        "--window",
        "1s",
        ...args,
      ],
      { TRUEIDLE_TOKEN: "" },
    ),
  );
}

interface Logged {
  level: string;
  msg: string;
  problem?: string;
  detail?: string;
}

/** The agent's "Could not open a stream" lines, parsed. */
function connectFailures(output: string): Logged[] {
  return output
    .split("\n")
    .filter((l) => l.startsWith("{") && l.includes("Could not open a stream to the collector"))
    .map((l) => JSON.parse(l) as Logged);
}

/** Waits for the first failure diagnosed as one of `problems` (any, when none are named) and returns it. */
async function firstDiagnosis(agent: TrueidleProcess, ...problems: string[]): Promise<Logged> {
  const which = problems.length > 0 ? `(${problems.join("|")})` : "[a-z_]+";
  await agent.waitForOutput(
    new RegExp(`"msg":"Could not open a stream to the collector: [^\\n]*"problem":"${which}"`),
    45_000,
  );
  return connectFailures(agent.output()).find(
    (l) => l.problem !== undefined && (problems.length === 0 || problems.includes(l.problem)),
  )!;
}

const TLS_CA = ["--tls-ca"];

describe.concurrent("an agent that cannot open a stream says what is probably wrong", () => {
  it("the collector's HTTP port instead of its gRPC port: said once, at ERROR; the retries go to debug", {
    timeout: 90_000,
  }, async ({ onTestFinished }) => {
    const { httpPort } = await startCollector(onTestFinished, ["--plaintext"]);
    const agent = startAgent(onTestFinished, `127.0.0.1:${httpPort}`, ["--plaintext", "--log-level", "debug"]);
    const d = await firstDiagnosis(agent);
    expect(d.level).toBe("error");
    expect(d.problem).toBe("not_grpc");
    expect(d.msg).toBe(
      `Could not open a stream to the collector: 127.0.0.1:${httpPort} does not speak gRPC: it is probably the collector's HTTP port ` +
        "(/metrics, 9745 by default); point --collector at the collector's gRPC port (--grpc-listen, 9746 by default). " +
        "Will retry, logging at most once a minute while this lasts; windows stay buffered.",
    );
    expect(d.detail).toContain("Protocol error");
    // Two more failed attempts, at debug: the hint was said once.
    await agent.waitForOutput(
      /("msg":"Could not open a stream to the collector; will retry\."[^\n]*\n[\s\S]*){2}/,
      45_000,
    );
    expect(connectFailures(agent.output()).filter((l) => l.level !== "debug")).toHaveLength(1);
  });

  it("TLS against a plaintext collector", { timeout: 90_000 }, async ({ onTestFinished }) => {
    const { grpcPort } = await startCollector(onTestFinished, ["--plaintext"]);
    const d = await firstDiagnosis(startAgent(onTestFinished, `127.0.0.1:${grpcPort}`, [...TLS_CA, certs.caCert]));
    expect(d.level).toBe("error");
    expect(d.problem).toBe("plaintext_server");
    expect(d.msg).toContain(
      `127.0.0.1:${grpcPort} answers in plaintext, not TLS: either the collector runs with --plaintext ` +
        "(give it --tls-cert and --tls-key, or give this agent --plaintext too)",
    );
  });

  it("plaintext against a TLS collector", { timeout: 90_000 }, async ({ onTestFinished }) => {
    const { grpcPort } = await startCollector(onTestFinished, [
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
    ]);
    const d = await firstDiagnosis(startAgent(onTestFinished, `127.0.0.1:${grpcPort}`, ["--plaintext"]));
    expect(d.level).toBe("error");
    expect(d.problem).toBe("tls_server");
    expect(d.msg).toContain(
      `the collector at 127.0.0.1:${grpcPort} runs with TLS and this agent connects in plaintext (--plaintext): give this agent --tls`,
    );
  });

  it("a collector certificate from a CA the agent does not trust, and one without the name dialled", {
    timeout: 90_000,
  }, async ({ onTestFinished }) => {
    const { grpcPort } = await startCollector(onTestFinished, [
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
    ]);
    const untrusted = firstDiagnosis(startAgent(onTestFinished, `127.0.0.1:${grpcPort}`, ["--tls"]));
    const otherCa = firstDiagnosis(startAgent(onTestFinished, `127.0.0.1:${grpcPort}`, [...TLS_CA, certs.otherCaCert]));
    const wrongName = firstDiagnosis(
      startAgent(onTestFinished, `127.0.0.1:${grpcPort}`, [
        ...TLS_CA,
        certs.caCert,
        "--tls-server-name",
        "collector.example",
      ]),
    );
    for (const d of [await untrusted, await otherCa]) {
      expect(d.level).toBe("error");
      expect(d.problem).toBe("untrusted_certificate");
      expect(d.msg).toContain(
        "the collector's certificate is not signed by a CA this agent trusts: give --tls-ca with the CA certificate that signed it",
      );
    }
    const n = await wrongName;
    expect(n.problem).toBe("name_mismatch");
    expect(n.msg).toContain(
      `the collector's certificate does not carry the name or address in 127.0.0.1:${grpcPort}: ` +
        "connect by a name the certificate carries, or give --tls-server-name with one of them",
    );
  });

  it("mutual TLS without a client certificate, and with one from another CA", { timeout: 90_000 }, async ({
    onTestFinished,
  }) => {
    const { grpcPort } = await startCollector(onTestFinished, [
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
      "--tls-client-ca",
      certs.caCert,
    ]);
    // The collector's TLS alert can be lost when it resets the connection; the agent then
    // sees a connection closed during the handshake, whose hint names client certificates too.
    const noCert = firstDiagnosis(
      startAgent(onTestFinished, `127.0.0.1:${grpcPort}`, [...TLS_CA, certs.caCert]),
      "client_certificate_required",
      "closed",
    );
    const foreign = firstDiagnosis(
      startAgent(onTestFinished, `127.0.0.1:${grpcPort}`, [
        ...TLS_CA,
        certs.caCert,
        "--tls-cert",
        certs.otherClientCert,
        "--tls-key",
        certs.otherClientKey,
      ]),
      "client_certificate_refused",
      "closed",
    );
    const a = await noCert;
    expect(a.msg).toMatch(
      a.problem === "closed"
        ? /closed the connection during or right after the TLS handshake: if the collector requires client certificates \(--tls-client-ca\), this agent's --tls-cert must be signed by that CA/
        : /the collector requires a client certificate \(mutual TLS\): give this agent --tls-cert and --tls-key, signed by the CA in the collector's --tls-client-ca/,
    );
    const b = await foreign;
    expect(b.msg).toContain("--tls-client-ca");
  });

  it("TLS against the collector's HTTPS port", { timeout: 90_000 }, async ({ onTestFinished }) => {
    const { httpPort } = await startCollector(onTestFinished, [
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
      "--http-tls-cert",
      certs.serverCert,
      "--http-tls-key",
      certs.serverKey,
    ]);
    const d = await firstDiagnosis(startAgent(onTestFinished, `127.0.0.1:${httpPort}`, [...TLS_CA, certs.caCert]));
    expect(d.level).toBe("error");
    expect(d.problem).toBe("https_not_grpc");
    expect(d.msg).toContain(`127.0.0.1:${httpPort} speaks TLS but not gRPC: it is probably the collector's HTTPS port`);
  });

  it("nothing listening: a warning, since the collector may be restarting", { timeout: 90_000 }, async ({
    onTestFinished,
  }) => {
    const port = await freePort();
    const d = await firstDiagnosis(startAgent(onTestFinished, `127.0.0.1:${port}`, ["--plaintext"]));
    expect(d.level).toBe("warn");
    expect(d.problem).toBe("refused");
    expect(d.msg).toContain(
      `nothing listens at 127.0.0.1:${port}: check that the collector runs and that this is the collector's gRPC port`,
    );
  });
});
