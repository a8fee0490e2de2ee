/**
 * GPM (Hopper and newer): SM activity, the best signal of real work, plus SM occupancy,
 * tensor-pipe and DRAM activity. Every tick a sample (`nvmlGpmSampleGet`, about 42 µs on an
 * H200) and the metrics between it and the previous one (`nvmlGpmMetricsGet`, about 10 µs),
 * so each reading covers exactly the interval since the last: nothing between ticks is lost.
 * NVML needs the two samples at least 100 ms apart; a tick sooner keeps the last metrics.
 *
 * A MIG instance has a reader of its own, sampling its GPU instance through its board
 * (`nvmlGpmMigSampleGet`); a re-created instance gets a new reader, so two samples of one
 * reader are always of one instance.
 */
import {
  GPM_METRICS_GET,
  GPM_SUPPORT,
  NVML_GPM_METRIC_ANY_TENSOR_UTIL,
  NVML_GPM_METRIC_DRAM_BW_UTIL,
  NVML_GPM_METRIC_SM_OCCUPANCY,
  NVML_GPM_METRIC_SM_UTIL,
  NVML_SUCCESS,
} from "./bindings.js";
import { GpuFailure, type Driver } from "./driver.js";
import { F } from "./readings-board.js";

/** What each tick asks GPM for, and where each lands in a reading. */
const METRICS = [
  [NVML_GPM_METRIC_SM_UTIL, F.smActive],
  [NVML_GPM_METRIC_SM_OCCUPANCY, F.smOccupancy],
  [NVML_GPM_METRIC_ANY_TENSOR_UTIL, F.tensorActive],
  [NVML_GPM_METRIC_DRAM_BW_UTIL, F.dramActive],
] as const;
/** GPM metrics need two samples at least this far apart (NVML documents 100 ms). */
export const GPM_MIN_GAP_MS = 100;

export class GpmReader {
  /**
   * This tick's sample and metrics calls' return codes (SUCCESS when none was made): on a
   * MIG instance, NOT_FOUND from the sample says it is gone, and metrics refused
   * (INVALID_ARGUMENT) that it may be another instance since the last sample.
   */
  sampleRc = NVML_SUCCESS;
  metricsRc = NVML_SUCCESS;
  private readonly samples: [bigint, bigint];
  private turn = 0;
  private prevAtMs: number | undefined;
  private closed = false;
  /** The last metrics, in METRICS order; NaN where missing. */
  private readonly last = new Float64Array(METRICS.length).fill(Number.NaN);
  /**
   * The metrics request for each order of the two samples, written once: get[t] asks for the
   * metrics from sample 1 - t to sample t, so a tick passes one without writing anything.
   */
  private readonly get: [Buffer, Buffer];

  /** A reader for a GPU that supports GPM, with its first sample taken; undefined for one that does not. */
  static open(d: Driver, handle: bigint): GpmReader | undefined {
    const get = d.fn.nvmlGpmSampleGet;
    if (!get || !GpmReader.supported(d, handle)) return undefined;
    return GpmReader.start(d, (sample) => d.dcall("nvmlGpmSampleGet", get, handle, sample));
  }

  /**
   * A reader for GPU instance `gpuInstanceId` of a board in MIG mode that supports GPM (see
   * supported), with its first sample taken; undefined where the library has no MIG GPM.
   */
  static openMig(d: Driver, boardHandle: bigint, gpuInstanceId: number): GpmReader | undefined {
    const get = d.fn.nvmlGpmMigSampleGet;
    if (!get) return undefined;
    return GpmReader.start(d, (sample) => d.dcall("nvmlGpmMigSampleGet", get, boardHandle, gpuInstanceId, sample));
  }

  /** Whether the GPU (a board) supports GPM and the library has the calls for it. */
  static supported(d: Driver, handle: bigint): boolean {
    const fn = d.fn;
    if (!fn.nvmlGpmQueryDeviceSupport || !fn.nvmlGpmSampleAlloc || !fn.nvmlGpmMetricsGet) return false;
    const support = Buffer.alloc(GPM_SUPPORT.size);
    support.writeUInt32LE(GPM_SUPPORT.version, 0);
    if (d.dcall("nvmlGpmQueryDeviceSupport", fn.nvmlGpmQueryDeviceSupport, handle, support) !== NVML_SUCCESS)
      return false;
    return support.readUInt32LE(GPM_SUPPORT.isSupported) !== 0;
  }

  private static start(d: Driver, take: (sample: bigint) => number): GpmReader | undefined {
    const fn = d.fn;
    const handles: bigint[] = [];
    for (let i = 0; i < 2; i++) {
      if (d.call("nvmlGpmSampleAlloc", fn.nvmlGpmSampleAlloc, d.u64) !== NVML_SUCCESS) {
        for (const h of handles) d.call("nvmlGpmSampleFree", fn.nvmlGpmSampleFree, h);
        return undefined;
      }
      handles.push(d.u64.readBigUInt64LE(0));
    }
    const reader = new GpmReader(d, take, [handles[0]!, handles[1]!]);
    // The first sample now, so the first tick (at least GPM_MIN_GAP_MS later) has SM activity.
    // A GPU that fails it keeps its reader: the next tick samples again.
    try {
      reader.sample(Date.now());
    } catch (err) {
      if (err instanceof GpuFailure) return reader;
      reader.close();
      throw err;
    }
    return reader;
  }

  private constructor(
    private readonly d: Driver,
    /** Takes a sample into the buffer given: nvmlGpmSampleGet or nvmlGpmMigSampleGet. */
    private readonly take: (sample: bigint) => number,
    samples: [bigint, bigint],
  ) {
    this.samples = samples;
    const request = (from: bigint, to: bigint): Buffer => {
      const m = Buffer.alloc(GPM_METRICS_GET.size);
      m.writeUInt32LE(GPM_METRICS_GET.version, 0);
      m.writeUInt32LE(METRICS.length, 4);
      m.writeBigUInt64LE(from, GPM_METRICS_GET.sample1);
      m.writeBigUInt64LE(to, GPM_METRICS_GET.sample2);
      for (const [i, [id]] of METRICS.entries())
        m.writeUInt32LE(id, GPM_METRICS_GET.metrics + i * GPM_METRICS_GET.metricSize);
      return m;
    };
    this.get = [request(samples[1], samples[0]), request(samples[0], samples[1])];
  }

  /**
   * The metrics since the last sample, with a new sample taken when `due` (a MIG instance on
   * a host of many is sampled every few ticks: its metrics then span those ticks).
   */
  read(out: Float64Array, due = true): void {
    const now = Date.now();
    this.sampleRc = NVML_SUCCESS;
    this.metricsRc = NVML_SUCCESS;
    // Too soon for a new pair: the previous metrics still describe the GPU.
    if (due && (this.prevAtMs === undefined || now - this.prevAtMs >= GPM_MIN_GAP_MS)) this.sample(now);
    for (let i = 0; i < METRICS.length; i++) out[METRICS[i]![1]] = this.last[i]!;
  }

  /**
   * Frees the two sample buffers; the reader is not used after. Safe twice: when a GPU
   * failure stops the reader that replaces it from opening, the closed one stays in place
   * and is closed again later (NVML must not free a sample twice).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.samples) this.d.call("nvmlGpmSampleFree", this.d.fn.nvmlGpmSampleFree, h);
  }

  /** A sample now, and the metrics between it and the previous one when there is one. */
  private sample(now: number): void {
    const { d } = this;
    const cur = this.samples[this.turn]!;
    this.sampleRc = this.take(cur);
    if (this.sampleRc !== NVML_SUCCESS) {
      this.prevAtMs = undefined;
      this.last.fill(Number.NaN);
      return;
    }
    const hadPrev = this.prevAtMs !== undefined;
    const m = this.get[this.turn]!;
    this.prevAtMs = now;
    this.turn = 1 - this.turn;
    if (!hadPrev) return;
    this.metricsRc = d.dcall("nvmlGpmMetricsGet", d.fn.nvmlGpmMetricsGet, m);
    if (this.metricsRc !== NVML_SUCCESS) {
      this.last.fill(Number.NaN);
      return;
    }
    for (let i = 0; i < METRICS.length; i++) {
      const o = GPM_METRICS_GET.metrics + i * GPM_METRICS_GET.metricSize;
      const v =
        m.readUInt32LE(o + GPM_METRICS_GET.metricReturn) === NVML_SUCCESS
          ? m.readDoubleLE(o + GPM_METRICS_GET.metricValue)
          : Number.NaN;
      this.last[i] = Number.isFinite(v) ? Math.min(1, Math.max(0, v / 100)) : Number.NaN;
    }
  }
}
