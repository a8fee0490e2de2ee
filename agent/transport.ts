/**
 * How an agent reaches its collectors: the gRPC channel credentials (plaintext, TLS with
 * the system's CAs or a given CA, mutual TLS with a client certificate), channel options
 * for a server name other than the address, and the call metadata that carries the
 * agent's token (`authorization: Bearer <token>`, from `--token-file` or TRUEIDLE_TOKEN).
 *
 * The token is read once, here, and lives only in the metadata object; it is never
 * logged. Errors name the flag and the file (common/tls-files.ts).
 */
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { TrueidleError } from "../common/errors.js";
import { contentLines, readSecretFile } from "../common/secret-file.js";
import { describeCertificate, loadCaBundle, loadKeyPair } from "../common/tls-files.js";
import { AUTHORIZATION_METADATA_KEY, bearer, tokenProblem } from "../common/token.js";

export const TOKEN_ENV = "TRUEIDLE_TOKEN";

export interface AgentTransportConfig {
  /** Plaintext gRPC (`--plaintext`); the TLS fields must then be unset. */
  plaintext: boolean;
  /** `--tls-ca`: verify the collector with this CA bundle instead of the system's CAs. */
  caFile?: string | undefined;
  /** `--tls-cert` and `--tls-key`: the agent's client certificate, for mutual TLS. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** `--tls-server-name`: the name the collector's certificate must carry, when it is not the address's host. */
  serverName?: string | undefined;
  /** `--token-file`: the agent's token; else TRUEIDLE_TOKEN in `env`. */
  tokenFile?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

export interface AgentTransport {
  credentials: grpc.ChannelCredentials;
  /** Options for every channel: the server name override, when given. */
  channelOptions: grpc.ChannelOptions;
  /** Metadata for every stream: the token, when there is one. */
  callMetadata?: grpc.Metadata | undefined;
  /** "plaintext", "TLS" or "mutual TLS", for the start-up log. */
  security: string;
  /** Where the token came from ("--token-file FILE" or "TRUEIDLE_TOKEN"), never the token. */
  tokenFrom?: string | undefined;
  /** The client certificate's subject and expiry, with mutual TLS. */
  clientCertificate?: string | undefined;
  /** Permission warnings to log once. */
  warnings: string[];
}

/** The agent's token from its file or the environment, or undefined; errors never quote it. */
export function readAgentToken(
  file: string | undefined,
  env: NodeJS.ProcessEnv,
): { token: string; from: string; warning?: string | undefined } | undefined {
  const fromEnv = env[TOKEN_ENV];
  if (file !== undefined) {
    if (fromEnv !== undefined && fromEnv.trim() !== "") {
      throw new TrueidleError(
        "bad_config",
        `the agent token is given both in ${TOKEN_ENV} and in --token-file; give it once`,
      );
    }
    const f = readSecretFile("token-file", file);
    const lines = contentLines(f.text);
    if (lines.length !== 1) {
      throw new TrueidleError(
        "bad_config",
        `--token-file ${file} must hold exactly one token on one line (it holds ${lines.length} non-comment lines)`,
      );
    }
    const token = lines[0]!.text;
    const problem = tokenProblem(token);
    if (problem) throw new TrueidleError("bad_config", `--token-file ${file}: ${problem}`);
    return { token, from: `--token-file ${file}`, warning: f.warning };
  }
  if (fromEnv === undefined || fromEnv.trim() === "") return undefined;
  const token = fromEnv.trim();
  const problem = tokenProblem(token);
  if (problem) throw new TrueidleError("bad_config", `${TOKEN_ENV}: ${problem}`);
  return { token, from: TOKEN_ENV };
}

export function buildAgentTransport(cfg: AgentTransportConfig): AgentTransport {
  const env = cfg.env ?? process.env;
  const warnings: string[] = [];
  const tok = readAgentToken(cfg.tokenFile, env);
  if (tok?.warning) warnings.push(tok.warning);
  let callMetadata: grpc.Metadata | undefined;
  if (tok) {
    callMetadata = new grpc.Metadata();
    callMetadata.set(AUTHORIZATION_METADATA_KEY, bearer(tok.token));
  }
  const base = { callMetadata, tokenFrom: tok?.from, warnings };
  if (cfg.plaintext) {
    if (
      cfg.caFile !== undefined ||
      cfg.certFile !== undefined ||
      cfg.keyFile !== undefined ||
      cfg.serverName !== undefined
    ) {
      throw new TrueidleError("bad_config", "plaintext gRPC cannot take a CA, a client certificate or a server name");
    }
    return { ...base, credentials: grpc.credentials.createInsecure(), channelOptions: {}, security: "plaintext" };
  }
  if ((cfg.certFile === undefined) !== (cfg.keyFile === undefined)) {
    throw new TrueidleError("bad_config", "--tls-cert and --tls-key go together: give both for mutual TLS, or neither");
  }
  const ca = cfg.caFile !== undefined ? loadCaBundle({ flag: "tls-ca", file: cfg.caFile }) : null;
  let pair: ReturnType<typeof loadKeyPair> | undefined;
  if (cfg.certFile !== undefined && cfg.keyFile !== undefined) {
    pair = loadKeyPair({ flag: "tls-cert", file: cfg.certFile }, { flag: "tls-key", file: cfg.keyFile });
    if (pair.warning) warnings.push(pair.warning);
  }
  const serverName = cfg.serverName;
  // The name is checked by our own checkServerIdentity too, so it holds even on a channel
  // built without the options; the options also set SNI and the :authority header.
  const verify: grpc.VerifyOptions =
    serverName === undefined
      ? {}
      : { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(serverName, cert) };
  const credentials = grpc.credentials.createSsl(ca, pair?.key ?? null, pair?.cert ?? null, verify);
  const channelOptions: grpc.ChannelOptions =
    serverName === undefined
      ? {}
      : { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName };
  return {
    ...base,
    credentials,
    channelOptions,
    security: pair ? "mutual TLS" : "TLS",
    clientCertificate: pair ? describeCertificate(pair.leaf) : undefined,
  };
}

let ipServerNameWarningSilenced = false;

/**
 * grpc-js sends the collector's address as the TLS server name (SNI) even when it is an IP
 * literal; Node then prints a one-time DeprecationWarning (DEP0123: RFC 6066 forbids IP
 * server names) as a bare line on stderr, outside the JSON log. Nothing is wrong: the
 * certificate is still verified against the IP. For processes that connect by IP, this
 * drops that one warning; every other warning is printed as before. Safe twice.
 */
export function silenceIpServerNameWarning(): void {
  if (ipServerNameWarningSilenced) return;
  ipServerNameWarningSilenced = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]): void => {
    const opts = args[1];
    const code = typeof opts === "object" && opts !== null ? (opts as { code?: unknown }).code : args[2];
    if (code === "DEP0123") return;
    emit(...args);
  }) as typeof process.emitWarning;
}
