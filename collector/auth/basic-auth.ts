/**
 * HTTP basic auth for the collector's `/metrics` and `/`: users from
 * `--http-basic-auth-file FILE`, one `user:password` a line, or `user:{SHA256}<64 hex>` to
 * keep only the password's SHA-256 in the file (`printf %s 'password' | sha256sum`); blank
 * lines and `#` comments ignored.
 *
 * Only SHA-256 digests are kept in memory and compared by crypto.timingSafeEqual; an
 * unknown user is compared against a dummy digest, so timing does not tell users apart.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { TrueidleError } from "../../common/errors.js";
import { parseBasicAuthorization, type AuthOutcome, type HttpUsers } from "../../common/http-auth.js";
import { contentLines, readSecretFile } from "../../common/secret-file.js";
const HASHED_RE = /^\{SHA256\}([0-9a-fA-F]{64})$/;
const USER_RE = /^[^\s:]{1,128}$/;

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

export class BasicAuthUsers implements HttpUsers {
  private readonly users: ReadonlyMap<string, Buffer>;
  private readonly dummy = sha256("trueidle: no such user");

  /** `users`: user name → SHA-256 digest of the password. */
  constructor(users: ReadonlyMap<string, Buffer>) {
    if (users.size === 0) throw new TrueidleError("bad_config", "the basic-auth user list is empty");
    this.users = users;
  }

  /** For programmatic use and tests: plain passwords. */
  static fromPasswords(entries: Record<string, string>): BasicAuthUsers {
    return new BasicAuthUsers(new Map(Object.entries(entries).map(([u, p]) => [u, sha256(p)])));
  }

  get size(): number {
    return this.users.size;
  }

  /**
   * The user an `Authorization` header authenticates, or undefined when the header is
   * missing, not `Basic`, malformed, or the user or password is wrong.
   */
  check(header: string | undefined): string | undefined {
    const creds = parseBasicAuthorization(header);
    if (!creds) return undefined;
    const want = this.users.get(creds.user);
    const ok = timingSafeEqual(want ?? this.dummy, sha256(creds.password));
    return ok && want !== undefined ? creds.user : undefined;
  }

  authenticate(header: string | undefined): AuthOutcome {
    const user = this.check(header);
    return user === undefined ? "denied" : { user };
  }
}

export interface LoadedBasicAuth {
  users: BasicAuthUsers;
  /** Set when the file is readable by every user or writable by others. */
  warning?: string | undefined;
}

/** Reads `--http-basic-auth-file`; every bad line is reported at once (never quoting a password). */
export function loadBasicAuth(file: string): LoadedBasicAuth {
  const f = readSecretFile("http-basic-auth-file", file);
  const users = new Map<string, Buffer>();
  const problems: string[] = [];
  for (const l of contentLines(f.text)) {
    const where = `--http-basic-auth-file ${file} line ${l.line}`;
    const colon = l.text.indexOf(":");
    const user = colon >= 0 ? l.text.slice(0, colon) : "";
    const secret = colon >= 0 ? l.text.slice(colon + 1) : "";
    if (!USER_RE.test(user) || secret === "") {
      problems.push(`${where}: the form is user:password or user:{SHA256}<64 hex digits>`);
      continue;
    }
    if (users.has(user)) {
      problems.push(`${where}: user "${user}" is listed twice`);
      continue;
    }
    if (secret.startsWith("{SHA256}")) {
      const h = HASHED_RE.exec(secret);
      if (!h) {
        problems.push(`${where}: {SHA256} must be followed by 64 hex digits (printf %s PASSWORD | sha256sum)`);
        continue;
      }
      users.set(user, Buffer.from(h[1] ?? "", "hex"));
    } else {
      users.set(user, sha256(secret));
    }
  }
  if (problems.length === 0 && users.size === 0)
    problems.push(`--http-basic-auth-file ${file} lists no user (one user:password a line)`);
  if (problems.length > 0) throw new TrueidleError("bad_config", problems.join("; "));
  return { users: new BasicAuthUsers(users), warning: f.warning };
}
