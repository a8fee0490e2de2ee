/**
 * Basic-auth users with bcrypt password hashes (a web configuration file's
 * `basic_auth_users`), checked with bcryptjs (pure JavaScript, no native build).
 *
 * bcrypt is slow on purpose (about 0.1 s at cost 10), and Prometheus sends the same
 * credentials every scrape. So, as the exporter toolkit does, a verified login is cached:
 * keyed by a SHA-256 of user, password and hash, for SUCCESS_TTL_MS, and a scrape after the
 * first costs a hash, not a bcrypt. A failed login is cached too, for FAILURE_TTL_MS: the
 * failure throttle lets a repeat of the same wrong credential through uncounted (a
 * misconfigured scraper must not lock out its neighbours), and without this each repeat
 * would cost a bcrypt. Only digests are kept, never a password.
 *
 * Checks run one at a time through bcryptjs's asynchronous compare, which yields to the
 * event loop between rounds, so scrapes and agents are served meanwhile; at most
 * MAX_WAITING are in hand (the one running and those waiting), and a login beyond that is
 * answered "busy" (429) instead of queueing without bound. An unknown user is checked against a listed hash of the highest cost and
 * refused, so the time taken does not tell whether a user exists.
 */
import { createHash } from "node:crypto";
import bcrypt from "bcryptjs";
import { parseBasicAuthorization, type AuthOutcome, type HttpUsers } from "./http-auth.js";

/** How long a verified login is remembered. */
export const SUCCESS_TTL_MS = 10 * 60_000;
/** How long a refused login is remembered. */
export const FAILURE_TTL_MS = 60_000;
/** Logins remembered at most, each way; the oldest goes first. */
const MAX_CACHED = 256;
/** bcrypt checks in hand at most, the one running included. */
export const MAX_WAITING = 32;

export interface BcryptUsersOptions {
  /** Monotonic clock, ms (default performance.now). */
  clock?: () => number;
  /** The bcrypt comparison (default bcryptjs's compare); injectable to count calls in tests. */
  compare?: (password: string, hash: string) => Promise<boolean>;
}

/** A cache of digests with an expiry each, in insertion order. */
class ExpiringSet {
  private readonly entries = new Map<string, number>();
  constructor(
    private readonly ttlMs: number,
    private readonly clock: () => number,
  ) {}

  has(key: string): boolean {
    const until = this.entries.get(key);
    if (until === undefined) return false;
    if (until > this.clock()) return true;
    this.entries.delete(key);
    return false;
  }

  add(key: string): void {
    this.entries.delete(key);
    if (this.entries.size >= MAX_CACHED) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, this.clock() + this.ttlMs);
  }
}

export class BcryptUsers implements HttpUsers {
  private readonly users: ReadonlyMap<string, string>;
  /** The hash an unknown user is checked against. */
  private readonly decoy: string;
  private readonly verified: ExpiringSet;
  private readonly refused: ExpiringSet;
  private readonly compare: (password: string, hash: string) => Promise<boolean>;
  /** The check running now, which the next one waits for. */
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;

  /** `users`: user name → bcrypt hash (web-config.ts has checked their form). */
  constructor(users: ReadonlyMap<string, string>, opts: BcryptUsersOptions = {}) {
    if (users.size === 0) throw new Error("the basic-auth user list is empty");
    this.users = users;
    this.decoy = [...users.values()].reduce((a, b) => (bcrypt.getRounds(b) > bcrypt.getRounds(a) ? b : a));
    const clock = opts.clock ?? (() => performance.now());
    this.verified = new ExpiringSet(SUCCESS_TTL_MS, clock);
    this.refused = new ExpiringSet(FAILURE_TTL_MS, clock);
    this.compare = opts.compare ?? ((p, h) => bcrypt.compare(p, h));
  }

  get size(): number {
    return this.users.size;
  }

  async authenticate(header: string | undefined): Promise<AuthOutcome> {
    const creds = parseBasicAuthorization(header);
    if (!creds) return "denied";
    const hash = this.users.get(creds.user);
    const key = createHash("sha256")
      .update(JSON.stringify([creds.user, creds.password, hash ?? ""]), "utf8")
      .digest("base64url");
    if (hash !== undefined && this.verified.has(key)) return { user: creds.user };
    if (this.refused.has(key)) return "denied";
    if (this.waiting >= MAX_WAITING) return "busy";
    this.waiting++;
    const run = this.tail.then(() => this.compare(creds.password, hash ?? this.decoy)).catch(() => false);
    this.tail = run;
    let ok: boolean;
    try {
      ok = (await run) && hash !== undefined;
    } finally {
      this.waiting--;
    }
    if (ok) this.verified.add(key);
    else this.refused.add(key);
    return ok ? { user: creds.user } : "denied";
  }
}
