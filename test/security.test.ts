/**
 * Security with real processes: `trueidle collector` and `trueidle agent` subprocesses over
 * real sockets, with certificates made by the openssl CLI (test/helpers/certs.ts). gRPC over
 * TLS and mutual TLS, agent tokens, HTTPS and basic auth on the collector's HTTP side, the
 * explicit --plaintext choice, and secrets that never reach a log.
 */
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import * as path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { makeTestCerts, type TestCerts } from "./helpers/certs.js";
import { freePort } from "./helpers/ports.js";
import { REPO_ROOT, runTrueidle, startTrueidle, type TrueidleProcess } from "./helpers/trueidle-process.js";

const SCENARIO = path.join(REPO_ROOT, "demo", "scenarios", "gpu-a01.json");
const GOOD_TOKEN = "4f1c9a0e7b3d5a2c8e6f0b1d3a5c7e9f";
const WRONG_TOKEN = "0000000000000000ffffffffffffffff";
const PASSWORD = "scrape-pass-never-logged";

let certs: TestCerts;
let tokensFile: string;
let agentTokenFile: string;
let basicAuthFile: string;
const procs: TrueidleProcess[] = [];

beforeAll(() => {
  certs = makeTestCerts();
  for (const k of [certs.serverKey, certs.clientKey, certs.otherClientKey]) chmodSync(k, 0o600);
  const secret = (name: string, text: string): string => {
    const p = path.join(certs.dir, name);
    writeFileSync(p, text);
    chmodSync(p, 0o600);
    return p;
  };
  tokensFile = secret("tokens", `# accepted agent tokens\nrack-a:${GOOD_TOKEN}\n`);
  agentTokenFile = secret("agent.token", `${GOOD_TOKEN}\n`);
  basicAuthFile = secret("http-users", `prometheus:${PASSWORD}\n`);
});

afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.stop()));
});

afterAll(() => certs?.cleanup());

interface Response {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** GET over HTTP or HTTPS (trusting `ca`), with optional basic-auth credentials. */
function get(url: string, opts: { ca?: string; auth?: string } = {}): Promise<Response> {
  const u = new URL(url);
  const mod = u.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(
      u,
      {
        ...(opts.ca ? { ca: readFileSync(opts.ca) } : {}),
        headers: opts.auth ? { authorization: `Basic ${Buffer.from(opts.auth).toString("base64")}` } : {},
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      },
    );
    req.on("error", reject);
  });
}

/** Polls until `check` holds; fails with the processes' output after `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 45_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what} did not happen within ${timeoutMs} ms; output:\n${procs.map((p) => p.output().slice(-3000)).join("\n----\n")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function metricValue(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

async function startCollector(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ proc: TrueidleProcess; grpcPort: number; httpPort: number }> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const proc = startTrueidle(
    ["collector", "--grpc-listen", `127.0.0.1:${grpcPort}`, "--http-listen", `127.0.0.1:${httpPort}`, ...args],
    env,
  );
  procs.push(proc);
  await proc.waitForOutput(/The collector is listening for agents/);
  return { proc, grpcPort, httpPort };
}

function startAgent(
  grpcPort: number,
  hostname: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  collectorHost = "127.0.0.1",
): TrueidleProcess {
  const proc = startTrueidle(
    [
      "agent",
      "--source",
      "sim",
      "--scenario",
      SCENARIO,
      "--collector",
      `${collectorHost}:${grpcPort}`,
      "--hostname",
      hostname,
      "--interval",
      "100ms",
      "--window",
      "1s",
      ...args,
    ],
    { TRUEIDLE_TOKEN: "", ...env },
  );
  procs.push(proc);
  return proc;
}

describe("the explicit transport choice", () => {
  it("refuses to start a collector or an agent without --plaintext or TLS, naming both fixes", async () => {
    const c = await runTrueidle(["collector", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
    expect(c.code).toBe(2);
    expect(c.output).toContain(
      "give --tls-cert and --tls-key (see README 'Security'), or --plaintext to run unencrypted on a trusted network",
    );
    const a = await runTrueidle(["agent", "--source", "sim", "--scenario", SCENARIO]);
    expect(a.code).toBe(2);
    expect(a.output).toContain(
      "give --tls (the system's CAs) or --tls-ca FILE (see README 'Security'), or --plaintext",
    );
  });

  it("refuses --plaintext with TLS flags, half a key pair, and bad files by flag and name", async () => {
    const c = await runTrueidle([
      "collector",
      "--plaintext",
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
    ]);
    expect(c.code).toBe(2);
    expect(c.output).toContain("--plaintext cannot be combined with --tls-cert, --tls-key");
    const a = await runTrueidle([
      "agent",
      "--plaintext",
      "--tls-ca",
      certs.caCert,
      "--source",
      "sim",
      "--scenario",
      SCENARIO,
    ]);
    expect(a.code).toBe(2);
    expect(a.output).toContain("--plaintext cannot be combined with --tls-ca");
    const half = await runTrueidle([
      "agent",
      "--tls-cert",
      certs.clientCert,
      "--source",
      "sim",
      "--scenario",
      SCENARIO,
    ]);
    expect(half.output).toContain("--tls-cert and --tls-key go together");
    const wrongKey = await runTrueidle([
      "collector",
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.clientKey,
      "--http-basic-auth-file",
      path.join(certs.dir, "missing"),
      "--grpc-listen",
      "127.0.0.1:0",
      "--http-listen",
      "127.0.0.1:0",
    ]);
    expect(wrongKey.code).toBe(2);
    expect(wrongKey.output).toContain(
      `the private key in --tls-key ${certs.clientKey} does not belong to the certificate in --tls-cert ${certs.serverCert}`,
    );
    expect(wrongKey.output).toContain(`--http-basic-auth-file ${path.join(certs.dir, "missing")} cannot be read`);
  });

  it("warns once at start when running plaintext", async () => {
    const { proc, grpcPort } = await startCollector(["--plaintext"]);
    const agent = startAgent(grpcPort, "plain", ["--plaintext"]);
    await agent.waitForOutput(/Connected to the collector/);
    for (const p of [proc, agent]) {
      expect(p.output().match(/"level":"warn","msg":"gRPC runs unencrypted \(--plaintext\)/g)).toHaveLength(1);
    }
  });
});

describe("gRPC over TLS", () => {
  it("carries windows end to end, serves HTTPS with basic auth, and leaves /healthz open", async () => {
    const {
      proc: collector,
      grpcPort,
      httpPort,
    } = await startCollector([
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
      "--http-tls-cert",
      certs.serverCert,
      "--http-tls-key",
      certs.serverKey,
      "--http-basic-auth-file",
      basicAuthFile,
    ]);
    const agent = startAgent(grpcPort, "tls-host", ["--tls-ca", certs.caCert]);
    const base = `https://127.0.0.1:${httpPort}`;
    const auth = `prometheus:${PASSWORD}`;
    await until("the agent's GPUs in /metrics over HTTPS", async () =>
      (await get(`${base}/metrics`, { ca: certs.caCert, auth })).body.includes('trueidle_gpu_up{host="tls-host"'),
    );
    expect(agent.output()).toMatch(/The agent connects with TLS/);
    // Connecting by IP: Node's warning about an IP as TLS server name stays out of the log.
    expect(agent.output()).not.toContain("DEP0123");

    const none = await get(`${base}/metrics`, { ca: certs.caCert });
    expect(none.status).toBe(401);
    expect(none.headers["www-authenticate"]).toMatch(/^Basic realm="trueidle"/);
    expect((await get(`${base}/metrics`, { ca: certs.caCert, auth: "prometheus:wrong" })).status).toBe(401);
    expect((await get(`${base}/`, { ca: certs.caCert })).status).toBe(401);
    expect((await get(`${base}/`, { ca: certs.caCert, auth })).status).toBe(200);
    const health = await get(`${base}/healthz`, { ca: certs.caCert });
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok", agents: 1 });
    const metrics = (await get(`${base}/metrics`, { ca: certs.caCert, auth })).body;
    expect(metricValue(metrics, "trueidle_http_auth_failures_total")).toBe(3);
    // A client that does not trust the CA cannot talk to it at all.
    await expect(get(`${base}/healthz`)).rejects.toThrow(/self[- ]signed|unable to verify|local issuer/);
    expect(collector.output()).not.toContain(PASSWORD);
  });

  it("an agent that does not trust the collector's CA cannot connect, and says why", async () => {
    const { grpcPort } = await startCollector(["--tls-cert", certs.serverCert, "--tls-key", certs.serverKey]);
    const agent = startAgent(grpcPort, "untrusting", ["--tls"]);
    await agent.waitForOutput(
      /Could not open a stream to the collector[^\n]*(self[- ]signed|unable to verify|local issuer|certificate)/,
    );
  });
});

describe("mutual TLS", () => {
  it("admits only agents with a client certificate signed by --tls-client-ca", async () => {
    const {
      proc: collector,
      grpcPort,
      httpPort,
    } = await startCollector([
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
      "--tls-client-ca",
      certs.caCert,
    ]);
    const tls = ["--tls-ca", certs.caCert, "--tls-server-name", "localhost"];
    const noCert = startAgent(grpcPort, "no-cert", tls);
    const wrongCa = startAgent(grpcPort, "wrong-ca", [
      ...tls,
      "--tls-cert",
      certs.otherClientCert,
      "--tls-key",
      certs.otherClientKey,
    ]);
    const good = startAgent(grpcPort, "good-cert", [
      ...tls,
      "--tls-cert",
      certs.clientCert,
      "--tls-key",
      certs.clientKey,
    ]);
    await until("the agent with the right certificate in /metrics", async () =>
      (await get(`http://127.0.0.1:${httpPort}/metrics`)).body.includes('trueidle_gpu_up{host="good-cert"'),
    );
    expect(good.output()).toMatch(
      /The agent connects with mutual TLS, presenting the client certificate CN=gpu-node-1/,
    );
    await noCert.waitForOutput(/Could not open a stream to the collector/);
    await wrongCa.waitForOutput(/Could not open a stream to the collector/);
    const metrics = (await get(`http://127.0.0.1:${httpPort}/metrics`)).body;
    expect(metrics).not.toContain('host="no-cert"');
    expect(metrics).not.toContain('host="wrong-ca"');
    expect(metricValue(metrics, "trueidle_agents_connected")).toBe(1);
    expect(collector.output()).toContain("agents must present a client certificate signed by --tls-client-ca");
  });
});

describe("agent tokens", () => {
  it("accepts the right token, ends the rest with UNAUTHENTICATED, counts them, and never prints a token", async () => {
    const {
      proc: collector,
      grpcPort,
      httpPort,
    } = await startCollector([
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
      "--agent-tokens-file",
      tokensFile,
    ]);
    const tls = ["--tls-ca", certs.caCert];
    const good = startAgent(grpcPort, "good-token", [...tls, "--token-file", agentTokenFile]);
    const wrong = startAgent(grpcPort, "wrong-token", tls, { TRUEIDLE_TOKEN: WRONG_TOKEN });
    const missing = startAgent(grpcPort, "no-token", tls);
    const metricsUrl = `http://127.0.0.1:${httpPort}/metrics`;
    await until("the agent with the right token in /metrics", async () =>
      (await get(metricsUrl)).body.includes('trueidle_gpu_up{host="good-token"'),
    );
    for (const a of [wrong, missing]) {
      await a.waitForOutput(
        /"level":"error","msg":"The collector refused this agent's stream; fix the agent's configuration\."[^\n]*"code":16[^\n]*--token-file/,
      );
    }
    await until(
      "two refusals counted",
      async () =>
        (metricValue((await get(metricsUrl)).body, 'trueidle_streams_refused_total{reason="unauthenticated"}') ?? 0) >=
        2,
    );
    await collector.waitForOutput(
      /Refused an agent stream from 127\.0\.0\.1 with UNAUTHENTICATED: (it sent no token|its token is not one this collector accepts)/,
    );
    const metrics = (await get(metricsUrl)).body;
    expect(metrics).not.toContain('host="wrong-token"');
    expect(metrics).not.toContain('host="no-token"');
    expect(collector.child.exitCode).toBeNull();
    expect(JSON.parse((await get(`http://127.0.0.1:${httpPort}/healthz`)).body)).toMatchObject({
      status: "ok",
      agents: 1,
    });
    for (const p of [collector, good, wrong, missing]) {
      expect(p.output()).not.toContain(GOOD_TOKEN);
      expect(p.output()).not.toContain(WRONG_TOKEN);
    }
  });

  it("warns that a token over plaintext travels in clear", async () => {
    const { proc: collector, grpcPort } = await startCollector(["--plaintext"], {
      TRUEIDLE_AGENT_TOKENS: `ci:${GOOD_TOKEN}`,
    });
    await collector.waitForOutput(/Agent tokens travel in clear over plaintext gRPC/);
    const agent = startAgent(grpcPort, "plain-token", ["--plaintext"], { TRUEIDLE_TOKEN: GOOD_TOKEN });
    await agent.waitForOutput(/The agent token travels in clear over plaintext gRPC/);
    await agent.waitForOutput(/Connected to the collector/);
    expect(collector.output() + agent.output()).not.toContain(GOOD_TOKEN);
  });

  it("still takes the collector's former --tokens-file and TRUEIDLE_TOKENS, each with one WARN naming the new name", async () => {
    const { proc: byFlag, grpcPort } = await startCollector(["--plaintext", "--tokens-file", tokensFile]);
    const agent = startAgent(grpcPort, "old-flag", ["--plaintext", "--token-file", agentTokenFile]);
    await agent.waitForOutput(/Connected to the collector/);
    expect(
      byFlag
        .output()
        .match(
          /"level":"warn","msg":"--tokens-file is deprecated and will be removed; use --agent-tokens-file instead\."/g,
        ),
    ).toHaveLength(1);
    expect(byFlag.output()).toContain(
      `Agents must present one of 1 accepted token(s) from --agent-tokens-file ${tokensFile}.`,
    );

    const { proc: byEnv } = await startCollector(["--plaintext"], { TRUEIDLE_TOKENS_FILE: tokensFile });
    expect(
      byEnv
        .output()
        .match(
          /"level":"warn","msg":"TRUEIDLE_TOKENS_FILE is deprecated and will be removed; set TRUEIDLE_AGENT_TOKENS_FILE instead\."/g,
        ),
    ).toHaveLength(1);
    const { proc: tokensEnv } = await startCollector(["--plaintext"], { TRUEIDLE_TOKENS: `ci:${GOOD_TOKEN}` });
    expect(
      tokensEnv
        .output()
        .match(
          /"level":"warn","msg":"TRUEIDLE_TOKENS is deprecated and will be removed; set TRUEIDLE_AGENT_TOKENS instead\."/g,
        ),
    ).toHaveLength(1);
    for (const p of [byFlag, byEnv, tokensEnv, agent]) expect(p.output()).not.toContain(GOOD_TOKEN);
  });
});
