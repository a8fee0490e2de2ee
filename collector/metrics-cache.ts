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
 * A render is not paced by any socket: it runs chunk by chunk (metrics-render.ts), the event
 * loop turning between chunks, and the compressed output is kept as a list of chunks. Scrapes
 * read those chunks as they come: a scraper that asks for gzip (Accept-Encoding) gets them as
 * they are; any other gets them through a gunzip stream of its own, chunk by chunk with
 * backpressure. So the only whole copy held is the compressed one (about a tenth of the text),
 * plus one in a scrape still reading an older one; never the text.
 *
 * Compression is parallel, as pigz does it, yet the output is one ordinary gzip member, which
 * every client that reads gzip reads (several concatenated members are valid gzip too, but
 * not every client reads past the first). At 50,000 GPUs the text is about 190 MiB, and a
 * single deflate stream on one thread took most of a first scrape's 2 s or more. So the text
 * is cut into blocks of about GZIP_BLOCK_BYTES, at chunk boundaries, and each block is
 * raw-deflated on its own on libuv's thread pool, a few at once (GZIP_BLOCKS_IN_FLIGHT: the
 * render stays no further ahead than that). Every block but the last ends with a sync flush,
 * which leaves it byte-aligned and without the final-block bit, and the last one with a finish,
 * so the blocks laid end to end in order are one deflate stream. Each block takes the last
 * 32 KiB of the block before it as its dictionary, so it may refer back across the cut as one
 * stream would, and the output is about as small as a single stream's. The gzip header goes first and
 * the trailer last: the CRC-32 of the text, kept running block by block (zlib.crc32), and its
 * length. Where node:zlib has no crc32 (Node 20 before 20.15) the text goes through a single
 * gzip stream instead.
 *
 * The process metrics are read when a render starts and cached with the body, as are the
 * collector's own: both are at most `maxAgeMs` (plus a render's time) old.
 */
import { once } from "node:events";
import { availableParallelism } from "node:os";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setImmediate as nextTurn } from "node:timers/promises";
// A namespace, not named imports: crc32 is missing before Node 20.15, and a named import of it would not load there.
import * as zlib from "node:zlib";
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
const GZIP_LEVEL = zlib.constants.Z_BEST_SPEED;
/**
 * Text deflated as one block on the thread pool: large enough that handing it over costs
 * little beside compressing it (a few ms at level 1), small enough that a render of a few
 * MiB already spreads over several threads.
 */
export const GZIP_BLOCK_BYTES = 1024 * 1024;
/**
 * Blocks being deflated at once, at most: one per core, leaving one of libuv's threads (4
 * unless UV_THREADPOOL_SIZE says otherwise) to file system work meanwhile.
 */
const GZIP_BLOCKS_IN_FLIGHT = Math.max(
  1,
  Math.min(availableParallelism(), (Number(process.env.UV_THREADPOOL_SIZE) || 4) - 1),
);
/**
 * zlib's output chunk for a block: a block's deflate comes back to the event loop once per
 * output chunk, and a MiB of exposition deflates to about 100 KiB at level 1.
 */
const DEFLATED_BLOCK_CHUNK_BYTES = 128 * 1024;
/** deflate's window: what a block takes of the text before it as its dictionary. */
const DEFLATE_WINDOW_BYTES = 32 * 1024;
/** gzip header (RFC 1952): deflate, no flags, no mtime, fastest compression (XFL 4, as zlib writes at level 1), OS unknown. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
/** Whether node:zlib has crc32 (Node 20.15 and later), which the parallel gzip needs. */
const HAS_CRC32 = typeof (zlib as { crc32?: unknown }).crc32 === "function";

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
    const gunzip = zlib.createGunzip({ chunkSize: ZLIB_CHUNK_BYTES });
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
  /** Compress blocks in parallel into one gzip member (default: where node:zlib has crc32); false: one gzip stream. */
  parallelGzip?: boolean | undefined;
  /** Text per block of the parallel gzip (default GZIP_BLOCK_BYTES). */
  gzipBlockBytes?: number | undefined;
}

export class MetricsCache {
  private current: Exposition | undefined;
  private stopped = false;
  private readonly maxAgeMs: number;
  private readonly costlyRenderMs: number;
  private readonly parallelGzip: boolean;
  private readonly gzipBlockBytes: number;

  constructor(private readonly deps: MetricsCacheDeps) {
    this.maxAgeMs = deps.maxAgeMs ?? COLLECTOR_SETTINGS.metricsCacheMaxAgeMs.default;
    this.costlyRenderMs = deps.costlyRenderMs ?? COSTLY_RENDER_MS;
    this.parallelGzip = deps.parallelGzip ?? HAS_CRC32;
    this.gzipBlockBytes = deps.gzipBlockBytes ?? GZIP_BLOCK_BYTES;
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
    const gzip: GzipWriter = this.parallelGzip ? new ParallelGzip(e, this.gzipBlockBytes) : new StreamGzip(e);
    let textBytes = 0;
    try {
      if (this.stopped) throw new Error("The collector is stopping.");
      fleet.sweep();
      owners?.sweep(fleet.now());
      const tail = await this.deps.process.render();
      const renderStart = performance.now();
      for (const chunk of renderMetricsChunks(fleet, self, owners, tail, this.deps.gpuSeries)) {
        if (this.stopped) throw new Error("The collector is stopping.");
        const bytes = Buffer.byteLength(chunk);
        textBytes += bytes;
        await gzip.write(chunk, bytes);
      }
      await gzip.end();
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

/** Gzips a render's text into its Exposition. */
interface GzipWriter {
  /** Takes the next chunk of text (`bytes` long in UTF-8); resolves once the next may come, the event loop having turned. */
  write(text: string, bytes: number): Promise<void>;
  /** Resolves once the whole gzip output was pushed; rejects with a compression error. */
  end(): Promise<void>;
  /** Drops the work in progress: nothing more is pushed. */
  destroy(): void;
}

/** One gzip stream on the thread pool, one block at a time (Node 20 before 20.15, or when asked). */
class StreamGzip implements GzipWriter {
  private readonly gzip = zlib.createGzip({ level: GZIP_LEVEL, chunkSize: ZLIB_CHUNK_BYTES });
  private readonly ended: Promise<unknown>;

  constructor(e: Exposition) {
    this.gzip.on("data", (chunk: Buffer) => e.push(chunk));
    this.ended = once(this.gzip, "end");
    // Keeps an error before `ended` is awaited from going unhandled; `ended` rejects with it.
    this.ended.catch(() => undefined);
  }

  async write(text: string): Promise<void> {
    if (this.gzip.write(text)) await nextTurn();
    else await once(this.gzip, "drain");
  }

  async end(): Promise<void> {
    this.gzip.end();
    await this.ended;
  }

  destroy(): void {
    this.gzip.destroy();
  }
}

/**
 * One gzip member from blocks of text raw-deflated apart, up to GZIP_BLOCKS_IN_FLIGHT at once
 * on the thread pool, pushed in order as they come (see the top of this file).
 */
class ParallelGzip implements GzipWriter {
  /** Text of the block being gathered. */
  private texts: string[] = [];
  private textBytes = 0;
  /**
   * Buffers whose block was deflated, for the next blocks' text: a render fills a few over and
   * over, not a fresh MiB of memory per block.
   */
  private readonly spare: Buffer[] = [];
  /** The last DEFLATE_WINDOW_BYTES of the text so far: the next block's dictionary. */
  private dictionary: Buffer | undefined;
  /** CRC-32 and length (mod 2^32) of the text handed to deflate so far. */
  private crc = 0;
  private size = 0;
  /** Each block in flight's push, oldest first; each settles after the one before it. */
  private readonly inFlight: Promise<void>[] = [];
  /** The newest block's push. */
  private pushed: Promise<void> = Promise.resolve();
  private headerPushed = false;
  private dropped = false;

  constructor(
    private readonly e: Exposition,
    private readonly blockBytes: number,
  ) {}

  async write(text: string, bytes: number): Promise<void> {
    this.texts.push(text);
    this.textBytes += bytes;
    if (this.textBytes >= this.blockBytes) await this.block(false);
    await nextTurn();
  }

  async end(): Promise<void> {
    // The last block, empty where the text ended with a block, carries the final-block bit.
    await this.block(true);
    await this.pushed;
    if (this.dropped) return;
    const trailer = Buffer.allocUnsafe(8);
    trailer.writeUInt32LE(this.crc, 0);
    trailer.writeUInt32LE(this.size, 4);
    this.e.push(trailer);
  }

  destroy(): void {
    this.dropped = true;
  }

  /** Hands the gathered text to deflate once fewer than GZIP_BLOCKS_IN_FLIGHT blocks are in flight. */
  private async block(last: boolean): Promise<void> {
    while (this.inFlight.length >= GZIP_BLOCKS_IN_FLIGHT) await this.inFlight.shift();
    let buffer = this.spare.pop();
    // A block is blockBytes and at most a chunk more: room for a quarter more fits nearly every one.
    if (!buffer || buffer.length < this.textBytes)
      buffer = Buffer.allocUnsafe(Math.max(this.textBytes, Math.ceil(this.blockBytes * 1.25)));
    const text = buffer.subarray(0, this.textBytes);
    let at = 0;
    for (const t of this.texts) at += text.write(t, at);
    this.texts = [];
    this.textBytes = 0;
    this.crc = zlib.crc32(text, this.crc);
    this.size = (this.size + text.length) >>> 0;
    const options: zlib.ZlibOptions = {
      level: GZIP_LEVEL,
      chunkSize: DEFLATED_BLOCK_CHUNK_BYTES,
      finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
    };
    if (this.dictionary) options.dictionary = this.dictionary;
    // A copy: `buffer` is filled again once deflated, maybe before the next block is handed over.
    if (text.length > 0) this.dictionary = Buffer.from(text.subarray(-DEFLATE_WINDOW_BYTES));
    const spare = buffer;
    const deflated = new Promise<Buffer>((resolve, reject) =>
      zlib.deflateRaw(text, options, (err, out) => {
        this.spare.push(spare);
        if (err) reject(err);
        else resolve(out);
      }),
    );
    const pushed = Promise.all([this.pushed, deflated]).then(([, out]) => {
      if (this.dropped) return;
      if (!this.headerPushed) {
        this.headerPushed = true;
        this.e.push(GZIP_HEADER);
      }
      this.e.push(out);
    });
    // Awaited later (or never, once the render failed): not an unhandled rejection meanwhile.
    pushed.catch(() => undefined);
    this.pushed = pushed;
    this.inFlight.push(pushed);
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
