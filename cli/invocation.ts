/**
 * How to run trueidle again from the user's shell, the way it was started this time, for
 * commands the CLI prints for the user to copy (the demo's `report` line):
 *
 * - `trueidle` when the `trueidle` on PATH is this installation (same bin folder);
 * - `npx trueidle` when started through npm (`npx trueidle`, or `npm run` in a checkout,
 *   where npx runs the checkout's own bin);
 * - else `node PATH/bin/trueidle.js`, relative to the user's folder when below it.
 *
 * Never `npx trueidle` for a process npm did not start: outside a checkout npx would fetch
 * whatever package of that name the registry holds.
 */
import { accessSync, constants, realpathSync } from "node:fs";
import * as path from "node:path";

export interface InvocationContext {
  /** The script node ran: process.argv[1]. */
  script: string | undefined;
  env: NodeJS.ProcessEnv;
  /** The user's folder (npm runs scripts in the package folder and names the user's in INIT_CWD). */
  cwd: string;
  execPath: string;
  /** The executable PATH holds under this name, or undefined. */
  which: (name: string) => string | undefined;
  realpath: (p: string) => string;
}

export function processInvocation(): InvocationContext {
  const env = process.env;
  return {
    script: process.argv[1],
    env,
    cwd: env["INIT_CWD"] ?? process.cwd(),
    execPath: process.execPath,
    which: (name) => whichOnPath(name, env["PATH"] ?? ""),
    realpath: (p) => {
      try {
        return realpathSync(p);
      } catch {
        return path.resolve(p);
      }
    },
  };
}

/** The words that start trueidle again, e.g. `npx trueidle`; append a subcommand and flags. */
export function trueidleCommand(ctx: InvocationContext = processInvocation()): string {
  const script = ctx.script === undefined ? undefined : ctx.realpath(ctx.script);
  const onPath = ctx.which("trueidle");
  if (onPath !== undefined && (script === undefined || path.dirname(ctx.realpath(onPath)) === path.dirname(script)))
    return "trueidle";
  if (
    ctx.env["npm_command"] === "exec" ||
    (ctx.env["npm_command"] === "run-script" && ctx.env["npm_package_name"] === "trueidle")
  ) {
    return "npx trueidle";
  }
  if (script === undefined) return "trueidle";
  const node = ctx.which("node");
  const runtime =
    node !== undefined && ctx.realpath(node) === ctx.realpath(ctx.execPath) ? "node" : shellWord(ctx.execPath);
  const rel = path.relative(ctx.cwd, script);
  return `${runtime} ${shellWord(rel === "" || rel.startsWith("..") || path.isAbsolute(rel) ? script : rel)}`;
}

/** A word for a POSIX shell: as is when plain, else single-quoted. */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function whichOnPath(name: string, pathVar: string): string | undefined {
  for (const dir of pathVar.split(path.delimiter)) {
    if (dir === "") continue;
    const p = path.join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // Not here.
    }
  }
  return undefined;
}
