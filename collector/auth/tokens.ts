/**
 * The tokens a collector accepts from agents: from `--tokens-file FILE` (one token a line,
 * optionally `name:token`; blank lines and `#` comments ignored) or the environment
 * variable TRUEIDLE_TOKENS (comma-separated, same syntax). Names let logs say which token
 * an agent used without printing it; an unnamed token is called `line-N` or `env-N`.
 *
 * Only SHA-256 digests are kept. A presented token is hashed and compared with every
 * digest by crypto.timingSafeEqual, with no early exit, so the time taken says nothing
 * about how much of a token was right or which token matched.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { TrueidleError } from "../../common/errors.js";
import { contentLines, readSecretFile } from "../../common/secret-file.js";
import { tokenProblem } from "../../common/token.js";

export const TOKENS_ENV = "TRUEIDLE_TOKENS";
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
      if (digests.has(hex)) throw new TrueidleError("bad_config", `the token named "${t.name}" is the same as an earlier one`);
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
  /** "--tokens-file FILE" or "TRUEIDLE_TOKENS", for logs. */
  from: string;
  /** Set when the file is readable by every user or writable by others. */
  warning?: string | undefined;
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
    throw new TrueidleError("bad_config", `${where}: a token name must be 1 to 64 letters, digits, _ . or - (the form is name:token or just token)`);
  }
  const problem = tokenProblem(token);
  if (problem) throw new TrueidleError("bad_config", `${where}: ${problem}`);
  return { name, token };
}

/**
 * The accepted tokens from `file` (`--tokens-file`) or the environment, or undefined when
 * neither gives any (the collector then accepts agents without a token). Every bad line is
 * reported at once.
 */
export function loadTokens(src: { file?: string | undefined; env?: NodeJS.ProcessEnv }): LoadedTokens | undefined {
  const env = src.env ?? process.env;
  const fromEnv = env[TOKENS_ENV];
  const problems: string[] = [];
  const entries: Array<{ name: string; token: string }> = [];
  let from: string;
  let warning: string | undefined;
  const add = (text: string, where: string, defaultName: string): void => {
    try {
      entries.push(parseEntry(text, where, defaultName));
    } catch (err) {
      problems.push((err as Error).message);
    }
  };
  if (src.file !== undefined) {
    if (fromEnv !== undefined && fromEnv.trim() !== "") {
      throw new TrueidleError("bad_config", `accepted tokens are given both in ${TOKENS_ENV} and in --tokens-file; give them once`);
    }
    const f = readSecretFile("tokens-file", src.file);
    warning = f.warning;
    from = `--tokens-file ${src.file}`;
    for (const l of contentLines(f.text)) add(l.text, `--tokens-file ${src.file} line ${l.line}`, `line-${l.line}`);
    if (problems.length === 0 && entries.length === 0) problems.push(`--tokens-file ${src.file} holds no token (one a line, name:token or token; # starts a comment)`);
  } else {
    if (fromEnv === undefined || fromEnv.trim() === "") return undefined;
    from = TOKENS_ENV;
    fromEnv.split(",").map((s) => s.trim()).forEach((item, i) => {
      if (item !== "") add(item, `${TOKENS_ENV} item ${i + 1}`, `env-${i + 1}`);
    });
  }
  if (problems.length > 0) throw new TrueidleError("bad_config", problems.join("; "));
  try {
    return { tokens: new TokenSet(entries), from, warning };
  } catch (err) {
    throw new TrueidleError("bad_config", `${from}: ${(err as Error).message}`, { cause: err });
  }
}
