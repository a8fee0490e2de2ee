/**
 * A TCP proxy for fault tests: listens on a free loopback port and pipes every connection
 * to a target. `cutAll()` destroys every open connection pair at once (the client side
 * with a TCP reset, as a dying middlebox would); `cutEveryMs` does so on a timer. Each cut
 * pair is counted, so a test can show its faults really happened.
 *
 * `down()` stops listening (clients get "connection refused", as from a stopped server)
 * and `up()` listens again on the same port, possibly towards a new target: a server that
 * restarts on another port still looks, to its clients, like one that came back.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export interface TcpProxyOptions {
  /** Where connections go; host defaults to 127.0.0.1. */
  targetPort: number;
  targetHost?: string;
  /** Listen on this port; default a free one chosen by the kernel. */
  listenPort?: number;
  /** Cut every open connection this often; default never (call cutAll()). */
  cutEveryMs?: number;
}

interface Pair {
  client: Socket;
  upstream: Socket;
}

export class TcpProxy {
  /** Connections accepted since start. */
  accepted = 0;
  /** Connection pairs cut by cutAll() (by hand or by the timer). */
  cut = 0;
  /** Times cutAll() ran, whether or not a connection was open. */
  cutRounds = 0;
  private readonly pairs = new Set<Pair>();
  private timer: NodeJS.Timeout | undefined;
  private server: Server | undefined;
  private closed = false;
  /** The port it listens on; the same across down() and up(). */
  port = 0;

  private constructor(
    private readonly targetHost: string,
    private targetPort: number,
  ) {}

  /** Starts the proxy; resolves once it listens. */
  static async start(opts: TcpProxyOptions): Promise<TcpProxy> {
    const proxy = new TcpProxy(opts.targetHost ?? "127.0.0.1", opts.targetPort);
    await proxy.listen(opts.listenPort ?? 0);
    if (opts.cutEveryMs !== undefined) proxy.cutEvery(opts.cutEveryMs);
    return proxy;
  }

  /** Stops listening and cuts every connection: clients now get "connection refused". */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    this.cutAll();
    await closed;
  }

  /** Listens again on the same port, towards `targetPort` when given. */
  async up(targetPort?: number): Promise<void> {
    if (this.closed) throw new Error("the proxy is closed");
    if (this.server) throw new Error("the proxy is already listening");
    if (targetPort !== undefined) this.targetPort = targetPort;
    await this.listen(this.port);
  }

  /** "127.0.0.1:PORT", for an agent's --collector. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Connection pairs open now. */
  get open(): number {
    return this.pairs.size;
  }

  /** Destroys every open connection pair; returns how many were cut. */
  cutAll(): number {
    this.cutRounds++;
    let n = 0;
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair);
      n++;
      // A reset rather than a clean close: the peer sees the connection fail mid-stream.
      pair.client.resetAndDestroy();
      pair.upstream.destroy();
    }
    this.cut += n;
    return n;
  }

  /** Cuts every open connection every `ms` from now on (replacing an earlier timer). */
  cutEvery(ms: number): void {
    this.stopCutting();
    this.timer = setInterval(() => this.cutAll(), ms);
    this.timer.unref();
  }

  stopCutting(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Stops listening and cuts every connection; safe twice. */
  async close(): Promise<void> {
    this.closed = true;
    this.stopCutting();
    const server = this.server;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
    await closed;
  }

  private listen(port: number): Promise<void> {
    const server = createServer({ noDelay: true }, (client) => this.pipe(client));
    return new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: "127.0.0.1", port }, () => {
        const a = server.address();
        if (a === null || typeof a === "string") {
          reject(new Error("the proxy has no TCP address"));
          return;
        }
        this.port = a.port;
        this.server = server;
        resolve();
      });
    });
  }

  private pipe(client: Socket): void {
    this.accepted++;
    const upstream = connect({ host: this.targetHost, port: this.targetPort, noDelay: true });
    const pair: Pair = { client, upstream };
    this.pairs.add(pair);
    const drop = (): void => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
