/**
 * One collector per spool directory: two collectors appending to and draining one spool
 * would interleave records and consume each other's. The lock is a file `lock` holding
 * the owner's host name and pid, created exclusively.
 *
 * A lock left by a collector that died (SIGKILL, power loss) is taken over when its owner
 * is provably gone: same host and no live process with that pid, or that pid is this
 * process and this process holds no lock on the directory (a container restarts its
 * collector with the same pid). A lock from another host cannot be checked; the error
 * names the file to delete once that collector is known to be gone.
 */
import { hostname } from "node:os";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { TrueidleError, errorMessage } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { makeDir } from "../../common/segment-file.js";
import { ownerMayBeRunning } from "../../common/process-alive.js";

export const LOCK_FILE = "lock";

/** Directories this process holds a lock on. */
const held = new Set<string>();

interface LockOwner {
  host: string;
  pid: number;
}

export class SpoolLock {
  private released = false;

  private constructor(
    readonly dir: string,
    private readonly file: string,
  ) {}

  /** Creates `dir` (mode 0700) when missing and takes its lock; throws a bad_config error naming the fix. */
  static async acquire(dir: string, logger: Logger): Promise<SpoolLock> {
    const abs = path.resolve(dir);
    try {
      await makeDir(abs, 0o700);
    } catch (err) {
      throw new TrueidleError("bad_config", `cannot create the spool directory ${abs}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const file = path.join(abs, LOCK_FILE);
    const me: LockOwner = { host: hostname(), pid: process.pid };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await fs.writeFile(file, `${JSON.stringify(me)}\n`, { flag: "wx", mode: 0o600 });
        held.add(abs);
        return new SpoolLock(abs, file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
          throw new TrueidleError("bad_config", `cannot lock the spool directory ${abs}: ${errorMessage(err)}`, {
            cause: err,
          });
        }
      }
      const owner = await readOwner(file);
      const gone = owner === undefined ? "its lock file is unreadable" : ownerGone(owner, abs, me);
      if (gone === undefined) {
        const who = owner ? `pid ${owner.pid} on ${owner.host}` : "another process";
        const hint = owner && owner.host !== me.host ? `; if that collector is gone for good, delete ${file}` : "";
        throw new TrueidleError(
          "bad_config",
          `the spool directory ${abs} is in use by another collector (${who}); give each collector its own --spool-dir${hint}`,
        );
      }
      logger.warn(`Took over the lock of the spool directory ${abs}: ${gone}.`, { dir: abs, previous: owner });
      await fs.rm(file, { force: true });
    }
    throw new TrueidleError(
      "bad_config",
      `cannot lock the spool directory ${abs}: another process keeps taking its lock`,
    );
  }

  /** Deletes the lock file; safe twice. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    held.delete(this.dir);
    await fs.rm(this.file, { force: true }).catch(() => undefined);
  }
}

async function readOwner(file: string): Promise<LockOwner | undefined> {
  try {
    const v = JSON.parse(await fs.readFile(file, "utf8")) as Partial<LockOwner>;
    if (typeof v.host === "string" && typeof v.pid === "number" && Number.isInteger(v.pid))
      return { host: v.host, pid: v.pid };
  } catch {
    // Torn by a crash while it was written: treated as stale.
  }
  return undefined;
}

/** Why the owner is certainly gone, or undefined when it may be alive. */
function ownerGone(owner: LockOwner, dir: string, me: LockOwner): string | undefined {
  if (owner.host !== me.host) return undefined;
  if (owner.pid === me.pid) return held.has(dir) ? undefined : "it was left by an earlier run with this process's pid";
  return ownerMayBeRunning(owner.pid) ? undefined : `its owner, pid ${owner.pid}, is no longer running`;
}
