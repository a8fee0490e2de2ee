/** Locating files shipped with the package, from source (tsx) or from dist/ alike. */
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/** The package's root folder (where its package.json is). */
export function packageRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, "package.json");
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, "utf8")) as { name?: string }).name === "trueidle") return (root = dir);
      } catch {
        // Not ours; keep walking up.
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error("cannot find the trueidle package root");
    dir = up;
  }
}
