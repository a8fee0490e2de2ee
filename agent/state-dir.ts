/**
 * The agent's state directory (`--state-dir`): it holds the on-disk window buffer
 * (DIR/buffer) and a lock file (DIR/agent.lock, the owner's pid) so that two agents never
 * share one buffer. A lock whose process is gone (the agent was killed) is taken over.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { TrueidleError, errorMessage } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { makeDir } from "../common/segment-file.js";
import { ownerMayBeRunning } from "../common/process-alive.js";

export const LOCK_FILE = "agent.lock";
export const BUFFER_SUBDIR = "buffer";

export interface StateDir {
  dir: string;
  /** Where the window buffer's segment log lives. */
  bufferDir: string;
  /** Removes the lock file; safe twice. */
  release(): Promise<void>;
}

/** Creates DIR if needed, checks that it is writable and takes its lock. */
export async function openStateDir(dir: string, logger: Logger): Promise<StateDir> {
  const abs = path.resolve(dir);
  const fix = "create it and make it writable by the agent's user, or pass another --state-dir";
  try {
    await makeDir(abs, 0o700);
    await fs.access(abs, fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    throw new TrueidleError("bad_config", `The state directory ${abs} is not usable (${errorMessage(err)}); ${fix}.`, {
      cause: err,
    });
  }
  const lock = path.join(abs, LOCK_FILE);
  await takeLock(lock, abs, fix, logger);
  let released = false;
  return {
    dir: abs,
    bufferDir: path.join(abs, BUFFER_SUBDIR),
    release: async () => {
      if (released) return;
      released = true;
      await fs.rm(lock, { force: true });
    },
  };
}

async function takeLock(lock: string, dir: string, fix: string, logger: Logger): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fs.open(lock, "wx", 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EEXIST") {
        throw new TrueidleError(
          "bad_config",
          `The state directory ${dir} is not writable (${errorMessage(err)}); ${fix}.`,
          { cause: err },
        );
      }
    }
    const owner = await readOwner(lock);
    if (owner !== undefined && owner !== process.pid && ownerMayBeRunning(owner)) {
      throw new TrueidleError(
        "bad_config",
        `Another agent (pid ${owner}) is using the state directory ${dir}; give each agent its own --state-dir.`,
      );
    }
    // Left by an agent that is gone (killed, or this pid after a container restart).
    logger.info("Took over the state directory's lock from an agent that is no longer running.", {
      dir,
      previous_pid: owner,
    });
    await fs.rm(lock, { force: true });
  }
  throw new TrueidleError(
    "bad_config",
    `Another agent is taking the lock of the state directory ${dir} at the same time; give each agent its own --state-dir.`,
  );
}

async function readOwner(lock: string): Promise<number | undefined> {
  try {
    const pid = Number((await fs.readFile(lock, "utf8")).trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
