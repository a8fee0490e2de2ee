/**
 * The agent: sample every GPU each interval (ticks aligned to wall-clock multiples of the
 * interval), classify, aggregate into windows, and hand finished windows to the shipper.
 *
 * With a state directory, unacknowledged windows are kept on disk (DIR/buffer) and sent
 * first after a restart; without one they live in memory and a stop loses them.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Service } from "../common/lifecycle.js";
import type { Logger } from "../common/log.js";
import type { HostIdentity, Thresholds } from "../common/types.js";
import type { GpuSource } from "./sources/source.js";
import { SamplePipeline, type ClockStepBack } from "./pipeline.js";
import { Shipper, type ShipperStats } from "./shipper/shipper.js";
import { WindowBuffer } from "./shipper/window-buffer.js";
import { openStateDir, type StateDir } from "./state-dir.js";
import type { GpuWindowRecord } from "./window.js";
import type { OwnerAnnotator, OwnerStats } from "./owners/owner-annotator.js";
import { AGENT_SETTINGS } from "./settings.js";

export const AGENT_VERSION = "0.1.0";

export interface AgentOptions {
  source: GpuSource;
  host: HostIdentity;
  collectors: string[];
  intervalMs: number;
  windowMs: number;
  thresholds: Thresholds;
  logger: Logger;
  maxBufferedWindows?: number | undefined;
  /** Encoded bytes of unacknowledged windows kept at most (default 256 MiB). */
  maxBufferBytes?: number | undefined;
  /** Keep unacknowledged windows on disk under DIR/buffer so that they survive a restart. */
  stateDir?: string | undefined;
  /** TLS for the gRPC channel; insecure when absent. */
  credentials?: grpc.ChannelCredentials | undefined;
  /** Metadata sent when each stream opens (the bearer token). */
  callMetadata?: grpc.Metadata | undefined;
  /** Extra grpc-js channel options (for example the TLS server name override). */
  channelOptions?: grpc.ChannelOptions | undefined;
  /** Puts owners on readings (scheduler allocations, who runs each process); none: no owners. */
  owners?: OwnerAnnotator | undefined;
  /** Called with every window handed to the shipper (the demo and tests watch this). */
  onWindows?: ((windows: readonly GpuWindowRecord[]) => void) | undefined;
  now?: (() => number) | undefined;
}

export interface AgentStats {
  ticks: number;
  /** Sampling instants skipped because the event loop ran a tick more than one interval late. */
  ticksMissed: number;
  /** GPU samples dropped because the wall clock stepped back into time the GPU's windows covered already. */
  samplesDropped: number;
  windows: number;
  gpus: number;
  /** GPUs in the last sample that a scheduler allocated to at least one pod or job. */
  allocatedGpus: number;
  /** The owner sources' state and counters; undefined when the agent learns no owners. */
  owners?: OwnerStats | undefined;
  shipper: ShipperStats;
  sourceRestarts: number;
  sourceParseErrors: number;
  /** Driver calls past their deadline that have not returned (NVML source). */
  sourceHungCalls: number;
}

const EMPTY_SHIPPER_STATS: ShipperStats = {
  connected: false,
  buffered: 0,
  bufferBytes: 0,
  inFlight: 0,
  sent: 0,
  acked: 0,
  rejected: 0,
  dropped: 0,
  reconnects: 0,
};

export class Agent implements Service {
  private readonly pipeline: SamplePipeline;
  /** Made by start(), once the buffer (maybe on disk) is open. */
  private shipper: Shipper | undefined;
  private buffer: WindowBuffer | undefined;
  private stateDir: StateDir | undefined;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private ticks = 0;
  private ticksMissed = 0;
  private lastMissLogMs = 0;
  private windows = 0;
  private lastTickMs = 0;

  constructor(private readonly opts: AgentOptions) {
    this.now = opts.now ?? Date.now;
    this.pipeline = new SamplePipeline({
      windowMs: opts.windowMs,
      intervalMs: opts.intervalMs,
      thresholds: opts.thresholds,
      onClockStepBack: (step) => this.clockSteppedBack(step),
    });
  }

  /**
   * Opens the state directory (when given) and loads the windows kept there, starts the
   * source (GPU discovery), the shipper and the tick loop.
   */
  async start(signal?: AbortSignal): Promise<void> {
    const bufferOpts = {
      maxWindows: this.opts.maxBufferedWindows ?? AGENT_SETTINGS.maxBufferedWindows.default,
      maxBytes: this.opts.maxBufferBytes,
      logger: this.opts.logger.child({ component: "buffer" }),
      now: this.now,
    };
    if (this.opts.stateDir !== undefined) {
      this.stateDir = await openStateDir(this.opts.stateDir, this.opts.logger);
      try {
        this.buffer = await WindowBuffer.open(this.stateDir.bufferDir, bufferOpts);
      } catch (err) {
        await this.stateDir.release();
        throw err;
      }
    } else {
      this.buffer = WindowBuffer.memory(bufferOpts);
    }
    this.shipper = new Shipper({
      targets: this.opts.collectors,
      host: this.opts.host,
      agentVersion: AGENT_VERSION,
      source: this.opts.source.name,
      windowMs: this.opts.windowMs,
      logger: this.opts.logger.child({ component: "shipper" }),
      buffer: this.buffer,
      credentials: this.opts.credentials,
      callMetadata: this.opts.callMetadata,
      channelOptions: this.opts.channelOptions,
      onThresholds: (t) => this.applyThresholds(t),
      now: this.opts.now,
    });
    try {
      await this.opts.source.start(signal);
    } catch (err) {
      await this.closeBuffer();
      throw err;
    }
    this.running = true;
    this.opts.owners?.start();
    this.shipper.start();
    this.opts.logger.info("The agent is sampling.", {
      source: this.opts.source.name,
      host: this.opts.host.hostname,
      interval_ms: this.opts.intervalMs,
      window_ms: this.opts.windowMs,
      collectors: this.opts.collectors,
    });
    this.schedule();
  }

  /**
   * Stops sampling, ships the partial windows, waits up to `drainMs` for acks, then closes
   * the buffer (on disk it keeps what is unacknowledged for the next start). Safe twice.
   */
  async stop(drainMs = 5_000): Promise<void> {
    if (!this.running) {
      await this.opts.owners?.stop();
      await this.opts.source.stop();
      await this.shipper?.stop();
      await this.closeBuffer();
      return;
    }
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    const last = this.pipeline.flushAll();
    if (last.length > 0) this.hand(last);
    await this.opts.owners?.stop();
    await this.opts.source.stop();
    const shipper = this.shipper as Shipper;
    const drained = await shipper.drain(drainMs);
    const s = shipper.stats();
    await shipper.stop();
    await this.closeBuffer();
    if (!drained && s.buffered > 0) {
      if (this.stateDir) {
        this.opts.logger.info(
          `${s.buffered} windows not yet acknowledged are kept in ${this.stateDir.bufferDir} for the next start.`,
          { windows: s.buffered },
        );
      } else {
        this.opts.logger.error(
          "The agent stopped with windows the collector has not acknowledged; they are lost. Set --state-dir to keep them across restarts.",
          { windows: s.buffered },
        );
      }
    }
    this.opts.logger.info("The agent stopped.", {
      windows_measured: this.windows,
      windows_acked: s.acked,
      windows_dropped: s.dropped,
    });
  }

  /** Whether the tick loop runs (started and not stopped). */
  isSampling(): boolean {
    return this.running;
  }

  stats(): AgentStats {
    const src = this.opts.source.stats();
    const latest = this.pipeline.latest();
    let allocatedGpus = 0;
    for (const s of latest) if ((s.reading.allocations?.length ?? 0) > 0) allocatedGpus++;
    return {
      ticks: this.ticks,
      ticksMissed: this.ticksMissed,
      samplesDropped: this.pipeline.samplesDropped,
      windows: this.windows,
      gpus: latest.length,
      allocatedGpus,
      owners: this.opts.owners?.stats(),
      shipper: this.shipper?.stats() ?? EMPTY_SHIPPER_STATS,
      sourceRestarts: src.restarts,
      sourceParseErrors: src.parseErrors,
      sourceHungCalls: this.opts.source.hungCalls?.() ?? 0,
    };
  }

  latest() {
    return this.pipeline.latest();
  }

  private applyThresholds(t: Thresholds): void {
    const cur = this.pipeline.getThresholds();
    if (
      cur.utilBusyPercent !== t.utilBusyPercent ||
      cur.realActiveRatio !== t.realActiveRatio ||
      cur.heldMemoryBytes !== t.heldMemoryBytes
    ) {
      this.pipeline.setThresholds(t);
      this.opts.logger.info("Using the thresholds the collector sent.", { ...t });
    }
  }

  private schedule(): void {
    if (!this.running) return;
    const now = this.now();
    const iv = this.opts.intervalMs;
    let next = Math.floor(now / iv) * iv + iv;
    // A timer that fired a little early must not tick the same instant twice. A wall clock
    // that stepped back an interval or more ticks on at its own instants, and the pipeline
    // drops (and counts) the samples that fall in time its windows covered already.
    if (next <= this.lastTickMs && this.lastTickMs - now < iv) next = this.lastTickMs + iv;
    this.timer = setTimeout(() => this.tick(next), Math.max(0, next - now));
  }

  private tick(tickMs: number): void {
    if (!this.running) return;
    // A tick that ran late still stands for its own instant; missed ticks are not invented,
    // but counted: a window then holds fewer observed seconds than its length.
    const iv = this.opts.intervalMs;
    if (this.lastTickMs > 0 && tickMs - this.lastTickMs > iv) {
      const missed = Math.round((tickMs - this.lastTickMs) / iv) - 1;
      this.ticksMissed += missed;
      if (tickMs - this.lastMissLogMs > 60_000) {
        this.lastMissLogMs = tickMs;
        this.opts.logger.warn(
          `Sampling ran late and skipped ${missed} sample${missed === 1 ? "" : "s"}; the host is overloaded or the process was paused. ` +
            "Windows cover fewer observed seconds meanwhile (logged at most once a minute, counted in trueidle_agent_ticks_missed_total).",
          { missed, missed_total: this.ticksMissed },
        );
      }
    }
    this.lastTickMs = tickMs;
    this.ticks++;
    try {
      const sampled = this.opts.source.sample(tickMs);
      const readings = this.opts.owners ? this.opts.owners.annotate(sampled) : sampled;
      if (readings.length > 0) this.pipeline.ingest(tickMs, readings);
      else this.pipeline.closeUntil(tickMs);
      const done = this.pipeline.drain();
      if (done.length > 0) this.hand(done);
    } catch (err) {
      this.opts.logger.error("A sampling tick failed; its sample is lost.", { err: err as Error });
    }
    this.schedule();
  }

  private clockSteppedBack(step: ClockStepBack): void {
    this.opts.logger.warn(
      `The wall clock stepped back by ${Math.round(step.stepMs / 1000)} s, to ${new Date(step.timeMs).toISOString()}. ` +
        `The windows sent already cover the time until ${new Date(step.resumeMs).toISOString()}, so samples until the clock is ` +
        "back there are dropped rather than sent twice (counted in trueidle_agent_samples_dropped_total).",
      {
        step_ms: step.stepMs,
        resume_at: new Date(step.resumeMs).toISOString(),
        gpus: step.gpus,
        dropped_total: this.pipeline.samplesDropped,
      },
    );
  }

  private hand(windows: GpuWindowRecord[]): void {
    this.windows += windows.length;
    this.shipper?.enqueue(windows);
    this.opts.onWindows?.(windows);
  }

  private async closeBuffer(): Promise<void> {
    await this.buffer?.close();
    await this.stateDir?.release();
  }
}
