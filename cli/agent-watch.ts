/**
 * `trueidle agent --watch`: the source and the classifier with no collector. Every sampling
 * tick (aligned to wall-clock multiples of the interval, as the agent's own ticks are) it
 * prints one JSON line per GPU on stdout, so an operator sees why trueidle calls a GPU what
 * it does, and scripts (scripts/gpu-truth/) compare it with an independent reading.
 *
 * Line format (every key on every line; a value the source did not give is null):
 *   ts_ms           the tick, ms since the epoch
 *   gpu, uuid       index and UUID
 *   parent_uuid     a MIG instance's board uuid (null for a whole GPU or a board)
 *   mig_profile     a MIG instance's profile, e.g. 3g.40gb
 *   state           free_idle, held_idle, busy_phantom, active or unavailable; mig_board for
 *                   the row of a board in MIG mode that reads (only its power: its instances
 *                   are the GPUs)
 *   real            real utilization 0–1, rounded to 4 places
 *   real_source     what `real` came from: sm_active, power, util, media or none
 *   util            utilization.gpu, percent
 *   sm_active       GPM SM activity 0–1 (NVML on Hopper and newer; null through nvidia-smi)
 *   power_w         power draw, W
 *   floor_w         the idle power floor in force, W (what the power estimate subtracts)
 *   mem_used_bytes  memory used
 *   processes       compute processes listed (null when the list could not be read)
 *   error           why the GPU gave no valid reading (null when it did)
 */
import type { Logger } from "../common/log.js";
import type { Thresholds } from "../common/types.js";
import type { GpuSource } from "../agent/sources/source.js";
import { endIfDriverHung } from "./signals.js";
import { SamplePipeline, type ClassifiedSample } from "../agent/pipeline.js";

export interface WatchLine {
  ts_ms: number;
  gpu: number;
  uuid: string;
  parent_uuid: string | null;
  mig_profile: string | null;
  state: string;
  real: number;
  real_source: string;
  util: number | null;
  sm_active: number | null;
  power_w: number | null;
  floor_w: number | null;
  mem_used_bytes: number | null;
  processes: number | null;
  error: string | null;
}

/** One classified sample as a watch line. */
export function watchLine(s: ClassifiedSample): WatchLine {
  const r = s.reading;
  const c = s.classification;
  return {
    ts_ms: s.timeMs,
    gpu: r.index,
    uuid: r.uuid,
    parent_uuid: r.parentUuid ?? null,
    mig_profile: r.migProfile ?? null,
    state: r.migBoard && c.state !== "unavailable" ? "mig_board" : c.state,
    real: round(c.real, 4),
    real_source: c.source,
    util: r.util ?? null,
    sm_active: r.smActive === undefined ? null : round(r.smActive, 4),
    power_w: r.powerW ?? null,
    floor_w: c.floorW === undefined ? null : round(c.floorW, 2),
    mem_used_bytes: r.memUsedBytes ?? null,
    processes: r.processes === undefined ? null : r.processes.length,
    error: r.error ?? null,
  };
}

export interface WatchOptions {
  source: GpuSource;
  intervalMs: number;
  windowMs: number;
  thresholds: Thresholds;
  logger: Logger;
  /** Resolves when the watch should end (a signal). */
  stop: Promise<unknown>;
  write?: ((text: string) => boolean) | undefined;
}

/**
 * Starts the source, prints a line per GPU every tick until `stop` resolves or stdout
 * closes, then stops the source. A start failure is thrown (the CLI exits 1 with it).
 */
export async function runWatch(opts: WatchOptions): Promise<void> {
  const { source, intervalMs, logger } = opts;
  const write = opts.write ?? ((text: string) => process.stdout.write(text));
  // Windows are built (the classifier keeps its baselines in the same pipeline as the
  // agent) and thrown away: nothing is shipped.
  const pipeline = new SamplePipeline({ windowMs: opts.windowMs, intervalMs, thresholds: opts.thresholds });
  let ended = false;
  let wake: (() => void) | undefined;
  const end = (): void => {
    ended = true;
    wake?.();
  };
  void opts.stop.then(end);
  // A reader that went away (`| head`) ends the watch quietly.
  const onStdoutError = (err: NodeJS.ErrnoException): void => {
    if (err.code !== "EPIPE") logger.warn("Writing to stdout failed; the watch ends.", { err });
    end();
  };
  process.stdout.on("error", onStdoutError);
  const ac = new AbortController();
  void opts.stop.then(() => ac.abort());
  try {
    try {
      await source.start(ac.signal);
    } catch (err) {
      if (ended) return; // stopped while the source was starting
      throw err;
    }
    logger.info("Watching this host's GPUs: one JSON line per GPU per sample on stdout.", {
      source: source.describe?.() ?? source.name,
      interval_ms: intervalMs,
    });
    let lastTick = 0;
    while (!ended) {
      const now = Date.now();
      let tick = Math.floor(now / intervalMs) * intervalMs + intervalMs;
      if (tick <= lastTick) tick = lastTick + intervalMs;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, tick - now));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
      if (ended) break;
      lastTick = tick;
      const readings = source.sample(tick);
      if (readings.length > 0) pipeline.ingest(tick, readings);
      else pipeline.closeUntil(tick);
      pipeline.drain();
      const lines = pipeline
        .latest()
        .filter((s) => s.timeMs === tick)
        .map((s) => `${JSON.stringify(watchLine(s))}\n`);
      if (lines.length > 0) write(lines.join(""));
    }
  } finally {
    process.stdout.off("error", onStdoutError);
    await source.stop();
  }
  endIfDriverHung(source, logger);
}

function round(x: number, places: number): number {
  const f = 10 ** places;
  return Math.round(x * f) / f;
}
