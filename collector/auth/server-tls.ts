/**
 * TLS for the collector's listeners. The gRPC side: ServerCredentials.createSsl with the
 * collector's certificate and, for mutual TLS, a client CA: every agent must then present
 * a certificate signed by it, or its TLS handshake fails before any stream starts.
 * Without `grpcTls` the listener is plaintext.
 */
import { ServerCredentials } from "@grpc/grpc-js";
import { describeCertificate, loadCaBundle, loadKeyPair, type FlagFile } from "../../common/tls-files.js";

/** PEM material for a TLS listener. */
export interface ServerTls {
  cert: Buffer | string;
  key: Buffer | string;
  /** Mutual TLS: clients must present a certificate signed by one of these CAs. */
  clientCa?: Buffer | string | undefined;
}

export interface LoadedServerTls {
  tls: ServerTls;
  /** For the start-up log: the certificate's subject and expiry. */
  description: string;
  /** Permission warnings to log once. */
  warnings: string[];
}

/** Loads a listener's files; errors name the flags and files (see common/tls-files.ts). */
export function loadServerTls(cert: FlagFile, key: FlagFile, clientCa?: FlagFile): LoadedServerTls {
  const pair = loadKeyPair(cert, key);
  const ca = clientCa ? loadCaBundle(clientCa) : undefined;
  return {
    tls: { cert: pair.cert, key: pair.key, clientCa: ca },
    description: describeCertificate(pair.leaf),
    warnings: pair.warning ? [pair.warning] : [],
  };
}

function buf(v: Buffer | string): Buffer {
  return typeof v === "string" ? Buffer.from(v, "utf8") : v;
}

/** Credentials for the gRPC listener: TLS (mutual with a client CA) or, without `tls`, plaintext. */
export function grpcServerCredentials(tls: ServerTls | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const ca = tls.clientCa === undefined ? null : buf(tls.clientCa);
  return ServerCredentials.createSsl(ca, [{ cert_chain: buf(tls.cert), private_key: buf(tls.key) }], ca !== null);
}
