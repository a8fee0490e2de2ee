/**
 * grpc-js logs on its own (to stderr through `console.error`, outside trueidle's logger),
 * and some of its lines quote what a client sent: a header value it rejects is written
 * whole — `Failed to add metadata entry authorization: Bearer<TAB><token>` — once per
 * stream, so a client can put a valid token into the log, or fill the disk with its junk.
 *
 * `routeGrpcLogs` sends grpc-js' lines through trueidle's logger instead: each line is cut
 * to MAX_LINE_CHARS, every header value in it is replaced by `[redacted]`, anything that
 * looks like a credential (`Bearer …`, `Basic …`, `authorization…`) is redacted as well, and
 * at most LINES_PER_MINUTE lines a minute are logged; the rest are counted and the count
 * is logged with the next line that gets through.
 */
import { format } from "node:util";
import { setLogger, setLogVerbosity, logVerbosity } from "@grpc/grpc-js";
import type { Logger } from "./log.js";

const MAX_LINE_CHARS = 300;
const LINES_PER_MINUTE = 10;

/** The text of a grpc-js log line with header values and credentials taken out, cut short. */
export function redactGrpcLogLine(text: string): string {
  let out = text
    // "Failed to add metadata entry KEY: VALUE. Reason. For more information see …"
    .replace(/(metadata entry [^\s:]{0,100}:)[\s\S]*?(\. For more information|$)/g, "$1 [redacted]$2")
    .replace(/\b(Bearer|Basic)\b[\s\S]*?(?=[\s,;"')\]}]|$)/gi, "$1 [redacted]")
    .replace(/(authorization["']?\s*[:=]\s*)[^\n,;]*/gi, "$1[redacted]");
  // Control characters (a tab, an escape) never reach the log as they are.
  // eslint-disable-next-line no-control-regex
  out = out.replace(/[\u0000-\u001f\u007f-\u009f]/g, " ");
  return out.length > MAX_LINE_CHARS ? `${out.slice(0, MAX_LINE_CHARS)}…` : out;
}

/**
 * Routes grpc-js' own log lines through `logger` (see above). Process-wide, as grpc-js'
 * logger is. Errors only, unless GRPC_VERBOSITY (or GRPC_NODE_VERBOSITY) asks for more.
 */
export function routeGrpcLogs(logger: Logger): void {
  let windowStart = 0;
  let inWindow = 0;
  let suppressed = 0;
  const emit = (level: "error" | "info" | "debug", args: unknown[]): void => {
    const now = Date.now();
    if (now - windowStart >= 60_000) {
      windowStart = now;
      inWindow = 0;
    }
    if (++inWindow > LINES_PER_MINUTE) {
      suppressed++;
      return;
    }
    const text = redactGrpcLogLine(format(...args));
    const fields: Record<string, unknown> = { part: "grpc-js" };
    if (suppressed > 0) fields["suppressed"] = suppressed;
    suppressed = 0;
    const msg = `gRPC library: ${text}`;
    if (level === "error") logger.warn(msg, fields);
    else if (level === "info") logger.info(msg, fields);
    else logger.debug(msg, fields);
  };
  setLogger({
    error: (...args: unknown[]) => emit("error", args),
    info: (...args: unknown[]) => emit("info", args),
    debug: (...args: unknown[]) => emit("debug", args),
  });
  if (!process.env["GRPC_VERBOSITY"] && !process.env["GRPC_NODE_VERBOSITY"]) setLogVerbosity(logVerbosity.ERROR);
}
