/**
 * The agent's optional HTTP side (`--http-listen`): `GET /metrics` (its own metrics as
 * Prometheus text) and `GET /healthz` (200 while the agent samples, 503 otherwise), for sites
 * that scrape nodes or probe them. Plain HTTP: bind it to loopback or a management network.
 */
import * as http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { errorMessage } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { ListenAddress } from "../collector/listen-address.js";
import { PROMETHEUS_CONTENT_TYPE } from "../collector/prom-text.js";
import { renderAgentMetrics, type AgentMetricsSource } from "./self-metrics.js";

export interface AgentHttpDeps {
  agent: AgentMetricsSource & { isSampling(): boolean };
  logger: Logger;
}

export class AgentHttpServer {
  private readonly server: http.Server;
  private stopping: Promise<void> | undefined;

  constructor(private readonly deps: AgentHttpDeps) {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 65_000;
  }

  /** Resolves to the port bound (useful with port 0). */
  listen(addr: ListenAddress): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void =>
        reject(new Error(`The agent's HTTP server could not listen on ${addr.host}:${addr.port}: ${err.message}`, { cause: err }));
      this.server.once("error", onError);
      this.server.listen(addr.port, addr.host, () => {
        this.server.off("error", onError);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  /** Stops accepting and closes idle connections; safe twice. */
  stop(): Promise<void> {
    this.stopping ??= new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
    return this.stopping;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? "/").split("?", 1)[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" });
      res.end("Only GET and HEAD are allowed.\n");
      return;
    }
    try {
      if (path === "/metrics") return this.send(req, res, 200, PROMETHEUS_CONTENT_TYPE, renderAgentMetrics(this.deps.agent));
      if (path === "/healthz") {
        const sampling = this.deps.agent.isSampling();
        const s = this.deps.agent.stats();
        const body = JSON.stringify({
          status: sampling ? "ok" : "not_sampling",
          connected: s.shipper.connected,
          buffered_windows: s.shipper.buffered,
        }) + "\n";
        return this.send(req, res, sampling ? 200 : 503, "application/json", body);
      }
      return this.send(req, res, 404, "text/plain; charset=utf-8", "Not found; see /metrics and /healthz.\n");
    } catch (err) {
      this.deps.logger.error("The agent failed to answer an HTTP request.", { path, err: errorMessage(err) });
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
      res.end("Internal error.\n");
    }
  }

  private send(req: IncomingMessage, res: ServerResponse, code: number, type: string, body: string): void {
    res.writeHead(code, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(req.method === "HEAD" ? undefined : body);
  }
}
