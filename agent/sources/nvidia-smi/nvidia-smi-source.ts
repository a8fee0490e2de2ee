/**
 * The nvidia-smi source: one long-lived `nvidia-smi --query-gpu=… -lms N` child prints a
 * line per GPU per tick; lines are parsed as they arrive and the latest reading of each GPU
 * is kept with its arrival time. `sample(now)` only reads that state.
 *
 * Contracts:
 * * A GPU is known once seen (keyed by uuid) and stays in every sample, ordered by index.
 *   Its reading carries `error` when its latest line was an error line, or when nothing
 *   fresh arrived within `staleAfterMs` (nvidia-smi silent, exited, or not startable).
 * * The child is restarted with exponential backoff and jitter when it exits or goes
 *   silent; restarts are counted in `stats()`. Its stderr is logged, rate-limited.
 * * A stand-in that ignores `-lms` (prints one snapshot and exits 0) is detected and
 *   polled once per interval instead, never overlapping.
 * * Compute processes come from `--query-compute-apps`, run every `processIntervalMs`
 *   (an empty list prints nothing, so loop mode cannot tell "none" from "slow"). When it
 *   fails, `processes` is undefined (unknown), never an empty list.
 * * MIG (DESIGN "MIG"): every `migIntervalMs` (default 15 s), while some board shows no
 *   utilization.gpu (nvidia-smi prints [N/A] for a board in MIG mode) or MIG instances were
 *   found, `nvidia-smi -L` is run, and when it lists MIG devices `nvidia-smi -q -x`;
 *   mig-instances.ts joins them. A board with instances is then shown as its instances
 *   (each a GPU of its own) after its board row (migBoardRow: only its power, limit and
 *   health), not as its `--query-gpu` row. Instances created or destroyed show at the next MIG read. When MIG reads
 *   fail, the failure is logged once, and once what was read grows stale (two intervals
 *   and the runs' timeouts) MIG boards show as their rows until a read works.
 *   What nvidia-smi cannot tell of an instance is said by `limitations()`.
 * * Every timer is unref()ed; `stop()` kills every child and is safe twice and before start.
 */
import { spawn, type ChildProcess } from "node:child_process";
import type { GpuProcess, GpuReading } from "../../../common/types.js";
import type { Logger } from "../../../common/log.js";
import { TrueidleError, errorMessage } from "../../../common/errors.js";
import { Backoff } from "../../shipper/backoff.js";
import type { GpuSource, SourceStats } from "../source.js";
import {
  CONSERVATIVE_FIELDS,
  chooseQueryFields,
  parseHelpQueryGpu,
  rejectedField,
  withoutRejectedField,
} from "./fields.js";
import { LatestReadings } from "./latest-readings.js";
import { LineBuffer } from "./line-buffer.js";
import { COMPUTE_APPS_FIELDS, parseComputeApps } from "./parse-compute-apps.js";
import { instanceReadings, joinMig, listsMigDevices, type MigInstance } from "./mig-instances.js";
import { parseGpuList, parseMigTextQ, parseMigXml } from "./parse-mig.js";
import {
  busIdKey,
  columnsFromFields,
  parseDeviceHandleError,
  parseQueryGpuLine,
  type QueryColumn,
} from "./parse-query-gpu.js";
import { RateLimit } from "./rate-limit.js";
import { describeExit, runOnce, type RunOnceResult } from "./run-once.js";
import { AGENT_SETTINGS } from "../../settings.js";
import { migBoardRow } from "../mig-board-row.js";

export interface NvidiaSmiSourceOptions {
  /** The executable: a path, or a bare name looked up in $PATH. */
  path: string;
  intervalMs: number;
  /** How often the compute process list is read; default AGENT_SETTINGS.processIntervalMs. */
  processIntervalMs?: number;
  /**
   * How often MIG instances are read (`nvidia-smi -L`, then `-q -x`, which costs hundreds of
   * milliseconds on a big host) where a board may be in MIG mode; default
   * AGENT_SETTINGS.migIntervalMs.
   */
  migIntervalMs?: number;
  /** A GPU with no fresh line for this long reads as unavailable; default 3×interval + 2 s. */
  staleAfterMs?: number;
  logger: Logger;
  now?: () => number;
  /** Environment of every nvidia-smi run; default process.env. */
  spawnEnv?: NodeJS.ProcessEnv;
  /** `start()` gives up after this long; default 15000. */
  startTimeoutMs?: number;
}

/** Default time between two MIG reads. */
export const MIG_INTERVAL_MS = AGENT_SETTINGS.migIntervalMs.default;
const HELP_TIMEOUT_MS = 10_000;
const PROCESS_TIMEOUT_MS = 10_000;
const MIG_LIST_TIMEOUT_MS = 10_000;
const MIG_REPORT_TIMEOUT_MS = 20_000;
const KILL_GRACE_MS = 2_000;
/** A child that ran this long before exiting earns a fresh backoff. */
const BACKOFF_RESET_AFTER_MS = 30_000;
const MAX_FIELD_RETRIES = 8;
const STDERR_LINES_PER_MINUTE = 5;

/** One run of the loop-mode child. */
interface LoopRun {
  child: ChildProcess;
  startedAt: number;
  lastLineAt: number | undefined;
  columns: QueryColumn[];
  /** GPUs (uuid or bus id) seen in this run; a repeat proves the child really loops. */
  seen: Set<string>;
  repeated: boolean;
  lines: number;
  /** The last lines that were not readings, for exit messages. */
  tail: string[];
  killedByUs: boolean;
  rejected: string | undefined;
  closed: Promise<void>;
}

export class NvidiaSmiSource implements GpuSource {
  readonly name = "nvidia-smi";
  private readonly path: string;
  private readonly intervalMs: number;
  private readonly processIntervalMs: number;
  private readonly migIntervalMs: number;
  private readonly staleAfterMs: number;
  private readonly startTimeoutMs: number;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly env: NodeJS.ProcessEnv | undefined;

  private state: "new" | "starting" | "running" | "stopped" = "new";
  private mode: "loop" | "poll" = "loop";
  private fields: string[] = [...CONSERVATIVE_FIELDS];
  private readonly triedFields = new Set<string>();
  private readonly latest = new LatestReadings();
  private processes: { byUuid: Map<string, GpuProcess[]>; at: number } | undefined;
  private processesFailing = false;
  /** The instances of each MIG board, as of the MIG read that last settled that board. */
  private mig: Map<string, { instances: MigInstance[]; at: number }> | undefined;
  private migFailing = false;
  /** The last `-L` listed MIG devices. */
  private migListed = false;
  /** Boards whose -L and -q -x disagreed, already logged. */
  private readonly migUnsettled = new Set<string>();
  private loop: LoopRun | undefined;
  private downReason: string | undefined;
  private readonly backoff = new Backoff({ initialMs: 1_000, maxMs: 30_000 });
  private readonly counters: SourceStats = { restarts: 0, parseErrors: 0 };
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inflight = new Set<AbortController>();
  private readonly stderrLimit = new RateLimit(STDERR_LINES_PER_MINUTE, 60_000);
  private readonly parseLimit = new RateLimit(STDERR_LINES_PER_MINUTE, 60_000);

  constructor(opts: NvidiaSmiSourceOptions) {
    if (!(opts.intervalMs > 0))
      throw new TrueidleError("bad_config", `nvidia-smi interval must be positive (got ${opts.intervalMs} ms)`);
    this.path = opts.path;
    this.intervalMs = Math.max(1, Math.round(opts.intervalMs));
    this.processIntervalMs = Math.max(
      1,
      Math.round(opts.processIntervalMs ?? AGENT_SETTINGS.processIntervalMs.default),
    );
    this.migIntervalMs = Math.max(1, Math.round(opts.migIntervalMs ?? MIG_INTERVAL_MS));
    this.staleAfterMs = opts.staleAfterMs ?? 3 * this.intervalMs + 2_000;
    this.startTimeoutMs = opts.startTimeoutMs ?? 15_000;
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
    this.env = opts.spawnEnv;
  }

  describe(): string {
    const notes = this.limitations().map((n) => `; ${n}`);
    return `nvidia-smi (${this.path}, one long-lived --query-gpu loop; no SM activity)${notes.join("")}`;
  }

  /**
   * What this source cannot see that the NVML source can, for people (`agent --once`
   * shows it through `describe()`): said while MIG instances are shown.
   */
  limitations(): string[] {
    const mig = this.mig;
    const now = this.now();
    if (mig === undefined || ![...mig.keys()].some((uuid) => this.freshInstances(mig, uuid, now))) return [];
    return [
      `MIG instances read by nvidia-smi -L and -q -x every ${formatSeconds(this.migIntervalMs)}: no SM activity per instance (NVML has it, with GPM), so a held instance's real use is bounded from its board's power only, and one idle beside a busy one reads active; memory and processes only as fresh as that read; no utilization.gpu`,
    ];
  }

  /**
   * Reads the help to choose fields, takes one snapshot (which finds every GPU and proves
   * the fields are accepted), reads the process list and, where a board may be in MIG mode,
   * its instances, then starts the loop-mode child. Rejects with `source_failed` naming the
   * executable and what it printed.
   */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.state !== "new")
      throw new TrueidleError(
        "internal",
        `the nvidia-smi source was already ${this.state === "stopped" ? "stopped" : "started"}`,
      );
    this.state = "starting";
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    const deadline = this.timer(() => ctl.abort(), this.startTimeoutMs);
    let lastOutput = "";
    try {
      const help = await this.run(["--help-query-gpu"], HELP_TIMEOUT_MS, ctl.signal);
      this.throwIfUnstartable(help, ctl.signal, signal, help.stdout + help.stderr);
      const supported = parseHelpQueryGpu(help.stdout);
      if (help.code === 0 && supported.size >= REQUIRED_HELP_FIELDS) {
        this.fields = chooseQueryFields(supported);
      } else {
        this.fields = [...CONSERVATIVE_FIELDS];
        this.log.warn("nvidia-smi --help-query-gpu gave no field list; querying a conservative set of fields.", {
          path: this.path,
          result: describeExit(help, HELP_TIMEOUT_MS),
          output: snippet(help.stdout + help.stderr),
        });
      }
      const firstProcesses = this.pollProcesses(ctl.signal);
      for (let attempt = 0; ; attempt++) {
        const r = await this.run(this.queryArgs(), this.startTimeoutMs, ctl.signal);
        lastOutput = r.stdout + r.stderr;
        this.throwIfUnstartable(r, ctl.signal, signal, lastOutput);
        const rejected = rejectedField(lastOutput);
        if (rejected !== undefined && attempt < MAX_FIELD_RETRIES) {
          if (!this.dropField(rejected)) {
            throw new TrueidleError(
              "source_failed",
              `${this.path} rejects the field "${rejected}", which trueidle needs: ${snippet(lastOutput)}`,
            );
          }
          continue;
        }
        const found = this.ingestSnapshot(r);
        if (found === 0) {
          throw new TrueidleError(
            "source_failed",
            `${this.path} gave no GPU readings (${describeExit(r, this.startTimeoutMs)}); it printed: ${snippet(lastOutput) || "nothing"}`,
          );
        }
        break;
      }
      await firstProcesses;
      if (ctl.signal.aborted) this.throwIfUnstartable(undefined, ctl.signal, signal, lastOutput);
      // Outside the start deadline: a slow -q -x costs this read, never the start.
      if (this.migWanted()) await this.pollMig(signal);
      if (this.stopped() || signal?.aborted)
        throw new TrueidleError("source_failed", "starting the nvidia-smi source was cancelled");
      this.state = "running";
      this.spawnLoop();
      this.every(() => this.watchdog(), Math.min(1_000, Math.max(100, this.intervalMs)));
      this.timer(() => void this.processLoop(), this.processIntervalMs);
      this.timer(() => void this.migLoop(), this.migIntervalMs);
      this.log.info("nvidia-smi source started.", {
        path: this.path,
        gpus: this.latest.size,
        fields: this.fields.join(","),
        ...(this.mig !== undefined && this.mig.size > 0 ? { migBoards: this.mig.size } : {}),
      });
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      this.clear(deadline);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  sample(nowMs: number): GpuReading[] {
    if (this.state !== "running") return [];
    const rows = this.boardRows(nowMs);
    const mig = this.mig;
    if (mig === undefined || mig.size === 0) return rows;
    return rows.flatMap((r) => {
      const instances = this.freshInstances(mig, r.uuid, nowMs);
      return instances === undefined ? [r] : [migBoardRow(r), ...instanceReadings(r, instances)];
    });
  }

  /** Every board as its latest `--query-gpu` row, with the processes `--query-compute-apps` lists on it. */
  private boardRows(nowMs: number): GpuReading[] {
    const procs =
      this.processes !== undefined && nowMs - this.processes.at <= this.processStaleMs()
        ? this.processes.byUuid
        : undefined;
    const down = this.downReason;
    const staleError = (ageMs: number): string =>
      down !== undefined
        ? `sampler down: ${down}`
        : `nvidia-smi went silent: no reading for ${Math.round(ageMs / 1000)} s`;
    return this.latest.snapshot(nowMs, this.staleAfterMs, staleError, procs);
  }

  async stop(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "stopped";
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const c of this.inflight) c.abort();
    const run = this.loop;
    if (run) {
      this.kill(run);
      await run.closed;
    }
  }

  stats(): SourceStats {
    return { ...this.counters };
  }

  // ---- loop mode -------------------------------------------------------------------

  private spawnLoop(): void {
    if (this.state !== "running") return;
    const args = [...this.queryArgs(), "-lms", String(this.intervalMs)];
    let child: ChildProcess;
    try {
      child = spawn(this.path, args, { env: this.env, stdio: ["ignore", "pipe", "pipe"], windowsHide: true });
    } catch (err) {
      this.onLoopFailed(`cannot run ${this.path}: ${errorMessage(err)}`);
      return;
    }
    let resolveClosed!: () => void;
    const run: LoopRun = {
      child,
      startedAt: this.now(),
      lastLineAt: undefined,
      columns: columnsFromFields(this.fields),
      seen: new Set(),
      repeated: false,
      lines: 0,
      tail: [],
      killedByUs: false,
      rejected: undefined,
      closed: new Promise<void>((r) => {
        resolveClosed = r;
      }),
    };
    this.loop = run;
    const out = new LineBuffer();
    const err = new LineBuffer();
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      for (const l of out.push(d)) this.onLoopLine(run, l);
    });
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      for (const l of err.push(d)) this.onStderrLine(run, l);
    });
    let finished = false;
    const finish = (code: number | null, sig: NodeJS.Signals | null, spawnError?: Error): void => {
      if (finished) return;
      finished = true;
      for (const l of out.flush()) this.onLoopLine(run, l);
      for (const l of err.flush()) this.onStderrLine(run, l);
      resolveClosed();
      this.onLoopExit(run, code, sig, spawnError);
    };
    child.on("error", (e) => {
      if (child.pid === undefined) finish(null, null, e);
    });
    child.on("close", (code, sig) => finish(code, sig));
  }

  private onLoopLine(run: LoopRun, line: string): void {
    run.lines++;
    run.lastLineAt = this.now();
    const parsed = parseQueryGpuLine(run.columns, line);
    switch (parsed.kind) {
      case "reading": {
        this.noteSeen(run, parsed.reading.uuid);
        this.latest.record(parsed.reading, run.lastLineAt);
        this.downReason = undefined;
        break;
      }
      case "gpu_error":
        this.noteSeen(run, busIdKey(parsed.busId) ?? parsed.busId);
        this.latest.recordError(parsed.busId, parsed.message, run.lastLineAt);
        break;
      case "header":
        run.columns = parsed.columns;
        break;
      case "blank":
        break;
      case "invalid":
        this.remember(run, line);
        run.rejected ??= rejectedField(line);
        if (run.rejected === undefined) this.countParseError(line, parsed.reason);
        break;
    }
    if (this.loop === run && run.lastLineAt - run.startedAt >= BACKOFF_RESET_AFTER_MS) this.backoff.reset();
  }

  private onStderrLine(run: LoopRun | undefined, line: string): void {
    if (line.trim() === "") return;
    if (run) this.remember(run, line);
    const gpuError = parseDeviceHandleError(line);
    if (gpuError) this.latest.recordError(gpuError.busId, gpuError.message, this.now());
    if (run) run.rejected ??= rejectedField(line);
    const n = this.stderrLimit.take(this.now());
    if (n === "drop") return;
    this.log.warn("nvidia-smi wrote to stderr.", {
      path: this.path,
      line: line.slice(0, 500),
      ...(n > 0 ? { suppressedLines: n } : {}),
    });
  }

  private onLoopExit(run: LoopRun, code: number | null, sig: NodeJS.Signals | null, spawnError?: Error): void {
    if (this.loop === run) this.loop = undefined;
    if (this.state !== "running") return;
    if (spawnError) {
      this.onLoopFailed(`cannot run ${this.path}: ${spawnError.message}`);
      return;
    }
    if (run.rejected !== undefined) {
      if (this.dropField(run.rejected)) {
        this.counters.restarts++;
        this.spawnLoop();
      } else {
        this.log.error("nvidia-smi rejects a field trueidle needs; GPUs read as unavailable.", {
          path: this.path,
          field: run.rejected,
        });
        this.onLoopFailed(`nvidia-smi rejects the field "${run.rejected}"`);
      }
      return;
    }
    if (code === 0 && !run.killedByUs && !run.repeated && run.seen.size > 0) {
      this.log.warn(
        "nvidia-smi printed one snapshot and exited instead of looping (-lms not supported); polling it once per interval instead.",
        {
          path: this.path,
          intervalMs: this.intervalMs,
        },
      );
      this.mode = "poll";
      this.downReason = undefined;
      this.timer(() => void this.pollLoop(), this.intervalMs);
      return;
    }
    const how = run.killedByUs
      ? "went silent and was stopped"
      : sig
        ? `was killed by ${sig}`
        : `exited with code ${code}`;
    this.onLoopFailed(`nvidia-smi ${how}`, run.tail);
  }

  /** The child is gone: GPUs go stale while a restart waits out its backoff. */
  private onLoopFailed(reason: string, tail: readonly string[] = []): void {
    this.downReason = reason;
    const delay = this.backoff.next();
    this.log.warn(`The nvidia-smi sampler stopped (${reason}); restarting it.`, {
      path: this.path,
      retryInMs: delay,
      ...(tail.length > 0 ? { output: tail.join("\n").slice(-1000) } : {}),
    });
    this.timer(() => {
      this.counters.restarts++;
      this.spawnLoop();
    }, delay);
  }

  private watchdog(): void {
    const run = this.loop;
    if (this.state !== "running" || this.mode !== "loop" || !run || run.killedByUs) return;
    const silentMs = this.now() - (run.lastLineAt ?? run.startedAt);
    if (silentMs <= this.staleAfterMs) return;
    this.downReason = `nvidia-smi went silent for ${Math.round(silentMs / 1000)} s`;
    this.kill(run);
  }

  private kill(run: LoopRun): void {
    run.killedByUs = true;
    run.child.kill("SIGTERM");
    const t = setTimeout(() => {
      if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGKILL");
    }, KILL_GRACE_MS);
    t.unref();
    void run.closed.then(() => clearTimeout(t));
  }

  // ---- polling mode (stand-ins that ignore -lms) -----------------------------------

  private async pollLoop(): Promise<void> {
    if (this.state !== "running") return;
    const started = this.now();
    const timeoutMs = Math.max(5_000, 2 * this.intervalMs);
    const r = await this.run(this.queryArgs(), timeoutMs);
    if (this.state !== "running") return;
    for (const l of r.stderr.split("\n")) this.onStderrLine(undefined, l);
    const rejected = rejectedField(r.stdout + r.stderr);
    if (rejected !== undefined && !this.dropField(rejected)) {
      this.downReason = `nvidia-smi rejects the field "${rejected}"`;
    } else if (rejected === undefined && this.ingestSnapshot(r) === 0) {
      this.downReason = `nvidia-smi ${describeExit(r, timeoutMs)} with no readings`;
      if (this.stderrLimit.take(this.now()) !== "drop") {
        this.log.warn("A polled nvidia-smi run gave no readings.", {
          path: this.path,
          result: describeExit(r, timeoutMs),
          output: snippet(r.stdout + r.stderr),
        });
      }
    } else {
      this.downReason = undefined;
    }
    this.timer(() => void this.pollLoop(), Math.max(0, this.intervalMs - (this.now() - started)));
  }

  // ---- compute processes -------------------------------------------------------------

  private async processLoop(): Promise<void> {
    if (this.state !== "running") return;
    const started = this.now();
    await this.pollProcesses();
    this.timer(() => void this.processLoop(), Math.max(0, this.processIntervalMs - (this.now() - started)));
  }

  private async pollProcesses(signal?: AbortSignal): Promise<void> {
    const r = await this.run(
      [`--query-compute-apps=${COMPUTE_APPS_FIELDS.join(",")}`, "--format=csv,noheader,nounits"],
      PROCESS_TIMEOUT_MS,
      signal,
    );
    if (this.state === "stopped") return;
    const parsed = parseComputeApps(r.stdout, columnsFromFields(COMPUTE_APPS_FIELDS));
    const usable =
      r.spawnError === undefined &&
      !r.timedOut &&
      !r.aborted &&
      parsed.invalid.length === 0 &&
      (r.code === 0 || parsed.gpuErrors.length > 0);
    if (usable) {
      this.processes = { byUuid: parsed.byUuid, at: this.now() };
      if (this.processesFailing)
        this.log.info("The nvidia-smi compute process list can be read again.", { path: this.path });
      this.processesFailing = false;
      return;
    }
    this.counters.parseErrors += parsed.invalid.length;
    this.processes = undefined;
    if (!this.processesFailing) {
      this.log.warn(
        "Cannot read the compute process list from nvidia-smi; processes are unknown until it works again.",
        {
          path: this.path,
          result: describeExit(r, PROCESS_TIMEOUT_MS),
          output: snippet(r.stdout + r.stderr),
        },
      );
    }
    this.processesFailing = true;
  }

  private processStaleMs(): number {
    return 2 * this.processIntervalMs + PROCESS_TIMEOUT_MS;
  }

  // ---- MIG -------------------------------------------------------------------------

  private async migLoop(): Promise<void> {
    if (this.state !== "running") return;
    const started = this.now();
    if (this.migWanted()) await this.pollMig();
    this.timer(() => void this.migLoop(), Math.max(0, this.migIntervalMs - (this.now() - started)));
  }

  /**
   * Whether a MIG read is worth its cost: some board reads no utilization.gpu (a board in
   * MIG mode never has one), or the last reads found MIG devices (to see them go).
   */
  private migWanted(): boolean {
    if (this.migListed || (this.mig !== undefined && this.mig.size > 0)) return true;
    return this.latest
      .snapshot(this.now(), this.staleAfterMs, () => "stale", undefined)
      .some((r) => r.error === undefined && r.util === undefined);
  }

  /** A board's instances when a MIG read settled them recently enough to show. */
  private freshInstances(
    mig: ReadonlyMap<string, { instances: MigInstance[]; at: number }>,
    boardUuid: string,
    nowMs: number,
  ): MigInstance[] | undefined {
    const e = mig.get(boardUuid);
    if (e === undefined || e.instances.length === 0) return undefined;
    return nowMs - e.at <= 2 * this.migIntervalMs + MIG_LIST_TIMEOUT_MS + MIG_REPORT_TIMEOUT_MS
      ? e.instances
      : undefined;
  }

  private async pollMig(signal?: AbortSignal): Promise<void> {
    const list = await this.run(["-L"], MIG_LIST_TIMEOUT_MS, signal);
    if (this.state === "stopped") return;
    const listed = parseGpuList(list.stdout);
    if (!ranToEnd(list) || (list.code !== 0 && listed.length === 0)) {
      this.migFailed("-L", list, MIG_LIST_TIMEOUT_MS);
      return;
    }
    const at = this.now();
    if (!listsMigDevices(listed)) {
      this.migListed = false;
      this.mig = new Map();
      this.migRecovered();
      return;
    }
    this.migListed = true;
    const report = await this.run(["-q", "-x"], MIG_REPORT_TIMEOUT_MS, signal);
    if (this.stopped()) return;
    let boards = parseMigXml(report.stdout);
    if (ranToEnd(report) && boards.length === 0) {
      // It ran and said nothing readable as XML (a stand-in, a build without it): the same
      // report as text (`-q`) says the same of each MIG device.
      const text = await this.run(["-q"], MIG_REPORT_TIMEOUT_MS, signal);
      if (this.stopped()) return;
      if (ranToEnd(text)) boards = parseMigTextQ(text.stdout);
    }
    if (!ranToEnd(report) || boards.length === 0) {
      // It ran and said nothing readable: output of a form this reader does not know.
      if (ranToEnd(report) && report.code === 0) this.counters.parseErrors++;
      this.migFailed("-q -x", report, MIG_REPORT_TIMEOUT_MS);
      return;
    }
    const joined = joinMig(listed, boards);
    this.counters.parseErrors += joined.invalidDevices;
    const next = new Map<string, { instances: MigInstance[]; at: number }>();
    for (const [uuid, instances] of joined.instances) {
      next.set(uuid, { instances, at });
      this.migUnsettled.delete(uuid);
    }
    for (const uuid of joined.unsettled) {
      // Changed between the two runs (or a report cut short): what was known stays
      // until a read agrees or it grows stale.
      const had = this.mig?.get(uuid);
      if (had !== undefined) next.set(uuid, had);
      if (!this.migUnsettled.has(uuid)) {
        this.migUnsettled.add(uuid);
        this.log.warn("nvidia-smi -L and -q -x do not list the same MIG devices for a board; keeping what was known.", {
          path: this.path,
          board: uuid,
        });
      }
    }
    this.mig = next;
    this.migRecovered();
  }

  /** Read afresh after an await: `stop()` may have run meanwhile. */
  private stopped(): boolean {
    return this.state === "stopped";
  }

  /** What was read stays shown until it grows stale (freshInstances), so one failed run changes nothing. */
  private migFailed(what: string, r: RunOnceResult, timeoutMs: number): void {
    if (!this.migFailing) {
      this.log.warn(
        `Cannot read MIG instances (nvidia-smi ${what}); boards in MIG mode show as whole boards, once what was read grows stale, until it works again.`,
        {
          path: this.path,
          result: describeExit(r, timeoutMs),
          output: snippet(r.stdout + r.stderr),
        },
      );
    }
    this.migFailing = true;
  }

  private migRecovered(): void {
    if (this.migFailing) this.log.info("nvidia-smi reads MIG instances again.", { path: this.path });
    this.migFailing = false;
  }

  // ---- shared ----------------------------------------------------------------------

  private queryArgs(): string[] {
    return [`--query-gpu=${this.fields.join(",")}`, "--format=csv,noheader,nounits"];
  }

  /** Feeds a one-shot output; returns how many GPUs it gave a line for. */
  private ingestSnapshot(r: RunOnceResult): number {
    const at = this.now();
    let columns = columnsFromFields(this.fields);
    let found = 0;
    for (const line of r.stdout.split("\n")) {
      const parsed = parseQueryGpuLine(columns, line);
      switch (parsed.kind) {
        case "reading":
          this.latest.record(parsed.reading, at);
          found++;
          break;
        // nvidia-smi lists GPUs in index order: the position is the index of a GPU never seen.
        case "gpu_error":
          this.latest.recordError(parsed.busId, parsed.message, at, found);
          found++;
          break;
        case "header":
          columns = parsed.columns;
          break;
        case "blank":
          break;
        case "invalid":
          this.countParseError(line, parsed.reason);
          break;
      }
    }
    for (const line of r.stderr.split("\n")) {
      const e = parseDeviceHandleError(line);
      if (e) {
        this.latest.recordError(e.busId, e.message, at);
        found++;
      }
    }
    return found;
  }

  private noteSeen(run: LoopRun, key: string): void {
    if (run.seen.has(key)) run.repeated = true;
    else run.seen.add(key);
  }

  private dropField(field: string): boolean {
    const next = withoutRejectedField(this.fields, field, this.triedFields);
    if (next === undefined) return false;
    this.log.warn(`nvidia-smi does not know the field "${field}"; querying without it.`, {
      path: this.path,
      fields: next.join(","),
    });
    this.fields = next;
    return true;
  }

  private countParseError(line: string, reason: string): void {
    this.counters.parseErrors++;
    const n = this.parseLimit.take(this.now());
    if (n === "drop") return;
    this.log.warn("Cannot parse a line of nvidia-smi output; skipping it.", {
      path: this.path,
      reason,
      line: line.slice(0, 500),
      ...(n > 0 ? { suppressedLines: n } : {}),
    });
  }

  private remember(run: LoopRun, line: string): void {
    run.tail.push(line.slice(0, 500));
    if (run.tail.length > 5) run.tail.shift();
  }

  private throwIfUnstartable(
    r: RunOnceResult | undefined,
    ctl: AbortSignal,
    outer: AbortSignal | undefined,
    lastOutput: string,
  ): void {
    if (r?.spawnError) {
      const code = r.spawnError.code;
      if (code === "ENOENT") {
        const where = this.path.includes("/") || this.path.includes("\\") ? this.path : `${this.path} (searched $PATH)`;
        throw new TrueidleError(
          "source_failed",
          `nvidia-smi not found at ${where}: install the NVIDIA driver, or pass --nvidia-smi PATH`,
          { cause: r.spawnError },
        );
      }
      if (code === "EACCES") {
        throw new TrueidleError(
          "source_failed",
          `${this.path} is not executable: make it executable, or pass --nvidia-smi PATH`,
          { cause: r.spawnError },
        );
      }
      throw new TrueidleError("source_failed", `cannot run ${this.path}: ${r.spawnError.message}`, {
        cause: r.spawnError,
      });
    }
    if (outer?.aborted || this.state === "stopped")
      throw new TrueidleError("source_failed", "starting the nvidia-smi source was cancelled");
    if (ctl.aborted || r?.aborted) {
      throw new TrueidleError(
        "source_failed",
        `${this.path} gave no GPU readings within ${Math.round(this.startTimeoutMs / 1000)} s; it printed: ${snippet(lastOutput) || "nothing"}`,
      );
    }
  }

  private async run(args: string[], timeoutMs: number, signal?: AbortSignal): Promise<RunOnceResult> {
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) ctl.abort();
    this.inflight.add(ctl);
    try {
      return await runOnce(this.path, args, { timeoutMs, env: this.env, signal: ctl.signal });
    } finally {
      this.inflight.delete(ctl);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private timer(fn: () => void, ms: number): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
    return t;
  }

  private every(fn: () => void, ms: number): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.add(t);
  }

  private clear(t: NodeJS.Timeout): void {
    clearTimeout(t);
    this.timers.delete(t);
  }
}

/** Fewer names than this in `--help-query-gpu` means it is not a real field list. */
const REQUIRED_HELP_FIELDS = 5;

/** The run finished by itself: it started, and was neither timed out nor aborted. */
function ranToEnd(r: RunOnceResult): boolean {
  return r.spawnError === undefined && !r.timedOut && !r.aborted;
}

/** "15 s", "1.5 s". */
function formatSeconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

function snippet(text: string): string {
  const t = text.trim().replace(/\s*\n\s*/g, " | ");
  return t.length > 500 ? `${t.slice(0, 500)}…` : t;
}
