/**
 * What makes a whole /metrics page acceptable: promtool parses it, each family is declared
 * once, and promtool's lint finds nothing.
 */
import { expect } from "vitest";
import { promtool } from "./prometheus.js";

/** Family names in the order of their `# TYPE` lines. */
export function declaredFamilies(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) \S+$/gm)].map((m) => m[1]!);
}

/** Fails unless `text` is a valid exposition as described above. */
export async function expectValidExposition(text: string): Promise<void> {
  const families = declaredFamilies(text);
  expect(
    families.filter((f, i) => families.indexOf(f) !== i),
    "families declared twice",
  ).toEqual([]);
  const r = await promtool(["check", "metrics"], text);
  const notes = (r.stdout + r.stderr).split("\n").filter((l) => l.trim() !== "");
  // promtool exits 1 on a parse error, 3 on lint notes alone.
  expect({ code: r.code, notes }).toEqual({ code: 0, notes: [] });
}
