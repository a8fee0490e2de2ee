/**
 * `--web.config.file`, the exporter-toolkit web configuration, with real processes and
 * servers: the collector and the agent serving HTTPS with bcrypt users and client
 * certificates from one, refusals at start, the same file accepted by `promtool check
 * web-config`, and the real Prometheus scraping the collector over HTTPS with basic auth
 * and a client certificate as set up there. Certificates come from the openssl CLI
 * (helpers/certs.ts); the bcrypt hashes from libxcrypt's crypt(3), not from the bcrypt
 * library trueidle uses.
 */
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import * as https from "node:https";
import * as path from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import * as tls from "node:tls";
import {
  clientCertificateProblem,
  httpsServerOptions,
  loadWebConfig,
  type HttpTlsSettings,
} from "../common/http-security.js";
import type { ClientAuthType } from "../common/web-config.js";
import { makeTestCerts, type TestCerts } from "./helpers/certs.js";
import { freePort } from "./helpers/ports.js";
import { promtool, startPrometheus, type PrometheusHandle } from "./helpers/prometheus.js";
import { REPO_ROOT, runTrueidle, startTrueidle, type TrueidleProcess } from "./helpers/trueidle-process.js";

const SCENARIO = path.join(REPO_ROOT, "demo", "scenarios", "gpu-a01.json");
const PASSWORD = "scrape-pass-never-logged";
/** bcrypt (cost 4) of PASSWORD, made by libxcrypt's crypt(3) on Debian 12; the $2y$ prefix of htpasswd -B. */
const PASSWORD_HASH = "$2y$04$abcdefghijklmnopqrstuuAIsR6NxYTXFIBQ7GAxd1JdUzdtHZYRy";
/** The same for "s3cret-for-bob", cost 5. */
const BOB_HASH = "$2y$05$ZYXWVUTSRQPONMLKJIHGFesS9AwseuiiWQiJVbDdgPHRwALHmGjSu";

let certs: TestCerts;
const procs: TrueidleProcess[] = [];
let prometheus: PrometheusHandle | undefined;

/** Writes a file in the certificates' folder (mode 600) and returns its path. */
function secret(name: string, text: string): string {
  const p = path.join(certs.dir, name);
  writeFileSync(p, text);
  chmodSync(p, 0o600);
  return p;
}

/** A web configuration in the certificates' folder; its file names are relative to it. */
function webConfig(name: string, tls: string, extra = ""): string {
  return secret(name, `# trueidle's HTTP side\ntls_server_config:\n${tls}${extra}`);
}

const USERS = `basic_auth_users:\n  prometheus: ${PASSWORD_HASH}\n  bob: '${BOB_HASH}'\n`;

beforeAll(() => {
  certs = makeTestCerts();
  for (const k of [certs.serverKey, certs.clientKey, certs.otherClientKey]) chmodSync(k, 0o600);
});

afterEach(async () => {
  await prometheus?.stop();
  prometheus = undefined;
  await Promise.all(procs.splice(0).map((p) => p.stop()));
});

afterAll(() => certs?.cleanup());

interface Answer {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

interface GetOptions {
  auth?: string;
  cert?: string;
  key?: string;
  /** Source address of the request (another loopback address is another client to the throttle). */
  from?: string;
}

/** GET over HTTPS trusting the test CA, with optional basic auth and client certificate. */
function get(url: string, opts: GetOptions = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      url,
      {
        ca: readFileSync(certs.caCert),
        ...(opts.cert ? { cert: readFileSync(opts.cert), key: readFileSync(opts.key!) } : {}),
        ...(opts.from ? { localAddress: opts.from } : {}),
        headers: opts.auth ? { authorization: `Basic ${Buffer.from(opts.auth).toString("base64")}` } : {},
        agent: false,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
  });
}

async function startCollector(args: string[]): Promise<{ proc: TrueidleProcess; grpcPort: number; httpPort: number }> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const proc = startTrueidle([
    "collector",
    "--plaintext",
    "--grpc-listen",
    `127.0.0.1:${grpcPort}`,
    "--http-listen",
    `127.0.0.1:${httpPort}`,
    ...args,
  ]);
  procs.push(proc);
  await proc.waitForOutput(/The collector is listening for agents/);
  return { proc, grpcPort, httpPort };
}

function metricValue(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("the collector with --web.config.file", () => {
  it("serves HTTPS with bcrypt users: the right password 200, a wrong one 401, many wrong ones 429; /healthz open", async () => {
    const file = webConfig(
      "web-users.yml",
      "  cert_file: server.crt\n  key_file: server.key\n",
      `http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n${USERS}`,
    );
    const { proc, httpPort } = await startCollector(["--web.config.file", file]);
    const base = `https://127.0.0.1:${httpPort}`;
    expect(proc.output()).toContain(
      `The collector's HTTP side uses --web.config.file ${file}: HTTPS with the certificate CN=localhost`,
    );
    expect(proc.output()).toContain("basic auth for 2 user(s) (bcrypt)");

    const ok = await get(`${base}/metrics`, { auth: `prometheus:${PASSWORD}` });
    expect(ok.status).toBe(200);
    expect(ok.body).toContain("trueidle_agents_connected");
    expect(ok.headers["x-frame-options"]).toBe("deny");
    expect(ok.headers["strict-transport-security"]).toBe("max-age=31536000");
    expect((await get(`${base}/`, { auth: "bob:s3cret-for-bob" })).status).toBe(200);
    const none = await get(`${base}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers["www-authenticate"]).toBe('Basic realm="trueidle", charset="UTF-8"');
    expect(none.headers["x-frame-options"]).toBe("deny");
    expect((await get(`${base}/metrics`, { auth: "prometheus:wrong" })).status).toBe(401);
    expect((await get(`${base}/metrics`, { auth: `nobody:${PASSWORD}` })).status).toBe(401);
    const health = await get(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok" });

    // Another client guesses: ten distinct wrong passwords, then it is throttled, even with the right one.
    const guesser = { from: "127.0.0.2" };
    for (let i = 0; i < 10; i++)
      expect((await get(`${base}/metrics`, { ...guesser, auth: `prometheus:guess-${i}` })).status).toBe(401);
    const throttled = await get(`${base}/metrics`, { ...guesser, auth: `prometheus:${PASSWORD}` });
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers["retry-after"])).toBeGreaterThan(0);
    // ...while the honest scraper at its own address is not.
    const metrics = (await get(`${base}/metrics`, { auth: `prometheus:${PASSWORD}` })).body;
    expect(metricValue(metrics, "trueidle_http_auth_failures_total")).toBe(13);
    expect(metricValue(metrics, 'trueidle_http_requests_refused_total{reason="auth_throttled"}')).toBe(1);
    expect(proc.output()).not.toContain(PASSWORD);
    expect(proc.output()).not.toContain("s3cret-for-bob");
  });

  it("requires and verifies client certificates with RequireAndVerifyClientCert", async () => {
    const file = webConfig(
      "web-mtls.yml",
      "  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n",
    );
    const { proc, httpPort } = await startCollector(["--web.config.file", file]);
    const url = `https://127.0.0.1:${httpPort}/metrics`;
    expect(proc.output()).toContain("TLSv1.3 or later, client certificates: RequireAndVerifyClientCert");
    const good = await get(url, { cert: certs.clientCert, key: certs.clientKey });
    expect(good.status).toBe(200);
    await expect(get(url)).rejects.toThrow(/certificate required|alert|socket hang up|ECONNRESET/i);
    await expect(get(url, { cert: certs.otherClientCert, key: certs.otherClientKey })).rejects.toThrow(
      /unknown ca|alert|socket hang up|ECONNRESET/i,
    );
    // Probes need a certificate too: the policy is the listener's, before any path is read.
    await expect(get(`https://127.0.0.1:${httpPort}/healthz`)).rejects.toThrow();
    expect((await get(url, { cert: certs.clientCert, key: certs.clientKey })).status).toBe(200);
  });

  it("refuses to start on an unknown key, naming it and the file, and on a flag the file replaces", async () => {
    const typo = webConfig(
      "web-typo.yml",
      "  cert_file: server.crt\n  key_file: server.key\n",
      "basic_auth_user:\n  prometheus: x\n",
    );
    const a = await runTrueidle([
      "collector",
      "--plaintext",
      "--web.config.file",
      typo,
      "--grpc-listen",
      "127.0.0.1:0",
      "--http-listen",
      "127.0.0.1:0",
    ]);
    expect(a.code).toBe(2);
    expect(a.output).toContain(
      `trueidle collector: --web.config.file ${typo}: basic_auth_user is not a key trueidle knows in the web configuration format (did you mean basic_auth_users?)`,
    );

    const good = webConfig("web-ok.yml", "  cert_file: server.crt\n  key_file: server.key\n", USERS);
    const b = await runTrueidle([
      "collector",
      "--plaintext",
      "--web.config.file",
      good,
      "--http-tls-cert",
      certs.serverCert,
      "--http-tls-key",
      certs.serverKey,
    ]);
    expect(b.code).toBe(2);
    expect(b.output).toContain(
      "--http-tls-cert and --web.config.file both configure the HTTP side; set tls_server_config.cert_file in the web configuration file and drop --http-tls-cert",
    );
    const c = await runTrueidle(["collector", "--plaintext", "--http-basic-auth-file", path.join(certs.dir, "users")], {
      TRUEIDLE_WEB_CONFIG_FILE: good,
    });
    expect(c.code).toBe(2);
    expect(c.output).toContain(
      "--http-basic-auth-file and --web.config.file both configure the HTTP side; set basic_auth_users (bcrypt hashes)",
    );

    const missing = webConfig("web-missing.yml", "  cert_file: nope.crt\n  key_file: server.key\n");
    const d = await runTrueidle(["collector", "--plaintext", "--web.config.file", missing]);
    expect(d.code).toBe(2);
    expect(d.output).toContain(
      `--web.config.file ${missing}: tls_server_config.cert_file ${path.join(certs.dir, "nope.crt")} cannot be read`,
    );
    const e = await runTrueidle(["collector", "--plaintext", "--web.config.file", path.join(certs.dir, "absent.yml")]);
    expect(e.code).toBe(2);
    expect(e.output).toContain(`--web.config.file ${path.join(certs.dir, "absent.yml")} cannot be read: ENOENT`);
  });
});

describe("the agent's --http-listen with --web.config.file", () => {
  it("serves its metrics over HTTPS with bcrypt users, /healthz open, and needs --http-listen", async () => {
    const file = webConfig("web-agent.yml", "  cert_file: server.crt\n  key_file: server.key\n", USERS);
    const port = await freePort();
    const agent = startTrueidle(
      [
        "agent",
        "--plaintext",
        "--source",
        "sim",
        "--scenario",
        SCENARIO,
        "--collector",
        `127.0.0.1:${await freePort()}`,
        "--interval",
        "100ms",
        "--window",
        "1s",
        "--http-listen",
        `127.0.0.1:${port}`,
        "--web.config.file",
        file,
      ],
      { TRUEIDLE_TOKEN: "" },
    );
    procs.push(agent);
    await agent.waitForOutput(/Serving the agent's metrics over HTTPS/);
    expect(agent.output()).toContain(`The agent's HTTP side uses --web.config.file ${file}: HTTPS`);
    const base = `https://127.0.0.1:${port}`;
    expect((await get(`${base}/metrics`)).status).toBe(401);
    expect((await get(`${base}/metrics`, { auth: "bob:wrong" })).status).toBe(401);
    const ok = await get(`${base}/metrics`, { auth: `prometheus:${PASSWORD}` });
    expect(ok.status).toBe(200);
    expect(ok.body).toContain("trueidle_agent_");
    expect([200, 503]).toContain((await get(`${base}/healthz`)).status);
    expect(agent.output()).not.toContain(PASSWORD);

    const alone = await runTrueidle([
      "agent",
      "--plaintext",
      "--source",
      "sim",
      "--scenario",
      SCENARIO,
      "--web.config.file",
      file,
    ]);
    expect(alone.code).toBe(2);
    expect(alone.output).toContain("--web.config.file configures --http-listen; give --http-listen HOST:PORT too");
  });
});

describe("client_auth_type on a real HTTPS server", () => {
  /** An HTTPS server with `clientAuth` that answers 200 to whatever gets through. */
  async function serve(clientAuth: ClientAuthType): Promise<{ url: string; close: () => Promise<void> }> {
    const settings: HttpTlsSettings = {
      cert: readFileSync(certs.serverCert),
      key: readFileSync(certs.serverKey),
      clientCa: readFileSync(certs.caCert),
      clientAuth,
    };
    const server = https.createServer(httpsServerOptions(settings), (_req, res) => res.end("ok"));
    server.on("secureConnection", (socket) => {
      if (clientCertificateProblem(settings, socket) !== undefined) socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    return { url: `https://127.0.0.1:${port}/`, close: () => new Promise((resolve) => server.close(() => resolve())) };
  }

  const none = {};
  const good = (): GetOptions => ({ cert: certs.clientCert, key: certs.clientKey });
  const other = (): GetOptions => ({ cert: certs.otherClientCert, key: certs.otherClientKey });
  const cases: Array<[ClientAuthType, { none: boolean; good: boolean; other: boolean }]> = [
    ["NoClientCert", { none: true, good: true, other: true }],
    ["RequestClientCert", { none: true, good: true, other: true }],
    ["RequireAnyClientCert", { none: false, good: true, other: true }],
    ["VerifyClientCertIfGiven", { none: true, good: true, other: false }],
    ["RequireAndVerifyClientCert", { none: false, good: true, other: false }],
  ];
  it.each(cases)("%s admits what the toolkit's policy of that name admits", async (clientAuth, want) => {
    const s = await serve(clientAuth);
    try {
      const admitted = async (opts: GetOptions): Promise<boolean> =>
        get(s.url, opts).then(
          (a) => a.status === 200,
          () => false,
        );
      expect({ none: await admitted(none), good: await admitted(good()), other: await admitted(other()) }).toEqual(
        want,
      );
    } finally {
      await s.close();
    }
  });
});

describe("TLS versions and cipher suites from the web configuration", () => {
  it("negotiates only the versions and TLS 1.2 suites the file allows", async () => {
    const file = webConfig(
      "web-ciphers.yml",
      "  cert_file: server.crt\n  key_file: server.key\n  max_version: TLS12\n" +
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n  curve_preferences: [CurveP384, CurveP256]\n",
    );
    const settings = loadWebConfig(file).security.tls!;
    const server = https.createServer(httpsServerOptions(settings), (_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    /** The protocol and cipher a client with `opts` gets, or the error it gets. */
    const handshake = (opts: tls.ConnectionOptions): Promise<string> =>
      new Promise((resolve) => {
        const socket = tls.connect(
          { host: "127.0.0.1", port, ca: readFileSync(certs.caCert), servername: "localhost", ...opts },
          () => {
            resolve(`${socket.getProtocol()} ${socket.getCipher().name}`);
            socket.end();
          },
        );
        socket.on("error", (err) => resolve(`refused: ${err.message}`));
      });
    try {
      expect(await handshake({})).toBe("TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384");
      expect(await handshake({ minVersion: "TLSv1.3" })).toMatch(/^refused: /);
      expect(await handshake({ ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256", maxVersion: "TLSv1.2" })).toMatch(
        /^refused: .*handshake failure/,
      );
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("Prometheus and the web configuration", () => {
  it("promtool accepts trueidle's web configuration, and Prometheus scrapes the collector over HTTPS with basic auth and a client certificate", async () => {
    const file = webConfig(
      "web-prometheus.yml",
      "  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
      `http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n${USERS}`,
    );
    const check = await promtool(["check", "web-config", file]);
    expect(check.code, check.stdout + check.stderr).toBe(0);

    const { httpPort } = await startCollector(["--web.config.file", file]);
    const passwordFile = secret("prometheus-password", PASSWORD);
    prometheus = await startPrometheus({
      scrapeTargets: [`localhost:${httpPort}`],
      jobConfig: {
        scheme: "https",
        basic_auth: { username: "prometheus", password_file: passwordFile },
        tls_config: { ca_file: certs.caCert, cert_file: certs.clientCert, key_file: certs.clientKey },
      },
    });
    const up = await prometheus.waitFor('up{job="test"}', (r) => r.length === 1 && r[0]!.value === 1);
    expect(up[0]!.metric["instance"]).toBe(`localhost:${httpPort}`);
    await prometheus.waitFor("trueidle_agents_connected", (r) => r.length === 1 && r[0]!.value === 0);
  });
});
