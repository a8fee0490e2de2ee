/**
 * Test certificates made with the `openssl` CLI in a temp dir, the way README "Security"
 * tells an operator to make them: a CA, a server certificate for localhost and 127.0.0.1
 * (subjectAltName), a client certificate signed by the CA, and a second CA with its own
 * client certificate, for a client the collector must refuse. EC P-256 keys: quick to make.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

export interface TestCerts {
  dir: string;
  /** CA that signed the server and the good client certificate. */
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A different CA and a client certificate signed by it. */
  otherCaCert: string;
  otherClientCert: string;
  otherClientKey: string;
  /** Removes the directory. */
  cleanup(): void;
}

const CA_CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
`;

function openssl(dir: string, args: string[]): void {
  try {
    execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args.join(" ")} failed: ${e.stderr?.toString() ?? e.message}`, { cause: err });
  }
}

/** A self-signed CA: `<name>.crt`, `<name>.key`. */
function makeCa(dir: string, name: string, cn: string): void {
  openssl(dir, [
    "req",
    "-x509",
    "-config",
    "ca.cnf",
    "-extensions",
    "v3_ca",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.crt`,
    "-days",
    "3",
    "-subj",
    `/CN=${cn}`,
  ]);
}

/** A leaf certificate signed by `ca`: `<name>.crt`, `<name>.key`. */
function makeLeaf(dir: string, ca: string, name: string, cn: string, extensions: string): void {
  writeFileSync(path.join(dir, `${name}.ext`), extensions);
  openssl(dir, [
    "req",
    "-new",
    "-config",
    "ca.cnf",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${cn}`,
  ]);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.crt`,
    "-CAkey",
    `${ca}.key`,
    "-CAcreateserial",
    "-out",
    `${name}.crt`,
    "-days",
    "3",
    "-extfile",
    `${name}.ext`,
  ]);
}

export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(path.join(tmpdir(), "trueidle-certs-"));
  writeFileSync(path.join(dir, "ca.cnf"), CA_CONFIG);
  makeCa(dir, "ca", "trueidle test CA");
  makeCa(dir, "other-ca", "some other CA");
  makeLeaf(
    dir,
    "ca",
    "server",
    "localhost",
    "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n" +
      "subjectAltName = DNS:localhost,IP:127.0.0.1\n",
  );
  const clientExt =
    "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n";
  makeLeaf(dir, "ca", "client", "gpu-node-1", clientExt);
  makeLeaf(dir, "other-ca", "other-client", "gpu-node-1", clientExt);
  const p = (f: string): string => path.join(dir, f);
  return {
    dir,
    caCert: p("ca.crt"),
    serverCert: p("server.crt"),
    serverKey: p("server.key"),
    clientCert: p("client.crt"),
    clientKey: p("client.key"),
    otherCaCert: p("other-ca.crt"),
    otherClientCert: p("other-client.crt"),
    otherClientKey: p("other-client.key"),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
