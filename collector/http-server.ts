/**
 * The collector's HTTP side (node:http, or node:https with `tls`): `GET /metrics`
 * (Prometheus text), `GET /healthz` (JSON `{status, agents, gpus}`), `GET /` (the fleet
 * page, fleet-page/page-html.ts), `GET /api/fleet` (its JSON, fleet-page/fleet-json.ts),
 * 404 elsewhere.
 *
 * With `basicAuth`, `/metrics` and `/` (and any other path) answer 401 with a
 * `WWW-Authenticate: Basic` challenge unless the request carries a listed user's
 * credentials; every 401 is counted in trueidle_http_auth_failures_total. `/healthz` stays
 * open so load balancers and orchestrators can probe without a password; it tells only
 * that the collector is up and how many agents and GPUs it has.
 */
import * as http from "node:http";
import * as https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { errorMessage } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { FleetState } from "./fleet-state.js";
import { closeHttp, listenHttp, refuseUnlessGet, requestPath, sendBody, sendInternalError } from "../common/http-endpoint.js";
import type { ListenAddress } from "../common/listen-address.js";
import { buildFleetJson } from "./fleet-page/fleet-json.js";
import { FLEET_PAGE_HTML, FLEET_PAGE_SCRIPT_SHA256 } from "./fleet-page/page-html.js";
import { renderMetrics } from "./metrics-render.js";
import { PROMETHEUS_CONTENT_TYPE } from "../common/prom-text.js";
import type { SelfMetrics } from "./self-metrics.js";
import { BASIC_AUTH_REALM, type BasicAuthUsers } from "./auth/basic-auth.js";

export interface HttpServerDeps {
  fleet: FleetState;
  self: SelfMetrics;
  logger: Logger;
  /** Serve HTTPS with this certificate and key instead of HTTP. */
  tls?: { cert: Buffer | string; key: Buffer | string } | undefined;
  /** Require these users' credentials on everything but /healthz. */
  basicAuth?: BasicAuthUsers | undefined;
}

/** The page's own script (by hash: no inline event handlers), styles and nothing else; data reaches it only as JSON. */
const PAGE_HEADERS = {
  "content-security-policy": `default-src 'none'; script-src 'sha256-${FLEET_PAGE_SCRIPT_SHA256}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
};

export class CollectorHttpServer {
  private readonly server: http.Server | https.Server;
  private stopping: Promise<void> | undefined;

  constructor(private readonly deps: HttpServerDeps) {
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.handle(req, res);
    this.server = deps.tls ? https.createServer({ cert: deps.tls.cert, key: deps.tls.key }, handler) : http.createServer(handler);
    // Idle keep-alive connections (Prometheus keeps one per target) must not hold stop() up.
    this.server.keepAliveTimeout = 65_000;
  }

  /** Resolves to the port bound (useful with port 0). */
  listen(addr: ListenAddress): Promise<number> {
    return listenHttp(this.server, addr, "HTTP");
  }

  /** Stops accepting, closes idle connections, waits for requests in flight; safe twice. */
  stop(): Promise<void> {
    this.stopping ??= closeHttp(this.server);
    return this.stopping;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = requestPath(req);
    if (refuseUnlessGet(req, res)) return;
    if (this.deps.basicAuth && path !== "/healthz" && this.deps.basicAuth.check(req.headers.authorization) === undefined) {
      this.deps.self.httpAuthFailures++;
      res.writeHead(401, { "content-type": "text/plain; charset=utf-8", "www-authenticate": `Basic realm="${BASIC_AUTH_REALM}", charset="UTF-8"` });
      res.end(req.method === "HEAD" ? undefined : "Credentials required (HTTP basic auth).\n");
      return;
    }
    try {
      switch (path) {
        case "/metrics":
          return this.metrics(req, res);
        case "/healthz":
          return sendBody(req, res, 200, "application/json", JSON.stringify({
            status: "ok",
            agents: this.deps.self.agentsConnected,
            gpus: this.deps.fleet.size,
          }) + "\n");
        case "/":
          return sendBody(req, res, 200, "text/html; charset=utf-8", FLEET_PAGE_HTML, PAGE_HEADERS);
        case "/api/fleet":
          return sendBody(req, res, 200, "application/json", JSON.stringify(buildFleetJson(this.deps.fleet)) + "\n", {
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
          });
        default:
          return sendBody(req, res, 404, "text/plain; charset=utf-8", "Not found; see /, /metrics, /api/fleet and /healthz.\n");
      }
    } catch (err) {
      this.deps.logger.error("The collector failed to answer an HTTP request.", { path, err: errorMessage(err) });
      sendInternalError(res);
    }
  }

  private metrics(req: IncomingMessage, res: ServerResponse): void {
    this.deps.fleet.sweep();
    const chunks = renderMetrics(this.deps.fleet, this.deps.self);
    let length = 0;
    for (const c of chunks) length += Buffer.byteLength(c);
    res.writeHead(200, { "content-type": PROMETHEUS_CONTENT_TYPE, "content-length": length });
    if (req.method === "HEAD") return void res.end();
    for (const c of chunks) res.write(c);
    res.end();
  }
}
