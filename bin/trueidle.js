#!/usr/bin/env node
// Entry point of the trueidle binary. The TypeScript sources are compiled into dist/ by
// `npm run build`, which `npm ci` runs through the prepare script.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write("trueidle: dist/ is missing; run `npm run build` (npm ci runs it for you).\n");
  process.exit(70);
}
const { main: run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
