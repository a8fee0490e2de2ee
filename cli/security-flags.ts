/**
 * The transport and security flags of `trueidle agent` and `trueidle collector`, and
 * turning them into options. The CLI makes the choice explicit: gRPC runs over TLS, or
 * plaintext only with --plaintext (and a WARN at start); neither is a usage error naming
 * both fixes. Secrets (tokens, passwords, keys) come only from files or the environment.
 * Every problem is reported at once; file errors name the flag and the file.
 *
 * The HTTP side takes either its own flags (--http-tls-cert, --http-tls-key,
 * --http-basic-auth-file) or --web.config.file, the web configuration file Prometheus and
 * its exporters share (common/web-config.ts); giving both is a usage error, so no setting
 * silently loses to another. The agent's --http-listen takes --web.config.file only.
 */
import type { FlagSpec, FlagValues } from "./args.js";
import { UsageError } from "./args.js";
import type { Logger } from "../common/log.js";
import { buildAgentTransport, silenceIpServerNameWarning, TOKEN_ENV, type AgentTransport } from "../agent/transport.js";
import { loadBasicAuth } from "../collector/auth/basic-auth.js";
import { loadServerTls } from "../collector/auth/server-tls.js";
import { loadTokens, TOKENS_ENV } from "../collector/auth/tokens.js";
import type { CollectorOptions } from "../collector/collector.js";
import { loadWebConfig, type HttpSecurity, type LoadedWebConfig } from "../common/http-security.js";
import { WEB_CONFIG_FLAG } from "../common/web-config.js";
import { errorMessage } from "../common/errors.js";

const PLAINTEXT_HELP =
  "Run gRPC unencrypted: windows (and any token) travel in clear. Only on a trusted network; " +
  "without TLS flags this must be given explicitly.";

export const AGENT_TRANSPORT_FLAGS: FlagSpec[] = [
  { name: "plaintext", type: "boolean", help: PLAINTEXT_HELP },
  {
    name: "tls",
    type: "boolean",
    help: "Connect with TLS, verifying the collector's certificate against the system's CAs.",
  },
  {
    name: "tls-ca",
    type: "string",
    placeholder: "FILE",
    help: "Verify the collector's certificate with this CA bundle (PEM) instead of the system's CAs; implies TLS.",
  },
  {
    name: "tls-cert",
    type: "string",
    placeholder: "FILE",
    help: "This agent's client certificate (PEM) for mutual TLS; needs --tls-key; implies TLS.",
  },
  {
    name: "tls-key",
    type: "string",
    placeholder: "FILE",
    help: "The private key (PEM, unencrypted, chmod 600) of --tls-cert.",
  },
  {
    name: "tls-server-name",
    type: "string",
    placeholder: "NAME",
    help: "Name the collector's certificate must carry when it is not the --collector host (e.g. when connecting by IP); implies TLS.",
  },
  {
    name: "token-file",
    type: "string",
    placeholder: "FILE",
    help: `File holding this agent's token, sent as "authorization: Bearer"; or set ${TOKEN_ENV}. Never on the command line.`,
  },
];

export const COLLECTOR_SECURITY_FLAGS: FlagSpec[] = [
  { name: "plaintext", type: "boolean", help: PLAINTEXT_HELP },
  {
    name: "tls-cert",
    type: "string",
    placeholder: "FILE",
    help: "Certificate (PEM, with any intermediates) agents see on gRPC; needs --tls-key.",
  },
  {
    name: "tls-key",
    type: "string",
    placeholder: "FILE",
    help: "The private key (PEM, unencrypted, chmod 600) of --tls-cert.",
  },
  {
    name: "tls-client-ca",
    type: "string",
    placeholder: "FILE",
    help: "Mutual TLS: agents must present a client certificate signed by this CA (PEM); needs --tls-cert.",
  },
  {
    name: "agent-tokens-file",
    type: "string",
    placeholder: "FILE",
    deprecatedNames: ["tokens-file"],
    help:
      `Accepted agent tokens, one a line (name:token or token; # comments); or set ${TOKENS_ENV} (comma-separated). ` +
      "Agents without one of them get UNAUTHENTICATED.",
  },
  {
    name: "http-tls-cert",
    type: "string",
    placeholder: "FILE",
    help: "Serve /metrics, /healthz and / over HTTPS with this certificate (PEM); needs --http-tls-key.",
  },
  {
    name: "http-tls-key",
    type: "string",
    placeholder: "FILE",
    help: "The private key (PEM, unencrypted, chmod 600) of --http-tls-cert.",
  },
  {
    name: "http-basic-auth-file",
    type: "string",
    placeholder: "FILE",
    help: "Require HTTP basic auth on /metrics and / (not /healthz): one user:password or user:{SHA256}<hex> a line.",
  },
  {
    name: WEB_CONFIG_FLAG,
    type: "string",
    placeholder: "FILE",
    help:
      "HTTPS, client certificates, bcrypt basic auth (not on /healthz) and headers for the HTTP side, from a web configuration " +
      "file in the Prometheus exporter-toolkit format; instead of the --http-tls-* and --http-basic-auth-file flags. Read at start.",
  },
];

export const AGENT_HTTP_FLAGS: FlagSpec[] = [
  {
    name: WEB_CONFIG_FLAG,
    type: "string",
    placeholder: "FILE",
    help:
      "HTTPS, client certificates, bcrypt basic auth (not on /healthz) and headers for --http-listen, from a web configuration " +
      "file in the Prometheus exporter-toolkit format. Read at start.",
  },
];

/** The collector's HTTP flags that a web configuration file replaces, and the keys that do it there. */
const HTTP_FLAGS_IN_WEB_CONFIG: ReadonlyArray<readonly [string, string]> = [
  ["http-tls-cert", "tls_server_config.cert_file"],
  ["http-tls-key", "tls_server_config.key_file"],
  ["http-basic-auth-file", "basic_auth_users (bcrypt hashes)"],
];

const AGENT_TLS_FLAGS = ["tls", "tls-ca", "tls-cert", "tls-key", "tls-server-name"] as const;
const COLLECTOR_TLS_FLAGS = ["tls-cert", "tls-key", "tls-client-ca"] as const;

function given(v: FlagValues, name: string): boolean {
  const x = v[name];
  return x !== undefined && x !== false;
}

function str(v: FlagValues, name: string): string | undefined {
  return v[name] as string | undefined;
}

/** Checks --plaintext against the TLS flags; pushes problems. True when TLS is on. */
function checkChoice(v: FlagValues, tlsFlags: readonly string[], fix: string, problems: string[]): boolean {
  const tls = tlsFlags.filter((f) => given(v, f));
  if (given(v, "plaintext")) {
    if (tls.length > 0)
      problems.push(
        `--plaintext cannot be combined with ${tls.map((f) => `--${f}`).join(", ")}; choose TLS or plaintext`,
      );
    return false;
  }
  if (tls.length === 0)
    problems.push(`gRPC needs an explicit choice: ${fix}, or --plaintext to run unencrypted on a trusted network`);
  return true;
}

function pair(v: FlagValues, a: string, b: string, problems: string[]): void {
  if (given(v, a) !== given(v, b)) problems.push(`--${a} and --${b} go together: give both or neither`);
}

/** Runs `load`, turning a config error into a problem; undefined then. */
function attempt<T>(problems: string[], load: () => T): T | undefined {
  try {
    return load();
  } catch (err) {
    problems.push(errorMessage(err));
    return undefined;
  }
}

const PLAINTEXT_WARNING =
  "gRPC runs unencrypted (--plaintext): windows travel in clear; use this only on a trusted network.";

/**
 * Settings and the log lines that go with them: `announce` logs the plaintext, token and
 * permission warnings, once the caller knows every flag is good (a usage error prints no
 * warnings first).
 */
export interface WithAnnouncement<T> {
  value: T;
  announce(logger: Logger): void;
}

/** The agent's transport from its flags. */
export function agentTransportFrom(v: FlagValues, env: NodeJS.ProcessEnv): WithAnnouncement<AgentTransport> {
  const problems: string[] = [];
  checkChoice(v, AGENT_TLS_FLAGS, "give --tls (the system's CAs) or --tls-ca FILE (see README 'Security')", problems);
  pair(v, "tls-cert", "tls-key", problems);
  if (problems.length > 0) throw new UsageError(problems.join("\n"));
  const transport = attempt(problems, () =>
    buildAgentTransport({
      plaintext: given(v, "plaintext"),
      caFile: str(v, "tls-ca"),
      certFile: str(v, "tls-cert"),
      keyFile: str(v, "tls-key"),
      serverName: str(v, "tls-server-name"),
      tokenFile: str(v, "token-file"),
      env,
    }),
  );
  if (!transport) throw new UsageError(problems.join("\n"));
  if (transport.security !== "plaintext") silenceIpServerNameWarning();
  const announce = (logger: Logger): void => {
    if (transport.security === "plaintext") {
      logger.warn(PLAINTEXT_WARNING);
      if (transport.tokenFrom) {
        logger.warn(
          "The agent token travels in clear over plaintext gRPC: anyone on the path can read and reuse it. Use TLS (--tls or --tls-ca).",
          { token_from: transport.tokenFrom },
        );
      }
    } else {
      logger.info(
        `The agent connects with ${transport.security}` +
          (transport.clientCertificate ? `, presenting the client certificate ${transport.clientCertificate}` : "") +
          ".",
      );
    }
    for (const w of transport.warnings) logger.warn(`A secret file is too open: ${w}.`);
  };
  return { value: transport, announce };
}

export type CollectorSecurity = Pick<
  CollectorOptions,
  "grpcTls" | "tokens" | "httpTls" | "httpBasicAuth" | "httpHeaders"
>;

/** The collector's TLS, tokens and HTTP auth from its flags. */
export function collectorSecurityFrom(v: FlagValues, env: NodeJS.ProcessEnv): WithAnnouncement<CollectorSecurity> {
  const problems: string[] = [];
  const tlsOn = checkChoice(v, COLLECTOR_TLS_FLAGS, "give --tls-cert and --tls-key (see README 'Security')", problems);
  pair(v, "tls-cert", "tls-key", problems);
  pair(v, "http-tls-cert", "http-tls-key", problems);
  if (given(v, "tls-client-ca") && !given(v, "tls-cert"))
    problems.push("--tls-client-ca needs --tls-cert and --tls-key");
  if (given(v, WEB_CONFIG_FLAG)) {
    for (const [flag, key] of HTTP_FLAGS_IN_WEB_CONFIG) {
      if (given(v, flag))
        problems.push(
          `--${flag} and --${WEB_CONFIG_FLAG} both configure the HTTP side; set ${key} in the web configuration file and drop --${flag}`,
        );
    }
  }
  if (problems.length > 0) throw new UsageError(problems.join("\n"));

  const warnings: string[] = [];
  const grpcTls = tlsOn
    ? attempt(problems, () => {
        const clientCa = str(v, "tls-client-ca");
        const t = loadServerTls(
          { flag: "tls-cert", file: str(v, "tls-cert")! },
          { flag: "tls-key", file: str(v, "tls-key")! },
          clientCa === undefined ? undefined : { flag: "tls-client-ca", file: clientCa },
        );
        warnings.push(...t.warnings);
        return t;
      })
    : undefined;
  const tokens = attempt(problems, () => loadTokens({ file: str(v, "agent-tokens-file"), env }));
  const webFile = str(v, WEB_CONFIG_FLAG);
  const web = webFile === undefined ? undefined : attempt(problems, () => loadWebConfig(webFile));
  const httpTls = given(v, "http-tls-cert")
    ? attempt(problems, () => {
        const t = loadServerTls(
          { flag: "http-tls-cert", file: str(v, "http-tls-cert")! },
          { flag: "http-tls-key", file: str(v, "http-tls-key")! },
        );
        warnings.push(...t.warnings);
        return t;
      })
    : undefined;
  const basicFile = str(v, "http-basic-auth-file");
  const basic = basicFile === undefined ? undefined : attempt(problems, () => loadBasicAuth(basicFile));
  if (problems.length > 0) throw new UsageError(problems.join("\n"));

  if (basic?.warning) warnings.push(basic.warning);
  if (tokens?.warning) warnings.push(tokens.warning);
  const announce = (logger: Logger): void => {
    if (tokens?.deprecation) logger.warn(tokens.deprecation);
    if (!tlsOn) {
      logger.warn(PLAINTEXT_WARNING);
      if (tokens) {
        logger.warn(
          "Agent tokens travel in clear over plaintext gRPC: anyone on the path can read and reuse them. Use TLS (--tls-cert, --tls-key).",
          { tokens_from: tokens.from },
        );
      }
    } else if (grpcTls) {
      logger.info(
        `gRPC uses TLS with the certificate ${grpcTls.description}${grpcTls.tls.clientCa !== undefined ? "; agents must present a client certificate signed by --tls-client-ca" : ""}.`,
      );
    }
    if (basic && !httpTls) {
      logger.warn(
        "HTTP basic auth runs over plain HTTP: passwords travel in clear. Add --http-tls-cert and --http-tls-key.",
      );
    }
    if (web) announceWebConfig(logger, web, "The collector's HTTP side");
    if (tokens) logger.info(`Agents must present one of ${tokens.tokens.size} accepted token(s) from ${tokens.from}.`);
    for (const w of warnings) logger.warn(`A secret file is too open: ${w}.`);
  };
  return {
    value: {
      grpcTls: grpcTls?.tls,
      tokens: tokens?.tokens,
      httpTls: web ? web.security.tls : httpTls ? { cert: httpTls.tls.cert, key: httpTls.tls.key } : undefined,
      httpBasicAuth: web ? web.security.users : basic?.users,
      httpHeaders: web?.security.headers,
    },
    announce,
  };
}

/** Logs what a web configuration file set up, and the warnings that go with it. */
function announceWebConfig(logger: Logger, web: LoadedWebConfig, what: string): void {
  logger.info(`${what} uses --${WEB_CONFIG_FLAG} ${web.config.file}: ${web.description}.`);
  if (web.security.users && !web.security.tls) {
    logger.warn(
      `HTTP basic auth runs over plain HTTP: passwords travel in clear. Add tls_server_config (cert_file, key_file) to ${web.config.file}.`,
    );
  }
  for (const w of web.warnings) logger.warn(`A secret file is too open: ${w}.`);
}

/**
 * The agent's HTTP security from --web.config.file, or undefined without it (plain HTTP).
 * The file needs --http-listen: without it nothing would serve what it configures.
 */
export function agentHttpSecurityFrom(v: FlagValues): WithAnnouncement<HttpSecurity> | undefined {
  const file = str(v, WEB_CONFIG_FLAG);
  if (file === undefined) return undefined;
  if (!given(v, "http-listen"))
    throw new UsageError(`--${WEB_CONFIG_FLAG} configures --http-listen; give --http-listen HOST:PORT too`);
  const problems: string[] = [];
  const web = attempt(problems, () => loadWebConfig(file));
  if (!web) throw new UsageError(problems.join("\n"));
  return { value: web.security, announce: (logger) => announceWebConfig(logger, web, "The agent's HTTP side") };
}
