/**
 * gen/ is generated from proto/ and never edited by hand: regenerating it must give the
 * committed files byte for byte, and the protocol must pass `buf lint`.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const GEN = path.join(ROOT, "gen");
const BUF = path.join(ROOT, "node_modules", ".bin", "buf");

/** Paths of every file under `dir`, relative to it, with "/" separators. */
function filesUnder(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) out.push(...filesUnder(path.join(dir, entry.name), rel));
    else out.push(rel);
  }
  return out.sort();
}

/** How the committed tree differs from a fresh one; empty when they are identical. */
function treeDifferences(fresh: string, committed: string, label: string): string[] {
  const freshFiles = filesUnder(fresh);
  const committedFiles = filesUnder(committed);
  const problems: string[] = [];
  for (const f of freshFiles) {
    if (!committedFiles.includes(f)) problems.push(`${label}/${f} is missing`);
    else if (!readFileSync(path.join(fresh, f)).equals(readFileSync(path.join(committed, f))))
      problems.push(`${label}/${f} differs`);
  }
  for (const f of committedFiles) if (!freshFiles.includes(f)) problems.push(`${label}/${f} is not generated any more`);
  return problems;
}

describe("treeDifferences", () => {
  it("names every missing, differing and extra file", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-tree-"));
    try {
      const a = path.join(dir, "a"),
        b = path.join(dir, "b");
      for (const root of [a, b]) mkdirSync(path.join(root, "x", "v1"), { recursive: true });
      writeFileSync(path.join(a, "x", "v1", "same.ts"), "same");
      writeFileSync(path.join(b, "x", "v1", "same.ts"), "same");
      writeFileSync(path.join(a, "x", "v1", "changed.ts"), "new");
      writeFileSync(path.join(b, "x", "v1", "changed.ts"), "old");
      writeFileSync(path.join(a, "x", "v1", "added.ts"), "");
      writeFileSync(path.join(b, "x", "v1", "removed.ts"), "");
      expect(treeDifferences(a, b, "gen")).toEqual([
        "gen/x/v1/added.ts is missing",
        "gen/x/v1/changed.ts differs",
        "gen/x/v1/removed.ts is not generated any more",
      ]);
      expect(treeDifferences(a, a, "gen")).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("generated protobuf code", () => {
  const out = mkdtempSync(path.join(tmpdir(), "trueidle-gen-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("gen/ matches what scripts/generate-proto.mjs produces from proto/", async () => {
    // buf takes an absolute plugin `out` as is; the script's default is gen/ itself.
    await run(process.execPath, [path.join(ROOT, "scripts", "generate-proto.mjs"), "--out", out], { cwd: ROOT });
    expect(filesUnder(out).length, "the generator produced no files").toBeGreaterThan(0);
    const problems = treeDifferences(out, GEN, "gen");
    expect(problems, `gen/ is stale; run \`npm run generate\` and commit gen/:\n${problems.join("\n")}`).toEqual([]);
  });

  it("proto/ passes buf lint", async () => {
    const { stdout, stderr } = await run(BUF, ["lint"], { cwd: ROOT }).catch(
      (err: { stdout?: string; stderr?: string; message: string }) => {
        throw new Error(`buf lint failed:\n${err.stdout ?? ""}${err.stderr ?? err.message}`);
      },
    );
    expect(stdout + stderr).toBe("");
  });
});
