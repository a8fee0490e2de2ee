/**
 * Measurement helpers shared by the benchmarks: rounds with warm-up, medians, a forced
 * garbage collection between rounds, CPU time, and a description of the machine.
 *
 * Results are always read as ratios against a baseline measured in the same rounds, so a
 * slower or busier machine moves both sides together. Nothing here passes or fails on time.
 */
import { cpus, platform, arch, totalmem } from "node:os";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export function spread(xs: readonly number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/**
 * A full collection before each measured section, so garbage left by the previous one is
 * not charged to the next. `--expose-gc` is switched on at run time, so `npm run bench`
 * needs no extra node flag; where that is refused, rounds run without it.
 */
const gcFn: (() => void) | undefined = (() => {
  try {
    setFlagsFromString("--expose-gc");
    const fn: unknown = runInNewContext("gc");
    return typeof fn === "function" ? (fn as () => void) : undefined;
  } catch {
    return undefined;
  }
})();

export function collectGarbage(): void {
  gcFn?.();
}

export const gcAvailable = gcFn !== undefined;

/** Wall milliseconds and process CPU microseconds (user + system) spent in `fn`. */
export function timed(fn: () => void): { wallMs: number; cpuUs: number } {
  collectGarbage();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { wallMs, cpuUs: cpu.user + cpu.system };
}

/**
 * Runs `warmup + rounds` rounds and keeps the measured ones. Each round gets its index
 * (warm-up rounds first) so callers can feed every round fresh data and alternate which
 * side of a comparison runs first.
 */
export function rounds<T>(warmup: number, measured: number, fn: (round: number) => T): T[] {
  const out: T[] = [];
  for (let r = 0; r < warmup + measured; r++) {
    const result = fn(r);
    if (r >= warmup) out.push(result);
  }
  return out;
}

export interface Environment {
  node: string;
  v8: string;
  cpuModel: string;
  cpuCount: number;
  platform: string;
  arch: string;
  totalMemGiB: number;
  gcBetweenRounds: boolean;
}

export function environment(): Environment {
  const list = cpus();
  return {
    node: process.version,
    v8: process.versions.v8,
    cpuModel: list[0]?.model.trim() ?? "unknown",
    cpuCount: list.length,
    platform: platform(),
    arch: arch(),
    totalMemGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    gcBetweenRounds: gcAvailable,
  };
}

/** Keeps results of measured work alive so the optimiser cannot drop the work. */
export const sink = { value: 0 };

/** Rows as an aligned text table: the first column left-aligned, the rest right-aligned. */
export function textTable(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
  return rows
    .map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join("  "))
    .map((line) => `  ${line}`)
    .join("\n");
}
