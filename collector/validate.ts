/**
 * Validation of what agents send. Pure: no I/O, no clock (the caller passes `nowMs`).
 *
 * A bad Hello ends the stream (the caller answers INVALID_ARGUMENT with the message, which
 * names the field). A bad window is refused on its own with a machine-readable reason and
 * the field, e.g. `windows[3].power_mean_w`; the rest of its batch is still accepted.
 */
import { MAX_LABELS, labelKeyProblem, labelValueProblem } from "../common/labels.js";
import { OWNER_LABELS } from "../common/owner-fields.js";
import { UNSAFE_TEXT_RE, quoteText, unsafeTextProblem } from "../common/text-safety.js";
import {
  MAX_ERROR_LENGTH,
  MAX_HOLDER_NAME_LENGTH,
  MAX_HOLDERS,
  MAX_MEMORY_BYTES,
  MAX_OWNER_FIELD_LENGTH,
  MAX_OWNERS,
  MAX_POWER_W,
  MAX_WINDOW_MS,
  MIN_WINDOW_MS,
} from "../common/wire-limits.js";
import type { GpuWindow, Hello, LastReading, Owner } from "../gen/trueidle/v1/ingest_pb.js";
import { COLLECTOR_SETTINGS } from "./settings.js";

/** Every reason a window can be refused for; the label values of trueidle_windows_rejected_total. */
export const REJECTION_REASONS = [
  "bad_uuid",
  "bad_string",
  "bad_number",
  "bad_enum",
  "missing_field",
  "bad_duration",
  "exceeds_duration",
  "inconsistent",
  "too_old",
  "in_future",
  "too_large",
  "too_many_gpus",
  "batch_too_large",
  "series_limit",
  "overlap",
] as const;
export type RejectionReason = (typeof REJECTION_REASONS)[number];

export interface WindowRejection {
  /** Index of the window within its batch. */
  index: number;
  reason: RejectionReason;
  /** The offending field, e.g. `windows[3].power_mean_w`. */
  field: string;
}

export interface WindowLimits {
  /** How far a window may start after the collector's clock (agent clock skew). */
  maxFutureMs: number;
  /** How old a window's start may be. */
  maxAgeMs: number;
  /** Windows in one batch; a larger batch ends the stream. */
  maxWindowsPerBatch: number;
  /** Distinct GPUs one host may report; windows of further GPUs are refused. */
  maxGpusPerHost: number;
}

export const DEFAULT_WINDOW_LIMITS: Readonly<WindowLimits> = Object.freeze({
  maxFutureMs: COLLECTOR_SETTINGS.maxWindowFutureMs.default,
  maxAgeMs: COLLECTOR_SETTINGS.maxWindowAgeMs.default,
  maxWindowsPerBatch: COLLECTOR_SETTINGS.maxWindowsPerBatch.default,
  maxGpusPerHost: COLLECTOR_SETTINGS.maxGpusPerHost.default,
});

/* Bounds of what a real GPU can report; power and memory are in common/wire-limits.ts. */
export { MAX_MEMORY_BYTES, MAX_POWER_W };
/** Processes on one GPU: each holds a CUDA context in GPU memory, so 64 Ki is never reached. */
export const MAX_PROCESSES = 65_536;
/** Linux PID_MAX_LIMIT (2^22): no process id is larger. */
export const MAX_PID = 4_194_304;
/** Seconds since the GPU was last active: ten years is longer than a GPU stays in service. */
export const MAX_IDLE_STREAK_S = 10 * 365 * 86_400;

const MAX_UUID_LENGTH = 128;
/** A MIG profile as NVIDIA names them ("1g.10gb", "1g.10gb+me", "1c.3g.40gb"), at most 48 characters. */
const MIG_PROFILE_RE = /^[0-9A-Za-z][0-9A-Za-z.+_-]{0,47}$/;
const MAX_MODEL_LENGTH = 256;
const MAX_DRIVER_LENGTH = 64;
const MAX_HOSTNAME_LENGTH = 255;
const MAX_MACHINE_ID_LENGTH = 128;
const MAX_AGENT_VERSION_LENGTH = 64;
const MAX_SOURCE_LENGTH = 32;
const MAX_GPU_INDEX = 65_535;
const MAX_UTIL_PERCENT = 100;
/** Time sums may exceed the window by this factor: sample ticks jitter around its edges. */
const DURATION_SLACK = 1.05;
/** Sum of state seconds may differ from observed seconds by this much (seconds or fraction). */
const SUM_TOLERANCE_S = 0.01;
const SUM_TOLERANCE_FRACTION = 0.01;

/** The validated content of a Hello. */
export interface AgentHello {
  agentVersion: string;
  source: string;
  hostname: string;
  machineId: string;
  labels: Readonly<Record<string, string>>;
  windowMs: number;
}

export type HelloResult = { ok: true; hello: AgentHello } | { ok: false; message: string };

function stringProblem(field: string, value: string, max: number, required: boolean): string | undefined {
  if (required && value.length === 0) return `${field} is empty`;
  if (value.length > max) return `${field} is longer than ${max} characters`;
  // Control, bidi and line-separator characters (common/text-safety.ts).
  const unsafe = unsafeTextProblem(value);
  if (unsafe !== undefined) return `${field} ${unsafe}`;
  return undefined;
}

/** Checks a Hello; on failure the message names the field, for an INVALID_ARGUMENT status. */
export function validateHello(hello: Hello): HelloResult {
  const host = hello.host;
  if (!host) return { ok: false, message: "hello.host is missing" };
  const problem =
    stringProblem("hello.host.hostname", host.hostname, MAX_HOSTNAME_LENGTH, true) ??
    stringProblem("hello.host.machine_id", host.machineId, MAX_MACHINE_ID_LENGTH, false) ??
    stringProblem("hello.agent_version", hello.agentVersion, MAX_AGENT_VERSION_LENGTH, false) ??
    stringProblem("hello.source", hello.source, MAX_SOURCE_LENGTH, false) ??
    labelsProblem(host.labels) ??
    (hello.windowMs < MIN_WINDOW_MS || hello.windowMs > MAX_WINDOW_MS
      ? `hello.window_ms is ${hello.windowMs}; it must be between ${MIN_WINDOW_MS} and ${MAX_WINDOW_MS}`
      : undefined);
  if (problem) return { ok: false, message: problem };
  return {
    ok: true,
    hello: {
      agentVersion: hello.agentVersion,
      source: hello.source,
      hostname: host.hostname,
      machineId: host.machineId,
      labels: Object.freeze({ ...host.labels }),
      windowMs: hello.windowMs,
    },
  };
}

function labelsProblem(labels: Record<string, string>): string | undefined {
  const keys = Object.keys(labels);
  if (keys.length > MAX_LABELS)
    return `hello.host.labels holds ${keys.length} labels; at most ${MAX_LABELS} are allowed`;
  for (const key of keys) {
    const p = labelKeyProblem(key) ?? labelValueProblem(key, labels[key] ?? "");
    if (p) return `hello.host.labels[${quoteText(key.slice(0, 64))}]: ${p}`;
  }
  return undefined;
}

const badNumber = (n: number): boolean => !Number.isFinite(n) || n < 0;
const badWatts = (n: number | undefined): boolean => n !== undefined && (badNumber(n) || n > MAX_POWER_W);
const MAX_MEMORY_BIGINT = BigInt(MAX_MEMORY_BYTES);
const badBytes = (n: bigint | undefined): boolean => n !== undefined && n > MAX_MEMORY_BIGINT;

function reject(index: number, reason: RejectionReason, field: string): WindowRejection {
  return { index, reason, field: `windows[${index}].${field}` };
}

/**
 * The first problem of one window, or undefined when it is acceptable. This runs for every
 * window the collector receives, so it allocates nothing on the accepting path.
 */
export function validateWindow(
  w: GpuWindow,
  index: number,
  limits: Readonly<WindowLimits>,
  nowMs: number,
): WindowRejection | undefined {
  if (w.uuid.length === 0 || w.uuid.length > MAX_UUID_LENGTH || UNSAFE_TEXT_RE.test(w.uuid))
    return reject(index, "bad_uuid", "uuid");
  if (stringProblem("model", w.model, MAX_MODEL_LENGTH, false)) return reject(index, "bad_string", "model");
  if (stringProblem("driver_version", w.driverVersion, MAX_DRIVER_LENGTH, false))
    return reject(index, "bad_string", "driver_version");
  if (w.index > MAX_GPU_INDEX) return reject(index, "bad_number", "index");
  if (w.migBoard) {
    // A board's row is not a MIG instance: an instance's board and profile contradict the flag.
    if (w.parentUuid !== "" || w.migProfile !== "") return reject(index, "inconsistent", "mig_board");
  } else if (w.parentUuid !== "" || w.migProfile !== "") {
    // A MIG instance: both set, its board's uuid not its own, a profile as NVIDIA writes them.
    if (w.parentUuid.length > MAX_UUID_LENGTH || UNSAFE_TEXT_RE.test(w.parentUuid) || w.parentUuid === w.uuid)
      return reject(index, "bad_uuid", "parent_uuid");
    if (w.parentUuid === "") return reject(index, "inconsistent", "parent_uuid");
    if (!MIG_PROFILE_RE.test(w.migProfile)) return reject(index, "bad_string", "mig_profile");
  }

  if (w.durationMs < MIN_WINDOW_MS || w.durationMs > MAX_WINDOW_MS) return reject(index, "bad_duration", "duration_ms");
  // Unix milliseconds are exact in a double for the next 280,000 years.
  const startMs = Number(w.startMs);
  if (startMs > Math.floor(nowMs + limits.maxFutureMs)) return reject(index, "in_future", "start_ms");
  if (startMs < Math.ceil(nowMs - limits.maxAgeMs)) return reject(index, "too_old", "start_ms");

  const maxS = (w.durationMs / 1000) * DURATION_SLACK;
  const observed = w.observedS;
  if (badNumber(observed)) return reject(index, "bad_number", "observed_s");
  if (observed > maxS) return reject(index, "exceeds_duration", "observed_s");
  const tolerance = Math.max(SUM_TOLERANCE_S, observed * SUM_TOLERANCE_FRACTION);
  // Sums bounded by observed seconds (each sample adds at most dt).
  const partMax = observed + tolerance;
  if (w.migBoard) {
    // Its seconds are not a GPU's: they need not add up to observed_s (boardRowProblem).
    const boardProblem = boardRowProblem(w, maxS, partMax);
    if (boardProblem) return reject(index, boardProblem[0], boardProblem[1]);
  } else {
    const stateProblem =
      secondsProblem(w.freeIdleS, "free_idle_s", maxS) ??
      secondsProblem(w.heldIdleS, "held_idle_s", maxS) ??
      secondsProblem(w.busyPhantomS, "busy_phantom_s", maxS) ??
      secondsProblem(w.activeS, "active_s", maxS) ??
      secondsProblem(w.unavailableS, "unavailable_s", maxS);
    if (stateProblem) return reject(index, stateProblem[0], stateProblem[1]);
    const stateSum = w.freeIdleS + w.heldIdleS + w.busyPhantomS + w.activeS + w.unavailableS;
    if (Math.abs(stateSum - observed) > tolerance) return reject(index, "inconsistent", "observed_s");
    const partProblem =
      partProblemOf(w.reportedIdleS, "reported_idle_s", maxS, partMax) ??
      partProblemOf(w.reportedBusyS, "reported_busy_s", maxS, partMax) ??
      partProblemOf(w.realBusyS, "real_busy_s", maxS, partMax);
    if (partProblem) return reject(index, partProblem[0], partProblem[1]);
  }
  if (badWatts(w.powerMeanW)) return reject(index, "bad_number", "power_mean_w");
  if (badWatts(w.powerMaxW)) return reject(index, "bad_number", "power_max_w");
  if (badWatts(w.powerFloorW)) return reject(index, "bad_number", "power_floor_w");
  if (badWatts(w.powerLimitW)) return reject(index, "bad_number", "power_limit_w");
  if (badBytes(w.memUsedMaxBytes)) return reject(index, "bad_number", "mem_used_max_bytes");
  if (badBytes(w.memTotalBytes)) return reject(index, "bad_number", "mem_total_bytes");
  if (w.processesMax > MAX_PROCESSES) return reject(index, "bad_number", "processes_max");

  if (w.topHolders.length > MAX_HOLDERS) return reject(index, "too_large", "top_holders");
  for (let i = 0; i < w.topHolders.length; i++) {
    const h = w.topHolders[i];
    if (!h) continue;
    if (h.pid > MAX_PID) return reject(index, "bad_number", `top_holders[${i}].pid`);
    // Length only: a process may name itself anything, and holder names are not stored.
    if (h.name.length > MAX_HOLDER_NAME_LENGTH) return reject(index, "bad_string", `top_holders[${i}].name`);
    if (badBytes(h.usedMemoryBytes)) return reject(index, "bad_number", `top_holders[${i}].used_memory_bytes`);
    if (h.smUtilRatio !== undefined && (badNumber(h.smUtilRatio) || h.smUtilRatio > 1)) {
      return reject(index, "bad_number", `top_holders[${i}].sm_util_ratio`);
    }
  }

  const heldByProblem =
    partProblemOf(w.heldByProcessS, "held_by_process_s", maxS, partMax) ??
    partProblemOf(w.heldByMemoryS, "held_by_memory_s", maxS, partMax) ??
    partProblemOf(w.heldByAllocationS, "held_by_allocation_s", maxS, partMax);
  if (heldByProblem) return reject(index, heldByProblem[0], heldByProblem[1]);
  if (w.owners.length > MAX_OWNERS) return reject(index, "too_large", "owners");
  for (let i = 0; i < w.owners.length; i++) {
    const o = w.owners[i];
    if (!o) continue;
    const problem = ownerProblem(o, maxS, partMax);
    if (problem) return reject(index, problem[0], `owners[${i}].${problem[1]}`);
  }

  if (!w.last) return reject(index, "missing_field", "last");
  const lastProblem = lastReadingProblem(w.last, startMs, w.durationMs, w.processesMax);
  if (lastProblem) return reject(index, lastProblem[0], `last.${lastProblem[1]}`);
  return undefined;
}

/**
 * The first problem of a board's row (GpuWindow.mig_board) as [reason, field]: it carries
 * the seconds the board was sampled (observed_s) and, of those, the seconds it could not be
 * read (unavailable_s), and nothing of a GPU's — no state, reported, real or held-by
 * seconds, no holders, owners or processes — as its MIG instances are the GPUs. What both
 * carry (power, memory, the last reading) is checked as for a GPU by the caller.
 */
function boardRowProblem(w: GpuWindow, maxS: number, partMax: number): [RejectionReason, string] | undefined {
  const p =
    partProblemOf(w.unavailableS, "unavailable_s", maxS, partMax) ??
    zeroProblem(w.freeIdleS, "free_idle_s") ??
    zeroProblem(w.heldIdleS, "held_idle_s") ??
    zeroProblem(w.busyPhantomS, "busy_phantom_s") ??
    zeroProblem(w.activeS, "active_s") ??
    zeroProblem(w.reportedIdleS, "reported_idle_s") ??
    zeroProblem(w.reportedBusyS, "reported_busy_s") ??
    zeroProblem(w.realBusyS, "real_busy_s") ??
    zeroProblem(w.heldByProcessS, "held_by_process_s") ??
    zeroProblem(w.heldByMemoryS, "held_by_memory_s") ??
    zeroProblem(w.heldByAllocationS, "held_by_allocation_s");
  if (p) return p;
  if (w.processesMax !== 0) return ["inconsistent", "processes_max"];
  if (w.topHolders.length > 0) return ["inconsistent", "top_holders"];
  if (w.owners.length > 0) return ["inconsistent", "owners"];
  return undefined;
}

/** A seconds field that must be 0: a number that is not is inconsistent, anything else is not a number. */
function zeroProblem(v: number, name: string): [RejectionReason, string] | undefined {
  if (badNumber(v)) return ["bad_number", name];
  return v !== 0 ? ["inconsistent", name] : undefined;
}

/** Owner fields that carry text: names, ids and a command, each capped and free of unsafe characters. */
const OWNER_TEXT_FIELDS = [
  "namespace",
  "pod",
  "container",
  "podUid",
  "job",
  "step",
  "user",
  "runtime",
  "containerId",
  "command",
] as const;
const OWNER_FIELD_NAMES: Record<(typeof OWNER_TEXT_FIELDS)[number], string> = {
  namespace: "namespace",
  pod: "pod",
  container: "container",
  podUid: "pod_uid",
  job: "job",
  step: "step",
  user: "user",
  runtime: "runtime",
  containerId: "container_id",
  command: "command",
};
const KNOWN_OWNER_SOURCES: ReadonlySet<number> = new Set([1, 2, 3]);

/** The first problem of one owner of a window, as [reason, field]. */
function ownerProblem(o: Owner, maxS: number, partMax: number): [RejectionReason, string] | undefined {
  if (!KNOWN_OWNER_SOURCES.has(o.via)) return ["bad_enum", "via"];
  for (const f of OWNER_TEXT_FIELDS) {
    const v = o[f];
    if (v.length > MAX_OWNER_FIELD_LENGTH || UNSAFE_TEXT_RE.test(v)) return ["bad_string", OWNER_FIELD_NAMES[f]];
  }
  // The fields that may become InfluxDB tags: a trailing backslash cannot be stored in one.
  for (const f of OWNER_LABELS) if (o[f].endsWith("\\")) return ["bad_string", f];
  if (o.pid > MAX_PID) return ["bad_number", "pid"];
  const p =
    partProblemOf(o.observedS, "observed_s", maxS, partMax) ??
    secondsProblem(o.freeIdleS, "free_idle_s", maxS) ??
    secondsProblem(o.heldIdleS, "held_idle_s", maxS) ??
    secondsProblem(o.busyPhantomS, "busy_phantom_s", maxS) ??
    secondsProblem(o.activeS, "active_s", maxS) ??
    secondsProblem(o.unavailableS, "unavailable_s", maxS);
  if (p) return p;
  const tolerance = Math.max(SUM_TOLERANCE_S, o.observedS * SUM_TOLERANCE_FRACTION);
  const sum = o.freeIdleS + o.heldIdleS + o.busyPhantomS + o.activeS + o.unavailableS;
  if (Math.abs(sum - o.observedS) > tolerance) return ["inconsistent", "observed_s"];
  const ownerMax = o.observedS + tolerance;
  return (
    partProblemOf(o.reportedIdleS, "reported_idle_s", maxS, ownerMax) ??
    partProblemOf(o.reportedBusyS, "reported_busy_s", maxS, ownerMax) ??
    partProblemOf(o.realBusyS, "real_busy_s", maxS, ownerMax)
  );
}

function secondsProblem(v: number, name: string, maxS: number): [RejectionReason, string] | undefined {
  if (badNumber(v)) return ["bad_number", name];
  if (v > maxS) return ["exceeds_duration", name];
  return undefined;
}

function partProblemOf(v: number, name: string, maxS: number, partMax: number): [RejectionReason, string] | undefined {
  return secondsProblem(v, name, maxS) ?? (v > partMax ? ["inconsistent", name] : undefined);
}

/** Enum values a LastReading may carry (UNSPECIFIED is refused: the current state must be known). */
const KNOWN_STATES: ReadonlySet<number> = new Set([1, 2, 3, 4, 5]);
const KNOWN_SOURCES: ReadonlySet<number> = new Set([1, 2, 3, 4, 5]);

/**
 * The last reading is a sample of its window: taken within it (start inclusive, end
 * exclusive, as the agent assigns samples), with no more processes than the window's max.
 */
function lastReadingProblem(
  last: LastReading,
  startMs: number,
  durationMs: number,
  processesMax: number,
): [RejectionReason, string] | undefined {
  const timeMs = Number(last.timeMs);
  if (timeMs < startMs || timeMs >= startMs + durationMs) return ["inconsistent", "time_ms"];
  if (!KNOWN_STATES.has(last.state)) return ["bad_enum", "state"];
  if (!KNOWN_SOURCES.has(last.realSource)) return ["bad_enum", "real_source"];
  if (badNumber(last.real) || last.real > 1) return ["bad_number", "real"];
  if (last.utilPercent !== undefined && (badNumber(last.utilPercent) || last.utilPercent > MAX_UTIL_PERCENT)) {
    return ["bad_number", "util_percent"];
  }
  if (badWatts(last.powerW)) return ["bad_number", "power_w"];
  if (badBytes(last.memUsedBytes)) return ["bad_number", "mem_used_bytes"];
  if (last.processes > processesMax) return ["inconsistent", "processes"];
  if (badNumber(last.idleStreakS) || last.idleStreakS > MAX_IDLE_STREAK_S) return ["bad_number", "idle_streak_s"];
  if (last.error.length > MAX_ERROR_LENGTH) return ["bad_string", "error"];
  if (last.heldBy > 7) return ["bad_number", "held_by"];
  return undefined;
}
