/**
 * What the scheduler's allocation sources (pod-resources.ts, job-mapping.ts) share: one
 * read at a time on a timer that never holds the process open, a first read a caller can
 * wait for (`agent --once`), and the last good answer, dropped once it is older than the
 * staleness bound so that allocations of a scheduler that went quiet do not outlive it.
 */
import type { GpuOwner } from "../../common/types.js";

export interface AllocationAnswer {
  at: number;
  byGpu: ReadonlyMap<string, GpuOwner[]>;
}

const EMPTY: ReadonlyMap<string, GpuOwner[]> = new Map();

export abstract class PolledAllocations {
  protected stopped = false;
  /** The last good answer; undefined before the first and once it went stale. */
  protected answer: AllocationAnswer | undefined;
  private started = false;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly firstReadDone: Promise<void>;
  private endFirstRead: () => void = () => {};

  protected constructor(
    protected readonly now: () => number,
    protected readonly staleAfterMs: number,
  ) {
    this.firstReadDone = new Promise<void>((resolve) => {
      this.endFirstRead = resolve;
    });
  }

  /** Ends with the first read's outcome (or at stop). */
  firstRead(): Promise<void> {
    return this.firstReadDone;
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.schedule(0);
  }

  /** Stops the timer, lets the read in progress end (interrupt() may cut it short), then closed(). Safe twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.endFirstRead();
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.interrupt();
    await this.running;
    this.closed();
  }

  /** Each GPU's owners (uuid → owners) while the answer is fresh; empty otherwise. */
  current(): ReadonlyMap<string, GpuOwner[]> {
    return this.ready() ? (this.answer as AllocationAnswer).byGpu : EMPTY;
  }

  ready(): boolean {
    return this.answer !== undefined && this.now() - this.answer.at <= this.staleAfterMs;
  }

  /** One read; resolves with the delay before the next. */
  protected abstract read(): Promise<number>;
  /** What read() threw, which it did not expect: count and log it; returns the delay before the next read. */
  protected abstract readFailed(err: unknown): number;
  /** The last answer grew older than the bound and was dropped: count and say so. */
  protected abstract droppedStale(): void;
  /** Cuts a read in progress short at stop (default: nothing). */
  protected interrupt(): void {}
  /** Frees what reads hold, after the last one ended (default: nothing). */
  protected closed(): void {}

  /** A read may end the first read early, before its slower remainder. */
  protected firstReadEnded(): void {
    this.endFirstRead();
  }

  /** Resolves once no read is in progress. */
  protected async idle(): Promise<void> {
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.poll().finally(() => {
        this.running = undefined;
      });
    }, delayMs);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    let next: number;
    try {
      next = await this.read();
    } catch (err) {
      next = this.readFailed(err);
    }
    this.endFirstRead();
    this.dropIfStale();
    this.schedule(next);
  }

  private dropIfStale(): void {
    if (this.answer === undefined || this.now() - this.answer.at <= this.staleAfterMs) return;
    this.answer = undefined;
    this.droppedStale();
  }
}
