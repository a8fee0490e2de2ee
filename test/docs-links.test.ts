/**
 * The documentation stands alone: every relative link and image in the repository's
 * Markdown files resolves to a file inside the repository, and every `#anchor` into a
 * Markdown file names one of its headings (as GitHub makes anchors of headings). A link
 * out of the repository (`../…` above its root) would be broken in any clone.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/trueidle-process.js";

/** Folders that hold no documentation of the project's own. */
const SKIP = new Set(["node_modules", "dist", "release", ".bench", ".git", "gen"]);

function markdownFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(e.name)) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...markdownFiles(p));
    else if (e.name.endsWith(".md")) out.push(p);
  }
  return out;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
function headingAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, "")
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

function anchorsOf(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    if (fenced) continue;
    const m = /^#{1,6}\s+(.*)$/.exec(line);
    if (!m) continue;
    const base = headingAnchor(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

interface Link {
  line: number;
  target: string;
}

/** Markdown links and images outside code: `[text](target)`, `![alt](target)`. */
function linksOf(text: string): Link[] {
  const out: Link[] = [];
  let fenced = false;
  text.split("\n").forEach((line, i) => {
    if (line.startsWith("```")) fenced = !fenced;
    if (fenced) return;
    const prose = line.replace(/`[^`]*`/g, "");
    for (const m of prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ line: i + 1, target: m[1]! });
  });
  return out;
}

/** What is wrong with one link of `file`, or undefined. */
function problem(file: string, target: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return undefined; // https:, mailto:
  const [rawPath, anchor] = target.split("#", 2) as [string, string | undefined];
  const resolved = rawPath === "" ? file : path.resolve(path.dirname(file), decodeURIComponent(rawPath));
  const rel = path.relative(REPO_ROOT, resolved);
  if (rel.startsWith("..") || path.isAbsolute(rel)) return `points outside the repository (${rel})`;
  if (!existsSync(resolved)) return `names ${rel}, which does not exist`;
  if (anchor !== undefined && anchor !== "" && resolved.endsWith(".md") && statSync(resolved).isFile()) {
    if (!anchorsOf(resolved).has(anchor)) return `names #${anchor}, which is no heading of ${rel}`;
  }
  return undefined;
}

describe("the documentation's links", () => {
  const files = markdownFiles(REPO_ROOT);

  it("finds the README and the docs", () => {
    const rel = files.map((f) => path.relative(REPO_ROOT, f));
    expect(rel).toContain("README.md");
    expect(rel).toContain(path.join("docs", "design.md"));
  });

  it("every relative link and image resolves inside the repository", () => {
    const broken: string[] = [];
    for (const f of files) {
      for (const l of linksOf(readFileSync(f, "utf8"))) {
        const p = problem(f, l.target);
        if (p) broken.push(`${path.relative(REPO_ROOT, f)}:${l.line}: (${l.target}) ${p}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it("the checker finds what it must (a link out of the repository, a missing file, a missing anchor)", () => {
    const readme = path.join(REPO_ROOT, "README.md");
    expect(problem(readme, "../shared/DESIGN.md")).toMatch(/outside the repository/);
    expect(problem(readme, "docs/no-such-page.md")).toMatch(/does not exist/);
    expect(problem(readme, "docs/design.md#no-such-heading")).toMatch(/no heading/);
    expect(problem(readme, "docs/design.md#the-states")).toBeUndefined();
    expect(problem(readme, "https://example.com/x")).toBeUndefined();
    expect(
      linksOf("see `[x](nope)` and\n```\n[y](nope)\n```\n[z](docs/a.md) ![i](p.png)").map((l) => l.target),
    ).toEqual(["docs/a.md", "p.png"]);
    expect(headingAnchor("What the agent costs a node")).toBe("what-the-agent-costs-a-node");
    expect(headingAnchor("`--once` and `/metrics`: the agent's own")).toBe("--once-and-metrics-the-agents-own");
  });

  it("the README stays short enough to read first (at most 15 KB)", () => {
    expect(statSync(path.join(REPO_ROOT, "README.md")).size).toBeLessThanOrEqual(15 * 1024);
  });
});
