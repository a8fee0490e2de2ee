/**
 * Agent tokens: what one looks like and how it travels. An agent sends its token as gRPC
 * metadata `authorization: Bearer <token>`; the collector accepts the tokens of its
 * `--agent-tokens-file` (or TRUEIDLE_AGENT_TOKENS). A token is RFC 6750 `b64token` text
 * (letters, digits, `-._~+/`, trailing `=`), so hex, base64 and base64url all fit and a
 * header never needs escaping; at least 16 characters, so a guessable word is refused early.
 */
import { TrueidleError } from "./errors.js";

export const AUTHORIZATION_METADATA_KEY = "authorization";
export const MIN_TOKEN_LENGTH = 16;
export const MAX_TOKEN_LENGTH = 4096;
const TOKEN_RE = /^[A-Za-z0-9\-._~+/]+=*$/;

/** How an operator makes a good token; quoted in errors and the README. */
export const MAKE_TOKEN_HINT = "make one with `openssl rand -hex 32`";

/** Why `token` is not acceptable (never quoting it), or undefined when it is. */
export function tokenProblem(token: string): string | undefined {
  if (token.length < MIN_TOKEN_LENGTH)
    return `a token must be at least ${MIN_TOKEN_LENGTH} characters (${MAKE_TOKEN_HINT})`;
  if (token.length > MAX_TOKEN_LENGTH) return `a token must be at most ${MAX_TOKEN_LENGTH} characters`;
  if (!TOKEN_RE.test(token))
    return "a token may hold only letters, digits and - . _ ~ + / (then = padding), no spaces or colons";
  return undefined;
}

/** Throws a bad_config error naming `where` (a flag, a file and line, a variable) when the token is not acceptable. */
export function checkToken(token: string, where: string): void {
  const problem = tokenProblem(token);
  if (problem) throw new TrueidleError("bad_config", `${where}: ${problem}`);
}

/** The metadata value for a token. */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}

/** The token of an `authorization` value, or undefined when it is not `Bearer <token>` (the scheme is case-insensitive). */
export function parseBearer(value: string): string | undefined {
  const m = /^Bearer +(\S+) *$/i.exec(value);
  return m?.[1];
}
