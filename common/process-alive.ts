/**
 * Whether a lock file's owner may still be running. A pid alone can mislead: after a
 * container restart (or with hostPID in Kubernetes) the kernel may have handed that pid to an
 * unrelated process. On Linux the owner counts as running only while that pid's command line
 * still runs the trueidle program (an argument `…/trueidle` or `…/trueidle.js`); where /proc cannot be read, an existing pid counts as running.
 */
import { readFileSync } from "node:fs";

export function ownerMayBeRunning(pid: number, procRoot = "/proc"): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: the process exists under another user; ESRCH: it is gone.
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  let cmdline: string;
  try {
    cmdline = readFileSync(`${procRoot}/${pid}/cmdline`, "latin1");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Gone between the two checks, or no /proc here (then the pid is all there is to go by).
    return code !== "ENOENT" || !procExists(procRoot);
  }
  return cmdline.split("\0").some((arg) => TRUEIDLE_PROGRAM.test(arg));
}

/** An argument naming the trueidle program: `…/trueidle` or `…/trueidle.js`. */
const TRUEIDLE_PROGRAM = /(^|\/)trueidle(\.js)?$/;

function procExists(procRoot: string): boolean {
  try {
    readFileSync(`${procRoot}/self/stat`);
    return true;
  } catch {
    return false;
  }
}
