/** The table `trueidle agent --once` prints: this host's GPUs as trueidle sees them. */
import type { ClassifiedSample } from "../agent/pipeline.js";
import type { Thresholds } from "../common/types.js";

const GiB = 1024 ** 3;

export function renderOnceTable(samples: readonly ClassifiedSample[], t: Thresholds): string {
  const header = ["GPU", "MODEL", "REPORTED UTIL", "REAL UTIL (SOURCE)", "STATE", "POWER / FLOOR", "MEMORY", "PROCS"];
  const rows = samples.map((s) => {
    const r = s.reading;
    const c = s.classification;
    const util = r.util === undefined ? "n/a" : `${fmt(r.util, 0)}% ${c.reportedIdle ? "(idle)" : "(busy)"}`;
    const real = c.state === "unavailable" ? "-" : `${fmt(c.real * 100, 0)}% (${c.source})`;
    const power = r.powerW === undefined ? "n/a" : `${fmt(r.powerW, 0)} / ${c.floorW === undefined ? "?" : fmt(c.floorW, 0)} W`;
    const mem = r.memUsedBytes === undefined ? "n/a"
      : `${fmt(r.memUsedBytes / GiB, 1)}${r.memTotalBytes === undefined ? "" : ` / ${fmt(r.memTotalBytes / GiB, 0)}`} GiB`;
    const procs = r.processes === undefined ? "?" : String(r.processes.length);
    const state = c.state === "unavailable" && r.error ? `unavailable: ${r.error}` : c.state;
    return [String(r.index), r.model || "?", util, real, state, power, mem, procs];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  const out = [line(header), ...rows.map(line)];
  if (rows.length === 0) out.push("(no GPUs found)");
  const counts = new Map<string, number>();
  for (const s of samples) counts.set(s.classification.state, (counts.get(s.classification.state) ?? 0) + 1);
  out.push("");
  out.push(`${samples.length} GPU(s): ${[...counts].map(([k, n]) => `${n} ${k}`).join(", ") || "none"}.`);
  out.push(`Thresholds: reported busy at utilization.gpu >= ${t.utilBusyPercent}%, active at real >= ${t.realActiveRatio}, ` +
    `held above ${Math.round(t.heldMemoryBytes / 1024 / 1024)} MiB over the idle baseline.`);
  out.push("A single sample: floors and memory baselines sharpen as the agent runs.");
  return out.join("\n") + "\n";
}

function fmt(x: number, digits: number): string {
  return x.toFixed(digits);
}
