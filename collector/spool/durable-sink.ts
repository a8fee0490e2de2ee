/**
 * Where an ingest session puts a batch's InfluxDB lines before it acknowledges them. Two
 * kinds: `WaitForInfluxSink` (no spool: the ack waits until InfluxDB has the lines) and
 * `SpoolingSink` (the ack comes once the lines are in InfluxDB or in the disk spool). Either
 * way a batch is acknowledged only once it is durable.
 */
import type { StagedService } from "../../common/lifecycle.js";
import { MEASUREMENT_BOARD_WINDOW, MEASUREMENT_WINDOW } from "../influx/schema.js";
import type { WriteOutcome } from "../influx/writer.js";

export type SinkOutcome =
  /** InfluxDB has every line (or refused some for good, which the writer counted and logged). */
  | { status: "written" }
  /** The lines are in the spool, fsynced; the drainer writes them to InfluxDB later. */
  | { status: "spooled" }
  /** The spool has no room: push the agent back for `retryAfterMs`; it keeps its windows. */
  | { status: "full"; retryAfterMs: number }
  /** No spool and the InfluxDB write queue is full: the agent should send the batch again later. */
  | { status: "busy" }
  /** The caller's signal aborted (its stream ended) before the lines were durable. */
  | { status: "withdrawn" }
  /** The collector is stopping; the lines are not durable and must not be acknowledged. */
  | { status: "stopped" };

/** The part of InfluxWriter a sink uses; tests pass a fake. */
export interface WriterPort {
  submit(lines: readonly string[], signal?: AbortSignal): Promise<WriteOutcome>;
}

/** What a sink did over its life, for the collector's last log line. */
export interface SinkSummary {
  /** Windows acknowledged once InfluxDB had them. */
  windowsWritten: number;
  /** Windows acknowledged once the spool had them. */
  windowsSpooled: number;
  /** Windows written to InfluxDB from the spool. */
  windowsDrained: number;
  /** Unconsumed spool bytes kept for the next start (0 without a spool). */
  spoolBytesLeft: number;
}

/** A service (common/lifecycle.ts) whose first stop phase settles the batches in flight. */
export interface DurableSink extends StagedService {
  /** Starts the sink (with a spool: writing what an earlier run left in it to InfluxDB); before the first submit. */
  start(): void;
  /**
   * Resolves once `lines` (one InfluxDB line per accepted window, and one per owner of it)
   * are durable, or with why
   * not. `signal` aborts when the caller's stream ends: lines not yet durable are withdrawn.
   */
  submit(lines: readonly string[], signal: AbortSignal): Promise<SinkOutcome>;
  /**
   * Takes no more batches and settles the ones in flight: with a spool they are moved to
   * the spool and acknowledged; without one they get a grace to reach InfluxDB. Resolves
   * when every submission has its outcome. Safe twice and before start().
   */
  beginStop(): Promise<void>;
  /**
   * Begins the stop if nobody did, stops draining (the spool is kept for the next start),
   * closes the spool. Safe twice and before start().
   */
  stop(): Promise<SinkSummary>;
}

/**
 * The windows among a batch's lines: its `gpu_window` lines and its boards' rows
 * (`mig_board_window`), one line per window each (the `gpu_owner_window` lines beside them
 * are the same windows' owners).
 */
export function windowsIn(lines: readonly string[]): number {
  let n = 0;
  for (const line of lines) if (line.startsWith(WINDOW_LINE_PREFIX) || line.startsWith(BOARD_LINE_PREFIX)) n++;
  return n;
}
const WINDOW_LINE_PREFIX = `${MEASUREMENT_WINDOW},`;
const BOARD_LINE_PREFIX = `${MEASUREMENT_BOARD_WINDOW},`;

/**
 * Calls `written` with the timestamp (window start, ms) of every `gpu_window` line, for the
 * hourly roll-up (board rows have none). The timestamp is a line's last field: tag values
 * escape their spaces and no field holds a string.
 */
export function noteWritten(lines: readonly string[], written: ((startMs: number) => void) | undefined): void {
  if (!written) return;
  for (const line of lines) {
    if (!line.startsWith(WINDOW_LINE_PREFIX)) continue;
    const t = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(t)) written(t);
  }
}
