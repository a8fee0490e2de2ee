/**
 * The agent's optional HTTP side (`--http-listen`): `GET /metrics` (its own metrics, then the
 * process and Node.js metrics, as Prometheus text) and `GET /healthz` (200 while the agent
 * samples, 503 otherwise), for sites that scrape nodes or probe them. Plain HTTP (bind it to
 * loopback or a management network), or, with `security` from a web configuration file,
 * HTTPS with any client certificate policy, basic auth on everything but /healthz (failed
 * logins throttled per address) and extra headers (common/http-security.ts).
 */
import * as http from "node:http";
import * as https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { errorMessage } from "../common/errors.js";
import { admitRequest, type AuthFailureThrottle } from "../common/http-auth.js";
import { clientCertificateProblem, httpsServerOptions, type HttpSecurity } from "../common/http-security.js";
import type { Logger } from "../common/log.js";
import {
  closeHttp,
  listenHttp,
  refuseUnlessGet,
  requestPath,
  sendBody,
  sendInternalError,
} from "../common/http-endpoint.js";
import type { ListenAddress } from "../common/listen-address.js";
import { processMetrics, type ProcessMetrics } from "../common/process-metrics.js";
import { PROMETHEUS_CONTENT_TYPE } from "../common/prom-text.js";
import { renderAgentMetrics, type AgentMetricsSource } from "./self-metrics.js";

export interface AgentHttpDeps {
  agent: AgentMetricsSource & { isSampling(): boolean };
  logger: Logger;
  /** The process metrics; this process's set (common/process-metrics.ts) by default. */
  processMetrics?: ProcessMetrics | undefined;
  /** HTTPS, basic auth and headers; plain HTTP, open, without. */
  security?: HttpSecurity | undefined;
  /** Failed logins per address; with `security.users` only. */
  authThrottle?: AuthFailureThrottle | undefined;
}

/** Refused logins and client certificates are logged at most this often. */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

export class AgentHttpServer {
  private readonly server: http.Server | https.Server;
  private stopping: Promise<void> | undefined;
  private readonly process: ProcessMetrics;
  private refusalLoggedAt = -Infinity;

  constructor(private readonly deps: AgentHttpDeps) {
    this.process = deps.processMetrics ?? processMetrics({ eventLoopHistogram: false });
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.handle(req, res);
    const tls = deps.security?.tls;
    this.server = tls ? https.createServer(httpsServerOptions(tls), handler) : http.createServer(handler);
    this.server.keepAliveTimeout = 65_000;
    if (tls) {
      this.server.on("secureConnection", (socket: TLSSocket) => {
        const problem = clientCertificateProblem(tls, socket);
        if (problem === undefined) return;
        socket.destroy();
        this.refusal(`Closed an HTTPS connection from ${socket.remoteAddress ?? "an unknown address"}: ${problem}.`);
      });
    }
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
    for (const [name, value] of Object.entries(this.deps.security?.headers ?? {})) res.setHeader(name, value);
    if (refuseUnlessGet(req, res)) return;
    const users = this.deps.security?.users;
    if (!users || path === "/healthz") {
      this.route(req, res, path);
      return;
    }
    admitRequest(req, res, users, this.deps.authThrottle, {
      onFailure: (address) =>
        this.refusal(`Refused an HTTP request from ${address} without a listed user's credentials (401).`),
      onThrottled: (address) => this.refusal(`Refused an HTTP request from ${address}: too many failed logins (429).`),
    }).then(
      (ok) => {
        if (ok) this.route(req, res, path);
      },
      (err: unknown) => {
        this.deps.logger.error("The agent failed to check HTTP credentials.", { path, err: errorMessage(err) });
        sendInternalError(res);
      },
    );
  }

  /** Logs a refusal at WARN, at most once a minute. */
  private refusal(message: string): void {
    const now = Date.now();
    if (now - this.refusalLoggedAt < REFUSAL_LOG_INTERVAL_MS) return;
    this.refusalLoggedAt = now;
    this.deps.logger.warn(`${message} Refusals are logged at most once a minute.`);
  }

  private route(req: IncomingMessage, res: ServerResponse, path: string): void {
    try {
      if (path === "/metrics") {
        return void this.process
          .render()
          .then((processText) =>
            sendBody(req, res, 200, PROMETHEUS_CONTENT_TYPE, renderAgentMetrics(this.deps.agent) + processText),
          )
          .catch((err: unknown) => this.failed(res, path, err));
      }
      if (path === "/healthz") {
        const sampling = this.deps.agent.isSampling();
        const s = this.deps.agent.stats();
        const body = `${JSON.stringify({
          status: sampling ? "ok" : "not_sampling",
          connected: s.shipper.connected,
          buffered_windows: s.shipper.buffered,
        })}\n`;
        return sendBody(req, res, sampling ? 200 : 503, "application/json", body);
      }
      return sendBody(req, res, 404, "text/plain; charset=utf-8", "Not found; see /metrics and /healthz.\n");
    } catch (err) {
      this.failed(res, path, err);
    }
  }

  private failed(res: ServerResponse, path: string, err: unknown): void {
    this.deps.logger.error("The agent failed to answer an HTTP request.", { path, err: errorMessage(err) });
    sendInternalError(res);
  }
}
