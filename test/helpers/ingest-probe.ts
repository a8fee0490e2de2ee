/**
 * A raw agent for tests: a grpc-js client built from the service definition, which sends
 * exactly what a test gives it (messages, or raw bytes for what no agent could encode) and
 * records replies and the final status; plus readers of a collector's /metrics.
 */
import {
  credentials,
  Metadata,
  makeGenericClientConstructor,
  status,
  type Client,
  type ClientDuplexStream,
  type ServiceError,
  type StatusObject,
} from "@grpc/grpc-js";
import { ingestClientDefinition, ingestServiceDefinition } from "../../common/grpc-service.js";
import type { StreamRequest, StreamResponse } from "../../gen/trueidle/v1/ingest_pb.js";

const IngestClient = makeGenericClientConstructor(ingestServiceDefinition, "IngestService");
/** Every probe on a connection of its own, as every agent has: the collector serves a few streams per connection. */
const OWN_CONNECTION = { "grpc.use_local_subchannel_pool": 1 };
/** A client that sends raw bytes (the agent's client definition passes Buffers through). */
const RawClient = makeGenericClientConstructor(ingestClientDefinition, "IngestService");

/** One agent stream: replies in order, and the final status. */
export class Probe<Req = StreamRequest> {
  private readonly replies: StreamResponse[] = [];
  private readonly waiters: Array<(r: StreamResponse) => void> = [];
  /** Replies received so far, taken or not. */
  received = 0;
  readonly status: Promise<StatusObject>;

  constructor(readonly call: ClientDuplexStream<Req, StreamResponse>) {
    call.on("data", (r: StreamResponse) => {
      this.received++;
      const w = this.waiters.shift();
      if (w) w(r);
      else this.replies.push(r);
    });
    // The status carries the same code; keep 'error' from being unhandled.
    call.on("error", (_e: ServiceError) => undefined);
    this.status = new Promise((resolve) => call.on("status", resolve));
  }

  /** Replies received and not yet taken. */
  get pending(): number {
    return this.replies.length;
  }

  /** Every reply received so far and not yet taken. */
  taken(): StreamResponse[] {
    return this.replies.splice(0);
  }

  next(): Promise<StreamResponse> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    return new Promise((resolve, reject) => {
      this.waiters.push(resolve);
      void this.status.then((s) => reject(new Error(`the stream ended with ${status[s.code]}: ${s.details}`)));
    });
  }

  send(req: Req): void {
    this.call.write(req);
  }
}

/** Opens streams to collectors; `close()` closes every client opened. */
export class ProbeFactory {
  private readonly clients: Client[] = [];

  open(grpcPort: number): Probe {
    return new Probe(this.openCall(grpcPort));
  }

  /** The bare stream, for a Probe subclass with its own helpers. */
  openCall(grpcPort: number, metadata: Metadata = new Metadata()): ClientDuplexStream<StreamRequest, StreamResponse> {
    const client = new IngestClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure(), OWN_CONNECTION);
    this.clients.push(client);
    return (client as unknown as { stream(m: Metadata): ClientDuplexStream<StreamRequest, StreamResponse> }).stream(
      metadata,
    );
  }

  /** A stream whose messages are sent as given, byte for byte. */
  openRaw(grpcPort: number): Probe<Buffer> {
    const client = new RawClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure(), OWN_CONNECTION);
    this.clients.push(client);
    return new Probe((client as unknown as { stream(): ClientDuplexStream<Buffer, StreamResponse> }).stream());
  }

  close(): void {
    for (const c of this.clients.splice(0)) c.close();
  }
}

/** The value of one series on the collector's /metrics, or undefined when absent. */
export async function metricValue(httpPort: number, series: string): Promise<number | undefined> {
  const body = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const line = body.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Polls `read` until it gives `want`; the test's own timeout bounds the wait. */
export async function eventuallyEquals<T>(read: () => Promise<T>, want: T): Promise<void> {
  for (;;) {
    if ((await read()) === want) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}
