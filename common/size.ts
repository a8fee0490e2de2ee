/**
 * Sizes on the command line: "256MiB", "1GiB", "500MB", "64k", "4096" (bytes). Binary units
 * (KiB, MiB, GiB, TiB, and the short K, M, G, T) are powers of 1024; decimal ones (kB, MB,
 * GB, TB) powers of 1000. Case does not matter except that "b" alone means bytes.
 */
const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
};

/** Bytes of a size string (a whole number); throws with the accepted forms named. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[(m[2] ?? "").toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new Error(`"${text}" is not a size; use forms like 4096, 64KiB, 256MiB, 1GiB or 500MB`);
  }
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new Error(`"${text}" is too large a size`);
  return bytes;
}

/** The shortest exact binary spelling: 268435456 → "256MiB", 1000 → "1000B". */
export function formatSize(bytes: number): string {
  for (const [unit, n] of [
    ["TiB", 1024 ** 4],
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return `${bytes}B`;
}
