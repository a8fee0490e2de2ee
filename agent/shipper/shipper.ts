/**
 * Ships finished windows to a collector over one long-lived gRPC stream.
 *
 * Windows wait in a bounded buffer (window-buffer.ts: in memory, or on disk so that they
 * survive a restart) until the collector acknowledges the batch that carried them; a window
 * leaves the buffer only then. When the stream breaks, the batches in flight go back to the
 * front of the buffer in order and are sent again after reconnecting (exponential backoff
 * with jitter, or longer when the collector names a delay in the `trueidle-retry-after-ms`
 * trailer). The collector keys windows by (uuid, start), so a window sent twice is
 * harmless. When the bound is hit the oldest windows are dropped, counted and logged.
 */
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { StreamRequestSchema, type StreamRequest, type StreamResponse } from "../../gen/trueidle/v1/ingest_pb.js";
import { ingestClientDefinition, RETRY_AFTER_METADATA_KEY } from "../../common/grpc-service.js";
import { errorMessage } from "../../common/errors.js";
import type { Service } from "../../common/lifecycle.js";
import type { Logger } from "../../common/log.js";
import type { HostIdentity, Thresholds } from "../../common/types.js";
import type { GpuWindowRecord } from "../window.js";
import { encodeWindow } from "./encode-window.js";
import { frameBatch } from "./batch-frame.js";
import { Backoff } from "./backoff.js";
import { WindowBuffer, type BufferEntry } from "./window-buffer.js";
import { AGENT_SETTINGS } from "../settings.js";
import {
  afterProbe,
  diagnoseConnectFailure,
  probeTls,
  type ConnectDiagnosis,
  type ConnectProblem,
} from "./connect-diagnosis.js";
import { CollectorChooser, type CollectorChoice, type ResolveCollector } from "./collector-choice.js";

/** Options with their defaults filled in: every key present, none undefined. */
type Filled<T> = { [K in keyof T]-?: Exclude<T[K], undefined> };

export interface ShipperOptions {
  /**
   * Collector addresses, HOST:PORT; a name with several addresses is spread over and
   * failed over within, then the next entry is tried (collector-choice.ts).
   */
  targets: string[];
  host: HostIdentity;
  agentVersion: string;
  source: string;
  windowMs: number;
  logger: Logger;
  /** Channel credentials (TLS); insecure when absent. */
  credentials?: grpc.ChannelCredentials | undefined;
  /** Metadata sent when each stream opens (for example `authorization: Bearer …`). */
  callMetadata?: grpc.Metadata | undefined;
  /** Extra grpc-js channel options; they override the shipper's own. */
  channelOptions?: grpc.ChannelOptions | undefined;
  /**
   * The buffer of unacknowledged windows (a disk-backed one survives restarts). Its owner
   * closes it. Without one, an in-memory buffer bounded by `maxBufferedWindows` and
   * `maxBufferBytes` is used.
   */
  buffer?: WindowBuffer | undefined;
  /** Windows kept unacknowledged at most; the oldest beyond it are dropped and counted. */
  maxBufferedWindows?: number | undefined;
  /** Encoded bytes of unacknowledged windows kept at most (in-memory buffer only). */
  maxBufferBytes?: number | undefined;
  maxWindowsPerBatch?: number | undefined;
  /**
   * Encoded bytes per batch, about, at most (default 3 MiB): the collector refuses messages
   * over 4 MiB by default, and 2,000 windows with long process names can exceed that.
   */
  maxBatchBytes?: number | undefined;
  /** Batches sent and not yet acknowledged, at most. */
  maxBatchesInFlight?: number | undefined;
  /**
   * A stream with no Welcome, or a batch with no ack, after this long is broken; the agent
   * then reconnects after a delay drawn from [0, this] (at least the backoff), so a fleet
   * whose collector was swamped comes back spread over that time, not all at once.
   */
  responseTimeoutMs?: number | undefined;
  backoffInitialMs?: number | undefined;
  backoffMaxMs?: number | undefined;
  onThresholds?: ((t: Thresholds) => void) | undefined;
  now?: (() => number) | undefined;
  /** Uniform in [0, 1): the spread of reconnects after no answer (default Math.random). */
  random?: (() => number) | undefined;
  /** How a collector's name becomes addresses (default: the system resolver, or the DNS server a `dns://` entry names). */
  resolveCollector?: ResolveCollector | undefined;
}

export interface ShipperStats {
  connected: boolean;
  buffered: number;
  /** Encoded size of the buffered windows. */
  bufferBytes: number;
  inFlight: number;
  sent: number;
  acked: number;
  rejected: number;
  dropped: number;
  reconnects: number;
  /** Time of the last ack, ms; undefined before the first. */
  lastAckMs?: number | undefined;
}

/** While a collector stays unreachable or refuses the agent, one log line a minute at most. */
const FAILURE_LOG_INTERVAL_MS = 60_000;

const IngestClient = grpc.makeGenericClientConstructor(ingestClientDefinition, "IngestService");
type Duplex = grpc.ClientDuplexStream<StreamRequest | Buffer, StreamResponse>;

interface InFlight {
  seq: bigint;
  entries: BufferEntry[];
  sentMs: number;
}

type OptionalOptions =
  | "credentials"
  | "callMetadata"
  | "channelOptions"
  | "buffer"
  | "maxBufferBytes"
  | "onThresholds"
  | "resolveCollector";

export class Shipper implements Service {
  private readonly opts: Filled<Omit<ShipperOptions, OptionalOptions>> & Pick<ShipperOptions, OptionalOptions>;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly buffer: WindowBuffer;
  private inFlight: InFlight[] = [];
  private call: Duplex | undefined;
  private client: grpc.Client | undefined;
  private ready = false;
  private seq = 0n;
  private readonly chooser: CollectorChooser;
  /** The collector of the stream open now, or of the last one. */
  private current: CollectorChoice | undefined;
  /** Counts connects, so a resolution that finishes after a newer connect or stop() is dropped. */
  private connects = 0;
  private readonly backoff: Backoff;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private stopped = false;
  private started = false;
  private streamOpenedMs = 0;
  private counters = { sent: 0, acked: 0, rejected: 0, reconnects: 0 };
  private lastAckMs: number | undefined;
  /** A pushback is logged once until the next successful connect. */
  private pushbackLogged = false;
  /** Failed attempts since the last Welcome, and when one was last logged above debug. */
  private failedAttempts = 0;
  private lastFailureLogMs = -Infinity;
  /** The probable causes of failed connects logged since the last Welcome: each is said once at once, then the minute rule holds. */
  private causesLogged = new Set<ConnectProblem>();
  private idleWaiters: Array<() => void> = [];

  constructor(opts: ShipperOptions) {
    if (opts.targets.length === 0) throw new Error("at least one collector address is needed");
    this.opts = {
      maxBufferedWindows: AGENT_SETTINGS.maxBufferedWindows.default,
      maxWindowsPerBatch: 2_000,
      maxBatchBytes: 3 * 1024 * 1024,
      maxBatchesInFlight: 4,
      responseTimeoutMs: 30_000,
      backoffInitialMs: 500,
      backoffMaxMs: 30_000,
      now: Date.now,
      random: Math.random,
      ...definedOnly(opts),
      targets: opts.targets,
      host: opts.host,
      agentVersion: opts.agentVersion,
      source: opts.source,
      windowMs: opts.windowMs,
      logger: opts.logger,
    };
    this.credentials = opts.credentials ?? grpc.credentials.createInsecure();
    this.buffer =
      opts.buffer ??
      WindowBuffer.memory({
        maxWindows: this.opts.maxBufferedWindows,
        maxBytes: opts.maxBufferBytes,
        logger: this.opts.logger,
        now: this.opts.now,
      });
    this.buffer.onSendable = () => this.pump();
    this.backoff = new Backoff({ initialMs: this.opts.backoffInitialMs, maxMs: this.opts.backoffMaxMs });
    // By host name: the name the fleet knows the host by, the same after a restart or a
    // reinstall, and unique in the fleet where a cloned image's machine id may not be.
    this.chooser = new CollectorChooser(opts.targets, opts.host.hostname, opts.resolveCollector);
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    // A sixth of the response timeout (5 s at the default 30 s): a stream that stopped
    // answering is broken within the timeout and a bit, without a wake-up every second.
    this.watchdog = setInterval(
      () => this.checkTimeouts(),
      Math.min(5_000, Math.max(100, this.opts.responseTimeoutMs / 6)),
    );
    this.watchdog.unref();
    this.connect();
  }

  /** Adds finished windows to the buffer and sends them when the stream is ready. */
  enqueue(windows: readonly GpuWindowRecord[]): void {
    if (windows.length === 0) return;
    // Held encoded: a few hundred bytes a window instead of a tree of objects.
    this.buffer.push(windows.map(encodeWindow));
  }

  stats(): ShipperStats {
    const inFlight = this.inFlight.reduce((n, b) => n + b.entries.length, 0);
    const buf = this.buffer.stats();
    return {
      connected: this.ready,
      buffered: buf.windows,
      bufferBytes: buf.bytes,
      inFlight,
      ...this.counters,
      dropped: buf.dropped,
      lastAckMs: this.lastAckMs,
    };
  }

  /** Resolves true once every buffered window is acknowledged, false after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.isIdle()) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      // Not unref()ed: whoever waits for the drain (a stopping agent) must be woken by it even
      // when nothing else keeps the process alive, e.g. while the collector cannot be reached.
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  /** Closes the stream. Unacknowledged windows are reported as lost by the caller's log. Safe twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    const call = this.call;
    this.call = undefined;
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

  private isIdle(): boolean {
    return this.buffer.stats().windows === 0 && this.inFlight.length === 0;
  }

  private connect(): void {
    if (this.stopped) return;
    const attempt = ++this.connects;
    void this.chooser.next().then((choice) => {
      if (this.stopped || attempt !== this.connects) return;
      try {
        this.open(choice);
      } catch (err) {
        // grpc-js refuses a target it cannot parse; the entry stays wrong, so say so and move on.
        this.opts.logger.error("Could not open a channel to the collector; check --collector.", {
          collector: choice.collector,
          error: errorMessage(err),
        });
        this.chooser.failedAt(choice);
        this.reconnectTimer = setTimeout(() => this.connect(), this.backoff.next());
        this.reconnectTimer.unref();
      }
    });
  }

  private open(choice: CollectorChoice): void {
    this.current = choice;
    const target = choice.target;
    this.client?.close();
    this.client = new IngestClient(target, this.credentials, {
      "grpc.keepalive_time_ms": 20_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.max_send_message_length": 8 * 1024 * 1024,
      "grpc.initial_reconnect_backoff_ms": 500,
      "grpc.max_reconnect_backoff_ms": 5_000,
      // A connection of its own, never shared with another client in the process: the
      // collector serves a few streams per connection, one agent's worth.
      "grpc.use_local_subchannel_pool": 1,
      // An address resolved from a name: the collector's certificate is checked against the
      // name, and the name goes out as SNI and :authority, as if grpc-js had resolved it.
      ...(choice.serverName !== undefined ? { "grpc.ssl_target_name_override": choice.serverName } : {}),
      ...(choice.authority !== undefined ? { "grpc.default_authority": choice.authority } : {}),
      ...this.opts.channelOptions,
    });
    const metadata = this.opts.callMetadata?.clone() ?? new grpc.Metadata();
    const call = (this.client as unknown as { stream(m: grpc.Metadata): Duplex }).stream(metadata);
    this.call = call;
    this.ready = false;
    this.streamOpenedMs = this.opts.now();
    call.on("data", (msg: StreamResponse) => this.onResponse(call, choice, msg));
    call.on("error", (err: grpc.ServiceError) => this.onBroken(call, choice, err));
    call.on("end", () => this.onBroken(call, choice, undefined));
    call.write(
      create(StreamRequestSchema, {
        msg: {
          case: "hello",
          value: {
            agentVersion: this.opts.agentVersion,
            host: {
              hostname: this.opts.host.hostname,
              machineId: this.opts.host.machineId,
              labels: this.opts.host.labels,
            },
            source: this.opts.source,
            windowMs: this.opts.windowMs,
          },
        },
      }),
    );
  }

  private onResponse(call: Duplex, choice: CollectorChoice, msg: StreamResponse): void {
    if (call !== this.call) return;
    if (msg.msg.case === "welcome") {
      const w = msg.msg.value;
      this.ready = true;
      this.backoff.reset();
      this.pushbackLogged = false;
      this.failedAttempts = 0;
      this.lastFailureLogMs = -Infinity;
      this.causesLogged.clear();
      this.chooser.welcomed();
      this.opts.logger.info("Connected to the collector.", {
        collector: choice.collector,
        address: choice.target,
        collector_id: w.collectorId,
        buffered: this.stats().buffered,
      });
      if (w.thresholds && this.opts.onThresholds) {
        this.opts.onThresholds({
          utilBusyPercent: w.thresholds.utilBusyPercent,
          realActiveRatio: w.thresholds.realActiveRatio,
          heldMemoryBytes: Number(w.thresholds.heldMemoryBytes),
        });
      }
      this.pump();
    } else if (msg.msg.case === "ack") {
      const ack = msg.msg.value;
      const i = this.inFlight.findIndex((b) => b.seq === ack.seq);
      if (i < 0) {
        this.opts.logger.warn("The collector acknowledged a batch this agent did not send; ignoring it.", {
          seq: String(ack.seq),
        });
        return;
      }
      const [batch] = this.inFlight.splice(i, 1);
      this.counters.acked += ack.accepted;
      this.lastAckMs = this.opts.now();
      // Rejected windows are done too: the collector counted them and they must not be sent again.
      if (batch) this.buffer.complete(batch.entries);
      if (ack.rejections.length > 0) {
        this.counters.rejected += ack.rejections.length;
        const first = ack.rejections[0]!;
        this.opts.logger.error("The collector rejected windows as invalid; they are dropped.", {
          count: ack.rejections.length,
          reason: first.reason,
          field: first.field,
          batch_windows: batch?.entries.length,
        });
      }
      this.pump();
    }
  }

  /** `noAnswer`: broken here because the collector did not answer within the response timeout. */
  private onBroken(call: Duplex, choice: CollectorChoice, err: grpc.ServiceError | undefined, noAnswer = false): void {
    if (call !== this.call || this.stopped) return;
    // The entry as given, and the address when it was resolved here from a name.
    const target = choice.target === choice.collector ? choice.collector : `${choice.collector} (${choice.target})`;
    this.call = undefined;
    const wasReady = this.ready;
    this.ready = false;
    call.removeAllListeners();
    call.on("error", () => {});
    call.cancel();
    // Unacknowledged batches go back to the front, in order, to be sent again.
    this.inFlight = [];
    this.buffer.unsendAll();
    this.counters.reconnects++;
    this.chooser.failedAt(choice);
    const retryAfterMs = retryAfter(err);
    const pushedBack =
      err?.code === grpc.status.RESOURCE_EXHAUSTED ||
      (err?.code === grpc.status.UNAVAILABLE && retryAfterMs !== undefined);
    if (!wasReady && !pushedBack && err?.code === grpc.status.UNAVAILABLE && this.chooser.hasUntried()) {
      // The name has another address not yet tried (localhost's ::1 and 127.0.0.1, a
      // collector pod gone): it is tried at once, as grpc-js's pick_first would.
      this.opts.logger.debug("Could not open a stream to this address of the collector; trying its next.", {
        collector: target,
        detail: err.details,
      });
      this.reconnectTimer = setTimeout(() => this.connect(), 0);
      this.reconnectTimer.unref();
      return;
    }
    // A collector that took every stream's answers past the timeout is swamped, not gone:
    // its whole fleet timed out together and would return together, so each agent comes
    // back at a point of its own within the timeout.
    const spread = noAnswer ? Math.round(this.opts.random() * this.opts.responseTimeoutMs) : 0;
    const delay = Math.max(retryAfterMs ?? 0, this.backoff.next(), spread);
    const fields = {
      collector: target,
      code: err?.code,
      detail: err?.details ?? "stream ended",
      retry_in_ms: delay,
      buffered: this.buffer.stats().windows,
    };
    // During a long outage the agent retries every few seconds: the first failure is logged,
    // then one line a minute with the count; the rest go to debug. A failure to connect with
    // a new probable cause is logged at once.
    this.failedAttempts++;
    const now = this.opts.now();
    const diagnosis =
      wasReady || err?.code !== grpc.status.UNAVAILABLE
        ? undefined
        : diagnoseConnectFailure(err.details ?? "", { target, tls: this.credentials._isSecure() });
    const newCause = diagnosis !== undefined && !this.causesLogged.has(diagnosis.problem);
    const loud = wasReady || newCause || now - this.lastFailureLogMs >= FAILURE_LOG_INTERVAL_MS;
    if (loud) this.lastFailureLogMs = now;
    if (diagnosis && loud) this.causesLogged.add(diagnosis.problem);
    const logFields = { ...fields, failed_attempts: this.failedAttempts };
    if (
      err?.code === grpc.status.INVALID_ARGUMENT ||
      err?.code === grpc.status.UNAUTHENTICATED ||
      err?.code === grpc.status.PERMISSION_DENIED
    ) {
      if (loud)
        this.opts.logger.error("The collector refused this agent's stream; fix the agent's configuration.", logFields);
      else this.opts.logger.debug("The collector refused this agent's stream again.", logFields);
    } else if (pushedBack) {
      // The collector is protecting itself (spool full, rate limit, too many agents): nothing is lost, windows stay buffered.
      if (!this.pushbackLogged)
        this.opts.logger.warn(
          "The collector asked this agent to wait before reconnecting; its windows stay buffered.",
          fields,
        );
      else this.opts.logger.debug("The collector asked this agent to wait again before reconnecting.", fields);
      this.pushbackLogged = true;
    } else if (wasReady) {
      this.opts.logger.warn("Lost the stream to the collector; will reconnect.", logFields);
    } else if (loud && diagnosis?.needsProbe) {
      // Only a look at the address tells a TLS collector from one closing connections.
      void probeTls(choice.target).then((probe) => {
        if (!this.stopped && !this.ready)
          this.logConnectFailure(afterProbe(diagnosis, probe, { target, tls: false }), logFields);
      });
    } else if (loud) {
      this.logConnectFailure(diagnosis, logFields);
    } else {
      this.opts.logger.debug("Could not open a stream to the collector; will retry.", logFields);
    }
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
    this.reconnectTimer.unref();
  }

  private logConnectFailure(diagnosis: ConnectDiagnosis | undefined, fields: Record<string, unknown>): void {
    const retrying = "Will retry, logging at most once a minute while this lasts; windows stay buffered.";
    if (diagnosis === undefined) {
      this.opts.logger.warn(`Could not open a stream to the collector. ${retrying}`, fields);
      return;
    }
    const line = `Could not open a stream to the collector: ${diagnosis.hint}. ${retrying}`;
    const f = { ...fields, problem: diagnosis.problem };
    // A configuration that cannot work needs the operator; an address not answering may be a collector restarting.
    if (diagnosis.misconfigured) this.opts.logger.error(line, f);
    else this.opts.logger.warn(line, f);
  }

  private pump(): void {
    const call = this.call;
    if (call && this.ready) {
      while (this.inFlight.length < this.opts.maxBatchesInFlight && this.buffer.hasUnsent()) {
        const entries = this.buffer.takeUnsent(this.opts.maxWindowsPerBatch, this.opts.maxBatchBytes);
        this.seq++;
        this.inFlight.push({ seq: this.seq, entries, sentMs: this.opts.now() });
        this.counters.sent += entries.length;
        // The windows go out as they were encoded when measured, framed into one batch.
        call.write(
          frameBatch(
            this.seq,
            entries.map((e) => e.data),
          ),
        );
      }
    }
    if (this.isIdle() && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private checkTimeouts(): void {
    const call = this.call;
    if (!call) return;
    const now = this.opts.now();
    const limit = this.opts.responseTimeoutMs;
    const oldest = this.inFlight[0];
    if ((!this.ready && now - this.streamOpenedMs > limit) || (oldest && now - oldest.sentMs > limit)) {
      const err = Object.assign(new Error("no answer from the collector"), {
        code: grpc.status.DEADLINE_EXCEEDED,
        details: `no answer within ${limit} ms`,
        metadata: new grpc.Metadata(),
      }) as grpc.ServiceError;
      if (this.current) this.onBroken(call, this.current, err, true);
    }
  }
}

/** The delay a collector asked for in the trailer, in ms; undefined when absent or unreadable. */
function retryAfter(err: grpc.ServiceError | undefined): number | undefined {
  const raw = err?.metadata?.get(RETRY_AFTER_METADATA_KEY)[0];
  if (raw === undefined) return undefined;
  const ms = Number(typeof raw === "string" ? raw : raw.toString());
  // A collector cannot park an agent for more than an hour, whatever it sends.
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, 3_600_000) : undefined;
}

/** The options actually given: an explicit `undefined` must not override a default. */
/** `o` without its undefined values: what it sets, to spread over defaults. */
function definedOnly<T extends object>(o: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}
