/**
 * Connection limits for a listener: at most `maxConnections` open at once, at most
 * `maxPerAddress` from one source address, and no connection kept that has not got going
 * within `setupTimeoutMs` or sat idle for `idleTimeoutMs` (both counted in time the
 * process was responsive: common/loop-stall.ts). Whatever is over a limit is
 * closed at once (the client sees the connection reset), counted by reason and logged at
 * most once a minute per reason, so a client that opens connections without end, or opens
 * them and says nothing, cannot take every file descriptor the process has.
 *
 * The listener tells the guard what counts as getting going (`started`) and what as being
 * busy (`busy`/`idle`); the guard only keeps the books and the timers. Addresses are
 * compared as the socket reports them (an IPv4 client on a dual-stack socket is
 * `::ffff:a.b.c.d`, the same string on every connection).
 */
import type { Socket } from "node:net";
import type { Logger } from "./log.js";
import { stallAwareTimeout, type StallAwareTimer } from "./loop-stall.js";

/** Why a connection was closed by its listener; the label values of trueidle_connections_refused_total. */
export const CONNECTION_REFUSAL_REASONS = [
  "max_connections",
  "max_per_address",
  "setup_timeout",
  "idle_timeout",
] as const;
export type ConnectionRefusalReason = (typeof CONNECTION_REFUSAL_REASONS)[number];

export interface ConnectionLimits {
  /** Connections open at once on the listener. */
  maxConnections: number;
  /** Connections open at once from one source address. */
  maxPerAddress: number;
  /** A connection must get going (the listener calls `started`) within this; 0: no deadline. */
  setupTimeoutMs: number;
  /** A started connection with nothing in progress is closed after this; 0: never. */
  idleTimeoutMs: number;
}

export interface ConnectionCounters {
  /** Per reason; every reason present from the start. */
  readonly refused: Record<ConnectionRefusalReason, number>;
  open: number;
}

export function zeroConnectionCounters(): ConnectionCounters {
  return {
    refused: Object.fromEntries(CONNECTION_REFUSAL_REASONS.map((r) => [r, 0])) as Record<
      ConnectionRefusalReason,
      number
    >,
    open: 0,
  };
}

/** Refusals are logged at WARN at most this often per reason; the rest are counted. */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

const REASON_TEXT: Record<ConnectionRefusalReason, (l: ConnectionLimits, flags: GuardFlagNames) => string> = {
  max_connections: (l, f) => `the listener has ${l.maxConnections} connections open, its limit (${f.maxConnections})`,
  max_per_address: (l, f) =>
    `the address has ${l.maxPerAddress} connections open, the limit per address (${f.maxPerAddress})`,
  setup_timeout: (l, f) => `the connection did not get going within ${l.setupTimeoutMs / 1000} s (${f.setupTimeout})`,
  idle_timeout: (l, f) => `the connection sat idle for ${l.idleTimeoutMs / 1000} s (${f.idleTimeout})`,
};

/** The flags an operator changes each limit with, named in the log lines. */
export interface GuardFlagNames {
  maxConnections: string;
  maxPerAddress: string;
  setupTimeout: string;
  idleTimeout: string;
}

export interface ConnectionGuardOptions {
  /** Names the listener in logs, e.g. "gRPC". */
  listener: string;
  limits: ConnectionLimits;
  counters: ConnectionCounters;
  logger: Logger;
  flags: GuardFlagNames;
}

/** One admitted connection. */
export interface GuardedConnection {
  readonly socket: Socket;
  readonly address: string;
  /** The connection got going: its setup deadline is cleared. */
  started(): void;
  /** Work began on the connection (a request, a stream): no idle timer while any is in progress. */
  busy(): void;
  /** One piece of work ended; the idle timer starts when none is left. */
  idle(): void;
}

export class ConnectionGuard {
  private readonly perAddress = new Map<string, number>();
  private readonly open = new Set<Socket>();
  private readonly loggedAt = new Map<ConnectionRefusalReason, { atMs: number; suppressed: number }>();

  constructor(private readonly opts: ConnectionGuardOptions) {}

  /** Connections open now. */
  get size(): number {
    return this.open.size;
  }

  /**
   * Admits `socket` or closes it (undefined). An admitted socket is tracked until it
   * closes; its setup deadline runs from now.
   */
  admit(socket: Socket): GuardedConnection | undefined {
    const { limits } = this.opts;
    const address = socket.remoteAddress ?? "unknown";
    if (this.open.size >= limits.maxConnections) return this.refuse(socket, "max_connections", address);
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (fromAddress >= limits.maxPerAddress) return this.refuse(socket, "max_per_address", address);
    this.perAddress.set(address, fromAddress + 1);
    this.open.add(socket);
    this.opts.counters.open = this.open.size;

    let timer: StallAwareTimer | undefined;
    let inProgress = 0;
    let closed = false;
    // Stall-aware: a burst of connections that swamps the process is not closed for the
    // process' own slowness (common/loop-stall.ts).
    const arm = (ms: number, reason: ConnectionRefusalReason): void => {
      timer?.clear();
      timer = undefined;
      if (ms <= 0 || closed) return;
      timer = stallAwareTimeout(ms, () => {
        timer = undefined;
        if (!closed) this.refuse(socket, reason, address);
      });
    };
    let isStarted = false;
    socket.once("close", () => {
      closed = true;
      timer?.clear();
      this.open.delete(socket);
      const n = (this.perAddress.get(address) ?? 1) - 1;
      if (n <= 0) this.perAddress.delete(address);
      else this.perAddress.set(address, n);
      this.opts.counters.open = this.open.size;
    });
    arm(limits.setupTimeoutMs, "setup_timeout");
    return {
      socket,
      address,
      started: () => {
        if (isStarted) return;
        isStarted = true;
        if (inProgress === 0) arm(limits.idleTimeoutMs, "idle_timeout");
        else arm(0, "idle_timeout");
      },
      busy: () => {
        inProgress++;
        if (isStarted) arm(0, "idle_timeout");
      },
      idle: () => {
        inProgress = Math.max(0, inProgress - 1);
        if (isStarted && inProgress === 0) arm(limits.idleTimeoutMs, "idle_timeout");
      },
    };
  }

  /** Closes every tracked connection (at stop, after the grace). */
  destroyAll(): void {
    for (const s of this.open) s.destroy();
  }

  private refuse(socket: Socket, reason: ConnectionRefusalReason, address: string): undefined {
    socket.destroy();
    this.opts.counters.refused[reason]++;
    const now = Date.now();
    const seen = this.loggedAt.get(reason);
    if (seen && now - seen.atMs < REFUSAL_LOG_INTERVAL_MS) {
      seen.suppressed++;
      return undefined;
    }
    this.loggedAt.set(reason, { atMs: now, suppressed: 0 });
    this.opts.logger.warn(
      `Closed a ${this.opts.listener} connection from ${address}: ${REASON_TEXT[reason](this.opts.limits, this.opts.flags)}. ` +
        (seen && seen.suppressed > 0 ? `${seen.suppressed} more since the last such line. ` : "") +
        "These are counted in trueidle_connections_refused_total and logged at most once a minute.",
      { listener: this.opts.listener, address, reason, open: this.open.size },
    );
    return undefined;
  }
}

/**
 * Descriptors the process may hold: the soft RLIMIT_NOFILE from /proc/self/limits (Node
 * raises it to the hard limit at start); undefined where that cannot be read.
 */
export async function openFilesLimit(): Promise<number | undefined> {
  try {
    const { readFile } = await import("node:fs/promises");
    const text = await readFile("/proc/self/limits", "utf8");
    const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
    if (!m || m[1] === "unlimited") return undefined;
    return Number(m[1]);
  } catch {
    return undefined;
  }
}
