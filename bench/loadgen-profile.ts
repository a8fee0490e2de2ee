/**
 * The top of a V8 CPU profile (`node --cpu-prof`): self time per function, summed over the
 * profile's nodes, as "share  ms  function  file:line". For the load generator's
 * `--cpu-prof DIR`, which profiles the collector it starts; the newest .cpuprofile in DIR
 * is read.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository, cut from file paths: `dist/collector/…`, `node_modules/@grpc/…`. */
const ROOT = fileURLToPath(new URL("..", import.meta.url));

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export function summariseCpuProfile(dir: string, top: number): string[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => path.join(dir, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  const file = files[0];
  if (!file) throw new Error(`no .cpuprofile in ${dir}`);
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  // Time per node from the sample deltas (µs); hit counts where a profile has no samples.
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  if (samples.length > 0) {
    for (let i = 0; i < samples.length; i++) {
      const id = samples[i]!;
      selfUs.set(id, (selfUs.get(id) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0));
    }
  } else {
    const us =
      (profile.endTime - profile.startTime) /
      Math.max(
        1,
        profile.nodes.reduce((n, x) => n + (x.hitCount ?? 0), 0),
      );
    for (const n of profile.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * us);
  }
  const byFunction = new Map<string, number>();
  let total = 0;
  for (const n of profile.nodes) {
    const us = selfUs.get(n.id) ?? 0;
    // Shares are of the time the process was busy.
    if (us === 0 || n.callFrame.functionName === "(idle)") continue;
    total += us;
    const f = n.callFrame;
    const file = f.url.replace(/^file:\/\//, "");
    const where = f.url === "" ? "" : `${file.startsWith(ROOT) ? file.slice(ROOT.length) : file}:${f.lineNumber + 1}`;
    const key = `${f.functionName || "(anonymous)"}  ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  }
  return [...byFunction]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(
      ([key, us]) =>
        `${((100 * us) / total).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}`,
    );
}
