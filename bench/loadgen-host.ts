/**
 * One simulated host of the load generator: its own gRPC channel and stream (as a real
 * agent has, `grpc.use_local_subchannel_pool`), a Hello with the host's identity and
 * labels, then batches of windows already encoded, framed as the agent frames them
 * (agent/shipper/batch-frame.ts), with the shipper's flow: at most a few batches in flight,
 * windows leave the queue only when acknowledged, a broken stream puts the batches in
 * flight back in front, in order, and the host reconnects after a backoff with jitter, or
 * after the delay a pushing-back collector names (RESOURCE_EXHAUSTED with
 * `trueidle-retry-after-ms`). A batch with no ack within the response timeout breaks the
 * stream, as in the shipper, and the host comes back at a point of its own within that timeout.
 */
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Backoff } from "../agent/shipper/backoff.js";
import { frameBatch } from "../agent/shipper/batch-frame.js";
import { ingestClientDefinition, RETRY_AFTER_METADATA_KEY } from "../common/grpc-service.js";
import { StreamRequestSchema, type StreamRequest, type StreamResponse } from "../gen/trueidle/v1/ingest_pb.js";
import type { SimHostIdentity } from "./loadgen-windows.js";

const IngestClient = grpc.makeGenericClientConstructor(ingestClientDefinition, "IngestService");
type Duplex = grpc.ClientDuplexStream<StreamRequest | Buffer, StreamResponse>;

/** One window waiting for its ack. */
interface Pending {
  bytes: Buffer;
  owned: boolean;
}

interface InFlight {
  seq: bigint;
  windows: Pending[];
  sentMs: number;
}

/** What every host adds to; one object for the whole load, read by the sampler. */
export class LoadTotals {
  windowsMade = 0;
  windowsSent = 0;
  windowsAcked = 0;
  /** Acked windows that carried an owner: the `gpu_owner_window` points expected. */
  ownedAcked = 0;
  windowsRejected = 0;
  rejectionReasons = new Map<string, number>();
  batchesSent = 0;
  batchesAcked = 0;
  /** Send of a batch → its ack, ms, every batch. */
  ackLatencyMs: number[] = [];
  connects = 0;
  welcomes = 0;
  /** Streams broken or refused, by gRPC status name (and "no_answer" for the response timeout). */
  breaks = new Map<string, number>();
  pushbacks = 0;
  /** Hosts with an open stream that said Welcome. */
  connected = 0;
}

export interface SimHostOptions {
  target: string;
  credentials: grpc.ChannelCredentials;
  channelOptions: grpc.ChannelOptions;
  metadata: grpc.Metadata | undefined;
  windowMs: number;
  maxBatchesInFlight: number;
  maxWindowsPerBatch: number;
  responseTimeoutMs: number;
  totals: LoadTotals;
}

export class SimHost {
  private client: grpc.Client | undefined;
  private call: Duplex | undefined;
  private ready = false;
  private queue: Pending[] = [];
  private inFlight: InFlight[] = [];
  private seq = 0n;
  private readonly backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private openedMs = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(
    readonly identity: SimHostIdentity,
    private readonly opts: SimHostOptions,
  ) {}

  get connected(): boolean {
    return this.ready;
  }

  /** Windows not yet acknowledged: queued and in flight. */
  get unacked(): number {
    return this.queue.length + this.inFlight.reduce((n, b) => n + b.windows.length, 0);
  }

  connect(): void {
    if (this.stopped) return;
    this.client?.close();
    this.client = new IngestClient(this.opts.target, this.opts.credentials, this.opts.channelOptions);
    const call = (this.client as unknown as { stream(m: grpc.Metadata): Duplex }).stream(
      this.opts.metadata?.clone() ?? new grpc.Metadata(),
    );
    this.call = call;
    this.ready = false;
    this.openedMs = Date.now();
    this.opts.totals.connects++;
    call.on("data", (msg: StreamResponse) => this.onResponse(call, msg));
    call.on("error", (err: grpc.ServiceError) => this.onBroken(call, err));
    call.on("end", () => this.onBroken(call, undefined));
    call.write(
      create(StreamRequestSchema, {
        msg: {
          case: "hello",
          value: {
            agentVersion: "0.1.0-loadgen",
            host: {
              hostname: this.identity.hostname,
              machineId: this.identity.hostname,
              labels: this.identity.labels,
            },
            source: "nvml",
            windowMs: this.opts.windowMs,
          },
        },
      }),
    );
  }

  /** Queues finished windows; they go out at once when the stream is ready. */
  enqueue(windows: Pending[]): void {
    this.opts.totals.windowsMade += windows.length;
    for (const w of windows) this.queue.push(w);
    this.pump();
  }

  /** Breaks a stream whose Welcome or oldest ack is overdue; called by the load's timer. */
  checkTimeout(now: number): void {
    const call = this.call;
    if (!call) return;
    const oldest = this.inFlight[0];
    const limit = this.opts.responseTimeoutMs;
    if ((!this.ready && now - this.openedMs > limit) || (oldest && now - oldest.sentMs > limit)) {
      this.onBroken(call, undefined, "no_answer");
    }
  }

  /** Resolves once nothing is left unacknowledged. */
  drained(): Promise<void> {
    if (this.unacked === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const call = this.call;
    this.call = undefined;
    if (this.ready) this.opts.totals.connected--;
    this.ready = false;
    if (call) {
      call.removeAllListeners();
      call.on("error", () => {});
      call.end();
      call.cancel();
    }
    this.client?.close();
    this.client = undefined;
  }

  private onResponse(call: Duplex, msg: StreamResponse): void {
    if (call !== this.call) return;
    const totals = this.opts.totals;
    if (msg.msg.case === "welcome") {
      if (!this.ready) totals.connected++;
      this.ready = true;
      totals.welcomes++;
      this.backoff.reset();
      this.pump();
      return;
    }
    if (msg.msg.case !== "ack") return;
    const ack = msg.msg.value;
    const i = this.inFlight.findIndex((b) => b.seq === ack.seq);
    if (i < 0) {
      totals.breaks.set("unknown_ack", (totals.breaks.get("unknown_ack") ?? 0) + 1);
      return;
    }
    const [batch] = this.inFlight.splice(i, 1);
    if (!batch) return;
    totals.batchesAcked++;
    totals.ackLatencyMs.push(Date.now() - batch.sentMs);
    totals.windowsAcked += ack.accepted;
    const rejected = new Set<number>();
    for (const r of ack.rejections) {
      rejected.add(r.index);
      totals.windowsRejected++;
      const key = `${r.reason}:${r.field}`;
      totals.rejectionReasons.set(key, (totals.rejectionReasons.get(key) ?? 0) + 1);
    }
    batch.windows.forEach((w, idx) => {
      if (w.owned && !rejected.has(idx)) totals.ownedAcked++;
    });
    this.pump();
  }

  private onBroken(call: Duplex, err: grpc.ServiceError | undefined, why?: string): void {
    if (call !== this.call || this.stopped) return;
    this.call = undefined;
    const totals = this.opts.totals;
    if (this.ready) totals.connected--;
    this.ready = false;
    call.removeAllListeners();
    call.on("error", () => {});
    call.cancel();
    // Unacknowledged batches go back to the front, in order, to be sent again.
    const back = this.inFlight.flatMap((b) => b.windows);
    this.inFlight = [];
    this.queue = back.concat(this.queue);
    const name = why ?? (err ? (grpc.status[err.code] ?? String(err.code)) : "stream_ended");
    totals.breaks.set(name, (totals.breaks.get(name) ?? 0) + 1);
    const retryAfterMs = retryAfter(err);
    if (err?.code === grpc.status.RESOURCE_EXHAUSTED || retryAfterMs !== undefined) totals.pushbacks++;
    // As the agent's shipper: after no answer, back at a point of its own within the timeout.
    const spread = why === "no_answer" ? Math.round(Math.random() * this.opts.responseTimeoutMs) : 0;
    const delay = Math.max(retryAfterMs ?? 0, this.backoff.next(), spread);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  private pump(): void {
    const call = this.call;
    if (call && this.ready) {
      while (this.inFlight.length < this.opts.maxBatchesInFlight && this.queue.length > 0) {
        const windows = this.queue.splice(0, this.opts.maxWindowsPerBatch);
        this.seq++;
        this.inFlight.push({ seq: this.seq, windows, sentMs: Date.now() });
        this.opts.totals.windowsSent += windows.length;
        this.opts.totals.batchesSent++;
        call.write(
          frameBatch(
            this.seq,
            windows.map((w) => w.bytes),
          ),
        );
      }
    }
    if (this.unacked === 0 && this.idleWaiters.length > 0) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}

/** The delay a collector asked for in the trailer, in ms; undefined when absent or unreadable. */
function retryAfter(err: grpc.ServiceError | undefined): number | undefined {
  const raw = err?.metadata?.get(RETRY_AFTER_METADATA_KEY)[0];
  if (raw === undefined) return undefined;
  const ms = Number(typeof raw === "string" ? raw : raw.toString());
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, 3_600_000) : undefined;
}
