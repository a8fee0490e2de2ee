/**
 * The tokens a collector accepts from agents: from `--agent-tokens-file FILE` (one token a
 * line, optionally `name:token`; blank lines and `#` comments ignored) or the environment
 * variable TRUEIDLE_AGENT_TOKENS (comma-separated, same syntax). Names let logs say which
 * token an agent used without printing it; an unnamed token is called `line-N` or `env-N`.
 * The former names `--tokens-file` and TRUEIDLE_TOKENS, one letter away from the agent's
 * `--token-file` and TRUEIDLE_TOKEN, still work with a warning.
 *
 * Only SHA-256 digests are kept. A presented token is hashed and compared with every
 * digest by crypto.timingSafeEqual, with no early exit, so the time taken says nothing
 * about how much of a token was right or which token matched.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { TrueidleError, errorMessage } from "../../common/errors.js";
import { contentLines, readSecretFile } from "../../common/secret-file.js";
import { tokenProblem } from "../../common/token.js";

export const TOKENS_ENV = "TRUEIDLE_AGENT_TOKENS";
/** The former name of TOKENS_ENV, read when TOKENS_ENV is not set. */
export const DEPRECATED_TOKENS_ENV = "TRUEIDLE_TOKENS";
const FLAG = "--agent-tokens-file";
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

interface Accepted {
  name: string;
  digest: Buffer;
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

export class TokenSet {
  private readonly accepted: readonly Accepted[];

  /** Throws a bad_config error on an empty list, a duplicate name or a duplicate token. */
  constructor(tokens: ReadonlyArray<{ name: string; token: string }>) {
    if (tokens.length === 0) throw new TrueidleError("bad_config", "the token list is empty");
    const names = new Set<string>();
    const digests = new Set<string>();
    const accepted: Accepted[] = [];
    for (const t of tokens) {
      if (names.has(t.name)) throw new TrueidleError("bad_config", `the token name "${t.name}" is used twice`);
      const d = digest(t.token);
      const hex = d.toString("hex");
      if (digests.has(hex))
        throw new TrueidleError("bad_config", `the token named "${t.name}" is the same as an earlier one`);
      names.add(t.name);
      digests.add(hex);
      accepted.push({ name: t.name, digest: d });
    }
    this.accepted = accepted;
  }

  get size(): number {
    return this.accepted.length;
  }

  /** The name of the accepted token equal to `presented`, or undefined. */
  match(presented: string): string | undefined {
    const d = digest(presented);
    let found: string | undefined;
    for (const a of this.accepted) {
      if (timingSafeEqual(a.digest, d) && found === undefined) found = a.name;
    }
    return found;
  }
}

export interface LoadedTokens {
  tokens: TokenSet;
  /** "--agent-tokens-file FILE" or "TRUEIDLE_AGENT_TOKENS", for logs. */
  from: string;
  /** Set when the file is readable by every user or writable by others. */
  warning?: string | undefined;
  /** Set when the tokens came from DEPRECATED_TOKENS_ENV, or it was set and ignored: a sentence to log once. */
  deprecation?: string | undefined;
}

/**
 * Parses one entry, `token` or `name:token`. `where` names the entry in errors (file and
 * line, or variable and position); the token itself is never quoted.
 */
function parseEntry(text: string, where: string, defaultName: string): { name: string; token: string } {
  const colon = text.indexOf(":");
  const name = colon >= 0 ? text.slice(0, colon).trim() : defaultName;
  const token = colon >= 0 ? text.slice(colon + 1).trim() : text;
  if (colon >= 0 && !NAME_RE.test(name)) {
    throw new TrueidleError(
      "bad_config",
      `${where}: a token name must be 1 to 64 letters, digits, _ . or - (the form is name:token or just token)`,
    );
  }
  const problem = tokenProblem(token);
  if (problem) throw new TrueidleError("bad_config", `${where}: ${problem}`);
  return { name, token };
}

/**
 * The accepted tokens from `file` (`--agent-tokens-file`) or the environment, or undefined
 * when neither gives any (the collector then accepts agents without a token). Every bad line
 * is reported at once.
 */
export function loadTokens(src: { file?: string | undefined; env?: NodeJS.ProcessEnv }): LoadedTokens | undefined {
  const env = src.env ?? process.env;
  const { name: envVar, value: fromEnv, deprecation } = tokensVariable(env);
  const problems: string[] = [];
  const entries: Array<{ name: string; token: string }> = [];
  let from: string;
  let warning: string | undefined;
  const add = (text: string, where: string, defaultName: string): void => {
    try {
      entries.push(parseEntry(text, where, defaultName));
    } catch (err) {
      problems.push(errorMessage(err));
    }
  };
  if (src.file !== undefined) {
    if (fromEnv !== undefined) {
      throw new TrueidleError(
        "bad_config",
        `accepted tokens are given both in ${envVar} and in ${FLAG}; give them once`,
      );
    }
    const f = readSecretFile("agent-tokens-file", src.file);
    warning = f.warning;
    from = `${FLAG} ${src.file}`;
    for (const l of contentLines(f.text)) add(l.text, `${FLAG} ${src.file} line ${l.line}`, `line-${l.line}`);
    if (problems.length === 0 && entries.length === 0)
      problems.push(`${FLAG} ${src.file} holds no token (one a line, name:token or token; # starts a comment)`);
  } else {
    if (fromEnv === undefined) return undefined;
    from = envVar;
    fromEnv
      .split(",")
      .map((s) => s.trim())
      .forEach((item, i) => {
        if (item !== "") add(item, `${envVar} item ${i + 1}`, `env-${i + 1}`);
      });
  }
  if (problems.length > 0) throw new TrueidleError("bad_config", problems.join("; "));
  try {
    return { tokens: new TokenSet(entries), from, warning, deprecation };
  } catch (err) {
    throw new TrueidleError("bad_config", `${from}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * The variable the tokens come from: TOKENS_ENV, else the deprecated DEPRECATED_TOKENS_ENV;
 * `value` is undefined when neither holds anything but blanks.
 */
function tokensVariable(env: NodeJS.ProcessEnv): {
  name: string;
  value: string | undefined;
  deprecation?: string | undefined;
} {
  const set = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v;
  };
  const current = set(TOKENS_ENV);
  const old = set(DEPRECATED_TOKENS_ENV);
  if (old === undefined) return { name: TOKENS_ENV, value: current };
  if (current !== undefined) {
    return {
      name: TOKENS_ENV,
      value: current,
      deprecation: `${DEPRECATED_TOKENS_ENV} is deprecated and ignored because ${TOKENS_ENV} is set; remove ${DEPRECATED_TOKENS_ENV}.`,
    };
  }
  return {
    name: DEPRECATED_TOKENS_ENV,
    value: old,
    deprecation: `${DEPRECATED_TOKENS_ENV} is deprecated and will be removed; set ${TOKENS_ENV} instead.`,
  };
}
