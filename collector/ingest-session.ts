/**
 * One agent stream as a state machine, apart from the transport: Hello first, then
 * batches. `handle` answers each decoded message with a reply to send, or with a failure
 * that ends the stream as INVALID_ARGUMENT (the message names the field).
 *
 * A batch is applied to the fleet state before its ack is returned, so an ack means the
 * windows are counted. (When an InfluxDB writer is added, the ack must wait for it.)
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
import type { FleetState } from "./fleet-state.js";
import type { SelfMetrics } from "./self-metrics.js";
import { validateHello, validateWindow, type AgentHello, type WindowLimits, type WindowRejection } from "./validate.js";

/** A message as the transport decoded it, or why it could not. */
export type DecodedRequest = { ok: true; msg: StreamRequest } | { ok: false; error: string };

export type SessionStep = { kind: "reply"; response: StreamResponse } | { kind: "fail"; message: string };

export interface SessionDeps {
  fleet: FleetState;
  self: SelfMetrics;
  thresholds: Thresholds;
  collectorId: string;
  limits: Readonly<WindowLimits>;
  logger: Logger;
  now: () => number;
}

/** Rejected batches of one stream are logged at most this often. */
const REJECTION_LOG_INTERVAL_MS = 60_000;

export class IngestSession {
  private hello: AgentHello | undefined;
  private lastSeq: bigint | undefined;
  private closed = false;
  private batches = 0;
  private windows = 0;
  private lastRejectionLogAt = -Infinity;

  constructor(
    private readonly deps: SessionDeps,
    private readonly peer: string,
  ) {}

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

  private onHello(hello: Hello): SessionStep {
    if (this.hello) return this.fail("hello was sent twice; it must be the first message only");
    const result = validateHello(hello);
    if (!result.ok) return this.fail(result.message);
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
    this.lastSeq = batch.seq;
    this.batches++;
    this.windows += n;
    self.windowsReceived += n;

    const now = this.deps.now();
    const rejections: WindowRejection[] = [];
    let accepted = 0;
    for (let i = 0; i < n; i++) {
      const w = batch.windows[i];
      if (!w) continue;
      const rejection = validateWindow(w, i, limits, now);
      if (rejection) {
        rejections.push(rejection);
        continue;
      }
      if (fleet.applyWindow(hello, w) === "too_many_gpus") {
        rejections.push({ index: i, reason: "too_many_gpus", field: `windows[${i}].uuid` });
      } else {
        accepted++;
      }
    }
    for (const r of rejections) self.reject(r.reason);
    if (rejections.length > 0) this.logRejections(hello.hostname, n, rejections, now);

    return {
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
