/**
 * A PATH like a GPU node's without some commands, on a machine that has them: a folder of
 * links to every command in the system's usual folders except the ones named. Tests run
 * what must work without Node.js (a release, install-agent.sh) or without curl and wget
 * with it as the whole PATH.
 */
import { existsSync, mkdirSync, readdirSync, symlinkSync } from "node:fs";
import * as path from "node:path";

/** systemd's default PATH for units, and a shell's on most distributions. */
export const SYSTEM_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] as const;

/** Node.js and what comes with it. */
export const NODE_COMMANDS = ["node", "nodejs", "npm", "npx", "corepack"] as const;

/**
 * Fills `dir` (created if needed) with links to the commands of SYSTEM_DIRS, the first of
 * each name winning as on a PATH, except `without`; returns `dir`, to be used as PATH.
 */
export function pathWithout(dir: string, without: readonly string[]): string {
  mkdirSync(dir, { recursive: true });
  const taken = new Set([...without, ...readdirSync(dir)]);
  for (const from of SYSTEM_DIRS) {
    if (!existsSync(from)) continue;
    for (const name of readdirSync(from)) {
      if (taken.has(name)) continue;
      taken.add(name);
      symlinkSync(path.join(from, name), path.join(dir, name));
    }
  }
  return dir;
}
