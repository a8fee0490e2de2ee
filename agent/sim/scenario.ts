/**
 * Scenario files drive the simulator source and the fake `nvidia-smi` used by tests, so
 * both produce the same GPUs from the same file.
 *
 * A scenario is JSON:
 *
 *   {
 *     "host": "sim-a",                 // hostname the simulated host reports (optional)
 *     "driverVersion": "550.90.07",     // optional
 *     "originMs": 0,                   // phases repeat from this instant (default: Unix epoch)
 *     "gpus": [
 *       { "model": "NVIDIA H100 80GB HBM3", "count": 2,
 *         "phases": [ { "for": "60s", "state": "active" }, { "for": "30s", "state": "held_idle" } ] },
 *       { "model": "NVIDIA L40S", "phases": [ { "for": "1m", "util": 100, "powerW": 40, "processes": 1 } ] },
 *       { "phases": [ { "for": "1m", "state": "held_idle",
 *                       "processes": [ { "pid": 4242, "name": "python3", "usedMiB": 40000, "smUtil": 0 } ] } ] }
 *     ]
 *   }
 *
 * A phase names a `state` preset (values a GPU in that state shows) and/or explicit
 * signals, which override the preset. `processes` is a count (generated processes: the
 * first shows the GPU's util as its SM utilization, the others 0 — a busy process beside
 * an idle one) or a list of {pid, name, usedMiB?, smUtil?}, where `smUtil` (0–100) is the
 * per-process SM utilization NVML reports; without it the process's is unknown, as through
 * nvidia-smi. Phases repeat; time within the cycle is (t - originMs) mod (sum of phase
 * lengths), so every process reading the same file agrees on what each GPU does at any
 * instant without sharing state.
 *
 * A GPU entry may say `"gpm": true` or `false`: whether the stub libnvidia-ml.so offers
 * GPM (SM activity) on it. Without it, a GPU has GPM when one of its phases sets
 * `smActive`. The simulator source ignores it.
 *
 * A GPU entry with `"mig"` is a board in MIG mode, split into the instances listed:
 *
 *   { "model": "NVIDIA H100 80GB HBM3", "phases": [ { "for": "1m", "powerW": 180 } ],
 *     "mig": [ { "profile": "3g.40gb", "gi": 2, "phases": [ { "for": "1m", "state": "active" } ] },
 *              { "profile": "1g.10gb", "gi": 9, "phases": [ { "for": "40s", "state": "held_idle" },
 *                                                          { "for": "20s", "absent": true } ] } ] }
 *
 * Each instance has its profile, GPU instance id `gi`, compute instance id `ci` (default 0),
 * memory (`memTotalMiB`, default from the profile's "…gb") and phases of its own, in the
 * same form; an instance shows no utilization.gpu and no power (the board's), and SM activity
 * per instance (GPM) unless the board says `"gpm": false`. A phase `"absent": true` is a time
 * the instance does not exist (destroyed); when it comes back it is a new instance, with a
 * new `MIG-…` uuid, as a re-created instance is. The board's own phases give what only the
 * board has (power).
 */
import { readFileSync } from "node:fs";
import { TrueidleError, errorMessage } from "../../common/errors.js";
import { parseDuration } from "../../common/duration.js";
import { GPU_STATES, type GpuState } from "../../common/types.js";

export const PHASE_PRESETS = [...GPU_STATES, "free_busy"] as const;
/** `free_busy`: nothing holds the GPU but utilization.gpu reads 100 (persistence mode off). */
export type PhasePreset = (typeof PHASE_PRESETS)[number];

export interface ScenarioPhase {
  durationMs: number;
  state?: PhasePreset | undefined;
  util?: number | null | undefined;
  powerW?: number | null | undefined;
  memUsedMiB?: number | null | undefined;
  smActive?: number | null | undefined;
  media?: number | null | undefined;
  /** Number of compute processes, or explicit processes. */
  processes?: number | ScenarioProcess[] | undefined;
  /** Makes the GPU give no reading, with this message (e.g. "GPU is lost"). */
  error?: string | undefined;
  /** Relative noise (0–0.5) added to util and power, deterministic in time. */
  noise?: number | undefined;
  /** A MIG instance's phase only: the instance does not exist for this long. */
  absent?: boolean | undefined;
}

/** One MIG instance of a board (see the file's comment). */
export interface ScenarioMigInstance {
  profile: string;
  gpuInstanceId: number;
  computeInstanceId: number;
  memTotalMiB: number;
  phases: ScenarioPhase[];
  cycleMs: number;
}

export interface ScenarioProcess {
  pid: number;
  name: string;
  usedMiB?: number | undefined;
  /** SM utilization of the process, 0–100 (what NVML's per-process utilization reports). */
  smUtil?: number | undefined;
}

export interface ScenarioGpu {
  index: number;
  uuid: string;
  busId: string;
  model: string;
  memTotalMiB: number;
  powerLimitW: number;
  idlePowerW: number;
  phases: ScenarioPhase[];
  cycleMs: number;
  /** Whether the stub libnvidia-ml.so offers GPM on this GPU; undefined: decided by `smActive`. */
  gpm?: boolean | undefined;
  /** A board in MIG mode: its instances. */
  mig?: ScenarioMigInstance[] | undefined;
}

export interface Scenario {
  host?: string | undefined;
  driverVersion: string;
  originMs: number;
  gpus: ScenarioGpu[];
  /** Fake nvidia-smi only: exit after printing this long in loop mode. */
  exitAfterMs?: number | undefined;
}

interface ModelSpec {
  memTotalMiB: number;
  powerLimitW: number;
  idlePowerW: number;
}
const MODEL_SPECS: ReadonlyArray<readonly [string, ModelSpec]> = [
  ["h200", { memTotalMiB: 143771, powerLimitW: 700, idlePowerW: 76 }],
  ["h100", { memTotalMiB: 81559, powerLimitW: 700, idlePowerW: 70 }],
  ["a100", { memTotalMiB: 81920, powerLimitW: 400, idlePowerW: 55 }],
  ["l40s", { memTotalMiB: 46068, powerLimitW: 350, idlePowerW: 32 }],
  ["t4", { memTotalMiB: 15360, powerLimitW: 70, idlePowerW: 26 }],
];
const GENERIC_SPEC: ModelSpec = { memTotalMiB: 24576, powerLimitW: 300, idlePowerW: 25 };

export function modelSpec(model: string): ModelSpec {
  const name = model.toLowerCase();
  for (const [needle, spec] of MODEL_SPECS) if (name.includes(needle)) return spec;
  return GENERIC_SPEC;
}

/** Reads and validates a scenario file; errors name the file and every bad field. */
export function loadScenario(path: string): Scenario {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new TrueidleError("bad_scenario", `cannot read scenario file ${path}: ${errorMessage(err)}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TrueidleError("bad_scenario", `scenario file ${path} is not valid JSON: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return parseScenario(json, path);
}

export function parseScenario(json: unknown, name = "scenario"): Scenario {
  const problems: string[] = [];
  const obj = asObject(json, name, problems);
  const gpusIn = obj?.["gpus"];
  if (!Array.isArray(gpusIn) || gpusIn.length === 0) problems.push(`${name}: "gpus" must be a non-empty array`);
  const host = optString(obj?.["host"], `${name}.host`, problems);
  const seed = host ?? "sim";
  const gpus: ScenarioGpu[] = [];
  if (Array.isArray(gpusIn)) {
    gpusIn.forEach((g, i) => {
      const where = `${name}.gpus[${i}]`;
      const o = asObject(g, where, problems);
      if (!o) return;
      const model = optString(o["model"], `${where}.model`, problems) ?? "NVIDIA H100 80GB HBM3";
      const count = optNumber(o["count"], `${where}.count`, problems, 1, 64) ?? 1;
      const spec = modelSpec(model);
      const phasesIn = o["phases"];
      const phases: ScenarioPhase[] = [];
      if (!Array.isArray(phasesIn) || phasesIn.length === 0) problems.push(`${where}.phases must be a non-empty array`);
      else
        phasesIn.forEach((p, j) => {
          const ph = parsePhase(p, `${where}.phases[${j}]`, problems);
          if (ph) phases.push(ph);
        });
      const cycleMs = phases.reduce((s, p) => s + p.durationMs, 0);
      const gpm = o["gpm"];
      if (gpm !== undefined && typeof gpm !== "boolean") problems.push(`${where}.gpm must be true or false`);
      for (const [j, ph] of phases.entries())
        if (ph.absent) problems.push(`${where}.phases[${j}].absent: only a MIG instance's phase may be absent`);
      const mig = o["mig"] === undefined ? undefined : parseMig(o["mig"], `${where}.mig`, problems);
      for (let c = 0; c < count; c++) {
        const index = gpus.length;
        gpus.push({
          index,
          uuid: optString(o["uuid"], `${where}.uuid`, problems) ?? fakeUuid(seed, index),
          busId: `00000000:${(0x10 + index * 0x10).toString(16).toUpperCase().padStart(2, "0")}:00.0`,
          model,
          memTotalMiB: optNumber(o["memTotalMiB"], `${where}.memTotalMiB`, problems, 1, 1e7) ?? spec.memTotalMiB,
          powerLimitW: optNumber(o["powerLimitW"], `${where}.powerLimitW`, problems, 1, 5000) ?? spec.powerLimitW,
          idlePowerW: optNumber(o["idlePowerW"], `${where}.idlePowerW`, problems, 0, 5000) ?? spec.idlePowerW,
          phases,
          cycleMs,
          gpm: typeof gpm === "boolean" ? gpm : undefined,
          mig,
        });
      }
    });
  }
  const exitAfter = optString(obj?.["exitAfter"], `${name}.exitAfter`, problems);
  const scenario: Scenario = {
    host,
    driverVersion: optString(obj?.["driverVersion"], `${name}.driverVersion`, problems) ?? "550.90.07",
    originMs: optNumber(obj?.["originMs"], `${name}.originMs`, problems, 0, 1e15) ?? 0,
    gpus,
    exitAfterMs: exitAfter === undefined ? undefined : durationOf(exitAfter, `${name}.exitAfter`, problems),
  };
  if (problems.length > 0) throw new TrueidleError("bad_scenario", `invalid scenario: ${problems.join("; ")}`);
  return scenario;
}

/** A MIG profile's memory from its name ("3g.40gb": 40 GiB), MiB; undefined when the name has none. */
export function profileMemMiB(profile: string): number | undefined {
  const m = /\.(\d+)gb/i.exec(profile);
  return m ? Number(m[1]) * 1024 : undefined;
}

function parseMig(v: unknown, where: string, problems: string[]): ScenarioMigInstance[] | undefined {
  if (!Array.isArray(v) || v.length === 0 || v.length > 7) {
    problems.push(`${where} must be a list of 1 to 7 instances`);
    return undefined;
  }
  const out: ScenarioMigInstance[] = [];
  const seen = new Set<string>();
  v.forEach((x, i) => {
    const at = `${where}[${i}]`;
    const o = asObject(x, at, problems);
    if (!o) return;
    for (const k of Object.keys(o))
      if (!["profile", "gi", "ci", "memTotalMiB", "phases"].includes(k)) problems.push(`${at}: unknown key "${k}"`);
    const profile = optString(o["profile"], `${at}.profile`, problems);
    if (profile === undefined || !/^[0-9A-Za-z][0-9A-Za-z.+_-]{0,47}$/.test(profile))
      problems.push(`${at}.profile must be a MIG profile such as "3g.40gb"`);
    const gi = optNumber(o["gi"], `${at}.gi`, problems, 0, 14);
    if (gi === undefined) problems.push(`${at}.gi (the GPU instance id) is required`);
    const ci = optNumber(o["ci"], `${at}.ci`, problems, 0, 7) ?? 0;
    if (seen.has(`${gi}/${ci}`)) problems.push(`${at}: another instance has gi ${gi} and ci ${ci}`);
    seen.add(`${gi}/${ci}`);
    const memTotalMiB =
      optNumber(o["memTotalMiB"], `${at}.memTotalMiB`, problems, 1, 1e7) ?? profileMemMiB(profile ?? "") ?? 10_240;
    const phasesIn = o["phases"];
    const phases: ScenarioPhase[] = [];
    if (!Array.isArray(phasesIn) || phasesIn.length === 0) problems.push(`${at}.phases must be a non-empty array`);
    else
      phasesIn.forEach((p, j) => {
        const ph = parsePhase(p, `${at}.phases[${j}]`, problems);
        if (ph) phases.push(ph);
      });
    out.push({
      profile: profile ?? "",
      gpuInstanceId: gi ?? 0,
      computeInstanceId: ci,
      memTotalMiB,
      phases,
      cycleMs: phases.reduce((s, p) => s + p.durationMs, 0),
    });
  });
  return out;
}

function parsePhase(p: unknown, where: string, problems: string[]): ScenarioPhase | undefined {
  const o = asObject(p, where, problems);
  if (!o) return undefined;
  const known = new Set([
    "for",
    "state",
    "util",
    "powerW",
    "memUsedMiB",
    "smActive",
    "media",
    "processes",
    "error",
    "noise",
    "absent",
  ]);
  for (const k of Object.keys(o)) if (!known.has(k)) problems.push(`${where}: unknown key "${k}"`);
  const forText = o["for"];
  const durationMs =
    typeof forText === "string"
      ? durationOf(forText, `${where}.for`, problems)
      : typeof forText === "number"
        ? forText * 1000
        : undefined;
  if (durationMs === undefined || !(durationMs > 0)) {
    problems.push(`${where}.for must be a positive duration such as "30s"`);
  }
  const state = o["state"];
  if (state !== undefined && !(PHASE_PRESETS as readonly string[]).includes(state as string)) {
    problems.push(`${where}.state must be one of ${PHASE_PRESETS.join(", ")}`);
  }
  if (o["absent"] !== undefined && typeof o["absent"] !== "boolean")
    problems.push(`${where}.absent must be true or false`);
  const procs = o["processes"];
  if (procs !== undefined && typeof procs !== "number" && !Array.isArray(procs)) {
    problems.push(`${where}.processes must be a count or a list of {pid, name, usedMiB, smUtil}`);
  }
  if (Array.isArray(procs)) {
    procs.forEach((x, k) => {
      if (typeof x === "object" && x !== null)
        optNumber((x as Record<string, unknown>)["smUtil"], `${where}.processes[${k}].smUtil`, problems, 0, 100);
    });
  }
  return {
    durationMs: durationMs ?? 1000,
    state: state as PhasePreset | undefined,
    util: nullableNumber(o["util"], `${where}.util`, problems, 0, 100),
    powerW: nullableNumber(o["powerW"], `${where}.powerW`, problems, 0, 5000),
    memUsedMiB: nullableNumber(o["memUsedMiB"], `${where}.memUsedMiB`, problems, 0, 1e7),
    smActive: nullableNumber(o["smActive"], `${where}.smActive`, problems, 0, 1),
    media: nullableNumber(o["media"], `${where}.media`, problems, 0, 100),
    processes: procs as ScenarioPhase["processes"],
    error: optString(o["error"], `${where}.error`, problems),
    noise: optNumber(o["noise"], `${where}.noise`, problems, 0, 0.5),
    absent: o["absent"] === true ? true : undefined,
  };
}

/** A stable, well-formed GPU UUID derived from the host name and GPU index. */
export function fakeUuid(seed: string, index: number): string {
  let h1 = 0x811c9dc5,
    h2 = 0x12345678;
  const s = `${seed}#${index}`;
  for (let i = 0; i < s.length; i++) {
    h1 = Math.imul(h1 ^ s.charCodeAt(i), 16777619) >>> 0;
    h2 = Math.imul(h2 ^ s.charCodeAt(i), 2246822519) >>> 0;
  }
  const hex = (h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0")).repeat(2);
  return `GPU-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

export type { GpuState };

function asObject(v: unknown, where: string, problems: string[]): Record<string, unknown> | undefined {
  if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  problems.push(`${where} must be an object`);
  return undefined;
}
function optString(v: unknown, where: string, problems: string[]): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === "string") return v;
  problems.push(`${where} must be a string`);
  return undefined;
}
function optNumber(v: unknown, where: string, problems: string[], min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v === "number" && Number.isFinite(v) && v >= min && v <= max) return v;
  problems.push(`${where} must be a number from ${min} to ${max}`);
  return undefined;
}
function nullableNumber(
  v: unknown,
  where: string,
  problems: string[],
  min: number,
  max: number,
): number | null | undefined {
  if (v === null) return null;
  return optNumber(v, where, problems, min, max);
}
function durationOf(text: string, where: string, problems: string[]): number | undefined {
  try {
    return parseDuration(text);
  } catch (err) {
    problems.push(`${where}: ${errorMessage(err)}`);
    return undefined;
  }
}
