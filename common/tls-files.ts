/**
 * Loading TLS material (PEM certificates, CA bundles, private keys) from files named by
 * flags, with errors that name the flag and the file: missing or unreadable, not PEM, an
 * encrypted key, a key that does not belong to its certificate, an expired certificate.
 * Node's own parser decides what is valid; its message is kept, wrapped in a sentence
 * that says which file it was about.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { TrueidleError, errorMessage } from "./errors.js";
import { readSecretFile } from "./secret-file.js";

/** A file given by a flag, e.g. `{ flag: "tls-cert", file: "/etc/trueidle/collector.crt" }`. */
export interface FlagFile {
  flag: string;
  file: string;
}

export interface KeyPair {
  /** PEM: the certificate, then any intermediates. */
  cert: Buffer;
  key: Buffer;
}

const CERT_BLOCK_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function bad(f: FlagFile, what: string, cause?: unknown): TrueidleError {
  return new TrueidleError("bad_config", `--${f.flag} ${f.file} ${what}`, cause === undefined ? undefined : { cause });
}

function readFile(f: FlagFile): Buffer {
  try {
    return readFileSync(f.file);
  } catch (err) {
    throw bad(f, `cannot be read: ${errorMessage(err)}`, err);
  }
}

/** Every certificate of a PEM file, parsed; throws when there is none or one does not parse. */
function parseCertificates(f: FlagFile, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString("utf8").match(CERT_BLOCK_RE) ?? [];
  if (blocks.length === 0) throw bad(f, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw bad(f, `has a certificate (number ${i + 1}) that does not parse: ${errorMessage(err)}`, err);
    }
  });
}

function checkValidity(f: FlagFile, cert: X509Certificate, now: number): void {
  if (Date.parse(cert.validTo) < now)
    throw bad(f, `holds a certificate that expired on ${cert.validTo} (subject ${cert.subject.replace(/\n/g, ", ")})`);
  if (Date.parse(cert.validFrom) > now) throw bad(f, `holds a certificate that is not valid before ${cert.validFrom}`);
}

/** A CA bundle (one or more PEM certificates) to verify peers with. */
export function loadCaBundle(f: FlagFile, now = Date.now()): Buffer {
  const pem = readFile(f);
  const certs = parseCertificates(f, pem);
  for (const c of certs) checkValidity(f, c, now);
  return pem;
}

export interface LoadedKeyPair extends KeyPair {
  /** Set when the key file is readable by every user or writable by others. */
  warning?: string | undefined;
  /** The leaf certificate, for logs (subject, expiry). */
  leaf: X509Certificate;
}

/**
 * A certificate chain and its private key. Checks that the key is an unencrypted PEM key
 * and belongs to the first certificate, then lets Node build a secure context from both,
 * so anything else it objects to is reported here, at start, naming the files.
 */
export function loadKeyPair(certFile: FlagFile, keyFile: FlagFile, now = Date.now()): LoadedKeyPair {
  const cert = readFile(certFile);
  const certs = parseCertificates(certFile, cert);
  const leaf = certs[0] as X509Certificate;
  checkValidity(certFile, leaf, now);
  const secret = readSecretFile(keyFile.flag, keyFile.file);
  const keyText = secret.text;
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(keyText)) {
    throw bad(
      keyFile,
      "holds an encrypted private key; trueidle needs it unencrypted (protect the file with chmod 600 instead)",
    );
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyText))
    throw bad(keyFile, "holds no PEM private key (-----BEGIN PRIVATE KEY-----)");
  let keyObject;
  try {
    keyObject = createPrivateKey(keyText);
  } catch (err) {
    throw bad(keyFile, `holds a private key that does not parse: ${errorMessage(err)}`, err);
  }
  if (!leaf.checkPrivateKey(keyObject)) {
    throw new TrueidleError(
      "bad_config",
      `the private key in --${keyFile.flag} ${keyFile.file} does not belong to the certificate in --${certFile.flag} ${certFile.file}`,
    );
  }
  const key = Buffer.from(keyText, "utf8");
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new TrueidleError(
      "bad_config",
      `--${certFile.flag} ${certFile.file} with --${keyFile.flag} ${keyFile.file} cannot be used for TLS: ${errorMessage(err)}`,
      { cause: err },
    );
  }
  return { cert, key, leaf, warning: secret.warning };
}

/** A certificate's subject and expiry for a log line, e.g. "CN=collector.example, valid until Jan  1 00:00:00 2027 GMT". */
export function describeCertificate(cert: X509Certificate): string {
  return `${cert.subject.replace(/\n/g, ", ")}, valid until ${cert.validTo}`;
}
