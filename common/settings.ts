/**
 * Settings: each option of a component stated once, with its kind, default, bounds and
 * meaning, in the manner of a component's default configuration. The component takes its
 * default from the setting, its validation checks a value with settingProblem(), and the
 * command line builds the flag from the same setting (cli/setting-flags.ts), so a default or
 * a bound cannot differ between the library and the CLI.
 */

/**
 * integer: a whole number; number: any finite number; duration: milliseconds (a flag takes
 * 10s, 5m, ...); size: bytes, a whole number (a flag takes 256MiB, 1GiB, ...).
 */
export type NumericKind = "integer" | "number" | "duration" | "size";

export interface NumericSetting {
  readonly kind: NumericKind;
  /** Undefined when the component works the default out at run time (the meaning says how). */
  readonly default?: number | undefined;
  /** Least value allowed (inclusive unless minExclusive). */
  readonly min?: number | undefined;
  /** The value must be more than min, not equal to it. */
  readonly minExclusive?: boolean | undefined;
  /** Greatest value allowed (inclusive). */
  readonly max?: number | undefined;
  /** One line: what the setting does. */
  readonly meaning: string;
}

export interface TextSetting {
  readonly kind: "text";
  readonly default?: string | undefined;
  /** The values allowed, when they are a fixed set. */
  readonly choices?: readonly string[] | undefined;
  readonly meaning: string;
}

export type Setting = NumericSetting | TextSetting;

const UNIT: Readonly<Record<NumericKind, string>> = { integer: "", number: "", duration: " ms", size: " bytes" };

/**
 * Why `value` is not allowed for the setting called `name` — "NAME must be … (got VALUE)" —
 * or undefined when it is (and when it is undefined: the default applies).
 */
export function settingProblem(name: string, s: NumericSetting, value: number | undefined): string | undefined {
  if (value === undefined) return undefined;
  const whole = s.kind === "integer" || s.kind === "size";
  const number = Number.isFinite(value) && (!whole || Number.isInteger(value));
  const low = s.min !== undefined && (s.minExclusive ? !(value > s.min) : !(value >= s.min));
  const high = s.max !== undefined && value > s.max;
  if (number && !low && !high) return undefined;
  return `${name} must be ${expectation(s, number && !low)} (got ${value})`;
}

/** What a value must be, naming the bound it broke: the upper one when `tooHigh`, else the lower one (or wholeness). */
function expectation(s: NumericSetting, tooHigh: boolean): string {
  const unit = UNIT[s.kind];
  if (s.kind === "number" && s.min !== undefined && s.max !== undefined)
    return `in ${s.minExclusive ? "(" : "["}${s.min}, ${s.max}]`;
  if (tooHigh) return `at most ${s.max}${unit}`;
  if (s.kind === "integer" || s.kind === "size") {
    if (s.min === undefined) return "an integer";
    if (s.min === 0 && !s.minExclusive) return "a non-negative integer";
    if ((s.min === 1 && !s.minExclusive) || (s.min === 0 && s.minExclusive)) return "a positive integer";
    if (s.minExclusive) return `an integer more than ${s.min}${unit}`;
    return s.max !== undefined
      ? `an integer from ${s.min} to ${s.max}${unit}`
      : `an integer of at least ${s.min}${unit}`;
  }
  if (s.min === undefined) return "a finite number";
  return `${s.minExclusive ? "more than" : "at least"} ${s.min}${unit}`;
}
