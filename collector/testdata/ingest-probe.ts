/**
 * A raw agent for the collector's tests: a grpc-js client built from the service
 * definition, which sends exactly what a test gives it and records replies and the final
 * status; plus readers of the collector's /metrics.
 */
import {
  credentials,
  makeGenericClientConstructor,
  status,
  type Client,
  type ClientDuplexStream,
  type ServiceError,
  type StatusObject,
} from "@grpc/grpc-js";
import { ingestServiceDefinition } from "../../common/grpc-service.js";
import type { StreamRequest, StreamResponse } from "../../gen/trueidle/v1/ingest_pb.js";

const IngestClient = makeGenericClientConstructor(ingestServiceDefinition, "IngestService");

/** One agent stream: replies in order, and the final status. */
export class Probe {
  private readonly replies: StreamResponse[] = [];
  private waiter: ((r: StreamResponse) => void) | undefined;
  /** Replies received so far, taken or not. */
  received = 0;
  readonly status: Promise<StatusObject>;

  constructor(readonly call: ClientDuplexStream<StreamRequest, StreamResponse>) {
    call.on("data", (r: StreamResponse) => {
      this.received++;
      const w = this.waiter;
      this.waiter = undefined;
      if (w) w(r);
      else this.replies.push(r);
    });
    // The status carries the same code; keep 'error' from being unhandled.
    call.on("error", (_e: ServiceError) => undefined);
    this.status = new Promise((resolve) => call.on("status", resolve));
  }

  next(): Promise<StreamResponse> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      void this.status.then((s) => reject(new Error(`the stream ended with ${status[s.code]}: ${s.details}`)));
    });
  }

  send(req: StreamRequest): void {
    this.call.write(req);
  }
}

/** Opens streams to one collector; `close()` closes every client opened. */
export class ProbeFactory {
  private readonly clients: Client[] = [];

  open(grpcPort: number): Probe {
    const client = new IngestClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure());
    this.clients.push(client);
    const call = (client as unknown as { stream(): ClientDuplexStream<StreamRequest, StreamResponse> }).stream();
    return new Probe(call);
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
export async function eventually<T>(read: () => Promise<T>, want: T): Promise<void> {
  for (;;) {
    if ((await read()) === want) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}
