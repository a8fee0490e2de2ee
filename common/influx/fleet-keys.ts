/**
 * Which tags group GPUs into a fleet (DESIGN.md, InfluxDB schema, `fleet_hour`): shared by
 * the collector, which rolls `gpu_hour` up by them, and the report, which reads
 * `fleet_hour` only for `--by` keys among them.
 */

/** Tags that name one GPU (or one board): never a fleet group key. */
export const PER_GPU_TAGS: ReadonlySet<string> = new Set(["host", "gpu", "uuid", "parent_uuid"]);

/** Fleet group keys every roll-up has, whatever the GPUs carry. */
export const BASE_FLEET_KEYS = ["model", "mig_profile"] as const;

/** The fleet group keys for a set of tag keys: the base keys and every tag that does not name one GPU, sorted. */
export function fleetKeys(tagKeys: Iterable<string>): string[] {
  const keys = new Set<string>(BASE_FLEET_KEYS);
  for (const k of tagKeys) if (!PER_GPU_TAGS.has(k)) keys.add(k);
  return [...keys].sort();
}
