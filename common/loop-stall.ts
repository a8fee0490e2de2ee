/**
 * Deadlines that do not blame a client for the server's own stalls.
 *
 * A listener closes a connection that says nothing within a deadline (a slowloris defence).
 * But when the process itself is swamped — a fleet of thousands of agents reconnecting at
 * once after a pause, a long garbage collection, a machine shared with InfluxDB — its
 * event loop comes round late: a client's first bytes sit in the socket unread while the
 * deadline's timer, run first in the loop's turn, finds the connection silent and closes
 * it. The client comes back, adds to the load, and a fleet can stay locked out.
 *
 * So a `stallAwareTimeout` counts only the time the event loop was responsive: when it
 * fires it asks how long the loop stalled since it was armed — by its own lateness and by
 * a process-wide tick (`LoopStallClock`) that notes how late each of its wake-ups came —
 * and, when that is more than a little, runs again for that much longer instead of
 * expiring. A client that never speaks is still closed, after the deadline plus the
 * stalls; the extensions stop at `maxExtensionFactor` times the deadline.
 */

/** The stall clock wakes this often; each wake-up later than this adds its lateness. */
const TICK_MS = 250;
/** Stalls below this are timer jitter, not a swamped loop. */
const STALL_NOISE_MS = 50;
/** By default a deadline is extended to at most this many times its length. */
export const DEFAULT_MAX_EXTENSION_FACTOR = 6;

/** Cumulative time the process' event loop came round late, measured by one unref'd interval. */
export class LoopStallClock {
  private stalled = 0;
  private last = 0;
  private timer: NodeJS.Timeout | undefined;
  private users = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Milliseconds of stall since the clock started, including the tick that is overdue now. */
  stalledMs(): number {
    if (!this.timer) return 0;
    const overdue = this.now() - this.last - TICK_MS;
    return this.stalled + (overdue > STALL_NOISE_MS ? overdue : 0);
  }

  /** Starts ticking while anyone holds it; returns the release. */
  hold(): () => void {
    if (this.users++ === 0) {
      this.last = this.now();
      this.timer = setInterval(() => {
        const t = this.now();
        const late = t - this.last - TICK_MS;
        if (late > STALL_NOISE_MS) this.stalled += late;
        this.last = t;
      }, TICK_MS);
      this.timer.unref();
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.users === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }
}

/** The process' clock, shared by every listener. */
export const loopStallClock = new LoopStallClock();

export interface StallAwareTimeoutOptions {
  clock?: LoopStallClock | undefined;
  /** The deadline is extended to at most this many times `ms` (default DEFAULT_MAX_EXTENSION_FACTOR). */
  maxExtensionFactor?: number | undefined;
  now?: (() => number) | undefined;
}

/** A running deadline; `clear()` cancels it. */
export interface StallAwareTimer {
  clear(): void;
}

/**
 * Calls `onExpire` once `ms` of responsive time have passed (see the file's comment); the
 * timers are unref'd. `ms` ≤ 0 arms nothing.
 */
export function stallAwareTimeout(
  ms: number,
  onExpire: () => void,
  opts: StallAwareTimeoutOptions = {},
): StallAwareTimer {
  const clock = opts.clock ?? loopStallClock;
  const now = opts.now ?? (() => performance.now());
  const limit = ms * (opts.maxExtensionFactor ?? DEFAULT_MAX_EXTENSION_FACTOR);
  let timer: NodeJS.Timeout | undefined;
  let release: (() => void) | undefined;
  const clear = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    release?.();
    release = undefined;
  };
  if (ms <= 0) return { clear };
  release = clock.hold();
  const armedAt = now();
  let stallAtStart = clock.stalledMs();
  let runFor = ms;
  let runFrom = armedAt;
  const arm = (): void => {
    timer = setTimeout(() => {
      timer = undefined;
      const t = now();
      // Stalled since this run began: the clock's count, or this timer's own lateness when
      // the clock's tick has not come round yet in this turn of the loop.
      const stall = Math.max(clock.stalledMs() - stallAtStart, t - runFrom - runFor);
      const spent = t - armedAt;
      if (stall > STALL_NOISE_MS && spent < limit) {
        stallAtStart = clock.stalledMs();
        runFrom = t;
        runFor = Math.min(stall, limit - spent);
        arm();
        return;
      }
      clear();
      onExpire();
    }, runFor);
    timer.unref();
  };
  arm();
  return { clear };
}
