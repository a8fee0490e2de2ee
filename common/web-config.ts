/**
 * `--web.config.file FILE`: the web configuration file of the Prometheus exporter toolkit
 * (docs/web-configuration.md of prometheus/exporter-toolkit), which Prometheus, node_exporter
 * and most exporters share, for trueidle's HTTP side. Parsing and checking only, no I/O
 * beyond the text given: the result names the files to load (http-security.ts loads them).
 *
 * What trueidle takes from it: `tls_server_config` (cert_file, key_file, client_ca_file,
 * client_auth_type, min_version, max_version, cipher_suites, prefer_server_cipher_suites,
 * curve_preferences), `http_server_config` (headers; http2 is accepted, and answers are
 * HTTP/1.1 either way) and `basic_auth_users` (bcrypt hashes). Keys of the format that have
 * no counterpart here (inline PEM `cert`/`key`/`client_ca`, `client_allowed_sans`,
 * `rate_limit`) are refused with what to do instead, and any other key is refused as
 * unknown: a typo must not leave an endpoint open. As in the toolkit, relative paths are
 * relative to the file's directory, an empty string is the same as a missing key, and TLS
 * is on when any of cert_file, key_file, client_ca_file or client_auth_type is set.
 * Every problem is reported at once, each naming the file and the key.
 */
import * as path from "node:path";
import { validateHeaderValue } from "node:http";
import type { SecureVersion } from "node:tls";
import { parseDocument } from "yaml";
import { TrueidleError } from "./errors.js";

export const WEB_CONFIG_FLAG = "web.config.file";

/** The toolkit's client_auth_type values (Go's tls.ClientAuthType names). */
export const CLIENT_AUTH_TYPES = [
  "NoClientCert",
  "RequestClientCert",
  "RequireAnyClientCert",
  "VerifyClientCertIfGiven",
  "RequireAndVerifyClientCert",
] as const;
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number];

const TLS_VERSIONS: Record<string, SecureVersion> = {
  TLS10: "TLSv1",
  TLS11: "TLSv1.1",
  TLS12: "TLSv1.2",
  TLS13: "TLSv1.3",
};
const VERSION_ORDER: readonly SecureVersion[] = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/**
 * The Go names of the cipher suites the toolkit accepts for TLS 1.2 and below, and their
 * OpenSSL names (what Node takes). TLS 1.3 suites are not configurable there either: their
 * names are accepted and change nothing.
 */
const CIPHER_SUITES: Record<string, string> = {
  TLS_RSA_WITH_AES_128_CBC_SHA: "AES128-SHA",
  TLS_RSA_WITH_AES_256_CBC_SHA: "AES256-SHA",
  TLS_RSA_WITH_AES_128_GCM_SHA256: "AES128-GCM-SHA256",
  TLS_RSA_WITH_AES_256_GCM_SHA384: "AES256-GCM-SHA384",
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: "ECDHE-ECDSA-AES128-SHA",
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: "ECDHE-ECDSA-AES256-SHA",
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: "ECDHE-RSA-AES128-SHA",
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: "ECDHE-RSA-AES256-SHA",
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "ECDHE-ECDSA-AES128-GCM-SHA256",
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "ECDHE-ECDSA-AES256-GCM-SHA384",
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: "ECDHE-RSA-AES128-GCM-SHA256",
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: "ECDHE-RSA-AES256-GCM-SHA384",
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-RSA-CHACHA20-POLY1305",
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-ECDSA-CHACHA20-POLY1305",
};
const TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

/** The toolkit's curve names and OpenSSL's. */
const CURVES: Record<string, string> = { CurveP256: "P-256", CurveP384: "P-384", CurveP521: "P-521", X25519: "X25519" };

/** The headers the toolkit lets a file set, with their allowed values where the toolkit restricts them. */
const HEADERS: Record<string, readonly string[] | undefined> = {
  "Strict-Transport-Security": undefined,
  "X-Content-Type-Options": ["nosniff"],
  "X-Frame-Options": ["deny", "sameorigin"],
  "X-XSS-Protection": undefined,
  "Content-Security-Policy": undefined,
};

/** A bcrypt hash as htpasswd -B, Go's x/crypto/bcrypt and bcryptjs write it. */
export const BCRYPT_HASH_RE = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/;

export interface WebTlsConfig {
  certFile: string;
  keyFile: string;
  clientCaFile?: string | undefined;
  clientAuth: ClientAuthType;
  minVersion: SecureVersion;
  maxVersion: SecureVersion;
  /** OpenSSL cipher list for TLS 1.2 and below, when cipher_suites is set (TLS 1.3 keeps its own suites). */
  ciphers?: string | undefined;
  /** The server's order of cipher_suites wins (prefer_server_cipher_suites, default true). */
  honorCipherOrder: boolean;
  /** OpenSSL curve list, when curve_preferences is set. */
  ecdhCurve?: string | undefined;
}

export interface WebConfig {
  /** The file, as given. */
  file: string;
  tls?: WebTlsConfig | undefined;
  /** Headers added to every answer (an answer's own header of the same name wins). */
  headers: Readonly<Record<string, string>>;
  /** User → bcrypt hash; undefined when basic_auth_users is missing or empty. */
  users?: ReadonlyMap<string, string> | undefined;
}

type Node = Record<string, unknown>;

/** What the format has and trueidle does not, and what to do instead. */
const UNSUPPORTED: Record<string, string> = {
  "tls_server_config.cert": "give the certificate as a file with cert_file",
  "tls_server_config.key": "give the private key as a file with key_file (chmod 600)",
  "tls_server_config.client_ca": "give the client CA as a file with client_ca_file",
  "tls_server_config.client_allowed_sans": "use a client CA that signs only the clients to admit",
  rate_limit:
    "trueidle limits connections and scrapes itself (--http-max-connections) and slows down failed logins per address",
};

const KEYS: Record<string, readonly string[]> = {
  "": ["tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"],
  tls_server_config: [
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
    "cert",
    "key",
    "client_ca",
    "client_allowed_sans",
  ],
  http_server_config: ["headers", "http2"],
};

/** Parses and checks a web configuration file's text; `file` names it in errors and anchors relative paths. */
export function parseWebConfig(text: string, file: string): WebConfig {
  const problems: string[] = [];
  const say = (key: string, what: string): void =>
    void problems.push(`--${WEB_CONFIG_FLAG} ${file}: ${key === "" ? "" : `${key} `}${what}`);
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const at = e.linePos?.[0];
      const what = (e.message.split("\n")[0] ?? "").replace(/ at line \d+, column \d+:?$/, "");
      say("", `is not valid YAML${at ? ` (line ${at.line}, column ${at.col})` : ""}: ${what}`);
    }
    throw new TrueidleError("bad_config", problems.join("\n"));
  }
  const root: unknown = doc.toJS({ maxAliasCount: 100 });
  const top = root === null || root === undefined ? {} : root;
  if (!isMap(top)) {
    say("", "must be a YAML mapping (tls_server_config, http_server_config, basic_auth_users)");
    throw new TrueidleError("bad_config", problems.join("\n"));
  }
  checkKeys(top, "", say);
  const tlsNode = section(top, "tls_server_config", say);
  const httpNode = section(top, "http_server_config", say);
  const dir = path.dirname(path.resolve(file));
  const config: WebConfig = {
    file,
    tls: tlsNode ? tlsFrom(tlsNode, dir, say) : undefined,
    headers: httpNode ? headersFrom(httpNode, say) : {},
    users: usersFrom(top["basic_auth_users"], say),
  };
  if (problems.length > 0) throw new TrueidleError("bad_config", problems.join("\n"));
  return config;
}

type Say = (key: string, what: string) => void;

function isMap(v: unknown): v is Node {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkKeys(node: Node, at: string, say: Say): void {
  const known = KEYS[at] ?? [];
  for (const k of Object.keys(node)) {
    const key = at === "" ? k : `${at}.${k}`;
    if (!known.includes(k)) {
      const near = closest(
        k,
        known.filter((x) => UNSUPPORTED[at === "" ? x : `${at}.${x}`] === undefined),
      );
      say(
        key,
        `is not a key trueidle knows in the web configuration format${near ? ` (did you mean ${at === "" ? near : `${at}.${near}`}?)` : ""}`,
      );
    } else if (UNSUPPORTED[key] !== undefined && !blank(node[k])) {
      say(key, `is part of the exporter-toolkit format but not supported by trueidle: ${UNSUPPORTED[key]}`);
    }
  }
}

function section(top: Node, key: string, say: Say): Node | undefined {
  const v = top[key];
  if (v === undefined || v === null) return undefined;
  if (!isMap(v)) {
    say(key, "must be a mapping");
    return undefined;
  }
  checkKeys(v, key, say);
  return v;
}

/** Missing, null or "": the toolkit's "not set". */
function blank(v: unknown): boolean {
  return v === undefined || v === null || v === "" || (Array.isArray(v) && v.length === 0);
}

function str(node: Node, at: string, k: string, say: Say): string | undefined {
  const v = node[k];
  if (blank(v)) return undefined;
  if (typeof v !== "string") {
    say(`${at}.${k}`, "must be a string");
    return undefined;
  }
  return v;
}

function bool(node: Node, at: string, k: string, fallback: boolean, say: Say): boolean {
  const v = node[k];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "boolean") {
    say(`${at}.${k}`, "must be true or false");
    return fallback;
  }
  return v;
}

function strings(node: Node, at: string, k: string, say: Say): string[] | undefined {
  const v = node[k];
  if (blank(v)) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    say(`${at}.${k}`, "must be a list of strings");
    return undefined;
  }
  return v as string[];
}

function tlsFrom(node: Node, dir: string, say: Say): WebTlsConfig | undefined {
  const at = "tls_server_config";
  const file = (k: string): string | undefined => {
    const v = str(node, at, k, say);
    return v === undefined ? undefined : path.resolve(dir, v);
  };
  const certFile = file("cert_file");
  const keyFile = file("key_file");
  const clientCaFile = file("client_ca_file");
  const authText = str(node, at, "client_auth_type", say);
  const version = (k: string, fallback: SecureVersion): SecureVersion => {
    const v = str(node, at, k, say);
    if (v === undefined) return fallback;
    const mapped = TLS_VERSIONS[v];
    if (mapped === undefined) say(`${at}.${k}`, `must be one of ${Object.keys(TLS_VERSIONS).join(", ")} (got "${v}")`);
    return mapped ?? fallback;
  };
  const minVersion = version("min_version", "TLSv1.2");
  const maxVersion = version("max_version", "TLSv1.3");
  const suites = strings(node, at, "cipher_suites", say);
  const curves = strings(node, at, "curve_preferences", say);
  const honorCipherOrder = bool(node, at, "prefer_server_cipher_suites", true, say);

  const enabled =
    certFile !== undefined || keyFile !== undefined || clientCaFile !== undefined || authText !== undefined;
  if (!enabled) {
    const set = Object.keys(node).filter(
      (k) => !blank(node[k]) && UNSUPPORTED[`${at}.${k}`] === undefined && (KEYS[at] ?? []).includes(k),
    );
    if (set.length > 0) say(at, `sets ${set.join(", ")} but neither cert_file nor key_file: TLS would be off`);
    return undefined;
  }
  if (certFile === undefined) say(`${at}.cert_file`, "is missing (TLS needs a certificate and its key)");
  if (keyFile === undefined) say(`${at}.key_file`, "is missing (TLS needs a certificate and its key)");
  let clientAuth: ClientAuthType = "NoClientCert";
  if (authText !== undefined) {
    // "RequireClientCert" is the toolkit's older spelling of RequireAnyClientCert.
    const a = authText === "RequireClientCert" ? "RequireAnyClientCert" : authText;
    if ((CLIENT_AUTH_TYPES as readonly string[]).includes(a)) clientAuth = a as ClientAuthType;
    else say(`${at}.client_auth_type`, `must be one of ${CLIENT_AUTH_TYPES.join(", ")} (got "${authText}")`);
  }
  const verifies = clientAuth === "RequireAndVerifyClientCert" || clientAuth === "VerifyClientCertIfGiven";
  if (clientCaFile !== undefined && clientAuth === "NoClientCert") {
    say(
      `${at}.client_ca_file`,
      "is set without client_auth_type; set client_auth_type: RequireAndVerifyClientCert to require client certificates signed by it",
    );
  }
  if (verifies && clientCaFile === undefined)
    say(`${at}.client_auth_type`, `${clientAuth} needs client_ca_file, the CA that signs the clients' certificates`);
  if (VERSION_ORDER.indexOf(minVersion) > VERSION_ORDER.indexOf(maxVersion))
    say(`${at}.min_version`, "is above max_version");

  let ciphers: string | undefined;
  if (suites) {
    const mapped: string[] = [];
    for (const s of suites) {
      if (TLS13_SUITES.includes(s)) continue;
      const o = CIPHER_SUITES[s];
      if (o === undefined)
        say(
          `${at}.cipher_suites`,
          `has an unknown cipher suite "${s}" (the Go names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)`,
        );
      else mapped.push(o);
    }
    if (mapped.length > 0) ciphers = mapped.join(":");
  }
  let ecdhCurve: string | undefined;
  if (curves) {
    const mapped: string[] = [];
    for (const c of curves) {
      const o = CURVES[c];
      if (o === undefined)
        say(`${at}.curve_preferences`, `has an unknown curve "${c}" (one of ${Object.keys(CURVES).join(", ")})`);
      else mapped.push(o);
    }
    ecdhCurve = mapped.join(":");
  }
  return {
    certFile: certFile ?? "",
    keyFile: keyFile ?? "",
    clientCaFile,
    clientAuth,
    minVersion,
    maxVersion,
    ciphers,
    honorCipherOrder,
    ecdhCurve,
  };
}

function headersFrom(node: Node, say: Say): Record<string, string> {
  const at = "http_server_config";
  bool(node, at, "http2", true, say);
  const h = node["headers"];
  if (h === undefined || h === null) return {};
  if (!isMap(h)) {
    say(`${at}.headers`, "must be a mapping of header names to values");
    return {};
  }
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(h)) {
    const key = `${at}.headers.${name}`;
    if (!Object.hasOwn(HEADERS, name)) {
      say(key, `is not a header the web configuration format can set (${Object.keys(HEADERS).join(", ")})`);
      continue;
    }
    if (value === null || value === "") continue;
    if (typeof value !== "string") {
      say(key, "must be a string");
      continue;
    }
    const allowed = HEADERS[name];
    if (allowed && !allowed.includes(value)) {
      say(key, `must be one of ${allowed.join(", ")} (got "${value}")`);
      continue;
    }
    try {
      validateHeaderValue(name, value);
    } catch {
      say(key, "holds characters a header value cannot have");
      continue;
    }
    out[name] = value;
  }
  return out;
}

function usersFrom(v: unknown, say: Say): ReadonlyMap<string, string> | undefined {
  const at = "basic_auth_users";
  if (v === undefined || v === null) return undefined;
  if (!isMap(v)) {
    say(at, "must be a mapping of user names to bcrypt hashes");
    return undefined;
  }
  const users = new Map<string, string>();
  for (const [user, hash] of Object.entries(v)) {
    const key = `${at}.${user}`;
    if (user === "" || user.includes(":")) {
      say(at, `has a user name that is empty or holds ":" (basic auth cannot send it)`);
      continue;
    }
    // The hash is never quoted back: it is a secret of sorts.
    if (typeof hash !== "string" || !BCRYPT_HASH_RE.test(hash)) {
      say(
        key,
        `is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to 31); make one with: htpasswd -nBC 10 "" | tr -d ':\\n'`,
      );
      continue;
    }
    users.set(user, hash);
  }
  return users.size > 0 ? users : undefined;
}

/** The candidate within edit distance 2 of `word`, for "did you mean". */
function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const d = distance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
