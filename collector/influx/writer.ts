/**
 * Batched InfluxDB 1.x writer: lines go into a bounded FIFO queue; requests of up to
 * `batchSize` lines / about `batchBytes` bytes are POSTed to
 * `/write?db=…&rp=…&precision=ms`, at most `maxInFlight` at a time, as soon as a batch is
 * full or once the oldest queued line has waited `flushIntervalMs`.
 *
 * Every `submit` resolves when each of its lines is settled — written, or refused by
 * InfluxDB for good (counted and logged) — so a caller can acknowledge only what is
 * durable. What happens after each request is decided by `classifyWrite` (retry.ts): 413
 * splits the batch in halves, other 4xx drop it, 429/5xx/no answer retry with backoff and
 * jitter until InfluxDB answers (honouring Retry-After), a missing database or retention
 * policy sets the schema up again first. Every failed request counts one
 * `trueidle_influx_write_errors_total`; every point InfluxDB took counts one
 * `trueidle_influx_points_written_total` (a window written again counts again).
 *
 * Overflow policy: a submission that does not fit the queue is refused whole
 * (`queue_full`, counted as a write error and logged) rather than queued or dropping
 * older lines; the collector then ends that agent's stream as UNAVAILABLE and the agent,
 * which still holds the windows, sends them again later. A submission withdrawn through
 * its AbortSignal (its stream ended) leaves the queue at once; lines already in a request
 * finish that attempt, but a failed request nobody waits for any more is not retried.
 *
 * `stop()` stops taking lines, flushes the queue and waits for requests in flight; after
 * `stopTimeoutMs` it gives up, and what is unwritten resolves `stopped` (never acknowledged).
 */
import { gzip as gzipCb } from "node:zlib";
import { promisify } from "node:util";
import { errorMessage } from "../../common/errors.js";
import { authorizationHeader, describeTarget, type InfluxTarget } from "../../common/influx/target.js";
import type { Logger } from "../../common/log.js";
import {
  classifyWrite,
  DEFAULT_BACKOFF,
  droppedPoints,
  influxErrorText,
  parseRetryAfter,
  retryDelayMs,
  type BackoffOptions,
  type WriteResponse,
} from "./retry.js";
import { RP_WINDOW } from "./schema.js";
import { COLLECTOR_INFLUX_SETTINGS } from "../settings.js";

const gzip = promisify(gzipCb);

/** The collector's counters the writer updates (SelfMetrics has both). */
export interface WriterCounters {
  influxPointsWritten: number;
  influxWriteErrors: number;
}

/** Lets writes wait for the schema, and asks for it again when InfluxDB lost it. */
export interface SchemaGate {
  /** Resolves once the schema is in place; rejects only when `signal` aborts. */
  ready(signal: AbortSignal): Promise<void>;
  /** InfluxDB said the database or retention policy is missing: set it up again. */
  invalidate(reason: string): void;
}

export interface InfluxWriterOptions {
  target: InfluxTarget;
  /** Retention policy written to (default `gpu_window`). */
  retentionPolicy?: string | undefined;
  /** Lines per request (default 5,000). */
  batchSize?: number | undefined;
  /**
   * About this many bytes per request at most (default 4 MiB). A trueidle line is about
   * 450 bytes, so 5,000 lines take some 2.2 MB: a 1 MiB cap would halve every batch and
   * double InfluxDB's WAL syncs, which the benchmark showed costs about a third of the
   * throughput. InfluxDB's own limit (max-body-size) is 25 MB by default.
   */
  batchBytes?: number | undefined;
  /** A queued line waits at most this long for its batch to fill (default 1 s). */
  flushIntervalMs?: number | undefined;
  /** Lines the queue holds at most (default 100,000); see the overflow policy. */
  maxQueuedPoints?: number | undefined;
  /** Requests in flight at once (default 2). */
  maxInFlight?: number | undefined;
  /** Per-request timeout (default 10 s). */
  requestTimeoutMs?: number | undefined;
  /** How long `stop()` tries to flush (default 10 s). */
  stopTimeoutMs?: number | undefined;
  backoff?: BackoffOptions | undefined;
  /** gzip request bodies (default off: on a LAN it costs more CPU than it saves). */
  gzip?: boolean | undefined;
  logger: Logger;
  counters?: WriterCounters | undefined;
  schema?: SchemaGate | undefined;
  now?: (() => number) | undefined;
  random?: (() => number) | undefined;
}

export type WriteOutcome =
  /** Every line settled: `written` taken by InfluxDB, `rejected` refused for good (counted, logged). */
  | { status: "done"; written: number; rejected: number }
  /** The queue had no room; nothing was queued. */
  | { status: "queue_full" }
  /** The caller's signal aborted first. */
  | { status: "withdrawn" }
  /** The writer stopped before every line was written. */
  | { status: "stopped" };

export interface WriterStats {
  queuedPoints: number;
  inFlightRequests: number;
  pointsWritten: number;
  /** Points InfluxDB refused for good (4xx, partial writes). */
  pointsDropped: number;
  /** Failed requests, every attempt. */
  failedRequests: number;
  /** Submissions refused because the queue was full. */
  queueFull: number;
  requests: number;
}

class Submission {
  written = 0;
  rejected = 0;
  settled = false;
  /** Runs once when the submission settles (removes its abort listener). */
  cleanup: (() => void) | undefined;
  constructor(
    public remaining: number,
    private readonly resolveFn: (o: WriteOutcome) => void,
  ) {}

  finish(o: WriteOutcome): void {
    if (this.settled) return;
    this.settled = true;
    this.cleanup?.();
    this.resolveFn(o);
  }

  /** `n` of its lines are done: written (true) or refused for good (false). */
  account(n: number, written: boolean): void {
    if (written) this.written += n;
    else this.rejected += n;
    this.remaining -= n;
    if (this.remaining <= 0) this.finish({ status: "done", written: this.written, rejected: this.rejected });
  }
}

interface QueuedChunk {
  sub: Submission;
  lines: readonly string[];
  /** Next line of `lines` not yet taken into a request. */
  offset: number;
  queuedAt: number;
}

interface Batch {
  lines: string[];
  /** owners[i] submitted lines[i]. */
  owners: Submission[];
}

const DEFAULTS = {
  batchSize: COLLECTOR_INFLUX_SETTINGS.batchSize.default,
  batchBytes: 4 * 1024 * 1024,
  flushIntervalMs: COLLECTOR_INFLUX_SETTINGS.flushIntervalMs.default,
  maxQueuedPoints: COLLECTOR_INFLUX_SETTINGS.maxQueuedPoints.default,
  maxInFlight: 2,
  requestTimeoutMs: 10_000,
  stopTimeoutMs: 10_000,
};

/** Repeated warnings of one kind are logged at most this often. */
const LOG_EVERY_MS = 30_000;

export class InfluxWriter {
  private readonly opts: typeof DEFAULTS;
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly queue: QueuedChunk[] = [];
  private queuedPoints = 0;
  private queuedBytes = 0;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Set by flush(): every batch goes out at once until the writer is idle. */
  private flushing = false;
  private stopping: Promise<void> | undefined;
  /** Aborts requests and backoff sleeps when stop() gives up. */
  private readonly hardStop = new AbortController();
  private idleWaiters: Array<() => void> = [];
  private readonly stat: WriterStats = {
    queuedPoints: 0,
    inFlightRequests: 0,
    pointsWritten: 0,
    pointsDropped: 0,
    failedRequests: 0,
    queueFull: 0,
    requests: 0,
  };
  private readonly lastLogAt = new Map<string, number>();
  /** Failed attempts since the last success, for the recovery message. */
  private failingSince: number | undefined;
  private failuresInRow = 0;

  constructor(private readonly options: InfluxWriterOptions) {
    const pick = <K extends keyof typeof DEFAULTS>(k: K): number => {
      const v = options[k];
      if (v === undefined) return DEFAULTS[k];
      if (!Number.isFinite(v) || v <= 0)
        throw new Error(`InfluxWriter option ${k} must be a positive number (got ${v})`);
      return v;
    };
    this.opts = {
      batchSize: Math.floor(pick("batchSize")),
      batchBytes: pick("batchBytes"),
      flushIntervalMs: pick("flushIntervalMs"),
      maxQueuedPoints: Math.floor(pick("maxQueuedPoints")),
      maxInFlight: Math.floor(pick("maxInFlight")),
      requestTimeoutMs: pick("requestTimeoutMs"),
      stopTimeoutMs: pick("stopTimeoutMs"),
    };
    const t = options.target;
    const params = new URLSearchParams({ db: t.database, rp: options.retentionPolicy ?? RP_WINDOW, precision: "ms" });
    this.url = `${t.baseUrl}/write?${params}`;
    this.headers = { "content-type": "text/plain; charset=utf-8" };
    const auth = authorizationHeader(t);
    if (auth) this.headers["authorization"] = auth;
    if (options.gzip) this.headers["content-encoding"] = "gzip";
    this.log = options.logger;
    this.now = options.now ?? Date.now;
  }

  /**
   * Queues `lines` (line protocol, no newlines inside) and resolves when all are settled,
   * or at once with `queue_full` / `stopped`. Aborting `signal` withdraws the lines still
   * queued and resolves `withdrawn`.
   */
  submit(lines: readonly string[], signal?: AbortSignal): Promise<WriteOutcome> {
    if (this.closed) return Promise.resolve({ status: "stopped" });
    if (signal?.aborted) return Promise.resolve({ status: "withdrawn" });
    if (lines.length === 0) return Promise.resolve({ status: "done", written: 0, rejected: 0 });
    if (this.queuedPoints > 0 && this.queuedPoints + lines.length > this.opts.maxQueuedPoints) {
      this.stat.queueFull++;
      this.countError();
      this.logRateLimited(
        "queue_full",
        "warn",
        `The InfluxDB write queue is full (${this.queuedPoints} points, bound ${this.opts.maxQueuedPoints}); ` +
          "a batch was refused and its agent will send it again. Further refusals are logged at most every 30 s.",
        { target: describeTarget(this.options.target), refused_total: this.stat.queueFull },
      );
      return Promise.resolve({ status: "queue_full" });
    }
    return new Promise<WriteOutcome>((resolve) => {
      const sub = new Submission(lines.length, resolve);
      const chunk: QueuedChunk = { sub, lines, offset: 0, queuedAt: this.now() };
      this.queue.push(chunk);
      this.queuedPoints += lines.length;
      for (const l of lines) this.queuedBytes += l.length + 1;
      if (signal) {
        const onAbort = (): void => this.withdraw(chunk);
        signal.addEventListener("abort", onAbort, { once: true });
        // Long-lived signals (one per agent stream) must not collect listeners.
        sub.cleanup = () => signal.removeEventListener("abort", onAbort);
      }
      this.pump(false);
    });
  }

  /** Sends everything queued now and resolves when nothing is queued or in flight. */
  async flush(): Promise<void> {
    this.flushing = true;
    this.pump(true);
    await this.idle();
  }

  stats(): WriterStats {
    return { ...this.stat, queuedPoints: this.queuedPoints, inFlightRequests: this.inFlight };
  }

  /** Flushes, then stops; lines still unwritten after `stopTimeoutMs` resolve `stopped`. Safe twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.closed = true;
      // Not unref'd: stop() must settle even when nothing else keeps the process alive.
      const giveUp = setTimeout(() => this.abandonAll(), this.opts.stopTimeoutMs);
      await this.flush();
      clearTimeout(giveUp);
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
    })();
    return this.stopping;
  }

  private idle(): Promise<void> {
    if (this.queuedPoints === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private checkIdle(): void {
    if (this.queuedPoints !== 0 || this.inFlight !== 0) return;
    this.flushing = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private withdraw(chunk: QueuedChunk): void {
    const i = this.queue.indexOf(chunk);
    if (i >= 0) {
      this.queue.splice(i, 1);
      const left = chunk.lines.length - chunk.offset;
      this.queuedPoints -= left;
      for (let j = chunk.offset; j < chunk.lines.length; j++) this.queuedBytes -= (chunk.lines[j]?.length ?? 0) + 1;
    }
    chunk.sub.finish({ status: "withdrawn" });
    this.checkIdle();
  }

  /** Gives up on everything: queued lines and requests in flight resolve `stopped`. */
  private abandonAll(): void {
    const unwritten = this.queuedPoints;
    for (const chunk of this.queue.splice(0)) chunk.sub.finish({ status: "stopped" });
    this.queuedPoints = 0;
    this.queuedBytes = 0;
    this.hardStop.abort();
    this.log.error(
      `Stopped writing to InfluxDB with ${unwritten} queued points and ${this.inFlight} requests unwritten; ` +
        "their agents were not acknowledged and will send them again.",
      { target: describeTarget(this.options.target) },
    );
    this.checkIdle();
  }

  /** Starts requests while there is room: for full batches, or for any batch when `force` or the oldest line is due. */
  private pump(force: boolean): void {
    while (this.inFlight < this.opts.maxInFlight && this.queuedPoints > 0 && !this.hardStop.signal.aborted) {
      const head = this.queue[0];
      const due =
        force ||
        this.flushing ||
        this.closed ||
        (head !== undefined && this.now() - head.queuedAt >= this.opts.flushIntervalMs);
      const full = this.queuedPoints >= this.opts.batchSize || this.queuedBytes >= this.opts.batchBytes;
      if (!due && !full) break;
      const batch = this.take();
      this.inFlight++;
      void this.send(batch).finally(() => {
        this.inFlight--;
        this.pump(false);
        this.checkIdle();
      });
    }
    this.armTimer();
  }

  private armTimer(): void {
    // With every request slot busy, the end of a request pumps again; a timer would only spin.
    if (this.timer || this.queuedPoints === 0 || this.hardStop.signal.aborted || this.inFlight >= this.opts.maxInFlight)
      return;
    const head = this.queue[0];
    const wait = head ? Math.max(0, head.queuedAt + this.opts.flushIntervalMs - this.now()) : this.opts.flushIntervalMs;
    // Not unref'd: queued lines keep a process (a backfill, say) alive until they are sent.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump(false);
    }, wait);
  }

  /** Takes up to one batch of lines from the head of the queue. */
  private take(): Batch {
    const lines: string[] = [];
    const owners: Submission[] = [];
    let bytes = 0;
    while (lines.length < this.opts.batchSize) {
      const chunk = this.queue[0];
      if (!chunk) break;
      while (chunk.offset < chunk.lines.length && lines.length < this.opts.batchSize) {
        const line = chunk.lines[chunk.offset] as string;
        if (lines.length > 0 && bytes + line.length + 1 > this.opts.batchBytes) break;
        lines.push(line);
        owners.push(chunk.sub);
        bytes += line.length + 1;
        chunk.offset++;
      }
      if (chunk.offset < chunk.lines.length) break;
      this.queue.shift();
    }
    this.queuedPoints -= lines.length;
    this.queuedBytes -= bytes;
    return { lines, owners };
  }

  /** Sends one batch until it is settled or the writer gives up. */
  private async send(batch: Batch): Promise<void> {
    const n = batch.lines.length;
    let attempt = 0;
    for (;;) {
      if (this.hardStop.signal.aborted) return this.abandon(batch);
      if (this.options.schema) {
        try {
          await this.options.schema.ready(this.hardStop.signal);
        } catch {
          return this.abandon(batch);
        }
      }
      this.stat.requests++;
      const response = await this.post(batch.lines);
      if (this.hardStop.signal.aborted) return this.abandon(batch);
      const decision = classifyWrite(response);
      const text = response.kind === "response" ? influxErrorText(response.body) : response.error;
      const what = response.kind === "response" ? `HTTP ${response.status}` : "no answer";
      if (decision.action === "ok") {
        this.succeeded(n);
        this.settle(batch, n, true);
        return;
      }
      this.countError();
      switch (decision.action) {
        case "split": {
          if (n === 1) {
            this.dropped(batch, n, `InfluxDB refused a single line as too large (${what}: ${text})`);
            return;
          }
          const half = Math.ceil(n / 2);
          this.log.warn(`InfluxDB refused a write of ${n} points as too large (${what}); sending it again in halves.`, {
            target: describeTarget(this.options.target),
          });
          await this.send({ lines: batch.lines.slice(0, half), owners: batch.owners.slice(0, half) });
          await this.send({ lines: batch.lines.slice(half), owners: batch.owners.slice(half) });
          return;
        }
        case "partial": {
          const lost = Math.min(n, droppedPoints(text) ?? n);
          this.succeeded(n - lost);
          this.stat.pointsDropped += lost;
          this.settle(batch, n, lost === 0);
          this.logRateLimited(
            "partial",
            "error",
            `InfluxDB refused ${lost} of ${n} points (${what}: ${text}); they are lost and counted in trueidle_influx_write_errors_total.`,
            {
              target: describeTarget(this.options.target),
              status: response.kind === "response" ? response.status : undefined,
              influx_error: text,
            },
          );
          return;
        }
        case "drop":
          this.dropped(batch, n, `InfluxDB refused a write of ${n} points (${what}: ${text})`, response);
          return;
        case "schema":
          this.options.schema?.invalidate(text);
          this.retrying(decision.reason, what, text, n);
          break;
        case "retry":
          this.retrying(decision.reason, what, text, n);
          break;
      }
      // Nobody waits for these lines any more (their streams ended: the agents hold the
      // windows and send them again), so retrying them only delays a stop.
      if (batch.owners.every((o) => o.settled)) return;
      const retryAfter = response.kind === "response" ? parseRetryAfter(response.retryAfter, this.now()) : undefined;
      const delay = retryDelayMs(attempt++, this.options.backoff ?? DEFAULT_BACKOFF, retryAfter, this.options.random);
      if (!(await this.sleep(delay))) return this.abandon(batch);
    }
  }

  private async post(lines: readonly string[]): Promise<WriteResponse> {
    const text = `${lines.join("\n")}\n`;
    const timeout = AbortSignal.timeout(this.opts.requestTimeoutMs);
    const signal = anySignal([timeout, this.hardStop.signal]);
    try {
      const res = await fetch(this.url, {
        method: "POST",
        headers: this.headers,
        body: this.options.gzip ? await gzip(Buffer.from(text, "utf8")) : text,
        signal,
      });
      const body = res.status === 204 ? "" : await res.text();
      return { kind: "response", status: res.status, body, retryAfter: res.headers.get("retry-after") };
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const detail = timeout.aborted
        ? `no answer within ${this.opts.requestTimeoutMs} ms`
        : (cause?.code ?? cause?.message ?? errorMessage(err));
      return { kind: "network", error: detail };
    }
  }

  /** Resolves true after `ms`, false at once when the writer gives up. */
  private sleep(ms: number): Promise<boolean> {
    const signal = this.hardStop.signal;
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve(true);
      }, ms);
      const onAbort = (): void => {
        clearTimeout(t);
        resolve(false);
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  private settle(batch: Batch, n: number, written: boolean): void {
    // Runs of one owner are accounted together: a batch usually holds few submissions.
    let i = 0;
    while (i < n) {
      const owner = batch.owners[i] as Submission;
      let j = i + 1;
      while (j < n && batch.owners[j] === owner) j++;
      owner.account(j - i, written);
      i = j;
    }
  }

  private abandon(batch: Batch): void {
    for (const owner of new Set(batch.owners)) owner.finish({ status: "stopped" });
  }

  private succeeded(points: number): void {
    this.stat.pointsWritten += points;
    if (this.options.counters) this.options.counters.influxPointsWritten += points;
    if (this.failingSince !== undefined) {
      this.log.info(
        `InfluxDB writes succeed again after ${this.failuresInRow} failed attempts over ${Math.round((this.now() - this.failingSince) / 1000)} s.`,
        {
          target: describeTarget(this.options.target),
        },
      );
      this.failingSince = undefined;
      this.failuresInRow = 0;
      this.lastLogAt.delete("retry");
    }
  }

  private countError(): void {
    this.stat.failedRequests++;
    if (this.options.counters) this.options.counters.influxWriteErrors++;
  }

  private dropped(batch: Batch, n: number, message: string, response?: WriteResponse): void {
    this.stat.pointsDropped += n;
    this.settle(batch, n, false);
    this.logRateLimited(
      "drop",
      "error",
      `${message}; the points are dropped and counted in trueidle_influx_write_errors_total.`,
      {
        target: describeTarget(this.options.target),
        status: response?.kind === "response" ? response.status : undefined,
      },
    );
  }

  private retrying(reason: string, what: string, text: string, n: number): void {
    this.failuresInRow++;
    this.failingSince ??= this.now();
    const level = reason === "unauthorized" ? "error" : "warn";
    const hint =
      reason === "unauthorized"
        ? "check TRUEIDLE_INFLUX_USERNAME/PASSWORD or --influx-credentials-file and the user's WRITE right; "
        : reason === "schema_missing"
          ? "setting the database and retention policies up again; "
          : "";
    this.logRateLimited(
      "retry",
      level,
      `Writing ${n} points to InfluxDB failed (${what}: ${text}); ${hint}retrying with backoff. ` +
        "Agents are not acknowledged until their windows are written. Further failures are logged at most every 30 s.",
      { target: describeTarget(this.options.target), reason, failed_attempts: this.failuresInRow },
    );
  }

  private logRateLimited(kind: string, level: "warn" | "error", msg: string, fields: Record<string, unknown>): void {
    const now = this.now();
    const last = this.lastLogAt.get(kind);
    if (last !== undefined && now - last < LOG_EVERY_MS) return;
    this.lastLogAt.set(kind, now);
    this.log[level](msg, fields);
  }
}

/** An AbortSignal that aborts when any of `signals` does. */
function anySignal(signals: AbortSignal[]): AbortSignal {
  const any = (AbortSignal as unknown as { any?: (s: AbortSignal[]) => AbortSignal }).any;
  if (any) return any(signals);
  const ctl = new AbortController();
  for (const s of signals) {
    if (s.aborted) {
      ctl.abort(s.reason);
      break;
    }
    s.addEventListener("abort", () => ctl.abort(s.reason), { once: true });
  }
  return ctl.signal;
}
