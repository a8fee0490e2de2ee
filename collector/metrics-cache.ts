/**
 * The /metrics exposition, rendered at most once per `maxAgeMs` whatever the number of
 * scrapes, and kept gzip-compressed only.
 *
 * Why an age bound and not "until the fleet changes": at scale the fleet changes all the
 * time (6,250 hosts each sending a window every 10 s change it every couple of
 * milliseconds), so a change counter would never let two scrapes share a render. So an
 * exposition is served again to every scrape that starts within its reuse time of the
 * render's start — two Prometheus replicas, or a re-scrape, cost one render — and a scrape
 * that comes while a render is in progress follows that render instead of starting another,
 * whatever the bound (0 included): renders never pile up behind a slow one.
 *
 * Where a render costs little (under `costlyRenderMs`, default COSTLY_RENDER_MS: a fleet
 * of up to a couple of thousand GPUs) caching saves nothing worth serving old figures for,
 * so such an exposition is reused within `maxAgeMs` only while nothing changed — no window
 * applied, no GPU expired, none of the collector's own figures moved — and a scrape after a
 * change shows it. A costly one is reused within `maxAgeMs` whatever changed.
 *
 * A render is not paced by any socket: it runs chunk by chunk (metrics-render.ts), each chunk
 * handed to a node:zlib gzip stream (compression runs on libuv's thread pool), the event loop
 * turning between chunks, and the compressed chunks are kept. Scrapes read those chunks as
 * they come: a scraper that asks for gzip (Accept-Encoding) gets them as they are; any other
 * gets them through a gunzip stream of its own, chunk by chunk with backpressure. So the only
 * whole copy held is the compressed one (about a tenth of the text), plus one in a scrape
 * still reading an older one; never the text.
 *
 * The process metrics are read when a render starts and cached with the body, as are the
 * collector's own: both are at most `maxAgeMs` (plus a render's time) old.
 */
import { once } from "node:events";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setImmediate as nextTurn } from "node:timers/promises";
import { constants as zlibConstants, createGunzip, createGzip } from "node:zlib";
import type { ProcessMetrics } from "../common/process-metrics.js";
import type { FleetState } from "./fleet-state.js";
import { renderMetricsChunks } from "./metrics-render.js";
import type { OwnerLedger } from "./owner-ledger.js";
import type { SelfMetrics } from "./self-metrics.js";
import { COLLECTOR_SETTINGS, type GpuSeriesMode } from "./settings.js";

/** A render that took less (process metrics aside) is redone after any change, even within maxAgeMs. */
export const COSTLY_RENDER_MS = 100;
/** zlib's output chunk, about the renderer's chunk. */
const ZLIB_CHUNK_BYTES = 64 * 1024;
/**
 * Fastest gzip: the exposition's label text repeats so much that level 1 already shrinks it
 * about tenfold, at several times the speed of the default level 6 (bench/metrics-render.ts).
 */
const GZIP_LEVEL = zlibConstants.Z_BEST_SPEED;

/** One rendered (or rendering) exposition: its gzip chunks, growing until done. */
export class Exposition {
  readonly chunks: Buffer[] = [];
  /** performance.now() when the render started. */
  readonly startedAt: number;
  done = false;
  failure: Error | undefined;
  /** What the render took, process metrics aside (read before it, they cost the same whatever the fleet). */
  renderMs = 0;
  /** The fleet's generation and the collector's own figures when the render started. */
  stamp = "";
  gzipBytes = 0;
  private waiters: Array<() => void> = [];

  constructor(startedAt: number) {
    this.startedAt = startedAt;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.gzipBytes += chunk.length;
    this.wake();
  }

  finish(failure?: Error): void {
    this.done = true;
    this.failure = failure;
    this.wake();
  }

  /** The gzip chunks, those made so far and those still to come; throws the render's error. */
  async *gzip(): AsyncGenerator<Buffer, void, undefined> {
    for (let i = 0; ; ) {
      if (i < this.chunks.length) yield this.chunks[i++] as Buffer;
      else if (this.failure) throw this.failure;
      else if (this.done) return;
      else await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** The text, gunzipped chunk by chunk as the reader takes it. */
  async *identity(): AsyncGenerator<Buffer, void, undefined> {
    const gunzip = createGunzip({ chunkSize: ZLIB_CHUNK_BYTES });
    // A failed or stopped source destroys gunzip with its error, which the loop below throws.
    const piping = pipeline(Readable.from(this.gzip()), gunzip).catch(() => undefined);
    try {
      for await (const chunk of gunzip) yield chunk as Buffer;
    } finally {
      gunzip.destroy();
      await piping;
    }
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

export interface MetricsCacheDeps {
  fleet: FleetState;
  self: SelfMetrics;
  owners?: OwnerLedger | undefined;
  /** The process metrics, read when a render starts. */
  process: Pick<ProcessMetrics, "render">;
  /** Per-GPU families (default full). */
  gpuSeries?: GpuSeriesMode | undefined;
  /** An exposition whose render started less than this ago is served again (default COLLECTOR_SETTINGS). */
  maxAgeMs?: number | undefined;
  /** A render cheaper than this is redone after any change (default COSTLY_RENDER_MS). */
  costlyRenderMs?: number | undefined;
}

export class MetricsCache {
  private current: Exposition | undefined;
  private stopped = false;
  private readonly maxAgeMs: number;
  private readonly costlyRenderMs: number;

  constructor(private readonly deps: MetricsCacheDeps) {
    this.maxAgeMs = deps.maxAgeMs ?? COLLECTOR_SETTINGS.metricsCacheMaxAgeMs.default;
    this.costlyRenderMs = deps.costlyRenderMs ?? COSTLY_RENDER_MS;
  }

  /** The exposition for a scrape starting now: the one in progress, one young enough, or a new one. */
  exposition(): Exposition {
    const c = this.current;
    if (c && !c.failure && (!c.done || this.reusable(c))) {
      this.deps.self.metricsCacheHits++;
      return c;
    }
    const next = new Exposition(performance.now());
    this.current = next;
    this.deps.self.metricsRenders++;
    void this.render(next);
    // After the render's sweep (which runs before its first await): what it starts from.
    next.stamp = this.stamp();
    return next;
  }

  private reusable(e: Exposition): boolean {
    if (performance.now() - e.startedAt >= this.maxAgeMs) return false;
    return e.renderMs >= this.costlyRenderMs || e.stamp === this.stamp();
  }

  private stamp(): string {
    return `${this.deps.fleet.generation} ${this.deps.self.changeStamp()}`;
  }

  /** Ends a render in progress (its readers get an error); later calls render nothing. Safe twice. */
  stop(): void {
    this.stopped = true;
  }

  private async render(e: Exposition): Promise<void> {
    const { fleet, self, owners } = this.deps;
    const gzip = createGzip({ level: GZIP_LEVEL, chunkSize: ZLIB_CHUNK_BYTES });
    gzip.on("data", (chunk: Buffer) => e.push(chunk));
    const ended = once(gzip, "end");
    // Keeps an error before `ended` is awaited from going unhandled; `ended` rejects with it.
    ended.catch(() => undefined);
    let textBytes = 0;
    try {
      if (this.stopped) throw new Error("The collector is stopping.");
      fleet.sweep();
      owners?.sweep(fleet.now());
      const tail = await this.deps.process.render();
      const renderStart = performance.now();
      for (const chunk of renderMetricsChunks(fleet, self, owners, tail, this.deps.gpuSeries)) {
        if (this.stopped) throw new Error("The collector is stopping.");
        textBytes += Buffer.byteLength(chunk);
        if (gzip.write(chunk)) await nextTurn();
        else await once(gzip, "drain");
      }
      gzip.end();
      await ended;
      e.renderMs = performance.now() - renderStart;
      self.metricsRenderSeconds = (performance.now() - e.startedAt) / 1000;
      self.metricsExpositionBytes.identity = textBytes;
      self.metricsExpositionBytes.gzip = e.gzipBytes;
      e.finish();
    } catch (err) {
      gzip.destroy();
      e.finish(err instanceof Error ? err : new Error(String(err)));
    }
  }
}

/** Whether an Accept-Encoding header takes gzip (named, or `*`, with a q above 0). */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  let star = false;
  for (const part of header.split(",")) {
    const [coding = "", ...params] = part.trim().toLowerCase().split(";");
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    const weight = q === undefined ? 1 : Number(q.slice(2));
    const ok = Number.isFinite(weight) && weight > 0;
    if (coding.trim() === "gzip") return ok;
    if (coding.trim() === "*") star = ok;
  }
  return star;
}
