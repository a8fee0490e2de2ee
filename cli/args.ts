/**
 * A small declarative flag parser: one table per command gives each flag's type, default
 * and help, so `--help`, parsing, environment variables and errors agree. Every flag can
 * also come from the environment as TRUEIDLE_<FLAG> (e.g. TRUEIDLE_COLLECTOR); the command
 * line wins. Every bad flag is reported at once, by name. A renamed flag keeps its old name
 * (and the old name's variable) as a deprecated alias: it still works, and
 * deprecationsOf() says what to log once at start.
 */
import { parseDuration } from "../common/duration.js";
import { parseSize } from "../common/size.js";
import { quoteUrl, redactUrlCredentials } from "../common/influx/url.js";
import { errorMessage } from "../common/errors.js";

/** `size` takes "256MiB", "1GiB", "500MB" or bytes (common/size.ts); min and max are bytes. */
export type FlagType = "string" | "boolean" | "duration" | "number" | "list" | "size";

export interface FlagSpec {
  name: string;
  type: FlagType;
  help: string;
  default?: string | undefined;
  placeholder?: string | undefined;
  /** Allowed values for a string flag. */
  choices?: readonly string[] | undefined;
  min?: number | undefined;
  /** With min: min itself is refused too (the value must be more than min). */
  minExclusive?: boolean | undefined;
  max?: number | undefined;
  /** Further check of the raw values; throws with a message naming what is wrong. */
  check?: ((values: readonly string[]) => void) | undefined;
  /** Former names, still accepted on the command line and as TRUEIDLE_<OLD_NAME>, each with a warning. */
  deprecatedNames?: readonly string[] | undefined;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  flags: FlagSpec[];
  examples?: string[];
  notes?: string;
}

export type FlagValues = Record<string, string | boolean | number | string[] | undefined>;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** TRUEIDLE_<FLAG>: upper case, `-` and `.` as `_` (--web.config.file: TRUEIDLE_WEB_CONFIG_FILE). */
export function envName(flag: string): string {
  return `TRUEIDLE_${flag.toUpperCase().replace(/[-.]/g, "_")}`;
}

/** Warnings about deprecated names used, per parse result (see deprecationsOf). */
const DEPRECATIONS = new WeakMap<FlagValues, readonly string[]>();

/** The sentences to log once at WARN for the deprecated flag and variable names `values` came from. */
export function deprecationsOf(values: FlagValues): readonly string[] {
  return DEPRECATIONS.get(values) ?? [];
}

export function parseFlags(
  spec: CommandSpec,
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): FlagValues {
  const byName = new Map(spec.flags.map((f) => [f.name, f]));
  /** Deprecated name → the flag it now is. */
  const renamed = new Map(spec.flags.flatMap((f) => (f.deprecatedNames ?? []).map((old) => [old, f] as const)));
  const raw = new Map<string, string[]>();
  /** Flags given on the command line under a deprecated name: flag → that name. */
  const byOldName = new Map<string, string>();
  const deprecations: string[] = [];
  const problems: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      // A URL typed without its flag may carry credentials; they are never echoed.
      problems.push(`unexpected argument ${quoteUrl(arg)}`);
      continue;
    }
    const eq = arg.indexOf("=");
    const given = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const f = byName.get(given) ?? renamed.get(given);
    if (!f) {
      problems.push(`unknown flag --${redactUrlCredentials(given)}`);
      continue;
    }
    const name = f.name;
    if (given !== name) {
      if (!byOldName.has(name))
        deprecations.push(`--${given} is deprecated and will be removed; use --${name} instead.`);
      byOldName.set(name, given);
    }
    let value: string;
    if (f.type === "boolean") {
      value = eq > 0 ? arg.slice(eq + 1) : "true";
    } else if (eq > 0) {
      value = arg.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("--") && next.length > 2)) {
        problems.push(`--${name} needs a value (${f.placeholder ?? f.type})`);
        continue;
      }
      value = next;
      i++;
    }
    const list = raw.get(name) ?? [];
    list.push(value);
    raw.set(name, list);
  }

  const out: FlagValues = {};
  for (const f of spec.flags) {
    let values = raw.get(f.name);
    let origin = `--${f.name}`;
    const oldName = byOldName.get(f.name);
    if (oldName !== undefined) {
      origin = `--${oldName}`;
      if (f.type !== "list" && (values?.length ?? 0) > 1) {
        problems.push(`--${oldName} is the old name of --${f.name}; give --${f.name} once`);
        continue;
      }
    }
    if (!values) {
      const fromEnv = envValue(f, env, deprecations);
      if (fromEnv) {
        values =
          f.type === "list"
            ? fromEnv.value
                .split(",")
                .map((s) => s.trim())
                .filter(Boolean)
            : [fromEnv.value];
        origin = fromEnv.name;
      }
    }
    if (!values && f.default !== undefined) values = [f.default];
    if (!values) {
      out[f.name] = f.type === "list" ? [] : undefined;
      continue;
    }
    if (f.type !== "list" && values.length > 1) {
      problems.push(`--${f.name} is given more than once`);
      continue;
    }
    const v = values[values.length - 1]!;
    try {
      f.check?.(values);
      out[f.name] = convert(f, v, values);
    } catch (err) {
      problems.push(`${origin}: ${errorMessage(err)}`);
    }
  }
  if (problems.length > 0) throw new UsageError(problems.join("\n"));
  if (deprecations.length > 0) DEPRECATIONS.set(out, deprecations);
  return out;
}

/**
 * A flag's value from the environment: TRUEIDLE_<FLAG>, else the variable of a deprecated
 * name (noted in `deprecations`). When both are set the new one is used and the old one is
 * named as ignored.
 */
function envValue(
  f: FlagSpec,
  env: NodeJS.ProcessEnv,
  deprecations: string[],
): { name: string; value: string } | undefined {
  const name = envName(f.name);
  const current = env[name];
  for (const old of f.deprecatedNames ?? []) {
    const oldName = envName(old);
    const v = env[oldName];
    if (v === undefined || v === "") continue;
    if (current !== undefined && current !== "") {
      deprecations.push(`${oldName} is deprecated and ignored because ${name} is set; remove ${oldName}.`);
      continue;
    }
    deprecations.push(`${oldName} is deprecated and will be removed; set ${name} instead.`);
    return { name: oldName, value: v };
  }
  return current !== undefined && current !== "" ? { name, value: current } : undefined;
}

function convert(f: FlagSpec, v: string, all: string[]): string | boolean | number | string[] {
  switch (f.type) {
    case "boolean":
      if (["true", "1", "yes"].includes(v)) return true;
      if (["false", "0", "no"].includes(v)) return false;
      throw new Error(`"${v}" is not true or false`);
    case "duration": {
      const ms = parseDuration(v);
      checkRange(f, ms, v, " ms");
      return ms;
    }
    case "size": {
      const bytes = parseSize(v);
      checkRange(f, bytes, v, " bytes");
      return bytes;
    }
    case "number": {
      const n = Number(v);
      if (v.trim() === "" || !Number.isFinite(n)) throw new Error(`"${v}" is not a number`);
      checkRange(f, n, v, "");
      return n;
    }
    case "list":
      return all;
    case "string":
      if (v.trim() === "") throw new Error("needs a non-empty value");
      if (f.choices && !f.choices.includes(v)) throw new Error(`must be one of ${f.choices.join(", ")} (got "${v}")`);
      return v;
  }
}

/** Throws when `n` (given as `text`) lies outside the flag's min and max; `unit` follows the bound. */
function checkRange(f: FlagSpec, n: number, text: string, unit: string): void {
  if (f.min !== undefined && f.minExclusive && n <= f.min)
    throw new Error(`must be more than ${f.min}${unit} (got ${text})`);
  if (f.min !== undefined && n < f.min) throw new Error(`must be at least ${f.min}${unit} (got ${text})`);
  if (f.max !== undefined && n > f.max) throw new Error(`must be at most ${f.max}${unit} (got ${text})`);
}

export function formatHelp(spec: CommandSpec): string {
  const lines = [`${spec.summary}`, "", `Usage: ${spec.usage}`, "", "Flags:"];
  const rows = spec.flags.map((f) => {
    const left = `  --${f.name}${f.type === "boolean" ? "" : ` ${f.placeholder ?? f.type.toUpperCase()}`}`;
    let right = f.help;
    if (f.choices) right += ` (${f.choices.join("|")})`;
    if (f.default !== undefined && f.type !== "boolean") right += ` [default: ${f.default}]`;
    if (f.type === "list") right += " (repeatable)";
    if (f.deprecatedNames?.length)
      right += ` Formerly ${f.deprecatedNames.map((n) => `--${n}`).join(", ")} (deprecated).`;
    return [left, right] as const;
  });
  rows.push(["  --help", "Show this help."] as const);
  const width = Math.min(34, Math.max(...rows.map(([l]) => l.length)) + 2);
  for (const [l, r] of rows) {
    lines.push(l.length + 1 > width ? `${l}\n${" ".repeat(width)}${r}` : `${l.padEnd(width)}${r}`);
  }
  lines.push("", "Every flag can also be set in the environment as TRUEIDLE_<FLAG> (e.g. TRUEIDLE_LOG_LEVEL=debug).");
  if (spec.notes) lines.push("", spec.notes);
  if (spec.examples && spec.examples.length > 0) lines.push("", "Examples:", ...spec.examples.map((e) => `  ${e}`));
  return `${lines.join("\n")}\n`;
}

export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes("--help") || argv.includes("-h");
}
