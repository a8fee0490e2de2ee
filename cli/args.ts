/**
 * A small declarative flag parser: one table per command gives each flag's type, default
 * and help, so `--help`, parsing, environment variables and errors agree. Every flag can
 * also come from the environment as TRUEIDLE_<FLAG> (e.g. TRUEIDLE_COLLECTOR); the command
 * line wins. Every bad flag is reported at once, by name.
 */
import { parseDuration } from "../common/duration.js";
import { parseSize } from "../common/size.js";
import { quoteUrl, redactUrlCredentials } from "../common/influx-url.js";

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
  max?: number | undefined;
  /** Further check of the raw values; throws with a message naming what is wrong. */
  check?: ((values: readonly string[]) => void) | undefined;
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

export function envName(flag: string): string {
  return "TRUEIDLE_" + flag.toUpperCase().replace(/-/g, "_");
}

export function parseFlags(spec: CommandSpec, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): FlagValues {
  const byName = new Map(spec.flags.map((f) => [f.name, f]));
  const raw = new Map<string, string[]>();
  const problems: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      // A URL typed without its flag may carry credentials; they are never echoed.
      problems.push(`unexpected argument ${quoteUrl(arg)}`);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const f = byName.get(name);
    if (!f) {
      problems.push(`unknown flag --${redactUrlCredentials(name)}`);
      continue;
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
    if (!values) {
      const e = env[envName(f.name)];
      if (e !== undefined && e !== "") {
        values = f.type === "list" ? e.split(",").map((s) => s.trim()).filter(Boolean) : [e];
        origin = envName(f.name);
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
      problems.push(`${origin}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new UsageError(problems.join("\n"));
  return out;
}

function convert(f: FlagSpec, v: string, all: string[]): string | boolean | number | string[] {
  switch (f.type) {
    case "boolean":
      if (["true", "1", "yes"].includes(v)) return true;
      if (["false", "0", "no"].includes(v)) return false;
      throw new Error(`"${v}" is not true or false`);
    case "duration": {
      const ms = parseDuration(v);
      if (f.min !== undefined && ms < f.min) throw new Error(`must be at least ${f.min} ms (got ${v})`);
      if (f.max !== undefined && ms > f.max) throw new Error(`must be at most ${f.max} ms (got ${v})`);
      return ms;
    }
    case "size": {
      const bytes = parseSize(v);
      if (f.min !== undefined && bytes < f.min) throw new Error(`must be at least ${f.min} bytes (got ${v})`);
      if (f.max !== undefined && bytes > f.max) throw new Error(`must be at most ${f.max} bytes (got ${v})`);
      return bytes;
    }
    case "number": {
      const n = Number(v);
      if (v.trim() === "" || !Number.isFinite(n)) throw new Error(`"${v}" is not a number`);
      if (f.min !== undefined && n < f.min) throw new Error(`must be at least ${f.min} (got ${v})`);
      if (f.max !== undefined && n > f.max) throw new Error(`must be at most ${f.max} (got ${v})`);
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

export function formatHelp(spec: CommandSpec): string {
  const lines = [`${spec.summary}`, "", `Usage: ${spec.usage}`, "", "Flags:"];
  const rows = spec.flags.map((f) => {
    const left = `  --${f.name}${f.type === "boolean" ? "" : " " + (f.placeholder ?? f.type.toUpperCase())}`;
    let right = f.help;
    if (f.choices) right += ` (${f.choices.join("|")})`;
    if (f.default !== undefined && f.type !== "boolean") right += ` [default: ${f.default}]`;
    if (f.type === "list") right += " (repeatable)";
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
  return lines.join("\n") + "\n";
}

export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes("--help") || argv.includes("-h");
}
