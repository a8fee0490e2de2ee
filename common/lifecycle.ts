/**
 * One lifecycle vocabulary for trueidle's parts.
 *
 * A long-lived part — one that owns timers, sockets, servers, child processes, worker threads
 * or open files for as long as it runs — is a service: it is started with `start()` and ended
 * with `stop()`. `stop()` is safe to call twice and before `start()`, and resolves once
 * everything the part owns is released (timers cleared, sockets and files closed, children and
 * workers gone). A network server's start is `listen(address)`, Node's word, which resolves to
 * the port bound. A part a factory returns already running (`startCollector`,
 * `startPrivateInfluxd`, `startDemoHistory`) has only `stop()`.
 *
 * Shutdown that must happen in an order (stop taking new work, let the sinks settle, then end
 * the streams) is said with stop's phases, not a third verb: `beginStop()` takes no new work
 * and resolves once the work already taken is settled; `stop()` does the rest, beginning the
 * stop itself when nobody did. Both are safe twice.
 *
 * A handle made by an `open()` factory — a file, a log of segment files, the agent's window
 * buffer, a GPM sample buffer — is a resource, not a service: it is released with `close()`,
 * as Node's own fs handles are, and `close()` is safe twice. What counts is what a part does,
 * not its factory's name: `SpoolingSink.open()` takes a lock and a log, but the sink runs a
 * drainer, so it is a service with start() and stop().
 */

/** A long-lived part; see the module comment for the contract. */
export interface Service {
  start(...args: never[]): void | Promise<void>;
  /** Safe twice and before `start()`; resolves once everything the service owns is released. */
  stop(): Promise<unknown>;
}

/** A service whose shutdown has a first phase that other parts wait on. */
export interface StagedService extends Service {
  /** Takes no new work; resolves once the work already taken is settled. Safe twice and before `start()`. */
  beginStop(): Promise<void>;
}
