/**
 * TLS, client certificates, basic auth and extra headers for an HTTP endpoint (the
 * collector's, and the agent's `--http-listen`), and loading them from a web configuration
 * file (web-config.ts). The files are read once, at start; a changed certificate takes a
 * restart, as with the collector's other TLS flags.
 *
 * Client certificates, by the toolkit's client_auth_type: RequireAndVerifyClientCert is
 * enforced in the TLS handshake (a client without a certificate signed by client_ca_file
 * fails it); RequireAnyClientCert (a certificate, not verified) and VerifyClientCertIfGiven
 * (verified when one is sent) are checked once the handshake is done, and a connection that
 * fails the check is closed before any request is read (clientCertificateProblem).
 */
import type { TlsOptions, TLSSocket } from "node:tls";
import { createSecureContext } from "node:tls";
import { TrueidleError, errorMessage } from "./errors.js";
import { BcryptUsers } from "./bcrypt-users.js";
import type { HttpUsers } from "./http-auth.js";
import { readSecretFile } from "./secret-file.js";
import { describeCertificate, loadCaBundle, loadKeyPair } from "./tls-files.js";
import { parseWebConfig, WEB_CONFIG_FLAG, type ClientAuthType, type WebConfig } from "./web-config.js";

/** PEM material and policy for an HTTPS listener; only cert and key are required. */
export interface HttpTlsSettings {
  cert: Buffer | string;
  key: Buffer | string;
  /** The CA that signs client certificates. */
  clientCa?: Buffer | string | undefined;
  /** Default NoClientCert. */
  clientAuth?: ClientAuthType | undefined;
  minVersion?: TlsOptions["minVersion"];
  maxVersion?: TlsOptions["maxVersion"];
  ciphers?: string | undefined;
  honorCipherOrder?: boolean | undefined;
  ecdhCurve?: string | undefined;
}

/** Everything about an HTTP endpoint's security that its server needs. */
export interface HttpSecurity {
  /** HTTPS with these settings; plain HTTP without. */
  tls?: HttpTlsSettings | undefined;
  /** Basic-auth users; no auth without. */
  users?: HttpUsers | undefined;
  /** Headers added to every answer (an answer's own header of the same name wins). */
  headers?: Readonly<Record<string, string>> | undefined;
}

/** The options of https.createServer for `t`. */
export function httpsServerOptions(t: HttpTlsSettings): TlsOptions {
  const auth = t.clientAuth ?? "NoClientCert";
  const options: TlsOptions = {
    cert: t.cert,
    key: t.key,
    requestCert: auth !== "NoClientCert",
    rejectUnauthorized: auth === "RequireAndVerifyClientCert",
  };
  if (t.clientCa !== undefined) options.ca = t.clientCa;
  if (t.minVersion !== undefined) options.minVersion = t.minVersion;
  if (t.maxVersion !== undefined) options.maxVersion = t.maxVersion;
  if (t.ciphers !== undefined) options.ciphers = t.ciphers;
  if (t.honorCipherOrder !== undefined) options.honorCipherOrder = t.honorCipherOrder;
  if (t.ecdhCurve !== undefined) options.ecdhCurve = t.ecdhCurve;
  return options;
}

/**
 * Why a finished handshake does not meet `t`'s client_auth_type, or undefined when it does.
 * The handshake itself enforces RequireAndVerifyClientCert; this covers the other types.
 */
export function clientCertificateProblem(t: HttpTlsSettings, socket: TLSSocket): string | undefined {
  const auth = t.clientAuth ?? "NoClientCert";
  if (auth === "NoClientCert" || auth === "RequestClientCert") return undefined;
  const cert = socket.getPeerCertificate();
  const presented = cert !== null && typeof cert === "object" && Object.keys(cert).length > 0;
  if (auth === "RequireAnyClientCert") return presented ? undefined : "it presented no client certificate";
  if (!presented && auth === "VerifyClientCertIfGiven") return undefined;
  if (!socket.authorized)
    return `its client certificate is not signed by the client CA (${String(socket.authorizationError)})`;
  return undefined;
}

/** A web configuration file, loaded: the settings, a sentence for the start-up log, warnings to log once. */
export interface LoadedWebConfig {
  config: WebConfig;
  security: HttpSecurity;
  description: string;
  warnings: string[];
}

/**
 * Reads `file` (`--web.config.file`) and the files it names. Every problem is a bad_config
 * error naming the web configuration file, the key and, for a certificate or key, that file.
 */
export function loadWebConfig(file: string): LoadedWebConfig {
  const f = readSecretFile(WEB_CONFIG_FLAG, file);
  const config = parseWebConfig(f.text, file);
  const warnings = f.warning ? [f.warning] : [];
  const where = (key: string): string => `${WEB_CONFIG_FLAG} ${file}: tls_server_config.${key}`;
  let tls: HttpTlsSettings | undefined;
  let description = "plain HTTP";
  if (config.tls) {
    const t = config.tls;
    const pair = loadKeyPair(
      { flag: where("cert_file"), file: t.certFile },
      { flag: where("key_file"), file: t.keyFile },
    );
    if (pair.warning) warnings.push(pair.warning);
    const clientCa =
      t.clientCaFile === undefined ? undefined : loadCaBundle({ flag: where("client_ca_file"), file: t.clientCaFile });
    tls = {
      cert: pair.cert,
      key: pair.key,
      clientCa,
      clientAuth: t.clientAuth,
      minVersion: t.minVersion,
      maxVersion: t.maxVersion,
      ciphers: t.ciphers,
      honorCipherOrder: t.honorCipherOrder,
      ecdhCurve: t.ecdhCurve,
    };
    try {
      createSecureContext(httpsServerOptions(tls));
    } catch (err) {
      throw new TrueidleError(
        "bad_config",
        `--${WEB_CONFIG_FLAG} ${file}: tls_server_config cannot be used: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    description =
      `HTTPS with the certificate ${describeCertificate(pair.leaf)}, ${t.minVersion} or later` +
      (t.clientAuth === "NoClientCert" ? "" : `, client certificates: ${t.clientAuth}`);
  }
  const users = config.users ? new BcryptUsers(config.users) : undefined;
  if (users) description += `, basic auth for ${users.size} user(s) (bcrypt)`;
  const headers = Object.keys(config.headers);
  if (headers.length > 0) description += `, headers ${headers.join(", ")}`;
  return { config, security: { tls, users, headers: config.headers }, description, warnings };
}
