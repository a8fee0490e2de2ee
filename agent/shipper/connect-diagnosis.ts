/**
 * What is probably wrong when the agent cannot open a stream to a collector. grpc-js
 * reports a wrong port, a TLS mismatch or an untrusted certificate all as UNAVAILABLE, in
 * the transport's own words ("Protocol error", OpenSSL's "wrong version number"); this
 * turns them into the fix, in the operator's terms.
 *
 * `diagnoseConnectFailure` is pure: one table from the error text and the agent's own
 * transport (TLS or plaintext) to a problem and a sentence. One failure cannot be told
 * apart from the text alone: a plaintext agent whose connection is closed without an
 * answer (a TLS collector does that, and so does a collector over its connection limits).
 * For that one `probeTls` asks the address itself whether it speaks TLS.
 */
import { connect as tlsConnect } from "node:tls";
import { DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT } from "../../common/grpc-service.js";

export type ConnectProblem =
  | "refused"
  | "unresolved"
  | "unreachable"
  | "not_grpc"
  | "plaintext_server"
  | "https_not_grpc"
  | "tls_server"
  | "untrusted_certificate"
  | "expired_certificate"
  | "name_mismatch"
  | "client_certificate_required"
  | "client_certificate_refused"
  | "closed";

export interface ConnectDiagnosis {
  problem: ConnectProblem;
  /** What is probably wrong and what to do, one sentence without the final stop. */
  hint: string;
  /** The agent's or the collector's configuration must change; retrying alone will not help. */
  misconfigured: boolean;
  /** Only a look at the address can tell (see {@link probeTls}); the hint holds until then. */
  needsProbe?: boolean;
}

export interface ConnectContext {
  /** HOST:PORT the agent dialled. */
  target: string;
  /** The agent connects with TLS (else plaintext). */
  tls: boolean;
}

const GRPC_PORT_HINT = `the collector's gRPC port (--grpc-listen, ${DEFAULT_GRPC_PORT} by default)`;

interface Rule {
  re: RegExp;
  /** Applies only to an agent with TLS (true) or plaintext (false); both when absent. */
  tls?: boolean;
  problem: ConnectProblem;
  misconfigured: boolean;
  hint: (target: string) => string;
  needsProbe?: boolean;
}

/** First match wins: the certificate's and the protocol's words before the socket's. */
const RULES: readonly Rule[] = [
  {
    re: /ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames/i,
    problem: "name_mismatch",
    misconfigured: true,
    hint: (t) =>
      `the collector's certificate does not carry the name or address in ${t}: connect by a name the certificate carries, ` +
      "or give --tls-server-name with one of them",
  },
  {
    re: /certificate has expired|CERT_HAS_EXPIRED|certificate is not yet valid|CERT_NOT_YET_VALID/i,
    problem: "expired_certificate",
    misconfigured: true,
    hint: () => "the collector's certificate has expired or is not valid yet: renew it, or check this node's clock",
  },
  {
    re: /unable to verify|self[- ]signed|local issuer|unable to get issuer|CERT_UNTRUSTED|UNABLE_TO_VERIFY/i,
    problem: "untrusted_certificate",
    misconfigured: true,
    hint: () =>
      "the collector's certificate is not signed by a CA this agent trusts: give --tls-ca with the CA certificate that signed it " +
      "(without --tls-ca the system's CAs are used)",
  },
  {
    re: /alert certificate required/i,
    problem: "client_certificate_required",
    misconfigured: true,
    hint: () =>
      "the collector requires a client certificate (mutual TLS): give this agent --tls-cert and --tls-key, " +
      "signed by the CA in the collector's --tls-client-ca",
  },
  {
    re: /alert unknown ca|alert bad certificate|alert certificate unknown|alert unsupported certificate/i,
    problem: "client_certificate_refused",
    misconfigured: true,
    hint: () =>
      "the collector refused this agent's client certificate: it must be signed by the CA in the collector's --tls-client-ca",
  },
  {
    re: /no application protocol/i,
    tls: true,
    problem: "https_not_grpc",
    misconfigured: true,
    hint: (t) =>
      `${t} speaks TLS but not gRPC: it is probably the collector's HTTPS port (/metrics, ${DEFAULT_HTTP_PORT} by default); ` +
      `point --collector at ${GRPC_PORT_HINT}`,
  },
  {
    re: /wrong version number|packet length too long|unknown protocol|WRONG_VERSION_NUMBER/i,
    tls: true,
    problem: "plaintext_server",
    misconfigured: true,
    hint: (t) =>
      `${t} answers in plaintext, not TLS: either the collector runs with --plaintext (give it --tls-cert and --tls-key, ` +
      `or give this agent --plaintext too), or ${t} is not ${GRPC_PORT_HINT}`,
  },
  {
    re: /Protocol error/i,
    tls: false,
    problem: "not_grpc",
    misconfigured: true,
    hint: (t) =>
      `${t} does not speak gRPC: it is probably the collector's HTTP port (/metrics, ${DEFAULT_HTTP_PORT} by default); ` +
      `point --collector at ${GRPC_PORT_HINT}`,
  },
  {
    re: /ECONNREFUSED/,
    problem: "refused",
    misconfigured: false,
    hint: (t) => `nothing listens at ${t}: check that the collector runs and that this is ${GRPC_PORT_HINT}`,
  },
  {
    re: /Name resolution failed|ENOTFOUND|EAI_AGAIN|EAI_NONAME/,
    problem: "unresolved",
    misconfigured: false,
    hint: (t) => `the host name in ${t} does not resolve: check --collector and this node's DNS`,
  },
  {
    re: /ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/,
    problem: "unreachable",
    misconfigured: false,
    hint: (t) => `${t} cannot be reached: check the address, and any firewall between this node and the collector`,
  },
  {
    re: /Failed to connect|Connection dropped|ECONNRESET|socket hang up|EPIPE/,
    tls: false,
    problem: "closed",
    misconfigured: false,
    needsProbe: true,
    hint: (t) =>
      `${t} closed the connection without a gRPC answer: if the collector runs with TLS (--tls-cert), give this agent --tls; ` +
      "otherwise the collector may be refusing connections over its limits (see its log)",
  },
  {
    re: /Failed to connect|Connection dropped|ECONNRESET|socket hang up|EPIPE/,
    tls: true,
    problem: "closed",
    misconfigured: false,
    hint: (t) =>
      `${t} closed the connection during or right after the TLS handshake: if the collector requires client certificates ` +
      "(--tls-client-ca), this agent's --tls-cert must be signed by that CA; otherwise the collector may be refusing connections " +
      "over its limits (see its log)",
  },
];

/** The probable problem behind a failure to open a stream; undefined when the text says nothing known. */
export function diagnoseConnectFailure(detail: string, ctx: ConnectContext): ConnectDiagnosis | undefined {
  for (const r of RULES) {
    if (r.tls !== undefined && r.tls !== ctx.tls) continue;
    if (!r.re.test(detail)) continue;
    const d: ConnectDiagnosis = { problem: r.problem, hint: r.hint(ctx.target), misconfigured: r.misconfigured };
    if (r.needsProbe) d.needsProbe = true;
    return d;
  }
  return undefined;
}

/** What a TLS handshake offering gRPC's protocol (h2) found at an address. */
export type TlsProbe = "grpc_tls" | "tls_not_grpc" | "not_tls";

/** The diagnosis once the probe has looked: sharper where the address speaks TLS. */
export function afterProbe(d: ConnectDiagnosis, probe: TlsProbe, ctx: ConnectContext): ConnectDiagnosis {
  if (probe === "grpc_tls") {
    return {
      problem: "tls_server",
      misconfigured: true,
      hint:
        `the collector at ${ctx.target} runs with TLS and this agent connects in plaintext (--plaintext): give this agent --tls, ` +
        "with --tls-ca when a CA the system does not trust signed the collector's certificate",
    };
  }
  if (probe === "tls_not_grpc") {
    return {
      problem: "https_not_grpc",
      misconfigured: true,
      hint:
        `${ctx.target} speaks TLS but not gRPC: it is probably the collector's HTTPS port (/metrics, ${DEFAULT_HTTP_PORT} by default); ` +
        `point --collector at ${GRPC_PORT_HINT}`,
    };
  }
  return { problem: d.problem, hint: d.hint, misconfigured: d.misconfigured };
}

/**
 * Opens one TLS connection to `target` offering h2, as a gRPC client over TLS would, and
 * says what answered; the certificate is not checked (this only asks which protocol the
 * address speaks). "not_tls" also when nothing answers within `timeoutMs`.
 */
export function probeTls(target: string, timeoutMs = 3000): Promise<TlsProbe> {
  const hp = splitHostPort(target);
  if (!hp) return Promise.resolve("not_tls");
  return new Promise((resolve) => {
    let done = false;
    const finish = (p: TlsProbe): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(p);
    };
    const socket = tlsConnect({
      host: hp.host,
      port: hp.port,
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false,
      // An IP is no server name (RFC 6066); a name is sent as a client would.
      ...(/^[\d.]+$|:/.test(hp.host) ? {} : { servername: hp.host }),
    });
    const timer = setTimeout(() => finish("not_tls"), timeoutMs);
    timer.unref();
    socket.once("secureConnect", () => finish(socket.alpnProtocol === "h2" ? "grpc_tls" : "tls_not_grpc"));
    socket.once("error", (err: Error) =>
      finish(/no application protocol/i.test(err.message) ? "tls_not_grpc" : "not_tls"),
    );
  });
}

/** `host:port`, `[v6]:port`; undefined when there is no port. */
function splitHostPort(target: string): { host: string; port: number } | undefined {
  const t = target.replace(/^dns:(\/\/\/)?/, "");
  const i = t.lastIndexOf(":");
  if (i <= 0) return undefined;
  const port = Number(t.slice(i + 1));
  if (!Number.isInteger(port) || port <= 0 || port > 65_535) return undefined;
  const host = t.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  return host === "" ? undefined : { host, port };
}
