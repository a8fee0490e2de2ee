/**
 * Pure parsers of the other host files the owners of processes come from: `/proc/PID/stat`
 * (start time, and pid 2's name for the host-PID check), `/proc/PID/status` (real uid),
 * `/proc/PID/comm` and `/etc/passwd`. Each takes text and returns undefined for what it
 * cannot read; none throws.
 */
import { UNSAFE_TEXT_RE } from "../../common/text-safety.js";

export interface ProcStat {
  /** The command, as the kernel keeps it (at most 15 bytes; anything the process set via prctl). */
  comm: string;
  ppid: number;
  /**
   * Field 22, the start time in clock ticks after boot, kept as text: together with the pid
   * it names one process for the life of the host, so a reused pid never matches.
   */
  startTime: string;
}

/**
 * `/proc/PID/stat`: `pid (comm) state ppid …`. The command may hold spaces and `)`, so the
 * fields after it are counted from the last `)`.
 */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  if (!/^\d+ $/.test(text.slice(0, open))) return undefined;
  const rest = text
    .slice(close + 2)
    .trimEnd()
    .split(" ");
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const ppid = rest[1];
  const startTime = rest[19];
  if (ppid === undefined || startTime === undefined || !/^\d+$/.test(ppid) || !/^\d+$/.test(startTime))
    return undefined;
  return { comm: text.slice(open + 1, close), ppid: Number(ppid), startTime };
}

/** The real uid from `/proc/PID/status` (`Uid:	real	effective	saved	fs`). */
export function parseStatusUid(text: string): number | undefined {
  const m = /^Uid:\s+(\d{1,10})\s/m.exec(text);
  if (!m) return undefined;
  const uid = Number(m[1]);
  return Number.isSafeInteger(uid) ? uid : undefined;
}

/** `/proc/PID/comm` without its newline; undefined when empty. */
export function parseComm(text: string): string | undefined {
  const comm = text.endsWith("\n") ? text.slice(0, -1) : text;
  return comm === "" ? undefined : safeName(comm);
}

/**
 * uid → name from `/etc/passwd`. The first entry of a uid wins, as `getpwuid` does; comments
 * and NIS compat lines (`+…`, `-…`) are skipped, and so are lines without a numeric uid.
 */
export function parsePasswd(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#") || line.startsWith("+") || line.startsWith("-")) continue;
    const fields = line.split(":");
    const name = fields[0];
    const uid = fields[2];
    if (!name || uid === undefined || !/^\d{1,10}$/.test(uid)) continue;
    const n = Number(uid);
    if (!names.has(n)) names.set(n, safeName(name));
  }
  return names;
}

const UNSAFE_GLOBAL = new RegExp(UNSAFE_TEXT_RE.source, "gu");

/**
 * A name as the agent may pass it on: characters that could break a line of a log, an
 * exposition or line protocol, or reorder text (common/text-safety.ts) become `?`.
 */
export function safeName(value: string): string {
  return UNSAFE_TEXT_RE.test(value) ? value.replace(UNSAFE_GLOBAL, "?") : value;
}
