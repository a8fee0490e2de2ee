import { chmodSync, copyFileSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCerts, type TestCerts } from "../test/helpers/certs.js";
import { loadCaBundle, loadKeyPair } from "./tls-files.js";

let c: TestCerts;
beforeAll(() => {
  c = makeTestCerts();
});
afterAll(() => c?.cleanup());

const f = (flag: string, file: string) => ({ flag, file });

describe("TLS files", () => {
  it("loads a certificate with its key, and a CA bundle", () => {
    chmodSync(c.serverKey, 0o600);
    const pair = loadKeyPair(f("tls-cert", c.serverCert), f("tls-key", c.serverKey));
    expect(pair.leaf.subject).toContain("CN=localhost");
    expect(pair.warning).toBeUndefined();
    expect(loadCaBundle(f("tls-ca", c.caCert)).toString()).toContain("BEGIN CERTIFICATE");
    const bundle = path.join(c.dir, "bundle.pem");
    writeFileSync(bundle, readFileSync(c.caCert, "utf8") + readFileSync(c.otherCaCert, "utf8"));
    expect(loadCaBundle(f("tls-ca", bundle)).length).toBeGreaterThan(0);
  });

  it("names the flag and the file for each kind of mistake", () => {
    expect(() => loadCaBundle(f("tls-ca", path.join(c.dir, "missing.crt")))).toThrow(
      /^--tls-ca .*missing\.crt cannot be read: ENOENT/,
    );
    expect(() => loadCaBundle(f("tls-client-ca", c.serverKey))).toThrow(
      /^--tls-client-ca .*server\.key holds no PEM certificate/,
    );
    expect(() => loadKeyPair(f("tls-cert", c.serverKey), f("tls-key", c.serverKey))).toThrow(
      /^--tls-cert .* holds no PEM certificate/,
    );
    expect(() => loadKeyPair(f("tls-cert", c.serverCert), f("tls-key", c.serverCert))).toThrow(
      /^--tls-key .*server\.crt holds no PEM private key/,
    );
    expect(() => loadKeyPair(f("tls-cert", c.serverCert), f("tls-key", c.clientKey))).toThrow(
      /^the private key in --tls-key .*client\.key does not belong to the certificate in --tls-cert .*server\.crt$/,
    );
    const garbled = path.join(c.dir, "garbled.crt");
    writeFileSync(garbled, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    expect(() => loadCaBundle(f("tls-ca", garbled))).toThrow(
      /^--tls-ca .*garbled\.crt has a certificate \(number 1\) that does not parse/,
    );
    const later = Date.now() + 10 * 86_400_000;
    expect(() => loadKeyPair(f("tls-cert", c.serverCert), f("tls-key", c.serverKey), later)).toThrow(
      /holds a certificate that expired on/,
    );
    const enc = path.join(c.dir, "enc.key");
    writeFileSync(enc, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n");
    expect(() => loadKeyPair(f("tls-cert", c.serverCert), f("tls-key", enc))).toThrow(/holds an encrypted private key/);
  });

  it("warns when the key is readable by others", () => {
    const open = path.join(c.dir, "open.key");
    copyFileSync(c.serverKey, open);
    chmodSync(open, 0o644);
    expect(loadKeyPair(f("tls-cert", c.serverCert), f("tls-key", open)).warning).toMatch(
      /open\.key \(--tls-key\) is readable by every user; chmod 640 or 600 it/,
    );
  });
});
