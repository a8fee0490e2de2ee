/** The table `trueidle agent --once` prints: this host's GPUs as trueidle sees them. */
import { TOP_HOLDERS, type ClassifiedSample } from "../agent/pipeline.js";
import type { GpuProcess, Thresholds } from "../common/types.js";

const GiB = 1024 ** 3;

export function renderOnceTable(samples: readonly ClassifiedSample[], t: Thresholds, source?: string): string {
  const header = ["GPU", "MODEL", "REPORTED UTIL", "SM ACTIVE", "REAL UTIL (SOURCE)", "STATE", "POWER / FLOOR", "MEMORY", "PROCS"];
  const rows = samples.map((s) => {
    const r = s.reading;
    const c = s.classification;
    const util = r.util === undefined ? "n/a" : `${fmt(r.util, 0)}% ${c.reportedIdle ? "(idle)" : "(busy)"}`;
    const real = c.state === "unavailable" ? "-" : `${fmt(c.real * 100, 0)}% (${c.source})`;
    const sm = r.smActive === undefined ? "n/a" : `${fmt(r.smActive * 100, 0)}%`;
    const power = r.powerW === undefined ? "n/a" : `${fmt(r.powerW, 0)} / ${c.floorW === undefined ? "?" : fmt(c.floorW, 0)} W`;
    const mem = r.memUsedBytes === undefined ? "n/a"
      : `${fmt(r.memUsedBytes / GiB, 1)}${r.memTotalBytes === undefined ? "" : ` / ${fmt(r.memTotalBytes / GiB, 0)}`} GiB`;
    const procs = r.processes === undefined ? "?" : String(r.processes.length);
    const state = c.state === "unavailable" && r.error ? `unavailable: ${r.error}` : c.state;
    return [String(r.index), r.model || "?", util, sm, real, state, power, mem, procs];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  const out = source === undefined ? [] : [`Source: ${source}`, ""];
  out.push(line(header), ...rows.map(line));
  if (rows.length === 0) out.push("(no GPUs found)");
  out.push(...holderLines(samples));
  const counts = new Map<string, number>();
  for (const s of samples) counts.set(s.classification.state, (counts.get(s.classification.state) ?? 0) + 1);
  out.push("");
  out.push(`${samples.length} GPU(s): ${[...counts].map(([k, n]) => `${n} ${k}`).join(", ") || "none"}.`);
  out.push(`Thresholds: reported busy at utilization.gpu >= ${t.utilBusyPercent}%, active at real >= ${t.realActiveRatio}, ` +
    `held above ${Math.round(t.heldMemoryBytes / 1024 / 1024)} MiB over the idle baseline.`);
  out.push("A single sample: floors and memory baselines sharpen as the agent runs.");
  return out.join("\n") + "\n";
}

/**
 * The largest holders of each GPU, with their SM utilization where the source sees it
 * (NVML): a held GPU whose holders show SM 0% is held idle, even beside a busy process.
 */
function holderLines(samples: readonly ClassifiedSample[]): string[] {
  const lines: string[] = [];
  for (const s of samples) {
    const procs = s.reading.processes;
    if (!procs || procs.length === 0) continue;
    const top = [...procs].sort((a, b) => (b.usedMemoryBytes ?? -1) - (a.usedMemoryBytes ?? -1)).slice(0, TOP_HOLDERS);
    const more = procs.length > top.length ? `; ${procs.length - top.length} more` : "";
    lines.push(`GPU ${s.reading.index} holders: ${top.map(holderText).join("; ")}${more}`);
  }
  return lines.length > 0 ? ["", ...lines] : [];
}

function holderText(p: GpuProcess): string {
  const mem = p.usedMemoryBytes === undefined ? "memory n/a" : `${fmt(p.usedMemoryBytes / GiB, 1)} GiB`;
  return `${p.name} (pid ${p.pid}) ${mem}${p.smUtil === undefined ? "" : `, SM ${fmt(p.smUtil, 0)}%`}`;
}

function fmt(x: number, digits: number): string {
  return x.toFixed(digits);
}
