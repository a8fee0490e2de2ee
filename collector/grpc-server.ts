/**
 * The gRPC side of the collector: serves trueidle.v1.IngestService/Stream with grpc-js and
 * runs one IngestSession per stream.
 *
 * The service is registered with a deserializer that never throws: grpc-js would answer
 * an undecodable message with INTERNAL, but it is the agent's fault, so the session ends
 * the stream with INVALID_ARGUMENT instead.
 */
import {
  Metadata,
  Server,
  status,
  type ChannelOptions,
  type ServerDuplexStream,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import { errorMessage } from "../common/errors.js";
import { ingestServiceDefinition, RETRY_AFTER_METADATA_KEY } from "../common/grpc-service.js";
import type { StreamResponse } from "../gen/trueidle/v1/ingest_pb.js";
import { IngestSession, type DecodedRequest, type SessionDeps, type SessionStep } from "./ingest-session.js";
import { formatListenAddress, type ListenAddress } from "../common/listen-address.js";
import { OPEN_STREAMS_PER_AGENT, tooManyAgentsRetryMs } from "./agent-registry.js";
import { grpcServerCredentials, type ServerTls } from "./auth/server-tls.js";
import { UNAUTHENTICATED_MESSAGE, type StreamAuthenticator } from "./auth/stream-auth.js";

/**
 * Largest message an agent may send unless configured otherwise (maxMessageBytes). grpc-js
 * refuses a larger one with RESOURCE_EXHAUSTED as soon as its length prefix arrives, without
 * buffering it. An agent batch of 2,000 windows is about 0.8 MB (2.2 MB with 256-character
 * process names).
 */
export const MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * Server options. Keepalive pings find agents that vanished without closing their
 * connection, so their streams end and agents_connected stays true.
 */
export const GRPC_SERVER_OPTIONS: ChannelOptions = {
  "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
};

/** How long stop() waits for connections to close before cutting them. */
const SHUTDOWN_GRACE_MS = 5_000;

/** Pushbacks (RESOURCE_EXHAUSTED) are logged at WARN at most this often per reason; the rest at DEBUG. */
const PUSHBACK_LOG_INTERVAL_MS = 60_000;

export interface IngestServerOptions {
  /** Largest message accepted, bytes (default MAX_RECEIVE_MESSAGE_BYTES). */
  maxMessageBytes?: number | undefined;
}

const tolerantDefinition = {
  stream: {
    ...ingestServiceDefinition.stream,
    requestDeserialize: (buf: Buffer): DecodedRequest => {
      try {
        return { ok: true, msg: ingestServiceDefinition.stream.requestDeserialize(buf) };
      } catch (err) {
        return { ok: false, error: errorMessage(err) };
      }
    },
  },
} satisfies ServiceDefinition;

type Call = ServerDuplexStream<DecodedRequest, StreamResponse>;

export class IngestServer {
  private readonly server: Server;
  private readonly calls = new Map<Call, IngestSession>();
  private stopping: Promise<void> | undefined;
  /** Set by quiesce(): no new streams or batches; those taken are answered. */
  private quiescing = false;
  /** Answers still pending (acks waiting for InfluxDB or the spool); quiesce() waits for them. */
  private readonly pendingSteps = new Set<Promise<unknown>>();
  private readonly pushbackLoggedAt = new Map<string, number>();

  /** `auth`: when set, every stream must present an accepted token before anything else. */
  constructor(
    private readonly deps: SessionDeps,
    private readonly auth?: StreamAuthenticator | undefined,
    options: IngestServerOptions = {},
  ) {
    this.server = new Server({
      ...GRPC_SERVER_OPTIONS,
      "grpc.max_receive_message_length": options.maxMessageBytes ?? MAX_RECEIVE_MESSAGE_BYTES,
    });
    this.server.addService(tolerantDefinition, { stream: (call: Call) => this.onStream(call) });
  }

  /** Binds with TLS when `tls` is given, else plaintext; resolves to the port bound (useful with port 0). */
  listen(addr: ListenAddress, tls?: ServerTls): Promise<number> {
    const target = formatListenAddress(addr);
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, grpcServerCredentials(tls), (err, port) => {
        if (err) reject(new Error(`gRPC could not listen on ${target}: ${err.message}`, { cause: err }));
        else resolve(port);
      });
    });
  }

  /**
   * First step of a graceful stop: takes no new streams and ignores further messages (never
   * acknowledged, so the agents send them again), and resolves once every batch already taken
   * has its answer written to its stream. The collector settles the durable sink meanwhile, so
   * those answers come; stop() then ends the streams, and grpc-js sends each stream's
   * written acks before its status.
   */
  async quiesce(): Promise<void> {
    this.quiescing = true;
    for (const session of this.calls.values()) session.releaseHeldAcks();
    while (this.pendingSteps.size > 0) await Promise.allSettled([...this.pendingSteps]);
  }

  /** Ends every stream with UNAVAILABLE (agents reconnect elsewhere) and closes; safe twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.quiescing = true;
      for (const call of this.calls.keys()) this.endWithStatus(call, status.UNAVAILABLE, "the collector is shutting down");
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          this.server.forceShutdown();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        force.unref();
        this.server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    })();
    return this.stopping;
  }

  private onStream(call: Call): void {
    const peer = call.getPeer();
    if (this.stopping || this.quiescing) {
      this.deps.self.refuse("shutting_down");
      this.endWithStatus(call, status.UNAVAILABLE, "the collector is shutting down");
      return;
    }
    if (this.auth && !this.auth.check(call.metadata, peer).ok) {
      this.deps.self.refuse("unauthenticated");
      this.endWithStatus(call, status.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE);
      return;
    }
    const agents = this.deps.agents;
    if (agents && this.calls.size >= agents.maxAgents * OPEN_STREAMS_PER_AGENT) {
      // Streams that have not said Hello yet count here, so idle connections cannot pile up.
      this.deps.self.refuse("too_many_agents");
      this.endWithStatus(call, status.RESOURCE_EXHAUSTED, `the collector has ${this.calls.size} streams open, its limit; come back later`, tooManyAgentsRetryMs());
      return;
    }
    const session = new IngestSession(this.deps, peer, {
      // The agent reconnected; this older stream of its host is probably half-dead.
      replaced: (message) => {
        if (!this.calls.has(call)) return;
        this.deps.self.refuse("replaced");
        this.endWithStatus(call, status.UNAVAILABLE, message);
        finish(message);
      },
    });
    this.calls.set(call, session);
    const finish = (reason: string): void => {
      if (!this.calls.delete(call)) return;
      session.close(reason);
    };
    call.on("data", (req: DecodedRequest) => {
      if (!this.calls.has(call) || this.quiescing) return;
      let step;
      try {
        step = session.handle(req);
      } catch (err) {
        this.deps.logger.error("An agent stream failed inside the collector; the stream was ended with INTERNAL.", {
          host: session.hostname,
          peer,
          err,
        });
        this.deps.self.refuse("internal");
        this.endWithStatus(call, status.INTERNAL, "the collector failed to handle the message");
        finish("the collector failed to handle a message");
        return;
      }
      this.deliver(call, session, peer, step, finish);
    });
    // grpc-js reports a client's cancel much like a half-close followed by 'cancelled', and
    // emits 'cancelled' after normal ends too; the reason logged is a best guess.
    let halfClosed = false;
    call.on("end", () => {
      // The agent half-closed: close our side with OK.
      halfClosed = true;
      if (this.calls.has(call)) call.end();
    });
    const ended = (): void => {
      if (this.stopping || this.quiescing) finish("the collector is shutting down");
      else if (halfClosed) finish("the agent closed the stream");
      else finish("the stream was cancelled or the connection was lost");
    };
    call.on("finish", ended);
    call.on("cancelled", ended);
    call.on("close", ended);
  }

  /** Sends a step's reply, or ends the stream; a step still pending is delivered when it settles, if the stream is open. */
  private deliver(call: Call, session: IngestSession, peer: string, step: SessionStep, finish: (reason: string) => void): void {
    if (step.kind === "later") {
      const delivered = step.step.then(
        (settled) => {
          if (this.calls.has(call)) this.deliver(call, session, peer, settled, finish);
        },
        (err: unknown) => {
          if (!this.calls.has(call)) return;
          this.deps.logger.error("An agent stream failed inside the collector; the stream was ended with INTERNAL.", { host: session.hostname, peer, err });
          this.deps.self.refuse("internal");
        this.endWithStatus(call, status.INTERNAL, "the collector failed to handle the message");
          finish("the collector failed to handle a message");
        },
      );
      this.pendingSteps.add(delivered);
      const done = (): void => void this.pendingSteps.delete(delivered);
      delivered.then(done, done);
      return;
    }
    if (step.kind === "reply") {
      call.write(step.response);
      return;
    }
    if (step.code === "unavailable") {
      this.deps.self.refuse(step.reason ?? "shutting_down");
      this.deps.logger.warn(`Ended an agent stream for now: ${step.message}.`, { host: session.hostname, peer });
      this.endWithStatus(call, status.UNAVAILABLE, step.message);
      finish(`the stream was ended for now (${step.message})`);
      return;
    }
    if (step.code === "resource_exhausted") {
      const reason = step.reason ?? "rate_limited";
      this.deps.self.refuse(reason);
      const now = this.deps.now();
      const loud = now - (this.pushbackLoggedAt.get(reason) ?? -Infinity) >= PUSHBACK_LOG_INTERVAL_MS;
      if (loud) this.pushbackLoggedAt.set(reason, now);
      const fields = { host: session.hostname, peer, retry_after_ms: step.retryAfterMs, reason };
      if (!loud) this.deps.logger.debug(`Pushed an agent back: ${step.message}.`, fields);
      else {
        this.deps.logger.warn(
          `Pushed an agent back: ${step.message}. Pushbacks for ${reason} are counted in trueidle_streams_refused_total and logged at most once a minute.`,
          fields,
        );
      }
      this.endWithStatus(call, status.RESOURCE_EXHAUSTED, step.message, step.retryAfterMs);
      finish(`the agent was pushed back (${step.message})`);
      return;
    }
    this.deps.self.refuse(step.reason ?? "invalid");
    this.deps.logger.warn(`Ended an agent stream as invalid: ${step.message}.`, { host: session.hostname, peer });
    this.endWithStatus(call, status.INVALID_ARGUMENT, step.message);
    finish(`the stream was invalid (${step.message})`);
  }

  /**
   * Ends the stream with a status. `retryAfterMs` goes to the agent as the trailer
   * `trueidle-retry-after-ms` (RETRY_AFTER_METADATA_KEY): the agent waits that long before it
   * comes back.
   */
  private endWithStatus(call: Call, code: status, details: string, retryAfterMs?: number): void {
    let metadata: Metadata | undefined;
    if (retryAfterMs !== undefined) {
      metadata = new Metadata();
      metadata.set(RETRY_AFTER_METADATA_KEY, String(Math.max(0, Math.round(retryAfterMs))));
    }
    // grpc-js turns an 'error' event on a server stream into the trailing status and ends it.
    call.emit("error", { code, details, name: "Error", message: details, ...(metadata ? { metadata } : {}) });
  }
}
