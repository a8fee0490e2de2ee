/**
 * What the agent's and the collector's small HTTP servers share: binding to a listen
 * address, a stop that does not wait for idle keep-alive connections, GET/HEAD only, and
 * whole-body answers with a content length (no body for HEAD).
 */
import type * as http from "node:http";
import type * as https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { ListenAddress } from "./listen-address.js";

/** Binds `server`; resolves to the port bound (useful with port 0). `what` names it in the error. */
export function listenHttp(server: http.Server | https.Server, addr: ListenAddress, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void =>
      reject(new Error(`${what} could not listen on ${addr.host}:${addr.port}: ${err.message}`, { cause: err }));
    server.once("error", onError);
    server.listen(addr.port, addr.host, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops accepting, closes idle connections, resolves once requests in flight are answered. */
export function closeHttp(server: http.Server | https.Server): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

/** The request's path without its query. */
export function requestPath(req: IncomingMessage): string {
  return (req.url ?? "/").split("?", 1)[0] ?? "/";
}

/** Answers 405 to anything but GET and HEAD; true when it did. */
export function refuseUnlessGet(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method === "GET" || req.method === "HEAD") return false;
  res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" });
  res.end("Only GET and HEAD are allowed.\n");
  return true;
}

/** Answers with `body` whole; HEAD gets the same headers and no body. */
export function sendBody(
  req: IncomingMessage,
  res: ServerResponse,
  code: number,
  type: string,
  body: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(code, { ...headers, "content-type": type, "content-length": Buffer.byteLength(body) });
  res.end(req.method === "HEAD" ? undefined : body);
}

/** Answers 500 once a handler threw (the caller logs why). */
export function sendInternalError(res: ServerResponse): void {
  if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
  res.end("Internal error.\n");
}
