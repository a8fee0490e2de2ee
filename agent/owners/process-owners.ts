/**
 * Who runs a GPU process, from the host's `/proc` and `/etc/passwd` under `--host-root`
 * (default `/`; a Kubernetes DaemonSet mounts the host at `/host`):
 *
 * - `/proc/PID/cgroup` → container runtime and id, Kubernetes pod uid, Slurm job and step
 *   (cgroup-path.ts);
 * - `/proc/PID/status` real uid → user name from `HOSTROOT/etc/passwd`, or the uid as text;
 * - `/proc/PID/comm` → the command.
 *
 * The agent asks for the few pids the driver lists on each GPU every `--process-interval`,
 * not every sample. Answers are cached per (pid, start time): the start time (field 22 of
 * `/proc/PID/stat`) is read on every call, so a reused pid is never given the old owner, and
 * a cache hit costs that one read. The cache is bounded (least recently used out first);
 * entries of pids gone are dropped when their stat is missing and by `retain`.
 *
 * Host PIDs. The driver names processes by their pid in the host's pid namespace. An agent
 * that sees another namespace under HOSTROOT/proc (a container without `hostPID` and without
 * the host's /proc mounted) would read some other process of the same number and name the
 * wrong owner, so it attributes nothing there. The rule: HOSTROOT/proc shows the host's pid
 * namespace exactly when its pid 2 is the kernel's `kthreadd` (parent 0). Only the initial pid
 * namespace holds kernel threads; in a container's namespace pid 2 is absent or an ordinary
 * process. The check is one small read, repeated every `reprobeMs`. While it fails, each
 * lookup is counted in `notVisible` and answered undefined, a WARN says once what to change,
 * and owners still come from the scheduler (pod-resources, job mapping), which needs no PIDs.
 * When pid 2 passes but none of the pids in three batches in a row exists, a WARN says once
 * that the driver and HOSTROOT/proc seem to disagree (a `/proc` mounted with `hidepid`, or a
 * `--host-root` that is not the host's).
 *
 * Every read is capped and nothing throws: a pid that vanishes between listing and reading
 * gives undefined and counts in `vanished`; unreadable and bad files count by file and
 * reason; each kind of problem is logged once at WARN.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../../common/log.js";
import type { GpuOwner } from "../../common/types.js";
import { parseProcCgroup, type CgroupOwner } from "./cgroup-path.js";
import { PasswdNames } from "./passwd-names.js";
import { parseComm, parseProcStat, parseStatusUid } from "./proc-parse.js";
import { readCapped, textOf, type ReadCapped } from "./read-capped.js";
import { AGENT_SETTINGS } from "../settings.js";

export const DEFAULT_HOST_ROOT: string = AGENT_SETTINGS.hostRoot.default;
export const DEFAULT_MAX_OWNER_ENTRIES = 4096;
/** A `/proc/PID/cgroup` is a few hundred bytes; one over 64 KiB is not the kernel's. */
export const DEFAULT_MAX_PROC_FILE_BYTES = 64 * 1024;
/** Room for about 50,000 users. */
export const DEFAULT_MAX_PASSWD_BYTES = 4 * 1024 * 1024;
export const DEFAULT_REPROBE_MS = 5 * 60_000;
/** Batches in a row where none of the listed pids exists before the agent says so. */
const ALL_VANISHED_BATCHES = 3;
const MAX_CONCURRENT_LOOKUPS = 16;

export interface ProcessOwnersOptions {
  /** The host's root as the agent sees it: `/`, or where a DaemonSet mounts it (`/host`). */
  hostRoot?: string | undefined;
  logger: Logger;
  /** Cached (pid, start time) owners at most. */
  maxEntries?: number | undefined;
  maxProcFileBytes?: number | undefined;
  maxPasswdBytes?: number | undefined;
  /** How long a host-PID check holds before it is made again. */
  reprobeMs?: number | undefined;
  /** Milliseconds clock, for tests. */
  now?: (() => number) | undefined;
}

/**
 * Counts since the start, for the agent to render. `unreadable` and `badInput` are keyed
 * `<file>_<reason>`: files `stat`, `cgroup`, `status`, `comm`, `passwd`, `pid` (a pid that is
 * not a positive integer); reasons an errno code (`eacces`, `eisdir`, …) for unreadable,
 * `too_large`, `binary`, `malformed` or `invalid` for bad input.
 */
export interface ProcessOwnerCounters {
  /** Calls of `ownerOf` (one per pid of `ownersOf`). */
  lookups: number;
  /** Lookups answered from the cache (same pid, same start time). */
  cacheHits: number;
  /** Lookups answered with an owner. */
  attributed: number;
  /** Lookups of a pid that was gone, or replaced, before its files were read. */
  vanished: number;
  /** Lookups not attempted because HOSTROOT/proc does not show the host's pids. */
  notVisible: number;
  /** Cache entries dropped to keep the bound. */
  evicted: number;
  /** Users given as a number because the host's /etc/passwd has no entry for the uid. */
  uidsWithoutName: number;
  unreadable: Record<string, number>;
  badInput: Record<string, number>;
}

/** What the last host-PID check found. */
export type HostPidView =
  | { visible: true }
  | {
      visible: false;
      /** `no_proc`: HOSTROOT/proc does not exist; `other_pid_namespace`: its pid 2 is not kthreadd. */
      reason: "no_proc" | "other_pid_namespace";
    };

interface CacheEntry {
  startTime: string;
  owner: GpuOwner;
}

type Lookup = { owner: GpuOwner | undefined; vanished: boolean };

export class ProcessOwners {
  readonly hostRoot: string;
  private readonly logger: Logger;
  private readonly maxEntries: number;
  private readonly maxFileBytes: number;
  private readonly reprobeMs: number;
  private readonly now: () => number;
  private readonly passwd: PasswdNames;
  private readonly cache = new Map<number, CacheEntry>();
  private readonly warned = new Set<string>();
  private probe: { view: HostPidView; at: number } | undefined;
  private probing: Promise<HostPidView> | undefined;
  private allVanishedRun = 0;
  private readonly c: ProcessOwnerCounters = {
    lookups: 0,
    cacheHits: 0,
    attributed: 0,
    vanished: 0,
    notVisible: 0,
    evicted: 0,
    uidsWithoutName: 0,
    unreadable: {},
    badInput: {},
  };

  constructor(opts: ProcessOwnersOptions) {
    this.hostRoot = opts.hostRoot ?? DEFAULT_HOST_ROOT;
    this.logger = opts.logger;
    this.maxEntries = Math.max(1, opts.maxEntries ?? DEFAULT_MAX_OWNER_ENTRIES);
    this.maxFileBytes = opts.maxProcFileBytes ?? DEFAULT_MAX_PROC_FILE_BYTES;
    this.reprobeMs = opts.reprobeMs ?? DEFAULT_REPROBE_MS;
    this.now = opts.now ?? Date.now;
    const passwdPath = join(this.hostRoot, "etc", "passwd");
    this.passwd = new PasswdNames(passwdPath, opts.maxPasswdBytes ?? DEFAULT_MAX_PASSWD_BYTES, (reason) => {
      this.count(reason === "too_large" || reason === "binary" ? "badInput" : "unreadable", `passwd_${reason}`);
      this.warnOnce(
        `passwd_${reason}`,
        reason === "missing"
          ? `${passwdPath} does not exist, so users of GPU processes are given as numeric uids. Mount the host's /etc/passwd under --host-root (${this.hostRoot}).`
          : `${passwdPath} could not be read (${reason}), so users of GPU processes are given as numeric uids until it can.`,
        { path: passwdPath, reason },
      );
    });
  }

  /** The host's name for `uid` (its /etc/passwd under the host root), or undefined when it has none. */
  userNameOf(uid: number, signal?: AbortSignal): Promise<string | undefined> {
    return this.passwd.nameOf(uid, signal);
  }

  /** A copy of the counters. */
  counters(): ProcessOwnerCounters {
    return { ...this.c, unreadable: { ...this.c.unreadable }, badInput: { ...this.c.badInput } };
  }

  /** Cached owners. */
  get size(): number {
    return this.cache.size;
  }

  /**
   * Who runs `pid`: a frozen `GpuOwner` with `via: "process"` and what could be read (pid
   * always; command, user, runtime, containerId, podUid, job, step where found), or undefined
   * when the pid is gone, cannot be seen as a host pid, or its stat cannot be read.
   */
  async ownerOf(pid: number, signal?: AbortSignal): Promise<GpuOwner | undefined> {
    return (await this.lookup(pid, signal)).owner;
  }

  /** Owners of several pids at once (those of one GPU, or of all). Pids without an owner are absent. */
  async ownersOf(pids: Iterable<number>, signal?: AbortSignal): Promise<Map<number, GpuOwner>> {
    const list = [...new Set(pids)];
    const out = new Map<number, GpuOwner>();
    let vanished = 0;
    for (let i = 0; i < list.length; i += MAX_CONCURRENT_LOOKUPS) {
      const slice = list.slice(i, i + MAX_CONCURRENT_LOOKUPS);
      const found = await Promise.all(slice.map((pid) => this.lookup(pid, signal)));
      found.forEach((r, j) => {
        if (r.owner) out.set(slice[j] ?? 0, r.owner);
        if (r.vanished) vanished++;
      });
    }
    this.noteBatch(list.length, vanished);
    return out;
  }

  /** Drops cached owners of pids not in `livePids` (the pids the driver lists now). */
  retain(livePids: Iterable<number>): void {
    const live = new Set(livePids);
    for (const pid of this.cache.keys()) if (!live.has(pid)) this.cache.delete(pid);
  }

  /** What the last host-PID check found, without checking; undefined before the first (no process looked up yet). */
  lastHostPidView(): HostPidView | undefined {
    return this.probe?.view;
  }

  /** Whether HOSTROOT/proc shows the host's pids (see the module comment), checked every `reprobeMs`. */
  async hostPids(signal?: AbortSignal): Promise<HostPidView> {
    if (this.probe && this.now() - this.probe.at < this.reprobeMs) return this.probe.view;
    this.probing ??= this.checkHostPids(signal).finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  private async checkHostPids(signal?: AbortSignal): Promise<HostPidView> {
    const proc = join(this.hostRoot, "proc");
    const read = await readCapped(join(proc, "2", "stat"), this.maxFileBytes, signal);
    let view: HostPidView;
    if (read.ok) {
      const stat = parseProcStat(read.bytes.toString("utf8"));
      view =
        stat?.comm === "kthreadd" && stat.ppid === 0
          ? { visible: true }
          : { visible: false, reason: "other_pid_namespace" };
    } else if (read.reason === "aborted") {
      return this.probe?.view ?? { visible: false, reason: "other_pid_namespace" };
    } else {
      const procExists = await stat(proc).then(
        (s) => s.isDirectory(),
        () => false,
      );
      view = { visible: false, reason: procExists ? "other_pid_namespace" : "no_proc" };
    }
    this.probe = { view, at: this.now() };
    if (!view.visible) {
      this.warnOnce(
        "not_visible",
        view.reason === "no_proc"
          ? `${proc} does not exist, so GPU processes are not attributed to containers, pods, jobs or users; owners still come from the scheduler. Mount the host's /proc under --host-root (now ${this.hostRoot}).`
          : `${proc} does not show the host's processes (its pid 2 is not the kernel's kthreadd), so GPU processes are not attributed to containers, pods, jobs or users; owners still come from the scheduler. Run the DaemonSet with hostPID: true, or mount the host's /proc read-only and point --host-root at the mount's parent (now ${this.hostRoot}); if the host mounts /proc with hidepid, run the agent as root.`,
        { host_root: this.hostRoot, reason: view.reason },
      );
    }
    return view;
  }

  private async lookup(pid: number, signal?: AbortSignal): Promise<Lookup> {
    this.c.lookups++;
    if (signal?.aborted) return { owner: undefined, vanished: false };
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      this.count("badInput", "pid_invalid");
      return { owner: undefined, vanished: false };
    }
    const view = await this.hostPids(signal);
    if (!view.visible) {
      this.c.notVisible++;
      return { owner: undefined, vanished: false };
    }
    const dir = join(this.hostRoot, "proc", String(pid));
    const before = await this.readStat(dir, signal);
    if (before === "vanished") return this.gone(pid);
    if (before === undefined) return { owner: undefined, vanished: false };

    const cached = this.cache.get(pid);
    if (cached && cached.startTime === before) {
      this.cache.delete(pid);
      this.cache.set(pid, cached);
      this.c.cacheHits++;
      this.c.attributed++;
      return { owner: cached.owner, vanished: false };
    }

    const [cgroup, status, comm] = await Promise.all([
      readCapped(join(dir, "cgroup"), this.maxFileBytes, signal),
      readCapped(join(dir, "status"), this.maxFileBytes, signal),
      readCapped(join(dir, "comm"), this.maxFileBytes, signal),
    ]);
    if ([cgroup, status, comm].some((r) => !r.ok && (r.reason === "missing" || r.reason === "aborted"))) {
      return [cgroup, status, comm].some((r) => !r.ok && r.reason === "aborted")
        ? { owner: undefined, vanished: false }
        : this.gone(pid);
    }
    // The files read must be those of the process asked about, not of one that took its pid since.
    const after = await this.readStat(dir, signal);
    if (after !== before) return after === undefined ? { owner: undefined, vanished: false } : this.gone(pid);

    const owner: GpuOwner = { via: "process", pid };
    const command = this.text("comm", comm, dir, true);
    const cmd = command === undefined ? undefined : parseComm(command);
    if (cmd !== undefined) owner.command = cmd;
    const user = await this.userOf(this.text("status", status, dir, false), dir, signal);
    if (user !== undefined) owner.user = user;
    const where = this.cgroupOwner(this.text("cgroup", cgroup, dir, false), dir);
    if (where.runtime !== undefined) owner.runtime = where.runtime;
    if (where.containerId !== undefined) owner.containerId = where.containerId;
    if (where.podUid !== undefined) owner.podUid = where.podUid;
    if (where.job !== undefined) owner.job = where.job;
    if (where.step !== undefined) owner.step = where.step;
    Object.freeze(owner);

    this.cache.delete(pid);
    this.cache.set(pid, { startTime: before, owner });
    while (this.cache.size > this.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
      this.c.evicted++;
    }
    this.c.attributed++;
    return { owner, vanished: false };
  }

  /** The start time from `dir/stat`, "vanished" when the process is gone, undefined when unreadable. */
  private async readStat(dir: string, signal?: AbortSignal): Promise<string | "vanished" | undefined> {
    const read = await readCapped(join(dir, "stat"), this.maxFileBytes, signal);
    if (!read.ok) {
      if (read.reason === "missing") return "vanished";
      if (read.reason !== "aborted")
        this.problem(read.reason === "too_large" ? "badInput" : "unreadable", "stat", read.reason, dir);
      return undefined;
    }
    const stat = parseProcStat(read.bytes.toString("utf8"));
    if (stat === undefined) {
      this.problem("badInput", "stat", "malformed", dir);
      return undefined;
    }
    return stat.startTime;
  }

  private gone(pid: number): Lookup {
    this.cache.delete(pid);
    this.c.vanished++;
    return { owner: undefined, vanished: true };
  }

  /** A file's text, or undefined after counting why not. `lenient` decodes invalid UTF-8 instead of refusing it. */
  private text(file: string, read: ReadCapped, dir: string, lenient: boolean): string | undefined {
    if (!read.ok) {
      this.problem(read.reason === "too_large" ? "badInput" : "unreadable", file, read.reason, dir);
      return undefined;
    }
    const text = lenient && !read.bytes.includes(0) ? read.bytes.toString("utf8") : textOf(read.bytes);
    if (text === undefined) this.problem("badInput", file, "binary", dir);
    return text;
  }

  private async userOf(status: string | undefined, dir: string, signal?: AbortSignal): Promise<string | undefined> {
    if (status === undefined) return undefined;
    const uid = parseStatusUid(status);
    if (uid === undefined) {
      this.problem("badInput", "status", "malformed", dir);
      return undefined;
    }
    const name = await this.passwd.nameOf(uid, signal);
    if (name !== undefined) return name;
    this.c.uidsWithoutName++;
    return String(uid);
  }

  private cgroupOwner(text: string | undefined, dir: string): CgroupOwner {
    if (text === undefined) return {};
    const parsed = parseProcCgroup(text);
    if (!parsed.ok) {
      this.problem("badInput", "cgroup", parsed.reason, dir);
      return {};
    }
    return parsed.owner;
  }

  private noteBatch(pids: number, vanished: number): void {
    if (pids === 0 || this.probe?.view.visible !== true) return;
    this.allVanishedRun = vanished === pids ? this.allVanishedRun + 1 : 0;
    if (this.allVanishedRun >= ALL_VANISHED_BATCHES) {
      this.warnOnce(
        "all_vanished",
        `None of the processes the GPU driver lists existed under ${join(this.hostRoot, "proc")} in ${ALL_VANISHED_BATCHES} checks in a row, so they are not attributed. The driver and the agent seem to see different pid namespaces: check that --host-root (${this.hostRoot}) is the host's root, that the DaemonSet runs with hostPID: true, and that the host's /proc is not mounted with hidepid.`,
        { host_root: this.hostRoot },
      );
    }
  }

  private problem(kind: "unreadable" | "badInput", file: string, reason: string, dir: string): void {
    const key = `${file}_${reason}`;
    this.count(kind, key);
    this.warnOnce(key, problemMessage(kind, file, reason, dir), { path: join(dir, file), reason });
  }

  private count(kind: "unreadable" | "badInput", key: string): void {
    this.c[kind][key] = (this.c[kind][key] ?? 0) + 1;
  }

  private warnOnce(key: string, msg: string, fields: Record<string, unknown>): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.logger.warn(msg, fields);
  }
}

function problemMessage(kind: "unreadable" | "badInput", file: string, reason: string, dir: string): string {
  const path = join(dir, file);
  if (kind === "unreadable") {
    const fix =
      reason === "eacces" || reason === "eperm"
        ? " Run the agent as root, or give its container read access to the host's /proc."
        : "";
    const effect =
      file === "stat"
        ? "such processes are not attributed"
        : "such processes are attributed without what that file says";
    return `The agent could not read ${path} (${reason}); ${effect}, and this is logged once.${fix}`;
  }
  if (reason === "too_large") {
    return `${path} is larger than the agent reads; it was ignored and such processes are attributed without it, and this is logged once. The kernel writes no such file: check that --host-root is the host's root.`;
  }
  if (reason === "binary") {
    return `${path} holds binary data, not the text the kernel writes; it was ignored, and this is logged once. Check that --host-root is the host's root.`;
  }
  return `${path} is not in the form the kernel writes (${reason}); it was ignored, and this is logged once.`;
}
