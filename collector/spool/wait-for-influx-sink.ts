/**
 * The sink without a spool: a batch is acknowledged once InfluxDB has its lines. While
 * InfluxDB is away or slow the acks wait (the agents keep their windows); a full write
 * queue answers `busy`, and the agent sends the batch again later.
 *
 * At stop, submissions in flight get `graceMs` to reach InfluxDB and are acknowledged if
 * they do; the rest are withdrawn (never acknowledged; their agents send them again).
 * The spooling sink uses one of these too, as its fallback when the spool cannot be written.
 */
import type { Logger } from "../../common/log.js";
import {
  noteWritten,
  windowsIn,
  type DurableSink,
  type SinkOutcome,
  type SinkSummary,
  type WriterPort,
} from "./durable-sink.js";

export const DEFAULT_STOP_GRACE_MS = 10_000;

export interface WaitForInfluxSinkOptions {
  writer: WriterPort;
  logger: Logger;
  /** Told the start of every window InfluxDB took (late hours get rolled up). */
  written?: ((startMs: number) => void) | undefined;
  /** How long beginStop() waits for submissions in flight (default 10 s). */
  graceMs?: number | undefined;
}

export class WaitForInfluxSink implements DurableSink {
  private readonly inFlight = new Set<AbortController>();
  private closed = false;
  private stopBegun: Promise<void> | undefined;
  private idleWaiters: Array<() => void> = [];
  private windowsWritten = 0;

  constructor(private readonly opts: WaitForInfluxSinkOptions) {}

  async submit(lines: readonly string[], signal: AbortSignal): Promise<SinkOutcome> {
    if (this.closed) return { status: "stopped" };
    if (signal.aborted) return { status: "withdrawn" };
    if (lines.length === 0) return { status: "written" };
    // A controller of its own, so that beginStop() can withdraw it without ending the stream.
    const ctl = new AbortController();
    const onEnd = (): void => ctl.abort();
    signal.addEventListener("abort", onEnd, { once: true });
    this.inFlight.add(ctl);
    try {
      const o = await this.opts.writer.submit(lines, ctl.signal);
      switch (o.status) {
        case "done":
          this.windowsWritten += windowsIn(lines);
          noteWritten(lines, this.opts.written);
          return { status: "written" };
        case "queue_full":
          return { status: "busy" };
        case "withdrawn":
          return { status: signal.aborted ? "withdrawn" : "stopped" };
        default:
          return { status: "stopped" };
      }
    } finally {
      signal.removeEventListener("abort", onEnd);
      this.inFlight.delete(ctl);
      if (this.inFlight.size === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Nothing to start: the sink owns nothing until a batch is submitted. */
  start(): void {}

  beginStop(): Promise<void> {
    this.stopBegun ??= (async () => {
      this.closed = true;
      if (this.inFlight.size === 0) return;
      const waiting = this.inFlight.size;
      const graceMs = this.opts.graceMs ?? DEFAULT_STOP_GRACE_MS;
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<boolean>((resolve) => this.idleWaiters.push(() => resolve(true)));
      const late = new Promise<boolean>((resolve) => {
        // Not unref'd: the grace must run out even when nothing else keeps the process alive.
        timer = setTimeout(() => resolve(false), graceMs);
      });
      const done = await Promise.race([idle, late]);
      clearTimeout(timer);
      if (done) return;
      const left = this.inFlight.size;
      for (const ctl of this.inFlight) ctl.abort();
      this.opts.logger.warn(
        `${left} of ${waiting} batches were still waiting for InfluxDB ${Math.round(graceMs / 1000)} s into the shutdown; ` +
          "their agents were not acknowledged and will send them again.",
        { batches: left },
      );
    })();
    return this.stopBegun;
  }

  async stop(): Promise<SinkSummary> {
    await this.beginStop();
    return { windowsWritten: this.windowsWritten, windowsSpooled: 0, windowsDrained: 0, spoolBytesLeft: 0 };
  }

  /** Windows acknowledged once InfluxDB had them. */
  get written(): number {
    return this.windowsWritten;
  }
}
