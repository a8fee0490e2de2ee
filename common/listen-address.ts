/**
 * Listen addresses of the form HOST:PORT: `0.0.0.0:9746`, `localhost:0`, `[::1]:9745`,
 * `:9745` (all IPv4 interfaces). Port 0 asks the system for a free port.
 */
import { TrueidleError } from "./errors.js";

export interface ListenAddress {
  /** Host name or IP address, without brackets. */
  host: string;
  port: number;
}

/** Parses HOST:PORT; throws a bad_config error naming `what` (e.g. "--grpc-listen"). */
export function parseListenAddress(text: string, what = "listen address"): ListenAddress {
  const bad = (why: string): never => {
    throw new TrueidleError("bad_config", `${what} "${text}" ${why}; use HOST:PORT such as 0.0.0.0:9745 or [::1]:9745`);
  };
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) return bad("has an unclosed [");
    host = text.slice(1, close);
    if (!host.includes(":")) return bad("holds no IPv6 address between [ and ]");
    if (text[close + 1] !== ":") return bad("has no :PORT after the ]");
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) return bad("has no :PORT");
    host = text.slice(0, colon);
    if (host.includes(":")) return bad("looks like an IPv6 address without [ ]");
    portText = text.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(portText)) return bad(`has port "${portText}", which is not a number`);
  const port = Number(portText);
  if (port > 65_535) return bad("has a port above 65535");
  if (/\s/.test(host)) return bad("has white space in the host");
  return { host: host === "" ? "0.0.0.0" : host, port };
}

/** HOST:PORT again, with brackets around IPv6 addresses (what grpc-js expects). */
export function formatListenAddress(addr: ListenAddress): string {
  return addr.host.includes(":") ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}
