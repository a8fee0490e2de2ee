/**
 * The table `trueidle agent --once` prints: this host's GPUs as trueidle sees them and who
 * holds each, then the lines that say in full what the table shortens (holders, owners,
 * errors) and where the owners came from.
 *
 * The table stays within ONCE_TABLE_WIDTH columns: the HELD BY column, last, gets what the
 * others leave and its text is cut with an ellipsis (the "+N" of further owners kept).
 */
import { TOP_HOLDERS, type ClassifiedSample } from "../agent/pipeline.js";
import type { OwnerStats } from "../agent/owners/owner-annotator.js";
import type { GpuOwner, GpuProcess, GpuReading, Thresholds } from "../common/types.js";
import { isMigWithoutUtil } from "../agent/model/idle-model.js";

export const ONCE_TABLE_WIDTH = 120;
/** HELD BY is never narrower than this, even beside a very long model name. */
const MIN_HELD_BY_WIDTH = 10;
/** Longer model names are cut (the vendor's "NVIDIA " is dropped first). */
const MAX_MODEL_WIDTH = 20;
/** What HELD BY says when no owner is known. */
export const NO_OWNER = "—";
const GAP = "  ";

const GiB = 1024 ** 3;

/** The owner sources as `--once` left them, for the lines that say where owners came from. */
export interface OnceOwners {
  stats: OwnerStats;
  /** How long `--once` waited for the sources' first answers. */
  waitedMs: number;
}

/**
 * A GPU as the table names it: its index, and for a MIG instance its board's index and its
 * profile; a board in MIG mode's own row is its index and "board".
 */
function gpuName(r: GpuReading): string {
  if (r.migBoard) return `${r.index} board`;
  return r.migProfile === undefined ? String(r.index) : `${r.index} ${r.migProfile}`;
}

/** What a board row shows: the board's power and whether it reads, no GPU's figures. */
const BOARD_STATE = "mig board";

export function renderOnceTable(
  samples: readonly ClassifiedSample[],
  t: Thresholds,
  source?: string,
  owners?: OnceOwners,
): string {
  const header = [
    "GPU",
    "MODEL",
    "REPORTED",
    "SM",
    "REAL (SOURCE)",
    "STATE",
    "POWER/FLOOR",
    "MEMORY",
    "PROCS",
    "HELD BY",
  ];
  const rows = samples.map((s) => {
    const r = s.reading;
    const c = s.classification;
    const power =
      r.powerW === undefined ? "n/a" : `${fmt(r.powerW, 0)}/${c.floorW === undefined ? "?" : fmt(c.floorW, 0)} W`;
    if (r.migBoard) {
      const state = c.state === "unavailable" ? c.state : BOARD_STATE;
      return [gpuName(r), modelText(r.model), "-", "-", "-", state, power, "-", "-"];
    }
    const util =
      r.util !== undefined
        ? `${fmt(r.util, 0)}% ${c.reportedIdle ? "idle" : "busy"}`
        : isMigWithoutUtil(r) && c.state !== "unavailable"
          ? c.reportedIdle
            ? "idle (free)"
            : "busy (held)"
          : "n/a";
    const real = c.state === "unavailable" ? "-" : `${fmt(c.real * 100, 0)}% ${c.source}`;
    const sm = r.smActive === undefined ? "n/a" : `${fmt(r.smActive * 100, 0)}%`;
    const mem =
      r.memUsedBytes === undefined
        ? "n/a"
        : `${fmt(r.memUsedBytes / GiB, 1)}${r.memTotalBytes === undefined ? "" : `/${fmt(r.memTotalBytes / GiB, 0)}`} GiB`;
    const procs = r.processes === undefined ? "?" : String(r.processes.length);
    return [gpuName(r), modelText(r.model), util, sm, real, c.state, power, mem, procs];
  });
  const widths = header.slice(0, -1).map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const used = widths.reduce((a, b) => a + b, 0) + GAP.length * widths.length;
  const heldByWidth = Math.max(MIN_HELD_BY_WIDTH, ONCE_TABLE_WIDTH - used);
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join(GAP)
      .trimEnd();

  const out = source === undefined ? [] : [`Source: ${source}`, ""];
  out.push(line(header), ...rows.map((row, i) => line([...row, heldByCell(samples[i]!, heldByWidth)])));
  if (rows.length === 0) out.push("(no GPUs found)");
  const notes = [...errorLines(samples), ...allocationLines(samples), ...holderLines(samples)];
  if (notes.length > 0) out.push("", ...notes);
  const gpus = samples.filter((s) => !s.reading.migBoard);
  const counts = new Map<string, number>();
  for (const s of gpus) counts.set(s.classification.state, (counts.get(s.classification.state) ?? 0) + 1);
  out.push("");
  out.push(`${gpus.length} GPU(s): ${[...counts].map(([k, n]) => `${n} ${k}`).join(", ") || "none"}.`);
  const mig = samples.filter((x) => x.reading.parentUuid !== undefined);
  if (mig.length > 0 || gpus.length < samples.length) {
    const boards = new Set([
      ...mig.map((x) => x.reading.parentUuid),
      ...samples.filter((x) => x.reading.migBoard).map((x) => x.reading.uuid),
    ]).size;
    out.push(
      `MIG: ${mig.length} instance(s) of ${boards} board(s), each a GPU of its own (GPU column: board index and profile).`,
      "An instance has no utilization.gpu: REPORTED shows what the usual tools count, busy while it is held and idle",
      "while free. Its power is the board's, not shared out: the board's own row (\"board\") has it, and no GPU seconds.",
    );
  }
  if (owners !== undefined) out.push(...ownerSourceLines(samples, owners));
  out.push(
    `Thresholds: reported busy at utilization.gpu >= ${t.utilBusyPercent}%, active at real >= ${t.realActiveRatio}, ` +
      `held above ${Math.round(t.heldMemoryBytes / 1024 / 1024)} MiB over the idle baseline.`,
  );
  out.push("A single sample: floors and memory baselines sharpen as the agent runs.");
  return `${out.join("\n")}\n`;
}

/**
 * Who holds a GPU, in a few words: its first allocation (a pod or a job) or else its
 * largest process, with "+N" for the other owners the lines below the table list; NO_OWNER
 * when none is known (a free GPU, or one held by memory with no process visible).
 */
export function heldByText(s: ClassifiedSample): { first: string; more: number } {
  const allocations = s.reading.allocations ?? [];
  const procs = byMemory(s.reading.processes ?? []);
  const total = allocations.length + procs.length;
  const first =
    allocations[0] !== undefined
      ? ownerShort(allocations[0])
      : procs[0] !== undefined
        ? processShort(procs[0])
        : NO_OWNER;
  return { first, more: Math.max(0, total - 1) };
}

function heldByCell(s: ClassifiedSample, width: number): string {
  const { first, more } = heldByText(s);
  const suffix = more > 0 ? ` +${more}` : "";
  return ellipsize(first, width - suffix.length) + suffix;
}

/**
 * A pod as namespace/name, a job with its user, a process as its user, command and pid
 * (the user first, so that it survives the ellipsis; the pid is in the holders line too).
 */
export function ownerShort(o: GpuOwner): string {
  if (o.via === "pod_resources") return `pod ${[o.namespace, o.pod ?? "?"].filter((x) => x !== undefined).join("/")}`;
  if (o.via === "job_mapping") return `job ${o.job ?? "?"}${o.user === undefined ? "" : ` (${o.user})`}`;
  return `${o.user === undefined ? "" : `${o.user}: `}${o.command ?? "?"} (pid ${o.pid ?? "?"})`;
}

/** A process as the driver lists it, with who runs it where that is known. */
function processShort(p: GpuProcess): string {
  return ownerShort({ via: "process", ...p.owner, pid: p.owner?.pid ?? p.pid, command: p.owner?.command ?? p.name });
}

function ellipsize(text: string, width: number): string {
  const chars = [...text];
  if (chars.length <= width) return text;
  return `${chars.slice(0, Math.max(0, width - 1)).join("")}…`;
}

function modelText(model: string): string {
  return ellipsize(model.replace(/^NVIDIA\s+/, "") || "?", MAX_MODEL_WIDTH);
}

function byMemory(procs: readonly GpuProcess[]): GpuProcess[] {
  return [...procs].sort((a, b) => (b.usedMemoryBytes ?? -1) - (a.usedMemoryBytes ?? -1));
}

/** Why each unavailable GPU gave no reading (too long for the STATE column). */
function errorLines(samples: readonly ClassifiedSample[]): string[] {
  return samples
    .filter((s) => s.classification.state === "unavailable" && s.reading.error)
    .map((s) => `GPU ${gpuName(s.reading)} unavailable: ${s.reading.error}`);
}

/** Each allocated GPU's pods and jobs, in full. */
function allocationLines(samples: readonly ClassifiedSample[]): string[] {
  const lines: string[] = [];
  for (const s of samples) {
    const a = s.reading.allocations;
    if (a && a.length > 0) lines.push(`GPU ${gpuName(s.reading)} allocated to: ${a.map(ownerFull).join("; ")}`);
  }
  return lines;
}

function ownerFull(o: GpuOwner): string {
  if (o.via === "pod_resources") return ownerShort(o) + (o.container === undefined ? "" : `, container ${o.container}`);
  return `job ${o.job ?? "?"}${o.user === undefined ? "" : `, user ${o.user}`}`;
}

/**
 * The largest holders of each GPU, with their SM utilization where the source sees it
 * (NVML) and who runs them where the host's /proc says: a held GPU whose holders show SM 0%
 * is held idle, even beside a busy process.
 */
function holderLines(samples: readonly ClassifiedSample[]): string[] {
  const lines: string[] = [];
  for (const s of samples) {
    const procs = s.reading.processes;
    if (!procs || procs.length === 0) continue;
    const top = byMemory(procs).slice(0, TOP_HOLDERS);
    const more = procs.length > top.length ? `; ${procs.length - top.length} more` : "";
    lines.push(`GPU ${gpuName(s.reading)} holders: ${top.map(holderText).join("; ")}${more}`);
  }
  return lines;
}

function holderText(p: GpuProcess): string {
  const mem = p.usedMemoryBytes === undefined ? "memory n/a" : `${fmt(p.usedMemoryBytes / GiB, 1)} GiB`;
  return `${p.name} (${[`pid ${p.pid}`, ...processOwnerParts(p.owner)].join(", ")}) ${mem}${p.smUtil === undefined ? "" : `, SM ${fmt(p.smUtil, 0)}%`}`;
}

/** What the host's /proc says of a process: its user, Slurm job and step, pod uid, container. */
function processOwnerParts(o: GpuOwner | undefined): string[] {
  if (o === undefined) return [];
  const parts: string[] = [];
  if (o.user !== undefined) parts.push(`user ${o.user}`);
  if (o.job !== undefined) parts.push(`job ${o.job}${o.step === undefined ? "" : `.${o.step}`}`);
  if (o.podUid !== undefined) parts.push(`pod uid ${o.podUid}`);
  if (o.containerId !== undefined) parts.push(`${o.runtime ?? "container"} ${o.containerId.slice(0, 12)}`);
  return parts;
}

/** Where the owners came from, one line per kind, saying plainly when a source is off or gave nothing. */
function ownerSourceLines(samples: readonly ClassifiedSample[], owners: OnceOwners): string[] {
  const waited = `${fmt(owners.waitedMs / 1000, owners.waitedMs % 1000 === 0 ? 0 : 1)} s`;
  const allocatedVia = (via: GpuOwner["via"]): number =>
    samples.filter((s) => s.reading.allocations?.some((o) => o.via === via)).length;
  const lines: string[] = [];
  const pods = owners.stats.allocations.find((a) => a.name === "pod_resources");
  if (pods === undefined) lines.push("Owners (pods): off.");
  else if (pods.ready)
    lines.push(
      `Owners (pods): the kubelet's pod-resources API at ${pods.where} answered; ${allocatedVia("pod_resources")} GPU(s) allocated to pods.`,
    );
  else if (pods.stats.failures["socket_missing"] !== undefined)
    lines.push(`Owners (pods): no kubelet pod-resources socket at ${pods.where}.`);
  else
    lines.push(
      `Owners (pods): the kubelet's pod-resources API at ${pods.where} ${noAnswer(pods.stats.failures, waited)}.`,
    );
  const jobs = owners.stats.allocations.find((a) => a.name === "job_mapping");
  if (jobs === undefined) lines.push("Owners (jobs): off (no --job-mapping-dir).");
  else if (jobs.ready)
    lines.push(
      `Owners (jobs): the job mapping directory ${jobs.where}; ${allocatedVia("job_mapping")} GPU(s) allocated to jobs.`,
    );
  else lines.push(`Owners (jobs): the job mapping directory ${jobs.where} ${noAnswer(jobs.stats.failures, waited)}.`);
  lines.push(`Owners (processes): ${processOwnersText(samples, owners.stats.processes)}`);
  return lines;
}

function noAnswer(failures: Readonly<Record<string, number>>, waited: string): string {
  const reasons = Object.keys(failures).filter((k) => !k.startsWith("allocatable_"));
  return reasons.length > 0 ? `gave no answer (${reasons.join(", ")})` : `did not answer within ${waited}`;
}

function processOwnersText(samples: readonly ClassifiedSample[], p: OwnerStats["processes"]): string {
  // Process owners are off only for the simulator, whose pids name no host process.
  if (p === undefined) return "not looked up: the simulator's processes are made up.";
  const procs = samples.flatMap((s) => s.reading.processes ?? []);
  if (procs.length === 0) return "no processes on the GPUs.";
  const proc = `${p.hostRoot.replace(/\/+$/, "")}/proc`;
  const view = p.hostPids;
  if (view === undefined) return `not looked up in time (${proc}).`;
  if (!view.visible) {
    return view.reason === "no_proc"
      ? `${proc} does not exist, so GPU processes are not attributed (mount the host's /proc under --host-root).`
      : `${proc} does not show the host's processes, so GPU processes are not attributed (run with the host's PID namespace, or point --host-root at the host's root).`;
  }
  return `from ${proc}; ${procs.filter((x) => x.owner !== undefined).length} of ${procs.length} GPU process(es) attributed.`;
}

function fmt(x: number, digits: number): string {
  return x.toFixed(digits);
}
