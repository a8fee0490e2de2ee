/**
 * Which `--query-gpu` fields to ask for, chosen per driver from `nvidia-smi --help-query-gpu`.
 *
 * Drivers rename fields (`clocks_throttle_reasons.*` became `clocks_event_reasons.*`
 * around 535) and add new ones (`utilization.jpeg`, `utilization.ofa`), and nvidia-smi
 * rejects the whole query when one field is unknown. So the list holds the required
 * fields every driver has, plus optional ones only when the help lists them; a field the
 * driver still rejects at run time is swapped for its older name or dropped.
 */

/** Fields every driver knows; the sampler cannot work without them. */
export const REQUIRED_FIELDS = [
  "timestamp",
  "index",
  "uuid",
  "pci.bus_id",
  "name",
  "driver_version",
  "utilization.gpu",
  "memory.used",
  "memory.total",
  "power.draw",
] as const;

export const IDLE_REASON_FIELD = "clocks_event_reasons.gpu_idle";
/** The name of the gpu_idle reason before drivers ~535. */
export const IDLE_REASON_FIELD_OLD = "clocks_throttle_reasons.gpu_idle";
export const MEDIA_FIELDS = [
  "utilization.encoder",
  "utilization.decoder",
  "utilization.jpeg",
  "utilization.ofa",
] as const;

/**
 * Used when the help cannot be read (stand-in executables): fields nearly every driver
 * accepts. A driver that rejects one of them still works: see `withoutRejectedField`.
 */
export const CONSERVATIVE_FIELDS: readonly string[] = [
  ...REQUIRED_FIELDS,
  "enforced.power.limit",
  // Accepted as an alias by new drivers, and the only name old ones know.
  IDLE_REASON_FIELD_OLD,
  "utilization.encoder",
  "utilization.decoder",
];

/** What to ask for instead when a driver rejects a field; no entry means drop it. */
const REPLACEMENTS: Readonly<Record<string, string>> = {
  "enforced.power.limit": "power.limit",
  [IDLE_REASON_FIELD]: IDLE_REASON_FIELD_OLD,
  [IDLE_REASON_FIELD_OLD]: IDLE_REASON_FIELD,
};

const FIELD_NAME = /^[A-Za-z][A-Za-z0-9_.]*$/;

/**
 * Field names (with their aliases) listed by `nvidia-smi --help-query-gpu`: lines made of
 * quoted names only, such as `"clocks_event_reasons.gpu_idle" or "clocks_throttle_reasons.gpu_idle"`.
 * Quoted text inside descriptions (`"0: Default" means …`) is not a field.
 */
export function parseHelpQueryGpu(text: string): Set<string> {
  const names = new Set<string>();
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (!line.startsWith('"')) continue;
    const parts = line.split(/\s+or\s+/);
    const found: string[] = [];
    for (const part of parts) {
      const m = /^"([^"]+)"$/.exec(part.trim());
      if (!m || !FIELD_NAME.test(m[1]!)) {
        found.length = 0;
        break;
      }
      found.push(m[1]!);
    }
    for (const n of found) names.add(n);
  }
  return names;
}

/**
 * The query field list for a driver whose help listed `supported`; `undefined` (help not
 * readable) gives `CONSERVATIVE_FIELDS`. A help that lacks a required field still gets it:
 * nvidia-smi itself will say so if it is really missing.
 */
export function chooseQueryFields(supported: ReadonlySet<string> | undefined): string[] {
  if (supported === undefined) return [...CONSERVATIVE_FIELDS];
  const fields: string[] = [...REQUIRED_FIELDS];
  if (supported.has("enforced.power.limit")) fields.push("enforced.power.limit");
  else if (supported.has("power.limit")) fields.push("power.limit");
  if (supported.has(IDLE_REASON_FIELD)) fields.push(IDLE_REASON_FIELD);
  else if (supported.has(IDLE_REASON_FIELD_OLD)) fields.push(IDLE_REASON_FIELD_OLD);
  for (const f of MEDIA_FIELDS) if (supported.has(f)) fields.push(f);
  return fields;
}

/** The field named in nvidia-smi's `Field "x" is not a valid field to query.`, if the text has one. */
export function rejectedField(output: string): string | undefined {
  const m = /Field "([^"]*)" is not a valid field to query/.exec(output);
  return m?.[1];
}

/**
 * The list without a field the driver rejected: replaced by its other name when that was
 * not tried yet (`tried` collects every rejected name), else dropped. `undefined` when the
 * field is required or not in the list, so retrying cannot help.
 */
export function withoutRejectedField(
  fields: readonly string[],
  rejected: string,
  tried: Set<string>,
): string[] | undefined {
  if ((REQUIRED_FIELDS as readonly string[]).includes(rejected)) return undefined;
  const at = fields.indexOf(rejected);
  if (at < 0) return undefined;
  tried.add(rejected);
  const next = [...fields];
  const replacement = REPLACEMENTS[rejected];
  if (replacement !== undefined && !tried.has(replacement) && !next.includes(replacement)) next[at] = replacement;
  else next.splice(at, 1);
  return next;
}
