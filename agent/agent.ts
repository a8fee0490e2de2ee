/**
 * The agent: sample every GPU each interval (ticks aligned to wall-clock multiples of the
 * interval), classify, aggregate into windows, and hand finished windows to the shipper.
 */
import type { Logger } from "../common/log.js";
import type { HostIdentity, Thresholds } from "../common/types.js";
import type { GpuSource } from "./sources/source.js";
import { SamplePipeline } from "./pipeline.js";
import { Shipper, type ShipperStats } from "./shipper/shipper.js";
import type { GpuWindowRecord } from "./window.js";

export const AGENT_VERSION = "0.1.0";

export interface AgentOptions {
  source: GpuSource;
  host: HostIdentity;
  collectors: string[];
  intervalMs: number;
  windowMs: number;
  thresholds: Thresholds;
  logger: Logger;
  maxBufferedWindows?: number;
  /** Called with every window handed to the shipper (the demo and tests watch this). */
  onWindows?: (windows: readonly GpuWindowRecord[]) => void;
  now?: () => number;
}

export interface AgentStats {
  ticks: number;
  windows: number;
  gpus: number;
  shipper: ShipperStats;
  sourceRestarts: number;
  sourceParseErrors: number;
}

export class Agent {
  private readonly pipeline: SamplePipeline;
  private readonly shipper: Shipper;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private ticks = 0;
  private windows = 0;
  private lastTickMs = 0;

  constructor(private readonly opts: AgentOptions) {
    this.now = opts.now ?? Date.now;
    this.pipeline = new SamplePipeline({ windowMs: opts.windowMs, intervalMs: opts.intervalMs, thresholds: opts.thresholds });
    this.shipper = new Shipper({
      targets: opts.collectors,
      host: opts.host,
      agentVersion: AGENT_VERSION,
      source: opts.source.name,
      windowMs: opts.windowMs,
      logger: opts.logger.child({ component: "shipper" }),
      maxBufferedWindows: opts.maxBufferedWindows,
      onThresholds: (t) => this.applyThresholds(t),
    });
  }

  /** Starts the source (GPU discovery), the shipper and the tick loop. */
  async start(signal?: AbortSignal): Promise<void> {
    await this.opts.source.start(signal);
    this.running = true;
    this.shipper.start();
    this.opts.logger.info("The agent is sampling.", {
      source: this.opts.source.name, host: this.opts.host.hostname,
      interval_ms: this.opts.intervalMs, window_ms: this.opts.windowMs, collectors: this.opts.collectors,
    });
    this.schedule();
  }

  /** Stops sampling, ships the partial windows, waits up to `drainMs` for acks. Safe twice. */
  async stop(drainMs = 5_000): Promise<void> {
    if (!this.running) {
      await this.opts.source.stop();
      await this.shipper.stop();
      return;
    }
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    const last = this.pipeline.flushAll();
    if (last.length > 0) this.hand(last);
    await this.opts.source.stop();
    const drained = await this.shipper.drain(drainMs);
    const s = this.shipper.stats();
    if (!drained && s.buffered > 0) {
      this.opts.logger.error("The agent stopped with windows the collector has not acknowledged; they are lost.", { windows: s.buffered });
    }
    await this.shipper.stop();
    this.opts.logger.info("The agent stopped.", { windows_acked: s.acked, windows_dropped: s.dropped });
  }

  stats(): AgentStats {
    const src = this.opts.source.stats();
    return {
      ticks: this.ticks,
      windows: this.windows,
      gpus: this.pipeline.latest().length,
      shipper: this.shipper.stats(),
      sourceRestarts: src.restarts,
      sourceParseErrors: src.parseErrors,
    };
  }

  latest() {
    return this.pipeline.latest();
  }

  private applyThresholds(t: Thresholds): void {
    const cur = this.pipeline.getThresholds();
    if (cur.utilBusyPercent !== t.utilBusyPercent || cur.realActiveRatio !== t.realActiveRatio || cur.heldMemoryBytes !== t.heldMemoryBytes) {
      this.pipeline.setThresholds(t);
      this.opts.logger.info("Using the thresholds the collector sent.", { ...t });
    }
  }

  private schedule(): void {
    if (!this.running) return;
    const now = this.now();
    const iv = this.opts.intervalMs;
    let next = Math.floor(now / iv) * iv + iv;
    if (next <= this.lastTickMs) next = this.lastTickMs + iv;
    this.timer = setTimeout(() => this.tick(next), Math.max(0, next - now));
  }

  private tick(tickMs: number): void {
    if (!this.running) return;
    // A tick that ran late still stands for its own instant; missed ticks are not invented.
    this.lastTickMs = tickMs;
    this.ticks++;
    try {
      const readings = this.opts.source.sample(tickMs);
      if (readings.length > 0) this.pipeline.ingest(tickMs, readings);
      else this.pipeline.closeUntil(tickMs);
      const done = this.pipeline.drain();
      if (done.length > 0) this.hand(done);
    } catch (err) {
      this.opts.logger.error("A sampling tick failed; its sample is lost.", { err: err as Error });
    }
    this.schedule();
  }

  private hand(windows: GpuWindowRecord[]): void {
    this.windows += windows.length;
    this.shipper.enqueue(windows);
    this.opts.onWindows?.(windows);
  }
}
