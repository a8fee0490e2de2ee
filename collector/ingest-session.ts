/**
 * One agent stream as a state machine, apart from the transport: Hello first, then
 * batches. `handle` answers each decoded message with a reply to send, with a failure that
 * ends the stream (INVALID_ARGUMENT naming the field, or UNAVAILABLE when the agent should
 * simply come back later), or — when the collector writes InfluxDB — with a promise of
 * either, which the transport delivers when it settles.
 *
 * A batch is applied to the fleet state before its ack is returned, so an ack means the
 * windows are counted. With InfluxDB the ack also waits until the batch's windows are
 * durable — written to InfluxDB (or refused by it for good, which is counted and logged),
 * or in the collector's spool (collector/spool/) — so a window leaves the agent's buffer
 * only once it is durable; a full spool pushes the agent back with RESOURCE_EXHAUSTED. Every accepted
 * window is written, a re-sent one too — it may be re-sent because its first write
 * failed, and writing it again is harmless. Acks of one stream go out in batch order.
 * When the stream ends, its windows still waiting in the write queue are withdrawn: the
 * agent holds them and sends them again.
 *
 * Limits: a host has one stream (a newer one replaces it) among at most maxAgents
 * (agent-registry.ts); over its rate limit a stream's acks are held, and a stream that
 * does not slow down is pushed back (rate-limit.ts). Everything a stream holds is bounded
 * by the rate limit's debt bound.
 */
import { create } from "@bufbuild/protobuf";
import type { Logger } from "../common/log.js";
import type { Thresholds } from "../common/types.js";
import {
  BatchAckSchema,
  RejectionSchema,
  StreamResponseSchema,
  ThresholdsSchema,
  WelcomeSchema,
  type Hello,
  type StreamRequest,
  type StreamResponse,
  type WindowBatch,
} from "../gen/trueidle/v1/ingest_pb.js";
import { hostKey, tooManyAgentsRetryMs, type AgentRegistry, type RegisteredStream } from "./agent-registry.js";
import type { FleetState } from "./fleet-state.js";
import { HostLineEncoder } from "./influx/line-protocol.js";
import { gpuLabelProblem, hostLabelProblem } from "./series-budget.js";
import type { OwnerLedger } from "./owner-ledger.js";
import type { DurableSink, SinkOutcome } from "./spool/durable-sink.js";
import { AgentRateLimiter, type AgentRateLimits } from "./rate-limit.js";
import type { SelfMetrics, StreamRefusalReason } from "./self-metrics.js";
import { validateHello, validateWindow, type AgentHello, type WindowLimits, type WindowRejection } from "./validate.js";
import { errorMessage } from "../common/errors.js";

/** A message as the transport decoded it, or why it could not. */
export type DecodedRequest = { ok: true; msg: StreamRequest } | { ok: false; error: string };

export type SessionStep =
  | { kind: "reply"; response: StreamResponse }
  /**
   * End the stream: `invalid_argument` (the default) for a bad stream, `unavailable` for
   * "come back later", `resource_exhausted` for "come back after `retryAfterMs`" (sent to
   * the agent as the trailer `trueidle-retry-after-ms`). `reason` is counted in
   * trueidle_streams_refused_total (default: `invalid` for invalid_argument,
   * `shutting_down` for unavailable, `rate_limited` for resource_exhausted).
   */
  | {
      kind: "fail";
      message: string;
      code?: "invalid_argument" | "unavailable" | "resource_exhausted";
      retryAfterMs?: number;
      reason?: StreamRefusalReason;
    }
  /** The answer is not known yet; deliver the settled step (unless the stream ended meanwhile). */
  | { kind: "later"; step: Promise<SessionStep> };

export interface SessionDeps {
  fleet: FleetState;
  self: SelfMetrics;
  thresholds: Thresholds;
  collectorId: string;
  limits: Readonly<WindowLimits>;
  logger: Logger;
  now: () => number;
  /** Set when the collector writes windows to InfluxDB: acks wait for it. */
  influx?: SessionInflux | undefined;
  /** Streams served at once and one per host; unlimited without. */
  agents?: AgentRegistry | undefined;
  /** Owners of GPUs and their seconds (owner-ledger.ts); none without. */
  owners?: OwnerLedger | undefined;
  /** Per-stream rate limits (rate-limit.ts); unlimited without. */
  rateLimits?: Readonly<AgentRateLimits> | undefined;
  /** Monotonic clock in ms for the rate limits (default performance.now). */
  clock?: (() => number) | undefined;
}

/** What the transport does for a session beyond answering its messages. */
export interface SessionHooks {
  /** A newer stream of the same host took this one's place: end this stream with UNAVAILABLE and `message`. */
  replaced(message: string): void;
}

export const REPLACED_MESSAGE = "replaced by a newer stream from the same host";

export interface SessionInflux {
  /** Where a batch's lines go before its ack: InfluxDB, or the spool while InfluxDB is away or slow. */
  sink: DurableSink;
}

/** Rejected batches of one stream are logged at most this often. */
const REJECTION_LOG_INTERVAL_MS = 60_000;

export class IngestSession implements RegisteredStream {
  private hello: AgentHello | undefined;
  /** The host's key in deps.agents once admitted. */
  private agentKey: string | undefined;
  private readonly limiter: AgentRateLimiter | undefined;
  /** Releases of the acks held by the rate limit (holdAcks). */
  private readonly holds = new Set<() => void>();
  private lastSeq: bigint | undefined;
  private closed = false;
  private batches = 0;
  private windows = 0;
  private lastRejectionLogAt = -Infinity;
  /** The host's line-protocol encoder, with an InfluxDB writer only. */
  private encoder: HostLineEncoder | undefined;
  /** The last ack still waiting for InfluxDB; later acks wait for it, to keep batch order. */
  private tail: Promise<unknown> | undefined;
  /** Aborted when the stream ends: withdraws its lines still queued for InfluxDB. */
  private readonly ended = new AbortController();

  constructor(
    private readonly deps: SessionDeps,
    private readonly peer: string,
    private readonly hooks?: SessionHooks | undefined,
  ) {
    const clock = deps.clock ?? (() => performance.now());
    this.limiter = deps.rateLimits ? new AgentRateLimiter(deps.rateLimits, clock) : undefined;
  }

  /** The host's name once a valid Hello arrived. */
  get hostname(): string | undefined {
    return this.hello?.hostname;
  }

  handle(req: DecodedRequest): SessionStep {
    if (!req.ok) return this.fail(`the message could not be decoded as trueidle.v1.StreamRequest: ${req.error}`);
    const msg = req.msg.msg;
    switch (msg.case) {
      case "hello":
        return this.onHello(msg.value);
      case "batch":
        return this.onBatch(msg.value);
      default:
        return this.fail("the message holds neither hello nor batch");
    }
  }

  /** Ends the session; safe to call more than once. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.ended.abort();
    this.releaseHeldAcks();
    if (this.agentKey !== undefined) this.deps.agents?.leave(this.agentKey, this);
    if (!this.hello) return;
    this.deps.self.agentsConnected--;
    this.deps.logger.info(`Agent on ${this.hello.hostname} disconnected: ${reason}.`, {
      host: this.hello.hostname,
      peer: this.peer,
      batches: this.batches,
      windows: this.windows,
    });
  }

  private fail(message: string): SessionStep {
    return { kind: "fail", message };
  }

  /** Called by deps.agents when a newer stream of this host was admitted. */
  replaced(by: string): void {
    this.deps.logger.info(`Agent on ${this.hello?.hostname} connected again from ${by}; its older stream is ended.`, {
      host: this.hello?.hostname,
      peer: this.peer,
      newPeer: by,
    });
    this.hooks?.replaced(REPLACED_MESSAGE);
  }

  private onHello(hello: Hello): SessionStep {
    if (this.hello) return this.fail("hello was sent twice; it must be the first message only");
    const result = validateHello(hello);
    if (!result.ok) return this.fail(result.message);
    const overBudget = hostLabelProblem(result.hello.hostname, result.hello.labels);
    if (overBudget) return this.fail(overBudget);
    if (this.deps.influx) {
      try {
        this.encoder = new HostLineEncoder(result.hello.hostname, result.hello.labels, this.deps.owners?.labels);
      } catch (err) {
        // Only what line protocol cannot carry exactly gets here (a trailing backslash).
        return this.fail(`hello.host cannot be stored in InfluxDB: ${errorMessage(err)}`);
      }
    }
    const agents = this.deps.agents;
    if (agents) {
      const key = hostKey(result.hello.hostname, result.hello.machineId);
      if (agents.admit(key, this, this.peer) === "full") {
        return {
          kind: "fail",
          code: "resource_exhausted",
          reason: "too_many_agents",
          retryAfterMs: tooManyAgentsRetryMs(),
          message: `the collector serves ${agents.maxAgents} agents, its limit (--max-agents); come back later or use another collector`,
        };
      }
      this.agentKey = key;
    }
    this.hello = result.hello;
    this.deps.self.agentsConnected++;
    this.deps.logger.info(`Agent on ${result.hello.hostname} connected from ${this.peer}.`, {
      host: result.hello.hostname,
      peer: this.peer,
      agentVersion: result.hello.agentVersion,
      source: result.hello.source,
      windowMs: result.hello.windowMs,
      labels: result.hello.labels,
    });
    const t = this.deps.thresholds;
    return {
      kind: "reply",
      response: create(StreamResponseSchema, {
        msg: {
          case: "welcome",
          value: create(WelcomeSchema, {
            collectorId: this.deps.collectorId,
            thresholds: create(ThresholdsSchema, {
              utilBusyPercent: t.utilBusyPercent,
              realActiveRatio: t.realActiveRatio,
              heldMemoryBytes: BigInt(Math.round(t.heldMemoryBytes)),
            }),
          }),
        },
      }),
    };
  }

  private onBatch(batch: WindowBatch): SessionStep {
    const hello = this.hello;
    if (!hello) return this.fail("batch arrived before hello; hello must be the first message");
    const { fleet, self, limits } = this.deps;
    const n = batch.windows.length;
    if (n > limits.maxWindowsPerBatch) {
      self.windowsReceived += n;
      self.reject("batch_too_large", n);
      return this.fail(`batch.windows holds ${n} windows; at most ${limits.maxWindowsPerBatch} are allowed per batch`);
    }
    if (this.lastSeq !== undefined && batch.seq <= this.lastSeq) {
      return this.fail(`batch.seq ${batch.seq} is not above the previous ${this.lastSeq}; it must increase`);
    }
    const pace = this.limiter?.batch(n);
    if (pace?.kind === "refuse") {
      const l = this.deps.rateLimits;
      return {
        kind: "fail",
        code: "resource_exhausted",
        reason: "rate_limited",
        retryAfterMs: pace.retryAfterMs,
        message:
          `the agent sent over its rate limit (${l?.windowsPerS} windows/s, ${l?.messagesPerS} batches/s) without waiting for ` +
          `its acks; come back in ${Math.ceil(pace.retryAfterMs / 1000)} s`,
      };
    }
    this.lastSeq = batch.seq;
    this.batches++;
    this.windows += n;
    self.windowsReceived += n;

    const now = this.deps.now();
    const rejections: WindowRejection[] = [];
    const encoder = this.encoder;
    const lines: string[] = [];
    let accepted = 0;
    for (let i = 0; i < n; i++) {
      const w = batch.windows[i];
      if (!w) continue;
      const rejection = validateWindow(w, i, limits, now);
      if (rejection) {
        rejections.push(rejection);
        continue;
      }
      const overBudget = gpuLabelProblem(w.index, w.uuid, w.model, w.driverVersion, w.parentUuid, w.migProfile);
      if (overBudget) {
        rejections.push({ index: i, reason: "too_large", field: `windows[${i}].${overBudget}` });
        continue;
      }
      const unstorable = encoder ? HostLineEncoder.windowProblem(w) : undefined;
      if (unstorable) {
        rejections.push({ index: i, reason: "bad_string", field: `windows[${i}].${unstorable}` });
        continue;
      }
      const outcome = fleet.applyWindow(hello, w);
      if (outcome === "too_many_gpus" || outcome === "series_limit") {
        rejections.push({ index: i, reason: outcome, field: `windows[${i}].uuid` });
      } else if (outcome === "overlap") {
        rejections.push({ index: i, reason: outcome, field: `windows[${i}].start_ms` });
      } else {
        accepted++;
        if (outcome === "applied") this.deps.owners?.applyWindow(hello.hostname, w, now);
        // A replay is written too: its first write may have failed.
        if (outcome === "replayed") self.windowsReplayed++;
        if (encoder) {
          // A board's row is a mig_board_window point, with no owners (line-protocol.ts).
          lines.push(encoder.line(w));
          encoder.ownerLines(w, lines);
        }
      }
    }
    for (const r of rejections) self.reject(r.reason);
    if (rejections.length > 0) this.logRejections(hello.hostname, n, rejections, now);

    const reply: SessionStep = {
      kind: "reply",
      response: create(StreamResponseSchema, {
        msg: {
          case: "ack",
          value: create(BatchAckSchema, {
            seq: batch.seq,
            accepted,
            rejections: rejections.map((r) => create(RejectionSchema, r)),
          }),
        },
      }),
    };
    // Over the rate limit the ack is held: the agent, which waits for acks, slows down.
    if (pace && pace.delayMs > 0) this.holdAcks(pace.delayMs);
    const influx = this.deps.influx;
    if (!influx) return this.tail === undefined ? reply : { kind: "later", step: this.inOrder(reply) };
    if (lines.length === 0 && this.tail === undefined) return reply;
    return { kind: "later", step: this.afterWrite(influx, lines, reply) };
  }

  /** The batch's step once its lines are durable (in InfluxDB or the spool) and every earlier ack is out. */
  private afterWrite(influx: SessionInflux, lines: string[], reply: SessionStep): Promise<SessionStep> {
    const before = this.tail;
    const durable: Promise<SinkOutcome> = influx.sink.submit(lines, this.ended.signal);
    const step = (async (): Promise<SessionStep> => {
      const outcome = await durable;
      if (before) await before;
      switch (outcome.status) {
        case "written":
        case "spooled":
          return reply;
        case "full":
          return {
            kind: "fail",
            code: "resource_exhausted",
            reason: "spool_full",
            retryAfterMs: outcome.retryAfterMs,
            message: `the collector's spool is full while InfluxDB catches up; send the windows again in ${Math.ceil(outcome.retryAfterMs / 1000)} s`,
          };
        case "busy":
          return {
            kind: "fail",
            code: "unavailable",
            message: "the collector's InfluxDB write queue is full; send the windows again later",
          };
        case "withdrawn":
          // The stream ended meanwhile; the transport drops this step.
          return { kind: "fail", code: "unavailable", message: "the stream ended before its windows were written" };
        case "stopped":
          return { kind: "fail", code: "unavailable", message: "the collector is shutting down" };
      }
    })();
    this.setTail(step);
    return step;
  }

  /** Holds every later ack at least `ms` from now (acks stay in batch order behind `tail`). */
  private holdAcks(ms: number): void {
    const before = this.tail;
    const held = new Promise<void>((resolve) => {
      const release = (): void => {
        clearTimeout(timer);
        this.holds.delete(release);
        resolve();
      };
      const timer = setTimeout(release, ms);
      timer.unref();
      this.holds.add(release);
    });
    this.setTail(before ? Promise.all([before, held]) : held);
  }

  /**
   * Sends the acks held by the rate limit now (when the collector stops, or the stream
   * ended); the windows are applied already, the hold only slows the agent down.
   */
  releaseHeldAcks(): void {
    for (const release of [...this.holds]) release();
  }

  /** `step` once every earlier ack is out. */
  private inOrder(step: SessionStep): Promise<SessionStep> {
    const before = this.tail ?? Promise.resolve();
    const settled = before.then(() => step);
    this.setTail(settled);
    return settled;
  }

  private setTail(p: Promise<unknown>): void {
    const tail = p.then(
      () => undefined,
      () => undefined,
    );
    this.tail = tail;
    void tail.then(() => {
      if (this.tail === tail) this.tail = undefined;
    });
  }

  private logRejections(host: string, total: number, rejections: WindowRejection[], now: number): void {
    if (now - this.lastRejectionLogAt < REJECTION_LOG_INTERVAL_MS) return;
    this.lastRejectionLogAt = now;
    const first = rejections[0];
    this.deps.logger.warn(
      `Rejected ${rejections.length} of ${total} windows from ${host}; the first was ${first?.field} (${first?.reason}). ` +
        `Further rejections from this stream are logged at most once a minute and counted in trueidle_windows_rejected_total.`,
      { host, peer: this.peer },
    );
  }
}
