/**
 * The flag tables in the docs state the defaults the commands have: every row of a
 * `| flag | default | … |` table in docs/install.md, docs/scaling.md and docs/report.md that names flags with
 * a default in the command's spec shows that default. The specs take their defaults from the
 * components' settings (cli/setting-flags.ts), so the docs, `--help`, the parser and the
 * components cannot disagree.
 */
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import type { CommandSpec, FlagSpec } from "../cli/args.js";
import { agentSpec } from "../cli/agent-command.js";
import { collectorSpec } from "../cli/collector-command.js";
import { reportSpec } from "../cli/report-command.js";
import { REPO_ROOT } from "./helpers/trueidle-process.js";

interface DocRow {
  line: number;
  flags: string[];
  defaults: string[];
}

/** Rows of the table whose header's first cell is `header` (e.g. "agent flag"). */
function tableRows(text: string, header: string): DocRow[] {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.startsWith(`| ${header} | default |`));
  if (start < 0) throw new Error(`no table headed "| ${header} | default |"`);
  const rows: DocRow[] = [];
  for (let i = start + 2; i < lines.length && lines[i]!.startsWith("|"); i++) {
    // Cells split on " | " but not on an escaped "\|" (choices such as auth\|nvml).
    const cells = lines[i]!.split(/(?<!\\)\|/).map((c) => c.trim());
    const flagCell = cells[1] ?? "";
    const defaultCell = cells[2] ?? "";
    const flags = [...flagCell.matchAll(/--([a-z][a-z0-9.-]*)/g)].map((m) => m[1]!);
    // Several flags in a row take one default each, in order ("`1s` / `10s`"); one flag takes the whole cell.
    const values = flags.length > 1 ? defaultCell.split(/ \/ |, /) : [defaultCell];
    const defaults = defaultCell === "" ? [] : values.map((d) => d.replace(/`/g, "").trim());
    rows.push({ line: i + 1, flags, defaults });
  }
  return rows;
}

function flagOf(spec: CommandSpec, name: string): FlagSpec | undefined {
  return spec.flags.find((f) => f.name === name);
}

/** Checks the rows where each flag named has a default of its own: one value per flag, equal to it. */
function checkTable(file: string, header: string, spec: CommandSpec): number {
  const text = readFileSync(path.join(REPO_ROOT, file), "utf8");
  let checked = 0;
  for (const row of tableRows(text, header)) {
    const specs = row.flags.map((name) => {
      const f = flagOf(spec, name);
      expect(f, `${file}:${row.line}: --${name} is not a flag of trueidle ${spec.name}`).toBeDefined();
      return f!;
    });
    const withDefaults = specs.filter((f) => f.default !== undefined);
    if (withDefaults.length === 0) continue;
    // A row lists several flags with one default each, in order; the flags' own defaults must be those.
    expect(row.defaults.length, `${file}:${row.line}: one default per flag (${row.flags.join(", ")})`).toBe(
      specs.length,
    );
    specs.forEach((f, i) => {
      if (f.default === undefined) return;
      // The value, alone or followed by words about it ("256 (a quarter from one address)").
      const shown = row.defaults[i] ?? "";
      const value = shown === f.default ? shown : shown.split(" ")[0];
      expect(value, `${file}:${row.line}: --${f.name} (docs: "${shown}")`).toBe(f.default);
      checked++;
    });
  }
  return checked;
}

describe("the docs' flag tables", () => {
  it("show the agent's defaults (docs/install.md)", () => {
    expect(checkTable("docs/install.md", "agent flag", agentSpec)).toBeGreaterThanOrEqual(12);
  });

  it("show the collector's defaults (docs/install.md)", () => {
    expect(checkTable("docs/install.md", "collector flag", collectorSpec)).toBeGreaterThanOrEqual(14);
  });

  it("show the collector's limits (docs/scaling.md)", () => {
    expect(checkTable("docs/scaling.md", "collector flag", collectorSpec)).toBeGreaterThanOrEqual(10);
  });

  it("show the report's defaults (docs/report.md)", () => {
    expect(checkTable("docs/report.md", "flag", reportSpec)).toBeGreaterThanOrEqual(5);
  });

  it("catch a default that drifted", () => {
    const spec: CommandSpec = {
      ...agentSpec,
      flags: agentSpec.flags.map((f) => (f.name === "process-interval" ? { ...f, default: "7s" } : f)),
    };
    expect(() => checkTable("docs/install.md", "agent flag", spec)).toThrow(/--process-interval/);
  });
});
