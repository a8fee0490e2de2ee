/**
 * Keeps the InfluxDB schema in place for a running collector: runs `ensureSchema` in the
 * background at start, and again whenever a write finds the database or a retention
 * policy missing (InfluxDB reset or restored). While InfluxDB cannot be reached it retries
 * with backoff and jitter and says so in the log; it never throws, so the collector keeps
 * serving agents and `/metrics` (their acks wait for the writes, which wait for this).
 */
import { TrueidleError, errorMessage } from "../../common/errors.js";
import { InfluxQueryClient } from "../../common/influx/client.js";
import { describeTarget, type InfluxTarget } from "../../common/influx/target.js";
import type { Logger } from "../../common/log.js";
import { retryDelayMs, type BackoffOptions } from "./retry.js";
import { ensureSchema, type RetentionConfig } from "./schema.js";
import type { SchemaGate } from "./writer.js";

export interface SchemaKeeperOptions extends RetentionConfig {
  target: InfluxTarget;
  logger: Logger;
  backoff?: BackoffOptions | undefined;
  /** Timeout of each statement (default 10 s). */
  requestTimeoutMs?: number | undefined;
  random?: (() => number) | undefined;
}

/** Repeated failures are logged at most this often. */
const LOG_EVERY_MS = 60_000;
interface Waiter {
  resolve(): void;
  reject(): void;
}

const DEFAULT_SCHEMA_BACKOFF: BackoffOptions = { initialMs: 1_000, maxMs: 60_000 };

export class SchemaKeeper implements SchemaGate {
  private isReady = false;
  private running = false;
  private stopped = false;
  private waiters: Waiter[] = [];
  private readonly stopCtl = new AbortController();
  private wake: (() => void) | undefined;

  constructor(private readonly opts: SchemaKeeperOptions) {}

  /** True once the schema was found or made, until a write finds it missing. */
  get schemaReady(): boolean {
    return this.isReady;
  }

  /** Starts setting the schema up in the background; returns at once. */
  start(): void {
    if (this.stopped || this.running || this.isReady) return;
    this.running = true;
    void this.loop();
  }

  /** Resolves once the schema is in place; rejects when `signal` aborts or the keeper stops. */
  ready(signal: AbortSignal): Promise<void> {
    if (this.isReady) return Promise.resolve();
    if (signal.aborted || this.stopped) return Promise.reject(new Error("aborted"));
    this.start();
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error("aborted"));
      };
      const waiter: Waiter = {
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: () => {
          signal.removeEventListener("abort", onAbort);
          reject(new Error("the InfluxDB schema keeper stopped"));
        },
      };
      this.waiters.push(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  invalidate(reason: string): void {
    if (this.stopped || !this.isReady) return;
    this.isReady = false;
    this.opts.logger.warn(`InfluxDB lost trueidle's schema (${reason}); setting it up again.`, {
      target: describeTarget(this.opts.target),
    });
    this.start();
  }

  /** Ends the background loop; pending `ready` calls reject, so writes waiting on them give up. Safe twice. */
  stop(): void {
    this.stopped = true;
    this.stopCtl.abort();
    this.wake?.();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject();
  }

  private async loop(): Promise<void> {
    const log = this.opts.logger;
    const where = describeTarget(this.opts.target);
    const client = new InfluxQueryClient({
      target: this.opts.target,
      timeoutMs: this.opts.requestTimeoutMs ?? 10_000,
    });
    let attempt = 0;
    let firstFailureAt: number | undefined;
    let lastLogAt = -Infinity;
    try {
      while (!this.stopped) {
        try {
          const changes = await ensureSchema(this.opts.target, {
            client,
            rawRetentionMs: this.opts.rawRetentionMs,
            hourRetentionMs: this.opts.hourRetentionMs,
            signal: this.stopCtl.signal,
          });
          if (this.stopped) return;
          log.info(
            changes.length > 0
              ? `The InfluxDB schema is ready: ${changes.join("; ")}.`
              : "The InfluxDB schema is in place; nothing needed changing.",
            {
              target: where,
              ...(firstFailureAt !== undefined ? { waited_s: Math.round((Date.now() - firstFailureAt) / 1000) } : {}),
            },
          );
          this.isReady = true;
          const waiters = this.waiters;
          this.waiters = [];
          for (const w of waiters) w.resolve();
          return;
        } catch (err) {
          if (this.stopped) return;
          const delay = retryDelayMs(
            attempt++,
            this.opts.backoff ?? DEFAULT_SCHEMA_BACKOFF,
            undefined,
            this.opts.random,
          );
          firstFailureAt ??= Date.now();
          const now = Date.now();
          if (now - lastLogAt >= LOG_EVERY_MS) {
            lastLogAt = now;
            const refused = err instanceof TrueidleError && err.code !== "unavailable";
            const msg =
              `Could not set up the InfluxDB schema: ${errorMessage(err)}. ` +
              (refused ? "An operator must act (credentials, rights or the server's configuration). " : "") +
              `Retrying in the background (next in ${Math.round(delay / 100) / 10} s); ` +
              "windows wait, unacknowledged, in the agents. Logged at most once a minute.";
            if (refused) log.error(msg, { target: where, attempts: attempt });
            else log.warn(msg, { target: where, attempts: attempt });
          }
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, delay);
            t.unref();
            this.wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
          this.wake = undefined;
        }
      }
    } finally {
      this.running = false;
    }
  }
}
