/**
 * One GPU's file in a batch system's job mapping directory, parsed. Pure: fed a name or
 * bytes, no I/O (job-mapping.ts reads the directory).
 *
 * The format is the one two tools already share, so a site's existing prolog/epilog works
 * unchanged:
 * - dcgm-exporter's HPC job mapping (`--hpc-job-mapping-dir`; NVIDIA/dcgm-exporter
 *   internal/pkg/transformation/hpc.go): a file per GPU named by its index (`0`, `1`, …),
 *   each line one job id.
 * - Princeton's jobstats (PrincetonUniversity/jobstats slurm/prolog.d/gpustats_helper.sh,
 *   docs/setup/gpu_node_scripts.md): the Slurm prolog writes `$SLURM_JOB_ID $SLURM_JOB_UID`
 *   to a file named by the GPU's ordinal, and another named by its uuid (`GPU-…`, or `MIG-…`
 *   for a MIG instance); the epilog removes both.
 * So: each non-empty line is a job id, optionally followed by whitespace and the job's
 * user, as a uid (`262563`) or a name. An empty or missing file means no job.
 */
import { isGpuUuid } from "./device-ids.js";

/** What names a GPU's file: its index, or its uuid. Anything else is not a mapping file. */
export type MappingFileName = { index: number; uuid?: undefined } | { uuid: string; index?: undefined };

export function mappingFileName(name: string): MappingFileName | undefined {
  if (/^\d{1,4}$/.test(name)) return { index: Number(name) };
  if (isGpuUuid(name)) return { uuid: name };
  return undefined;
}

export interface MappedJob {
  job: string;
  /** The uid as written, when the line gave one in digits. */
  uid?: number | undefined;
  /** A user name, when the line gave one instead of a uid. */
  userName?: string | undefined;
}

/** Why a whole file is not used. */
export type MappingFileProblem = "too_large" | "binary";

export interface ParsedMappingFile {
  jobs: MappedJob[];
  /** Set when the file is not used at all. */
  problem?: MappingFileProblem | undefined;
  /** Lines that name no usable job (too long, odd characters), each left out. */
  badLines: number;
}

/** Longest job id accepted (Slurm ids are digits, with `_N` for an array task or `+N` for a het component). */
export const MAX_JOB_ID_LENGTH = 128;
const JOB_RE = /^[\p{L}\p{N}._:+-]+$/u;
const UID_RE = /^\d{1,10}$/;
/** A POSIX-style login name (not all digits: digits are a uid); a trailing `$` as Samba machine accounts have. */
const USER_NAME_RE = /^(?!\d+$)[A-Za-z0-9._][A-Za-z0-9._-]{0,63}\$?$/;
const MAX_UID = 4_294_967_294;
// eslint-disable-next-line no-control-regex
const BINARY_RE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\ufffd]/;
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The jobs a file lists, each once, in file order. `maxBytes` bounds what is read: a longer
 * file is `too_large`; bytes that are not UTF-8 text (a NUL, control characters) make it
 * `binary`. Either way no job is taken from it.
 */
export function parseMappingFile(bytes: Uint8Array, maxBytes: number): ParsedMappingFile {
  if (bytes.length > maxBytes) return { jobs: [], problem: "too_large", badLines: 0 };
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return { jobs: [], problem: "binary", badLines: 0 };
  }
  if (BINARY_RE.test(text)) return { jobs: [], problem: "binary", badLines: 0 };
  const jobs: MappedJob[] = [];
  const byId = new Map<string, MappedJob>();
  let badLines = 0;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [job, who] = line.split(/\s+/) as [string, string | undefined];
    if (job.length > MAX_JOB_ID_LENGTH || !JOB_RE.test(job)) {
      badLines++;
      continue;
    }
    const entry: MappedJob = { job };
    if (who !== undefined && UID_RE.test(who) && Number(who) <= MAX_UID) entry.uid = Number(who);
    else if (who !== undefined && USER_NAME_RE.test(who)) entry.userName = who;
    const prev = byId.get(job);
    if (prev === undefined) {
      byId.set(job, entry);
      jobs.push(entry);
    } else if (prev.uid === undefined && prev.userName === undefined) {
      prev.uid = entry.uid;
      prev.userName = entry.userName;
    }
  }
  return { jobs, badLines };
}
