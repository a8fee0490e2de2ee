import { readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseWebConfig } from "./web-config.js";

const FILE = "/etc/trueidle/web.yml";
/** bcrypt of "scrape-pass-never-logged", cost 4, made by libxcrypt's crypt(3) (Debian 12). */
const HASH_2Y = "$2y$04$abcdefghijklmnopqrstuuAIsR6NxYTXFIBQ7GAxd1JdUzdtHZYRy";

/** The message of what `parseWebConfig(text)` throws. */
function refusal(text: string): string {
  try {
    parseWebConfig(text, FILE);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("the configuration was accepted");
}

describe("parseWebConfig", () => {
  it("reads the toolkit's keys, with its defaults and paths relative to the file", () => {
    const c = parseWebConfig(
      `
tls_server_config:
  cert_file: collector.crt
  key_file: /secrets/collector.key
  client_ca_file: ca.crt
  client_auth_type: RequireAndVerifyClientCert
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  curve_preferences: [X25519, CurveP256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
    Content-Security-Policy: ""
basic_auth_users:
  prometheus: ${HASH_2Y}
  grafana: '${HASH_2Y.replace("$2y$", "$2b$")}'
`,
      FILE,
    );
    expect(c.tls).toEqual({
      certFile: "/etc/trueidle/collector.crt",
      keyFile: "/secrets/collector.key",
      clientCaFile: "/etc/trueidle/ca.crt",
      clientAuth: "RequireAndVerifyClientCert",
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256",
      honorCipherOrder: false,
      ecdhCurve: "X25519:P-256",
    });
    expect(c.headers).toEqual({ "X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000" });
    expect([...c.users!.keys()]).toEqual(["prometheus", "grafana"]);
  });

  it("takes an empty file, a file of empty sections and TLS alone, as the toolkit does", () => {
    expect(parseWebConfig("", FILE)).toEqual({ file: FILE, tls: undefined, headers: {}, users: undefined });
    expect(parseWebConfig("# nothing yet\ntls_server_config:\nbasic_auth_users: {}\n", FILE).users).toBeUndefined();
    const t = parseWebConfig(
      "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireClientCert\n",
      "rel/web.yml",
    ).tls!;
    expect(t.certFile).toBe(path.resolve("rel", "a.crt"));
    expect(t).toMatchObject({
      clientAuth: "RequireAnyClientCert",
      minVersion: "TLSv1.2",
      maxVersion: "TLSv1.3",
      honorCipherOrder: true,
    });
  });

  it("refuses an unknown key, naming the key and the file, with the nearest known key", () => {
    expect(refusal("tls_server_config:\n  certfile: a.crt\n  key_file: a.key\n")).toBe(
      `--web.config.file ${FILE}: tls_server_config.certfile is not a key trueidle knows in the web configuration format (did you mean tls_server_config.cert_file?)\n` +
        `--web.config.file ${FILE}: tls_server_config.cert_file is missing (TLS needs a certificate and its key)`,
    );
    expect(refusal("basic_auth_user:\n  a: b\n")).toBe(
      `--web.config.file ${FILE}: basic_auth_user is not a key trueidle knows in the web configuration format (did you mean basic_auth_users?)`,
    );
    expect(refusal("listen: 0.0.0.0:9745\n")).toBe(
      `--web.config.file ${FILE}: listen is not a key trueidle knows in the web configuration format`,
    );
  });

  it("refuses the format's keys that trueidle does not have, saying what to do instead", () => {
    const msg = refusal(`tls_server_config:
  cert: "-----BEGIN CERTIFICATE-----"
  key_file: a.key
  cert_file: a.crt
  client_allowed_sans: [agent.example]
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
rate_limit:
  interval: 1s
  burst: 20
`);
    expect(msg).toContain(
      "tls_server_config.cert is part of the exporter-toolkit format but not supported by trueidle: give the certificate as a file with cert_file",
    );
    expect(msg).toContain(
      "tls_server_config.client_allowed_sans is part of the exporter-toolkit format but not supported by trueidle",
    );
    expect(msg).toContain("rate_limit is part of the exporter-toolkit format but not supported by trueidle");
  });

  it("reports every bad value at once", () => {
    const msg = refusal(`tls_server_config:
  cert_file: a.crt
  key_file: 7
  client_auth_type: Sometimes
  min_version: TLS14
  cipher_suites: [TLS_NULL_WITH_NULL_NULL]
  curve_preferences: [CurveP999]
http_server_config:
  http2: maybe
  headers:
    X-Frame-Options: allow
    X-Powered-By: trueidle
basic_auth_users:
  alice: hunter2
  bob: $2x$10$abcdefghijklmnopqrstuuAIsR6NxYTXFIBQ7GAxd1JdUzdtHZYRy
`).split("\n");
    expect(msg.map((l) => l.slice(`--web.config.file ${FILE}: `.length))).toEqual([
      "tls_server_config.key_file must be a string",
      `tls_server_config.min_version must be one of TLS10, TLS11, TLS12, TLS13 (got "TLS14")`,
      `tls_server_config.key_file is missing (TLS needs a certificate and its key)`,
      `tls_server_config.client_auth_type must be one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert (got "Sometimes")`,
      `tls_server_config.cipher_suites has an unknown cipher suite "TLS_NULL_WITH_NULL_NULL" (the Go names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)`,
      `tls_server_config.curve_preferences has an unknown curve "CurveP999" (one of CurveP256, CurveP384, CurveP521, X25519)`,
      "http_server_config.http2 must be true or false",
      `http_server_config.headers.X-Frame-Options must be one of deny, sameorigin (got "allow")`,
      "http_server_config.headers.X-Powered-By is not a header the web configuration format can set (Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)",
      `basic_auth_users.alice is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to 31); make one with: htpasswd -nBC 10 "" | tr -d ':\\n'`,
      `basic_auth_users.bob is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to 31); make one with: htpasswd -nBC 10 "" | tr -d ':\\n'`,
    ]);
    expect(msg.join("\n")).not.toContain("hunter2");
  });

  it("refuses a client CA without a policy, a verifying policy without a CA, and settings without a certificate", () => {
    expect(refusal("tls_server_config: {cert_file: a, key_file: b, client_ca_file: ca}\n")).toContain(
      "tls_server_config.client_ca_file is set without client_auth_type; set client_auth_type: RequireAndVerifyClientCert",
    );
    expect(
      refusal("tls_server_config: {cert_file: a, key_file: b, client_auth_type: VerifyClientCertIfGiven}\n"),
    ).toContain("tls_server_config.client_auth_type VerifyClientCertIfGiven needs client_ca_file");
    expect(refusal("tls_server_config: {min_version: TLS13}\n")).toBe(
      `--web.config.file ${FILE}: tls_server_config sets min_version but neither cert_file nor key_file: TLS would be off`,
    );
    expect(
      refusal("tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}\n"),
    ).toContain("tls_server_config.min_version is above max_version");
  });

  it("refuses YAML that does not parse, duplicate keys, and a file that is not a mapping", () => {
    expect(refusal("tls_server_config:\n  cert_file: a\n  cert_file: b\n")).toMatch(
      /^--web\.config\.file \/etc\/trueidle\/web\.yml: is not valid YAML \(line 3, column 3\): Map keys must be unique/,
    );
    expect(refusal("basic_auth_users: [alice]\n")).toBe(
      `--web.config.file ${FILE}: basic_auth_users must be a mapping of user names to bcrypt hashes`,
    );
    expect(refusal("- a\n- b\n")).toMatch(/must be a YAML mapping/);
    expect(refusal("basic_auth_users:\n  'a:b': x\n")).toContain(
      `basic_auth_users has a user name that is empty or holds ":"`,
    );
  });

  it("reads the shipped example once its placeholder hash is replaced, and refuses it before", () => {
    const example = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "deploy", "web-config.example.yml");
    const text = readFileSync(example, "utf8");
    expect(() => parseWebConfig(text, example)).toThrow(/basic_auth_users\.prometheus is not a bcrypt hash/);
    const c = parseWebConfig(text.replace("REPLACE-WITH-A-BCRYPT-HASH", HASH_2Y), example);
    expect(c.tls).toMatchObject({
      certFile: "/etc/trueidle/collector.crt",
      keyFile: "/etc/trueidle/collector.key",
      clientAuth: "NoClientCert",
    });
    expect(Object.keys(c.headers)).toEqual(["Strict-Transport-Security", "X-Frame-Options"]);
    expect([...c.users!.keys()]).toEqual(["prometheus"]);
    // Uncommented, its optional settings are valid too.
    const all = parseWebConfig(
      text.replace("REPLACE-WITH-A-BCRYPT-HASH", HASH_2Y).replace(/^( *)#(?=\w| {2}-)/gm, "$1"),
      example,
    );
    expect(all.tls).toMatchObject({
      clientAuth: "RequireAndVerifyClientCert",
      clientCaFile: "/etc/trueidle/ca.crt",
      ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
    });
  });
});
