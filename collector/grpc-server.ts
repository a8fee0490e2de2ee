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
  ServerCredentials,
  status,
  type ChannelOptions,
  type ServerDuplexStream,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import { errorMessage } from "../common/errors.js";
import { ingestServiceDefinition, RETRY_AFTER_METADATA_KEY } from "../common/grpc-service.js";
import type { StreamResponse } from "../gen/trueidle/v1/ingest_pb.js";
import { IngestSession, type DecodedRequest, type SessionDeps, type SessionStep } from "./ingest-session.js";
import { formatListenAddress, type ListenAddress } from "./listen-address.js";

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
  private readonly server = new Server(GRPC_SERVER_OPTIONS);
  private readonly calls = new Map<Call, IngestSession>();
  private stopping: Promise<void> | undefined;

  constructor(private readonly deps: SessionDeps) {
    this.server.addService(tolerantDefinition, { stream: (call: Call) => this.onStream(call) });
  }

  /** Binds without TLS; resolves to the port bound (useful with port 0). */
  listen(addr: ListenAddress): Promise<number> {
    const target = formatListenAddress(addr);
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, ServerCredentials.createInsecure(), (err, port) => {
        if (err) reject(new Error(`gRPC could not listen on ${target}: ${err.message}`, { cause: err }));
        else resolve(port);
      });
    });
  }

  /** Ends every stream with UNAVAILABLE (agents reconnect elsewhere) and closes; safe twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
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
    if (this.stopping) {
      this.deps.self.refuse("shutting_down");
      this.endWithStatus(call, status.UNAVAILABLE, "the collector is shutting down");
      return;
    }
    const session = new IngestSession(this.deps, peer);
    this.calls.set(call, session);
    const finish = (reason: string): void => {
      if (!this.calls.delete(call)) return;
      session.close(reason);
    };
    call.on("data", (req: DecodedRequest) => {
      if (!this.calls.has(call)) return;
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
      if (this.stopping) finish("the collector is shutting down");
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
      step.step.then(
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
      this.deps.self.refuse(step.reason ?? "rate_limited");
      this.deps.logger.warn(`Pushed an agent back: ${step.message}.`, { host: session.hostname, peer, retry_after_ms: step.retryAfterMs });
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
