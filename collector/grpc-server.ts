/**
 * The gRPC side of the collector: serves trueidle.v1.IngestService/Stream with grpc-js and
 * runs one IngestSession per stream.
 *
 * The collector owns the listening socket: every connection passes its ConnectionGuard
 * (common/connection-guard.ts: at most so many in all and per source address, closed when
 * it has not opened a stream within the Hello timeout or has sat without one as long) and
 * is then handed to grpc-js (a connection injector), which runs TLS and HTTP/2 on it. Per
 * connection at most MAX_STREAMS_PER_CONNECTION streams are open (HTTP/2 refuses more), and
 * request headers are capped at MAX_HEADER_LIST_BYTES.
 *
 * Stream admission: a stream must say Hello within the Hello timeout or it is ended
 * (`hello_timeout`); streams that have not said Hello are never counted against
 * `--max-agents`, which counts hosts, and a known host always replaces its older stream.
 * Streams waiting for their Hello are capped at MAX_PENDING_STREAMS in all; past it the
 * oldest is ended. Failed token checks are throttled per source address
 * (auth/failure-throttle.ts).
 *
 * The service is registered with a deserializer that never throws: grpc-js would answer
 * an undecodable message with INTERNAL, but it is the agent's fault, so the session ends
 * the stream with INVALID_ARGUMENT instead.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import {
  Metadata,
  Server,
  status,
  type ChannelOptions,
  type ServerDuplexStream,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import {
  ConnectionGuard,
  type ConnectionCounters,
  type ConnectionLimits,
  type GuardedConnection,
} from "../common/connection-guard.js";
import { errorMessage } from "../common/errors.js";
import { ingestServiceDefinition, RETRY_AFTER_METADATA_KEY } from "../common/grpc-service.js";
import type { StreamResponse } from "../gen/trueidle/v1/ingest_pb.js";
import { IngestSession, type DecodedRequest, type SessionDeps, type SessionStep } from "./ingest-session.js";
import { formatListenAddress, type ListenAddress } from "../common/listen-address.js";
import { stallAwareTimeout, type StallAwareTimer } from "../common/loop-stall.js";
import { grpcServerCredentials, type ServerTls } from "./auth/server-tls.js";
import { peerAddress, UNAUTHENTICATED_MESSAGE, type StreamAuthenticator } from "./auth/stream-auth.js";
import { credentialDigest, type FailureThrottle } from "./auth/failure-throttle.js";
import { COLLECTOR_SETTINGS } from "./settings.js";

/**
 * Largest message an agent may send unless configured otherwise (maxMessageBytes). grpc-js
 * refuses a larger one with RESOURCE_EXHAUSTED as soon as its length prefix arrives, without
 * buffering it. An agent batch of 2,000 windows is about 0.8 MB (2.2 MB with 256-character
 * process names).
 */
export const MAX_RECEIVE_MESSAGE_BYTES: number = COLLECTOR_SETTINGS.maxMessageBytes.default;

/**
 * Server options. Keepalive pings find agents that vanished without closing their
 * connection, so their streams end and agents_connected stays true.
 */
export const GRPC_SERVER_OPTIONS: ChannelOptions = {
  "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.max_concurrent_streams": 0, // set from MAX_STREAMS_PER_CONNECTION below
};

/**
 * Streams one connection may have open at once. An agent has one (two for a moment while
 * it replaces a broken one); HTTP/2 refuses streams beyond this with REFUSED_STREAM.
 */
export const MAX_STREAMS_PER_CONNECTION = 4;
GRPC_SERVER_OPTIONS["grpc.max_concurrent_streams"] = MAX_STREAMS_PER_CONNECTION;

/**
 * Bytes of request headers a stream may send (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE,
 * enforced by Node's HTTP/2): an agent sends under 5 KiB, most of it a token of at most
 * 4,096 characters.
 */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;

/** How long a new connection may go without an open stream, and a stream without Hello (default). */
export const DEFAULT_HELLO_TIMEOUT_MS: number = COLLECTOR_SETTINGS.helloTimeoutMs.default;

/** Streams waiting for their Hello, in all; past it the oldest is ended. */
export const MAX_PENDING_STREAMS = 10_000;

/** Connections on the gRPC port, in all and per source address (defaults; see collector.ts for the descriptor budget). */
export const DEFAULT_MAX_GRPC_CONNECTIONS_PER_ADDRESS: number = COLLECTOR_SETTINGS.maxConnectionsPerAddress.default;

/** How long stop() waits for connections to close before cutting them. */
const SHUTDOWN_GRACE_MS = 5_000;

/** Pushbacks (RESOURCE_EXHAUSTED) are logged at WARN at most this often per reason; the rest at DEBUG. */
const PUSHBACK_LOG_INTERVAL_MS = 60_000;

export interface IngestServerOptions {
  /** Largest message accepted, bytes (default MAX_RECEIVE_MESSAGE_BYTES). */
  maxMessageBytes?: number | undefined;
  /** A stream must say Hello, and a connection open a stream, within this (default DEFAULT_HELLO_TIMEOUT_MS). */
  helloTimeoutMs?: number | undefined;
  /** Connections on the listener, in all and per address. */
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** Where connection refusals are counted. */
  connectionCounters: ConnectionCounters;
  /** Failed token checks per address; with `auth` only. */
  authThrottle?: FailureThrottle | undefined;
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

/**
 * grpc-js keeps the HTTP/2 server settings in a private field; the header cap goes there.
 * Checked at start, so a grpc-js that moved it fails loudly rather than running uncapped.
 */
function capHeaderList(server: Server, bytes: number): void {
  const common = (server as unknown as { commonServerOptions?: { settings?: Record<string, unknown> } })
    .commonServerOptions;
  if (!common?.settings)
    throw new Error("grpc-js has no HTTP/2 settings to cap request headers in (commonServerOptions.settings)");
  common.settings.maxHeaderListSize = bytes;
}

export class IngestServer {
  private readonly server: Server;
  private readonly calls = new Map<Call, IngestSession>();
  /** Streams that have not said Hello yet, oldest first, with their deadlines. */
  private readonly pending = new Map<Call, StallAwareTimer>();
  /** Admitted connections by "address:port", as grpc-js names a call's peer. */
  private readonly connections = new Map<string, GuardedConnection>();
  private readonly guard: ConnectionGuard;
  private readonly helloTimeoutMs: number;
  private listener: NetServer | undefined;
  private stopping: Promise<void> | undefined;
  /** Set by beginStop(): no new streams or batches; those taken are answered. */
  private stopBegun = false;
  /** Answers still pending (acks waiting for InfluxDB or the spool); beginStop() waits for them. */
  private readonly pendingSteps = new Set<Promise<unknown>>();
  private readonly pushbackLoggedAt = new Map<string, number>();

  /** `auth`: when set, every stream must present an accepted token before anything else. */
  constructor(
    private readonly deps: SessionDeps,
    private readonly auth: StreamAuthenticator | undefined,
    private readonly options: IngestServerOptions,
  ) {
    this.server = new Server({
      ...GRPC_SERVER_OPTIONS,
      "grpc.max_receive_message_length": options.maxMessageBytes ?? MAX_RECEIVE_MESSAGE_BYTES,
      // A started connection with no stream is closed by the guard; grpc-js' own idle close stays off.
    });
    capHeaderList(this.server, MAX_HEADER_LIST_BYTES);
    this.server.addService(tolerantDefinition, { stream: (call: Call) => this.onStream(call) });
    this.helloTimeoutMs = options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    const limits: ConnectionLimits = {
      maxConnections: options.maxConnections,
      maxPerAddress: options.maxConnectionsPerAddress,
      setupTimeoutMs: this.helloTimeoutMs,
      idleTimeoutMs: this.helloTimeoutMs,
    };
    this.guard = new ConnectionGuard({
      listener: "gRPC",
      limits,
      counters: options.connectionCounters,
      logger: deps.logger,
      flags: {
        maxConnections: "--max-connections",
        maxPerAddress: "--max-connections-per-address",
        setupTimeout: "--hello-timeout",
        idleTimeout: "--hello-timeout",
      },
    });
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.guard.size;
  }

  /** Binds with TLS when `tls` is given, else plaintext; resolves to the port bound (useful with port 0). */
  listen(addr: ListenAddress, tls?: ServerTls): Promise<number> {
    const injector = this.server.createConnectionInjector(grpcServerCredentials(tls));
    const listener = createNetServer({ noDelay: true }, (socket: Socket) => {
      // A reset before grpc-js has taken the socket must not become an uncaught error.
      socket.on("error", () => {});
      if (this.stopping) return void socket.destroy();
      const conn = this.guard.admit(socket);
      if (!conn) return;
      const key = `${socket.remoteAddress}:${socket.remotePort}`;
      this.connections.set(key, conn);
      socket.once("close", () => {
        if (this.connections.get(key) === conn) this.connections.delete(key);
      });
      injector.injectConnection(socket);
    });
    this.listener = listener;
    const target = formatListenAddress(addr);
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void =>
        reject(new Error(`gRPC could not listen on ${target}: ${err.message}`, { cause: err }));
      listener.once("error", onError);
      listener.listen({ port: addr.port, host: addr.host }, () => {
        listener.off("error", onError);
        listener.on("error", (err) => this.deps.logger.error("The gRPC listener failed.", { err: errorMessage(err) }));
        const bound = listener.address();
        resolve(typeof bound === "object" && bound ? bound.port : addr.port);
      });
    });
  }

  /**
   * First phase of a graceful stop: takes no new streams and ignores further messages (never
   * acknowledged, so the agents send them again), and resolves once every batch already taken
   * has its answer written to its stream. The collector settles the durable sink meanwhile, so
   * those answers come; stop() then ends the streams, and grpc-js sends each stream's
   * written acks before its status. Safe twice and before listen().
   */
  async beginStop(): Promise<void> {
    this.stopBegun = true;
    for (const session of this.calls.values()) session.releaseHeldAcks();
    while (this.pendingSteps.size > 0) await Promise.allSettled([...this.pendingSteps]);
  }

  /**
   * Ends every stream with UNAVAILABLE (agents reconnect elsewhere), stops listening, and
   * resolves once grpc-js has shut down and every connection is destroyed (those still open
   * after 5 s are cut). Safe twice and before listen().
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopBegun = true;
      this.listener?.close();
      for (const call of this.calls.keys())
        this.endWithStatus(call, status.UNAVAILABLE, "the collector is shutting down");
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          this.server.forceShutdown();
          this.guard.destroyAll();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        force.unref();
        this.server.tryShutdown(() => {
          clearTimeout(force);
          this.guard.destroyAll();
          resolve();
        });
      });
    })();
    return this.stopping;
  }

  private onStream(call: Call): void {
    const peer = call.getPeer();
    const conn = this.connections.get(peer);
    conn?.started();
    conn?.busy();
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      conn?.idle();
      this.pending.get(call)?.clear();
      this.pending.delete(call);
    };
    for (const event of ["finish", "cancelled", "close", "error"] as const) call.once(event, release);

    if (this.stopping || this.stopBegun) {
      this.deps.self.refuse("shutting_down");
      this.endWithStatus(call, status.UNAVAILABLE, "the collector is shutting down");
      return;
    }
    if (this.auth) {
      const address = peerAddress(peer);
      const throttle = this.options.authThrottle;
      const waitMs = throttle?.retryAfterMs(address) ?? 0;
      if (waitMs > 0) {
        this.deps.self.refuse("auth_throttled");
        this.endWithStatus(
          call,
          status.RESOURCE_EXHAUSTED,
          `too many streams from ${address} failed the token check; its tokens are not checked for ${Math.ceil(waitMs / 1000)} s`,
          waitMs,
        );
        return;
      }
      if (!this.auth.check(call.metadata, peer).ok) {
        throttle?.failed(address, credentialDigest(call.metadata.get("authorization").map(String).join("\n")));
        this.deps.self.refuse("unauthenticated");
        this.endWithStatus(call, status.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE);
        return;
      }
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
      release();
      if (!this.calls.delete(call)) return;
      session.close(reason);
    };
    this.awaitHello(call, finish);
    call.on("data", (req: DecodedRequest) => {
      if (!this.calls.has(call) || this.stopBegun) return;
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
      if (session.hostname !== undefined) this.helloSaid(call);
      this.deliver(call, session, peer, step, finish);
    });
    // The agent half-closes its side when it stops: close ours with OK ('finish' follows).
    // A cancel (RST_STREAM) or a lost connection comes as 'cancelled' before any 'finish'.
    // grpc-js ends the request side of a cancelled stream too, just before it says
    // 'cancelled': the answer waits a turn, so a cancel is not taken for a half-close.
    let ending = false;
    call.on("end", () => {
      setImmediate(() => {
        if (!this.calls.has(call) || call.cancelled) return;
        ending = true;
        call.end();
      });
    });
    call.on("finish", () => {
      if (this.stopping || this.stopBegun) finish("the collector is shutting down");
      else if (call.cancelled) finish("the stream was cancelled by the agent, or its connection was lost");
      else finish(ending ? "the agent closed the stream" : "the stream ended");
    });
    call.on("cancelled", () => {
      if (this.stopping || this.stopBegun) finish("the collector is shutting down");
      else finish("the stream was cancelled by the agent, or its connection was lost");
    });
    call.on("close", () => finish("the stream was cancelled by the agent, or its connection was lost"));
  }

  /** Ends `call` unless it says Hello within the Hello timeout; the oldest such stream goes when too many wait. */
  private awaitHello(call: Call, finish: (reason: string) => void): void {
    const timeout = (message: string): void => {
      if (!this.pending.delete(call)) return;
      this.deps.self.refuse("hello_timeout");
      this.endWithStatus(call, status.DEADLINE_EXCEEDED, message);
      finish(message);
    };
    // Counted in time the collector was responsive: a Hello that arrived while it was
    // swamped is read before the stream is ended (common/loop-stall.ts).
    const timer = stallAwareTimeout(this.helloTimeoutMs, () =>
      timeout(
        `no hello within ${this.helloTimeoutMs / 1000} s of opening the stream; an agent sends hello first (--hello-timeout)`,
      ),
    );
    this.pending.set(call, timer);
    if (this.pending.size > MAX_PENDING_STREAMS) {
      const oldest = this.pending.keys().next().value;
      if (oldest !== undefined) {
        this.pending.get(oldest)?.clear();
        const session = this.calls.get(oldest);
        // Its own finish runs through the call's events; only the accounting is done here.
        this.pending.delete(oldest);
        this.deps.self.refuse("hello_timeout");
        this.endWithStatus(
          oldest,
          status.DEADLINE_EXCEEDED,
          `${MAX_PENDING_STREAMS} streams are waiting for their hello; the oldest are ended`,
        );
        if (session && this.calls.delete(oldest)) session.close("too many streams were waiting for their hello");
      }
    }
  }

  private helloSaid(call: Call): void {
    const timer = this.pending.get(call);
    if (timer === undefined) return;
    timer.clear();
    this.pending.delete(call);
  }

  /** Sends a step's reply, or ends the stream; a step still pending is delivered when it settles, if the stream is open. */
  private deliver(
    call: Call,
    session: IngestSession,
    peer: string,
    step: SessionStep,
    finish: (reason: string) => void,
  ): void {
    if (step.kind === "later") {
      const delivered = step.step.then(
        (settled) => {
          if (this.calls.has(call)) this.deliver(call, session, peer, settled, finish);
        },
        (err: unknown) => {
          if (!this.calls.has(call)) return;
          this.deps.logger.error("An agent stream failed inside the collector; the stream was ended with INTERNAL.", {
            host: session.hostname,
            peer,
            err,
          });
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
