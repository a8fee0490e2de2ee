/**
 * Checks an agent stream's token before anything else happens on it. The agent sends
 * `authorization: Bearer <token>` as call metadata; a stream without one, or with a token
 * the collector does not accept, is ended with UNAUTHENTICATED by the caller.
 *
 * Refusals are logged as WARN naming the peer's address, at most once a minute per address
 * (a misconfigured agent retries forever; its log lines must not flood the collector's),
 * with the number of refusals not logged since. The token is never logged.
 */
import type { Metadata } from "@grpc/grpc-js";
import type { Logger } from "../../common/log.js";
import { AUTHORIZATION_METADATA_KEY, parseBearer } from "../../common/token.js";
import type { TokenSet } from "./tokens.js";

export const REFUSAL_LOG_INTERVAL_MS = 60_000;
/** Addresses remembered for rate-limiting at most; the oldest are forgotten first. */
const MAX_REMEMBERED_PEERS = 10_000;

/** The status message an unauthenticated agent gets; it names the fix. */
export const UNAUTHENTICATED_MESSAGE =
  "this collector requires an agent token and the stream had none or one it does not accept; " +
  "give the agent --token-file with a token listed in the collector's --agent-tokens-file";

export type AuthResult =
  | { ok: true; tokenName: string }
  | { ok: false; problem: "missing" | "malformed" | "not_accepted" };

export interface StreamAuthenticatorOptions {
  tokens: TokenSet;
  logger: Logger;
  now?: () => number;
}

const PROBLEM_TEXT = {
  missing: "it sent no token",
  malformed: 'its authorization metadata is not "Bearer <token>"',
  not_accepted: "its token is not one this collector accepts",
} as const;

export class StreamAuthenticator {
  private readonly now: () => number;
  /** Address → when its last refusal was logged, and refusals since. */
  private readonly logged = new Map<string, { atMs: number; suppressed: number }>();

  constructor(private readonly opts: StreamAuthenticatorOptions) {
    this.now = opts.now ?? Date.now;
  }

  check(metadata: Metadata, peer: string): AuthResult {
    const values = metadata.get(AUTHORIZATION_METADATA_KEY);
    let result: AuthResult;
    if (values.length === 0) result = { ok: false, problem: "missing" };
    else if (values.length > 1 || typeof values[0] !== "string") result = { ok: false, problem: "malformed" };
    else {
      const token = parseBearer(values[0]);
      const name = token === undefined ? undefined : this.opts.tokens.match(token);
      if (token === undefined) result = { ok: false, problem: "malformed" };
      else if (name === undefined) result = { ok: false, problem: "not_accepted" };
      else result = { ok: true, tokenName: name };
    }
    if (result.ok)
      this.opts.logger.debug(`An agent stream from ${peer} presented the token named "${result.tokenName}".`, {
        peer,
        token_name: result.tokenName,
      });
    else this.logRefusal(peer, result.problem);
    return result;
  }

  private logRefusal(peer: string, problem: keyof typeof PROBLEM_TEXT): void {
    const address = peerAddress(peer);
    const now = this.now();
    const seen = this.logged.get(address);
    if (seen && now - seen.atMs < REFUSAL_LOG_INTERVAL_MS) {
      seen.suppressed++;
      return;
    }
    this.logged.delete(address);
    if (this.logged.size >= MAX_REMEMBERED_PEERS) {
      const oldest = this.logged.keys().next().value;
      if (oldest !== undefined) this.logged.delete(oldest);
    }
    this.logged.set(address, { atMs: now, suppressed: 0 });
    this.opts.logger.warn(
      `Refused an agent stream from ${address} with UNAUTHENTICATED: ${PROBLEM_TEXT[problem]}.` +
        (seen && seen.suppressed > 0 ? ` ${seen.suppressed} earlier refusals from this address were not logged.` : ""),
      { peer, problem },
    );
  }
}

/** "10.0.0.7:51234" → "10.0.0.7", "[::1]:5000" → "[::1]": agents reconnect from new ports. */
export function peerAddress(peer: string): string {
  const m = /^(.*):\d+$/.exec(peer);
  return m?.[1] ?? peer;
}
