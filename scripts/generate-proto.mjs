#!/usr/bin/env node
// Regenerates gen/ from proto/ with buf and protoc-gen-es. gen/ is never edited by hand.
// Usage: node scripts/generate-proto.mjs [--out DIR]   (default: gen, as buf.gen.yaml says)
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = path.join(root, "node_modules", ".bin");
const args = ["generate"];
const outIdx = process.argv.indexOf("--out");
if (outIdx > 0) {
  const out = process.argv[outIdx + 1];
  if (!out) throw new Error("--out needs a directory");
  args.push(
    "--template",
    JSON.stringify({
      version: "v2",
      clean: true,
      plugins: [{ local: "protoc-gen-es", out, opt: ["target=ts", "import_extension=js"] }],
    }),
  );
}
execFileSync(path.join(bin, "buf"), args, {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH ?? ""}` },
});
