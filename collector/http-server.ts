/**
 * The collector's HTTP side (node:http, or node:https with `tls`): `GET /metrics`
 * (Prometheus text), `GET /healthz` (JSON `{status, agents, gpus}`), `GET /` (the fleet
 * page, fleet-page/page-html.ts), `GET /api/fleet` (its JSON, fleet-page/fleet-json.ts),
 * 404 elsewhere.
 *
 * With `basicAuth`, `/metrics` and `/` (and any other path) answer 401 with a
 * `WWW-Authenticate: Basic` challenge unless the request carries a listed user's
 * credentials; every 401 is counted in trueidle_http_auth_failures_total, and an address
 * with too many failures in a row gets 429 with `Retry-After` without its credentials being
 * checked (auth/failure-throttle.ts, common/http-auth.ts). `/healthz` stays open so load
 * balancers and orchestrators can probe without a password; it tells only that the
 * collector is up and how many agents and GPUs it has. `tls` may ask for client
 * certificates (common/http-security.ts), and `headers` are added to every answer.
 *
 * Under attack: connections are capped in all and per address (common/connection-guard.ts),
 * a connection must send a whole request head within HEADER_TIMEOUT_MS, and `/metrics` is
 * streamed chunk by chunk with backpressure, at most MAX_SCRAPES at once
 * (MAX_SCRAPES_PER_ADDRESS from one address; 503 with `Retry-After` beyond), each cut off
 * after SCRAPE_DEADLINE_MS. The exposition is rendered at most once per
 * --metrics-cache-max-age and kept gzip-compressed (metrics-cache.ts): a scraper that asks
 * for gzip gets the kept chunks (`Content-Encoding: gzip`, `Vary: Accept-Encoding`), any other
 * a gunzip of them of its own. So a fleet of any size costs the compressed exposition once
 * plus a chunk or two per scrape, and a scraper that stops reading holds nothing but its
 * slot. The process and Node.js metrics (common/process-metrics.ts) are read when a render
 * starts and end the exposition.
 */
import * as http from "node:http";
import * as https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { setImmediate as nextTurn } from "node:timers/promises";
import { ConnectionGuard, type GuardedConnection } from "../common/connection-guard.js";
import { errorMessage } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { FleetState } from "./fleet-state.js";
import {
  closeHttp,
  listenHttp,
  refuseUnlessGet,
  requestPath,
  sendBody,
  sendInternalError,
} from "../common/http-endpoint.js";
import type { ListenAddress } from "../common/listen-address.js";
import { buildFleetJson } from "./fleet-page/fleet-json.js";
import { FLEET_PAGE_HTML, FLEET_PAGE_SCRIPT_SHA256 } from "./fleet-page/page-html.js";
import { acceptsGzip, MetricsCache } from "./metrics-cache.js";
import { PROMETHEUS_CONTENT_TYPE } from "../common/prom-text.js";
import { processMetrics, type ProcessMetrics } from "../common/process-metrics.js";
import type { HttpRefusalReason, SelfMetrics } from "./self-metrics.js";
import { admitRequest, type HttpUsers } from "../common/http-auth.js";
import { clientCertificateProblem, httpsServerOptions, type HttpTlsSettings } from "../common/http-security.js";
import type { FailureThrottle } from "./auth/failure-throttle.js";
import type { OwnerLedger } from "./owner-ledger.js";
import { COLLECTOR_SETTINGS, type GpuSeriesMode } from "./settings.js";

/** Connections on the HTTP port, in all (default) and from one address (a quarter of it). */
export const DEFAULT_MAX_HTTP_CONNECTIONS: number = COLLECTOR_SETTINGS.httpMaxConnections.default;
/** A connection must send a whole request head within this (Node's headersTimeout, and the guard's setup deadline). */
export const HEADER_TIMEOUT_MS = 10_000;
/** A whole request, body included (Node's requestTimeout). */
const REQUEST_TIMEOUT_MS = 30_000;
/** A socket with no traffic either way for this long is closed (a scraper that stopped reading). */
const SOCKET_IDLE_MS = 60_000;
/** /metrics answers in progress at once, in all and from one address. */
export const MAX_SCRAPES = 4;
export const MAX_SCRAPES_PER_ADDRESS = 2;
/** A /metrics answer not done by then is cut off (Prometheus gives up long before). */
export const SCRAPE_DEADLINE_MS = 120_000;
/** How long stop() waits for answers in progress (a scrape of a scraper that stopped reading) before cutting them. */
const STOP_GRACE_MS = 5_000;
/** Refusals are logged at WARN at most this often per reason. */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

export interface HttpServerDeps {
  fleet: FleetState;
  self: SelfMetrics;
  logger: Logger;
  /** Serve HTTPS with this certificate and key (and client certificate policy) instead of HTTP. */
  tls?: HttpTlsSettings | undefined;
  /** Require these users' credentials on everything but /healthz. */
  basicAuth?: HttpUsers | undefined;
  /** Headers added to every answer (a web configuration file's http_server_config.headers). */
  headers?: Readonly<Record<string, string>> | undefined;
  /** Owners of GPUs, for /metrics and the fleet page; none: no owner series, and no owners on the page. */
  owners?: OwnerLedger | undefined;
  /** Failed logins per address; with `basicAuth` only. */
  authThrottle?: FailureThrottle | undefined;
  /** Connections in all (default DEFAULT_MAX_HTTP_CONNECTIONS); a quarter of it from one address. */
  maxConnections?: number | undefined;
  /** The process metrics; this process's set (common/process-metrics.ts) by default. */
  processMetrics?: Pick<ProcessMetrics, "render"> | undefined;
  /** Per-GPU families on /metrics (default full). */
  gpuSeries?: GpuSeriesMode | undefined;
  /** A /metrics exposition younger than this is served again (default COLLECTOR_SETTINGS.metricsCacheMaxAgeMs). */
  metricsCacheMaxAgeMs?: number | undefined;
  /** See MetricsCacheDeps.costlyRenderMs (tests). */
  metricsCacheCostlyRenderMs?: number | undefined;
}

/** The page's own script (by hash: no inline event handlers), styles and nothing else; data reaches it only as JSON. */
const PAGE_HEADERS = {
  "content-security-policy": `default-src 'none'; script-src 'sha256-${FLEET_PAGE_SCRIPT_SHA256}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
};

export class CollectorHttpServer {
  private readonly server: http.Server | https.Server;
  private readonly guard: ConnectionGuard;
  private readonly connections = new WeakMap<Socket, GuardedConnection>();
  private stopping: Promise<void> | undefined;
  private scrapes = 0;
  private readonly scrapesByAddress = new Map<string, number>();
  private readonly refusalLoggedAt = new Map<HttpRefusalReason, number>();
  private certRefusalLoggedAt = -Infinity;

  private readonly cache: MetricsCache;

  constructor(private readonly deps: HttpServerDeps) {
    this.cache = new MetricsCache({
      fleet: deps.fleet,
      self: deps.self,
      owners: deps.owners,
      process: deps.processMetrics ?? processMetrics(),
      gpuSeries: deps.gpuSeries,
      maxAgeMs: deps.metricsCacheMaxAgeMs,
      costlyRenderMs: deps.metricsCacheCostlyRenderMs,
    });
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.handle(req, res);
    const options: http.ServerOptions = {
      headersTimeout: HEADER_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      // Node checks the two timeouts above on this interval (default 30 s).
      connectionsCheckingInterval: 1_000,
      // Idle keep-alive connections (Prometheus keeps one per target) must not hold stop() up.
      keepAliveTimeout: 65_000,
    };
    const tls = deps.tls;
    this.server = tls
      ? https.createServer({ ...options, ...httpsServerOptions(tls) }, handler)
      : http.createServer(options, handler);
    if (tls) {
      this.server.on("secureConnection", (socket: TLSSocket) => {
        const problem = clientCertificateProblem(tls, socket);
        if (problem !== undefined) this.refuseCertificate(socket, problem);
      });
    }
    this.server.timeout = SOCKET_IDLE_MS;
    const max = deps.maxConnections ?? DEFAULT_MAX_HTTP_CONNECTIONS;
    this.guard = new ConnectionGuard({
      listener: "HTTP",
      // Node answers a slow request head with 408 at HEADER_TIMEOUT_MS; the guard's deadline is
      // the backstop for what Node's does not cover (a TLS handshake that never ends).
      limits: {
        maxConnections: max,
        maxPerAddress: Math.max(1, Math.floor(max / 4)),
        setupTimeoutMs: HEADER_TIMEOUT_MS + 5_000,
        idleTimeoutMs: 0,
      },
      counters: deps.self.connections.http,
      logger: deps.logger,
      flags: {
        maxConnections: "--http-max-connections",
        maxPerAddress: "a quarter of --http-max-connections",
        setupTimeout: "fixed",
        idleTimeout: "fixed",
      },
    });
    this.server.on("connection", (socket: Socket) => {
      const conn = this.guard.admit(socket);
      if (conn) this.connections.set(socket, conn);
    });
    // Timeouts and unparsable requests: counted, answered when the socket still takes it, closed.
    this.server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      const timeout = err.code === "ERR_HTTP_REQUEST_TIMEOUT";
      if (err.code !== "ECONNRESET")
        this.refused(timeout ? "header_timeout" : "bad_request", socket.remoteAddress, err.code);
      if (socket.writable && !socket.destroyed) {
        socket.end(
          timeout
            ? "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n"
            : "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n",
        );
        socket.destroySoon();
      } else {
        socket.destroy();
      }
    });
  }

  /** Resolves to the port bound (useful with port 0). */
  listen(addr: ListenAddress): Promise<number> {
    return listenHttp(this.server, addr, "HTTP");
  }

  /** Stops accepting, closes idle connections, waits up to STOP_GRACE_MS for requests in flight, then cuts them; safe twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const grace = setTimeout(() => {
        this.cache.stop();
        this.server.closeAllConnections();
      }, STOP_GRACE_MS);
      grace.unref();
      await closeHttp(this.server);
      clearTimeout(grace);
      this.cache.stop();
    })();
    return this.stopping;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.connections.get(req.socket);
    conn?.started();
    const path = requestPath(req);
    for (const [name, value] of Object.entries(this.deps.headers ?? {})) res.setHeader(name, value);
    if (refuseUnlessGet(req, res)) return;
    const users = this.deps.basicAuth;
    if (!users || path === "/healthz") {
      this.route(req, res, path);
      return;
    }
    // A throttled address and bcrypt checks backed up both count as auth_throttled (429).
    admitRequest(req, res, users, this.deps.authThrottle, {
      onFailure: () => void this.deps.self.httpAuthFailures++,
      onThrottled: (address) => this.refused("auth_throttled", address),
    }).then(
      (ok) => {
        if (ok) this.route(req, res, path);
      },
      (err: unknown) => {
        this.deps.logger.error("The collector failed to check HTTP credentials.", { path, err: errorMessage(err) });
        sendInternalError(res);
      },
    );
  }

  private route(req: IncomingMessage, res: ServerResponse, path: string): void {
    try {
      switch (path) {
        case "/metrics":
          return void this.metrics(req, res).catch((err: unknown) => {
            this.deps.logger.error("The collector failed to answer a scrape.", { err: errorMessage(err) });
            if (!res.headersSent) sendInternalError(res);
            else res.destroy();
          });
        case "/healthz":
          return sendBody(
            req,
            res,
            200,
            "application/json",
            `${JSON.stringify({
              status: "ok",
              agents: this.deps.self.agentsConnected,
              gpus: this.deps.fleet.size,
            })}\n`,
          );
        case "/":
          return sendBody(req, res, 200, "text/html; charset=utf-8", FLEET_PAGE_HTML, PAGE_HEADERS);
        case "/api/fleet":
          return sendBody(
            req,
            res,
            200,
            "application/json",
            `${JSON.stringify(buildFleetJson(this.deps.fleet, { owners: this.deps.owners }))}\n`,
            {
              "cache-control": "no-store",
              "x-content-type-options": "nosniff",
            },
          );
        default:
          return sendBody(
            req,
            res,
            404,
            "text/plain; charset=utf-8",
            "Not found; see /, /metrics, /api/fleet and /healthz.\n",
          );
      }
    } catch (err) {
      this.deps.logger.error("The collector failed to answer an HTTP request.", { path, err: errorMessage(err) });
      sendInternalError(res);
    }
  }

  /**
   * Streams the exposition from the cache (metrics-cache.ts): gzip-compressed when the
   * scraper asks for it, else gunzipped for it; a chunk is written only once the socket took
   * the last one, and the event loop turns between chunks.
   */
  private async metrics(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const address = req.socket.remoteAddress ?? "unknown";
    const fromAddress = this.scrapesByAddress.get(address) ?? 0;
    if (this.scrapes >= MAX_SCRAPES || fromAddress >= MAX_SCRAPES_PER_ADDRESS) {
      this.refused("scrapes_in_flight", address);
      res.writeHead(503, { "content-type": "text/plain; charset=utf-8", "retry-after": "5" });
      res.end(
        req.method === "HEAD"
          ? undefined
          : `${this.scrapes} /metrics answers are in progress, the limit; try again shortly.\n`,
      );
      return;
    }
    const gzip = acceptsGzip(req.headers["accept-encoding"]);
    const headers: Record<string, string> = { "content-type": PROMETHEUS_CONTENT_TYPE, vary: "Accept-Encoding" };
    if (gzip) headers["content-encoding"] = "gzip";
    if (req.method === "HEAD") {
      res.writeHead(200, headers);
      return void res.end();
    }
    this.scrapes++;
    this.scrapesByAddress.set(address, fromAddress + 1);
    const deadline = setTimeout(() => res.destroy(), SCRAPE_DEADLINE_MS);
    deadline.unref();
    try {
      const exposition = this.cache.exposition();
      const chunks = gzip ? exposition.gzip() : exposition.identity();
      // The first chunk before the head: a render that fails at once is answered 500.
      let next = await chunks.next();
      res.writeHead(200, headers);
      while (!next.done && !res.destroyed) {
        if (res.write(next.value)) await nextTurn();
        else await drainedOrClosed(res);
        if (res.destroyed) break;
        next = await chunks.next();
      }
      if (res.destroyed) {
        this.deps.self.scrapesAborted++;
        // A reader of a render in progress ends when its next chunk comes; the slot need not wait.
        void chunks.return(undefined).catch(() => undefined);
      } else res.end();
    } finally {
      clearTimeout(deadline);
      this.scrapes--;
      const n = (this.scrapesByAddress.get(address) ?? 1) - 1;
      if (n <= 0) this.scrapesByAddress.delete(address);
      else this.scrapesByAddress.set(address, n);
    }
  }

  /** Closes a TLS connection whose client certificate does not meet the client_auth_type; logged at most once a minute. */
  private refuseCertificate(socket: TLSSocket, problem: string): void {
    socket.destroy();
    const now = Date.now();
    if (now - this.certRefusalLoggedAt < REFUSAL_LOG_INTERVAL_MS) return;
    this.certRefusalLoggedAt = now;
    this.deps.logger.warn(
      `Closed an HTTPS connection from ${socket.remoteAddress ?? "an unknown address"}: ${problem}. ` +
        "Such connections are logged at most once a minute.",
      { address: socket.remoteAddress },
    );
  }

  private refused(reason: HttpRefusalReason, address: string | undefined, code?: string): void {
    this.deps.self.httpRefused[reason]++;
    const now = Date.now();
    if (now - (this.refusalLoggedAt.get(reason) ?? -Infinity) < REFUSAL_LOG_INTERVAL_MS) return;
    this.refusalLoggedAt.set(reason, now);
    this.deps.logger.warn(
      `Refused an HTTP request from ${address ?? "an unknown address"} (${reason}). ` +
        "These are counted in trueidle_http_requests_refused_total and logged at most once a minute per reason.",
      { address, reason, code },
    );
  }
}

/** Resolves when `res` can take more, or is gone. */
function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}
