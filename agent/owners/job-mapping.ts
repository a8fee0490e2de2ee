/**
 * Batch-system allocations (Slurm and others) from a job mapping directory
 * (`--job-mapping-dir DIR`) that the scheduler's prolog and epilog keep current: one file
 * per GPU, named by its index or uuid, listing the jobs it is allocated to (format:
 * job-mapping-file.ts). The agent needs read access to the directory and nothing else.
 *
 * Every `pollMs` the directory is scanned; a file whose inode, size and times did not change
 * is not read again. Bad input is bounded and never fatal: a file over `maxFileBytes` or not
 * text, a symlink, a FIFO or anything but a plain file, and names that are no GPU's are
 * ignored, counted once each and logged once per kind; a GPU keeps at most `maxJobsPerGpu`
 * jobs. Hidden names (`.0.tmp`) are skipped without a word: a prolog that writes a
 * temporary file and renames it over the GPU's file changes the mapping atomically. A
 * directory that does not exist yet means no job (prologs often create it on first use);
 * one that cannot be read keeps the last answer for `staleAfterMs`, then drops it.
 */
import { constants as fsc } from "node:fs";
import { open, readdir } from "node:fs/promises";
import * as path from "node:path";
import type { GpuOwner } from "../../common/types.js";
import { silentLogger, type Logger } from "../../common/log.js";
import { errorMessage } from "../../common/errors.js";
import type { AllocationSource, AllocationSourceStats } from "./allocations.js";
import { mappingFileName, parseMappingFile, type MappedJob, type MappingFileProblem } from "./job-mapping-file.js";
import { PolledAllocations } from "./polled-allocations.js";

export interface JobMappingOptions {
  dir: string;
  /** Index → uuid of the host's GPUs, for files named by index; read at every scan. */
  gpuByIndex: () => ReadonlyMap<number, string>;
  /**
   * A user name for a uid (from the host's /etc/passwd, e.g. PasswdNames.nameOf); the uid
   * as text when it gives none or fails.
   */
  userName?: (uid: number) => string | undefined | Promise<string | undefined>;
  /** Between two scans; default 10 s. */
  pollMs?: number;
  /** How long the last answer outlives a directory that cannot be read; default 60 s. */
  staleAfterMs?: number;
  /** A larger file is bad input; default 64 KiB. */
  maxFileBytes?: number;
  /** Jobs one GPU keeps at most; default 16. */
  maxJobsPerGpu?: number;
  /** Directory entries looked at per scan; default 1024. */
  maxEntries?: number;
  logger?: Logger;
  now?: () => number;
}

/** Why a scan gave no answer: the directory cannot be listed, or the scan failed unexpectedly. */
export type JobMappingFailure = "unreadable_dir" | "error";
/** Things ignored, by kind; each file version (or name) is counted once. */
export type JobMappingRejection =
  | MappingFileProblem
  | "not_a_file"
  | "unreadable_file"
  | "not_gpu_name"
  | "index_unknown"
  | "bad_line"
  | "too_many_entries";

const REJECTION_TEXT: Readonly<Record<JobMappingRejection, string>> = {
  too_large: "a mapping file is larger than the agent reads",
  binary: "a mapping file is not text",
  not_a_file: "a mapping entry is not a plain file (a symlink, a directory, a FIFO)",
  unreadable_file: "a mapping file cannot be read",
  not_gpu_name: "a file's name is neither a GPU index nor a GPU uuid",
  index_unknown: "a file is named by a GPU index this host has no GPU for",
  bad_line: "a line names no usable job id",
  too_many_entries: "the directory holds more entries than the agent looks at",
};

export interface JobMappingStats extends AllocationSourceStats {
  /** Mapping files that listed at least one job in the last scan. */
  files: number;
}

interface CachedFile {
  version: string;
  jobs: MappedJob[];
}
/** Names and file versions remembered as counted; past this many, new ones are no longer counted. */
const MAX_REMEMBERED_NAMES = 4096;

export class JobMappingSource extends PolledAllocations implements AllocationSource {
  readonly name = "job_mapping" as const;
  readonly dir: string;
  private readonly pollMs: number;
  private readonly maxFileBytes: number;
  private readonly maxJobsPerGpu: number;
  private readonly maxEntries: number;
  private readonly log: Logger;
  private cache = new Map<string, CachedFile>();
  private readonly counted = new Set<string>();
  private readonly logged = new Set<string>();
  private readonly s: JobMappingStats = {
    reads: 0,
    failures: {},
    rejected: {},
    staleDrops: 0,
    ownersDropped: 0,
    lastGoodMs: undefined,
    files: 0,
  };

  constructor(private readonly opts: JobMappingOptions) {
    super(opts.now ?? Date.now, opts.staleAfterMs ?? 60_000);
    this.dir = path.resolve(opts.dir);
    this.pollMs = opts.pollMs ?? 10_000;
    this.maxFileBytes = opts.maxFileBytes ?? 64 * 1024;
    this.maxJobsPerGpu = opts.maxJobsPerGpu ?? 16;
    this.maxEntries = opts.maxEntries ?? 1024;
    this.log = (opts.logger ?? silentLogger).child({ component: "job-mapping" });
  }

  get where(): string {
    return this.dir;
  }

  stats(): JobMappingStats {
    return { ...this.s, failures: { ...this.s.failures }, rejected: { ...this.s.rejected } };
  }

  /** One scan now, for tests; the timer keeps its own rhythm. */
  async scanNow(): Promise<void> {
    await this.idle();
    await this.scan();
  }

  protected async read(): Promise<number> {
    await this.scan();
    return this.pollMs;
  }

  protected readFailed(err: unknown): number {
    this.fail("error");
    this.once("bug", "warn", "Reading the job mapping directory failed unexpectedly; the agent goes on and retries.", {
      error: errorMessage(err),
    });
    return this.pollMs;
  }

  private async scan(): Promise<void> {
    let entries;
    try {
      entries = await readdir(this.dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.once(
          "dir_missing",
          "info",
          `The job mapping directory ${this.dir} does not exist yet: no GPU is allocated to a job until the scheduler's prolog creates it.`,
        );
        this.cache.clear();
        this.accept(new Map(), 0);
        return;
      }
      this.fail("unreadable_dir");
      this.once(
        "unreadable_dir",
        "warn",
        `The job mapping directory ${this.dir} cannot be read; the agent keeps its last answer for ${Math.round(this.staleAfterMs / 1000)} s and retries. This is logged once.`,
        { error: errorMessage(err) },
      );
      return;
    }
    if (this.stopped) return;
    if (entries.length > this.maxEntries)
      this.reject("too_many_entries", `entries:${this.dir}`, `${entries.length} entries`);
    const gpuByIndex = this.opts.gpuByIndex();
    const jobsByGpu = new Map<string, MappedJob[]>();
    const nextCache = new Map<string, CachedFile>();
    for (const entry of entries.slice(0, this.maxEntries)) {
      // Hidden names are a prolog's temporary files (written, then renamed into place).
      if (entry.name.startsWith(".")) continue;
      const named = mappingFileName(entry.name);
      if (named === undefined) {
        this.reject("not_gpu_name", `name:${entry.name}`, entry.name);
        continue;
      }
      const jobs = await this.readFile(entry.name, nextCache);
      if (jobs === undefined || jobs.length === 0) continue;
      let uuid = named.uuid;
      if (named.index !== undefined) {
        uuid = gpuByIndex.get(named.index);
        // Before the GPUs are known no index resolves; that is no fault of the file.
        if (uuid === undefined && gpuByIndex.size > 0) this.reject("index_unknown", `index:${entry.name}`, entry.name);
      }
      if (uuid === undefined) continue;
      const list = jobsByGpu.get(uuid) ?? [];
      list.push(...jobs);
      jobsByGpu.set(uuid, list);
    }
    this.cache = nextCache;
    const byGpu = new Map<string, GpuOwner[]>();
    let files = 0;
    for (const [uuid, jobs] of jobsByGpu) {
      files++;
      byGpu.set(uuid, await this.owners(jobs));
    }
    this.accept(byGpu, files);
  }

  /** A GPU's owners: each job once (the one line that names its user wins), at most maxJobsPerGpu. */
  private async owners(jobs: readonly MappedJob[]): Promise<GpuOwner[]> {
    const byJob = new Map<string, MappedJob>();
    for (const j of jobs) {
      const prev = byJob.get(j.job);
      if (prev === undefined || (prev.uid === undefined && prev.userName === undefined)) byJob.set(j.job, j);
    }
    const all = [...byJob.values()];
    if (all.length > this.maxJobsPerGpu) {
      this.s.ownersDropped += all.length - this.maxJobsPerGpu;
      this.once(
        "owners_dropped",
        "warn",
        `A GPU's mapping lists more than ${this.maxJobsPerGpu} jobs; jobs past that bound are left out and counted. This is logged once.`,
      );
    }
    const owners: GpuOwner[] = [];
    for (const j of all.slice(0, this.maxJobsPerGpu))
      owners.push({ via: "job_mapping", job: j.job, user: await this.user(j) });
    return owners;
  }

  private async user(j: MappedJob): Promise<string | undefined> {
    if (j.userName !== undefined) return j.userName;
    if (j.uid === undefined) return undefined;
    let name: string | undefined;
    try {
      name = await this.opts.userName?.(j.uid);
    } catch {
      name = undefined;
    }
    return name ?? String(j.uid);
  }

  /**
   * The jobs one file lists, or undefined when it is gone or unusable. Opened without
   * following a symlink and without blocking on a FIFO; read no further than the bound.
   */
  private async readFile(name: string, nextCache: Map<string, CachedFile>): Promise<MappedJob[] | undefined> {
    const file = path.join(this.dir, name);
    let fh;
    try {
      fh = await open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return undefined; // the epilog removed it since the listing
      if (code === "ELOOP" || code === "EISDIR" || code === "ENXIO") this.reject("not_a_file", `type:${name}`, name);
      else this.reject("unreadable_file", `unreadable:${name}`, name, err);
      return undefined;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) {
        this.reject("not_a_file", `type:${name}`, name);
        return undefined;
      }
      const version = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      const cached = this.cache.get(name);
      if (cached !== undefined && cached.version === version) {
        nextCache.set(name, cached);
        return cached.jobs;
      }
      const want = Math.min(st.size, this.maxFileBytes) + 1;
      const buf = Buffer.alloc(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      const parsed = parseMappingFile(buf.subarray(0, got), this.maxFileBytes);
      if (parsed.problem !== undefined) this.reject(parsed.problem, `${parsed.problem}:${name}:${version}`, name);
      if (parsed.badLines > 0) this.reject("bad_line", `bad_line:${name}:${version}`, name, undefined, parsed.badLines);
      nextCache.set(name, { version, jobs: parsed.jobs });
      return parsed.jobs;
    } catch (err) {
      this.reject("unreadable_file", `unreadable:${name}`, name, err);
      return undefined;
    } finally {
      await fh.close().catch(() => {});
    }
  }

  private fail(reason: JobMappingFailure): void {
    this.s.failures[reason] = (this.s.failures[reason] ?? 0) + 1;
  }

  private accept(byGpu: ReadonlyMap<string, GpuOwner[]>, files: number): void {
    const first = this.answer === undefined && this.s.reads === 0;
    this.answer = { at: this.now(), byGpu };
    this.s.reads++;
    this.s.lastGoodMs = this.answer.at;
    this.s.files = files;
    if (first)
      this.log.info("Reading batch-job allocations from the job mapping directory.", {
        dir: this.dir,
        allocatedGpus: byGpu.size,
      });
  }

  /** Counts `kind` once per `key` (a name, or a file version) and logs once per kind. */
  private reject(kind: JobMappingRejection, key: string, example: string, err?: unknown, n = 1): void {
    if (this.counted.has(key) || this.counted.size >= MAX_REMEMBERED_NAMES) return;
    this.counted.add(key);
    this.s.rejected[kind] = (this.s.rejected[kind] ?? 0) + n;
    this.once(
      `rejected_${kind}`,
      "warn",
      `Ignoring part of the job mapping directory: ${REJECTION_TEXT[kind]}. Such entries are counted and ignored; this is logged once.`,
      {
        file: example.slice(0, 200),
        ...(err === undefined ? {} : { error: errorMessage(err) }),
      },
    );
  }

  protected droppedStale(): void {
    this.s.staleDrops++;
    this.once(
      "stale",
      "warn",
      `The job mapping directory has been unreadable for over ${Math.round(this.staleAfterMs / 1000)} s; its last allocations are dropped until it can be read again.`,
    );
  }

  private once(key: string, level: "info" | "warn", msg: string, fields: Record<string, unknown> = {}): void {
    if (this.logged.has(key)) return;
    this.logged.add(key);
    this.log[level](msg, { dir: this.dir, ...fields });
  }
}
