/**
 * The agent's optional HTTP side (`--http-listen`): `GET /metrics` (its own metrics as
 * Prometheus text) and `GET /healthz` (200 while the agent samples, 503 otherwise), for sites
 * that scrape nodes or probe them. Plain HTTP: bind it to loopback or a management network.
 */
import * as http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import { errorMessage } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { closeHttp, listenHttp, refuseUnlessGet, requestPath, sendBody, sendInternalError } from "../common/http-endpoint.js";
import type { ListenAddress } from "../common/listen-address.js";
import { PROMETHEUS_CONTENT_TYPE } from "../common/prom-text.js";
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
    return listenHttp(this.server, addr, "The agent's HTTP server");
  }

  /** Stops accepting and closes idle connections; safe twice. */
  stop(): Promise<void> {
    this.stopping ??= closeHttp(this.server);
    return this.stopping;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = requestPath(req);
    if (refuseUnlessGet(req, res)) return;
    try {
      if (path === "/metrics") return sendBody(req, res, 200, PROMETHEUS_CONTENT_TYPE, renderAgentMetrics(this.deps.agent));
      if (path === "/healthz") {
        const sampling = this.deps.agent.isSampling();
        const s = this.deps.agent.stats();
        const body = JSON.stringify({
          status: sampling ? "ok" : "not_sampling",
          connected: s.shipper.connected,
          buffered_windows: s.shipper.buffered,
        }) + "\n";
        return sendBody(req, res, sampling ? 200 : 503, "application/json", body);
      }
      return sendBody(req, res, 404, "text/plain; charset=utf-8", "Not found; see /metrics and /healthz.\n");
    } catch (err) {
      this.deps.logger.error("The agent failed to answer an HTTP request.", { path, err: errorMessage(err) });
      sendInternalError(res);
    }
  }
}
