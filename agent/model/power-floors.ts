/**
 * Default idle power floors per GPU model, in watts: the most an idle GPU of that model is
 * expected to draw. The learned floor (lowest power seen while unheld) never goes above
 * this. Matched on a case-insensitive substring of the product name, first match wins, so
 * more specific names come first.
 */
const FLOORS: ReadonlyArray<readonly [string, number]> = [
  ["gh200", 90],
  ["gb200", 120],
  ["b200", 120],
  ["b100", 110],
  ["h200", 80],
  ["h100", 75],
  ["h800", 75],
  ["h20", 70],
  ["a100", 60],
  ["a800", 60],
  ["a30", 35],
  ["a40", 35],
  ["a10g", 30],
  ["a10", 30],
  ["a16", 20],
  ["a2", 15],
  ["l40s", 30],
  ["l40", 35],
  ["l20", 35],
  ["l4", 18],
  ["rtx pro 6000", 35],
  ["rtx 6000", 30],
  ["rtx a6000", 30],
  ["rtx a5000", 25],
  ["rtx 4090", 30],
  ["rtx 3090", 30],
  ["v100", 45],
  ["t4", 27],
  ["p100", 35],
  ["p40", 30],
  ["p4", 20],
  ["k80", 30],
];

/** Share of the power limit used as the floor cap for a model not in the table. */
export const UNKNOWN_MODEL_FLOOR_SHARE = 0.1;

/** The floor cap for a model, or undefined when the model is unknown and no limit is known. */
export function defaultPowerFloor(model: string, powerLimitW: number | undefined): number | undefined {
  const watts = tableFloor(model);
  if (watts !== null) return watts;
  return powerLimitW !== undefined && powerLimitW > 0 ? powerLimitW * UNKNOWN_MODEL_FLOOR_SHARE : undefined;
}

/** Table floors by model name as given, looked up once per name (every sample asks); null: not in the table. */
const byModel = new Map<string, number | null>();
const MODELS_REMEMBERED = 256;

function tableFloor(model: string): number | null {
  let watts = byModel.get(model);
  if (watts !== undefined) return watts;
  watts = null;
  const name = model.toLowerCase();
  for (const [needle, w] of FLOORS) {
    if (containsWord(name, needle)) {
      watts = w;
      break;
    }
  }
  if (byModel.size >= MODELS_REMEMBERED) byModel.clear();
  byModel.set(model, watts);
  return watts;
}

/** Substring match that does not let "a10" match "a100" or "t4" match "rtx 4090". */
function containsWord(name: string, needle: string): boolean {
  let from = 0;
  for (;;) {
    const at = name.indexOf(needle, from);
    if (at < 0) return false;
    const before = at === 0 ? " " : name[at - 1]!;
    const after = at + needle.length >= name.length ? " " : name[at + needle.length]!;
    if (!/[a-z0-9]/.test(before) && !/[0-9a-z]/.test(after)) return true;
    from = at + 1;
  }
}
