/**
 * Reading a file that holds secrets (tokens, passwords, private keys). Secrets come only
 * from files or the environment, never from the command line, and are never logged: the
 * errors here name the flag and the file, never the contents.
 */
import { readFileSync, statSync } from "node:fs";
import { TrueidleError, errorMessage } from "./errors.js";

export interface SecretFile {
  text: string;
  /** Set when group or others may read the file: a sentence naming the fix. */
  warning?: string | undefined;
}

/**
 * Reads `file` given by `--<flag>`; a bad_config error names both when it cannot be read.
 * The permission warning is for the caller to log once.
 */
export function readSecretFile(flag: string, file: string): SecretFile {
  let text: string;
  let mode: number;
  try {
    mode = statSync(file).mode;
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new TrueidleError("bad_config", `--${flag} ${file} cannot be read: ${errorMessage(err)}`, { cause: err });
  }
  const problem = permissionProblem(mode);
  return { text, warning: problem ? `${file} (--${flag}) ${problem}` : undefined };
}

/**
 * What is wrong with a secret file's mode, if anything. Readable by its group is fine — that is
 * how Kubernetes mounts Secrets for a pod's fsGroup (0440) and how a root-owned file is shared
 * with a service user (0640) — but readable by every user, or writable by others, is not.
 */
export function permissionProblem(mode: number): string | undefined {
  if ((mode & 0o004) !== 0) return "is readable by every user; chmod 640 or 600 it";
  if ((mode & 0o022) !== 0) return "is writable by other users; chmod 640 or 600 it";
  return undefined;
}

/** The lines that carry content: trimmed, without blank lines and `#` comments, with their 1-based numbers. */
export function contentLines(text: string): Array<{ line: number; text: string }> {
  const out: Array<{ line: number; text: string }> = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (t !== "" && !t.startsWith("#")) out.push({ line: i + 1, text: t });
  });
  return out;
}
