/**
 * HTTP basic auth in front of the agent's and the collector's HTTP endpoints, whatever keeps
 * the users: the collector's `--http-basic-auth-file` (SHA-256, checked at once) or a web
 * configuration file's `basic_auth_users` (bcrypt, checked off the request path with a cache;
 * bcrypt-users.ts).
 *
 * An address with too many failed logins in a row is refused with 429 and `Retry-After`
 * before its credentials are checked (the collector's auth/failure-throttle.ts, given here
 * as `throttle`); so are logins while too many bcrypt checks wait (the users answer "busy").
 * Anything else without a listed user's credentials gets 401 with a `WWW-Authenticate:
 * Basic` challenge.
 */
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

/** The realm of the `WWW-Authenticate` challenge. */
export const BASIC_AUTH_REALM = "trueidle";

/** A listed user, a refusal, or "busy": too many checks waiting to take one more now. */
export type AuthOutcome = { user: string } | "denied" | "busy";

export interface HttpUsers {
  /** How many users are listed. */
  readonly size: number;
  /** Checks an `Authorization` header (undefined when the request has none). */
  authenticate(header: string | undefined): AuthOutcome | Promise<AuthOutcome>;
}

/** The part of the collector's FailureThrottle the gate uses. */
export interface AuthFailureThrottle {
  retryAfterMs(address: string): number;
  failed(address: string, credential?: string): void;
}

/** User and password of a `Basic` authorization header, or undefined when it is not one. */
export function parseBasicAuthorization(header: string | undefined): { user: string; password: string } | undefined {
  if (header === undefined) return undefined;
  const m = /^Basic +([A-Za-z0-9+/]+=*) *$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1] ?? "", "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** A short digest of what a request presented, for the throttle (never the secret itself). */
function presentedDigest(header: string): string {
  return createHash("sha256").update(header, "utf8").digest("base64url").slice(0, 16);
}

export interface AuthGateHooks {
  /** A request refused with 401 (wrong, missing or malformed credentials). */
  onFailure?: (address: string) => void;
  /** A request refused with 429 (throttled address, or bcrypt checks backed up). */
  onThrottled?: (address: string, why: "throttled" | "busy") => void;
}

/**
 * Answers the request with 429 or 401 unless it carries a listed user's credentials;
 * resolves to true when the request may go on.
 */
export async function admitRequest(
  req: IncomingMessage,
  res: ServerResponse,
  users: HttpUsers,
  throttle: AuthFailureThrottle | undefined,
  hooks: AuthGateHooks = {},
): Promise<boolean> {
  const address = req.socket.remoteAddress ?? "unknown";
  const waitMs = throttle?.retryAfterMs(address) ?? 0;
  if (waitMs > 0) {
    hooks.onThrottled?.(address, "throttled");
    tooMany(req, res, Math.ceil(waitMs / 1000), "Too many failed logins from this address; try again later.\n");
    return false;
  }
  const header = req.headers.authorization;
  const outcome = await users.authenticate(header);
  if (outcome === "busy") {
    hooks.onThrottled?.(address, "busy");
    tooMany(req, res, 1, "Too many logins are being checked; try again shortly.\n");
    return false;
  }
  if (outcome === "denied") {
    throttle?.failed(address, presentedDigest(header ?? ""));
    hooks.onFailure?.(address);
    if (!res.headersSent) {
      res.writeHead(401, {
        "content-type": "text/plain; charset=utf-8",
        "www-authenticate": `Basic realm="${BASIC_AUTH_REALM}", charset="UTF-8"`,
      });
    }
    res.end(req.method === "HEAD" ? undefined : "Credentials required (HTTP basic auth).\n");
    return false;
  }
  return true;
}

function tooMany(req: IncomingMessage, res: ServerResponse, retryAfterS: number, text: string): void {
  if (!res.headersSent)
    res.writeHead(429, {
      "content-type": "text/plain; charset=utf-8",
      "retry-after": String(Math.max(1, retryAfterS)),
    });
  res.end(req.method === "HEAD" ? undefined : text);
}
