/**
 * User names from the host's `/etc/passwd` (under `--host-root`), read once and read again
 * only when the file changes (mtime, size or inode), so a user added on the host is named
 * without a restart. Users known only to a directory service (LDAP, SSSD) are not in the
 * file; their uid is given as a number, which is what `ps` shows without the service too.
 */
import { stat } from "node:fs/promises";
import { parsePasswd } from "./proc-parse.js";
import { readCapped, textOf } from "./read-capped.js";

/** Why the names could not be read: `missing`, `too_large`, `binary`, or an errno code (`eacces`). */
export type PasswdProblem = (reason: string) => void;

export class PasswdNames {
  private names = new Map<number, string>();
  private version: string | undefined;

  constructor(
    private readonly path: string,
    private readonly maxBytes: number,
    private readonly onProblem: PasswdProblem,
  ) {}

  /** The name of `uid`, or undefined when the file has none (or cannot be read). */
  async nameOf(uid: number, signal?: AbortSignal): Promise<string | undefined> {
    await this.refresh(signal);
    return this.names.get(uid);
  }

  private async refresh(signal?: AbortSignal): Promise<void> {
    let version: string;
    try {
      const s = await stat(this.path);
      version = `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException | undefined)?.code;
      this.fail(code === "ENOENT" ? "missing" : typeof code === "string" ? code.toLowerCase() : "unknown");
      return;
    }
    if (version === this.version) return;
    const read = await readCapped(this.path, this.maxBytes, signal);
    if (!read.ok) {
      if (read.reason !== "aborted") this.fail(read.reason);
      return;
    }
    const text = textOf(read.bytes);
    if (text === undefined) {
      this.fail("binary");
      return;
    }
    this.names = parsePasswd(text);
    this.version = version;
  }

  private fail(reason: string): void {
    this.names = new Map();
    this.version = undefined;
    this.onProblem(reason);
  }
}
