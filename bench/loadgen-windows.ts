/**
 * The windows the load generator sends, built the way an agent builds them: sim readings of
 * the bench host templates (bench/sim-hosts.ts) → SamplePipeline → GpuWindowRecord, each
 * template run once at the load's window length. A simulated host then reuses its
 * template's windows under its own GPU uuids, at the start times asked for, with owners on
 * the windows of GPUs that processes hold, and each window is encoded to protobuf bytes
 * with the agent's own encoder (agent/shipper/encode-window.ts): every window is valid and
 * shaped like a real one (states mixed, holders, owners, errors on flaky GPUs).
 */
import { SamplePipeline } from "../agent/pipeline.js";
import { encodeWindow } from "../agent/shipper/encode-window.js";
import { readingsAt } from "../agent/sim/evaluate.js";
import { fakeUuid } from "../agent/sim/scenario.js";
import type { GpuWindowRecord, WindowOwner } from "../agent/window.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { GPUS_PER_HOST, TEMPLATE_COUNT, hostScenario } from "./sim-hosts.js";

/** Windows per template GPU; hosts cycle through them, each from its own offset. */
const TEMPLATE_WINDOWS = 30;

/** How the load's hosts are labelled: each label key with its number of values. */
export type LabelSpread = ReadonlyArray<readonly [key: string, values: number]>;

/** Parses `site=4,pool=3` (a label key and how many values it takes across hosts). */
export function parseLabelSpread(text: string): LabelSpread {
  if (text.trim() === "") return [];
  return text.split(",").map((part) => {
    const m = /^([a-z_][a-z0-9_]*)=(\d+)$/i.exec(part.trim());
    const n = Number(m?.[2]);
    if (!m || !Number.isInteger(n) || n < 1)
      throw new Error(`--labels takes KEY=COUNT pairs separated by commas (e.g. site=4,pool=3), not "${part}"`);
    return [m[1]!, n] as const;
  });
}

export interface SimHostIdentity {
  hostname: string;
  labels: Record<string, string>;
  template: number;
  uuids: string[];
  /** Pool-like hosts run batch jobs (owners from a job mapping), the others pods. */
  batch: boolean;
}

/**
 * Host `h` of the load. Label values rotate at different strides per key (the first key by
 * host, the next by host ÷ the first key's count, …), so every combination occurs.
 */
export function simHost(h: number, gpusPerHost: number, labels: LabelSpread, prefix = "loadgen"): SimHostIdentity {
  const hostname = `${prefix}-${String(h).padStart(5, "0")}`;
  const out: Record<string, string> = {};
  let stride = 1;
  for (const [key, values] of labels) {
    out[key] = `${key}-${Math.floor(h / stride) % values}`;
    stride *= values;
  }
  return {
    hostname,
    labels: out,
    template: h % TEMPLATE_COUNT,
    uuids: Array.from({ length: gpusPerHost }, (_, i) => fakeUuid(hostname, i)),
    batch: h % 2 === 0,
  };
}

export class WindowTemplates {
  /** Records by template, then template GPU, then window. */
  private readonly byTemplate: GpuWindowRecord[][][] = [];

  constructor(readonly windowMs: number) {
    // Ten samples a window at least, one a second at most: the agent's default cadence.
    const intervalMs = Math.min(1_000, Math.floor(windowMs / 10));
    if (intervalMs < 1 || windowMs % intervalMs !== 0)
      throw new Error(`--window must be a whole number of ${intervalMs} ms samples, at least 10 ms`);
    for (let t = 0; t < TEMPLATE_COUNT; t++) {
      const scenario = hostScenario(t, `loadgen-template-${t}`);
      const pipeline = new SamplePipeline({ windowMs, intervalMs, thresholds: DEFAULT_THRESHOLDS });
      const start = Date.UTC(2026, 0, 1);
      // Baselines learned first, as on a long-running agent.
      for (let ts = start - 60 * windowMs; ts < start + TEMPLATE_WINDOWS * windowMs; ts += intervalMs) {
        pipeline.ingest(ts, readingsAt(scenario, ts));
      }
      const byGpu: GpuWindowRecord[][] = Array.from({ length: GPUS_PER_HOST }, () => []);
      for (const w of pipeline.flushAll()) if (w.startMs >= start) byGpu[w.index]?.push(w);
      for (const list of byGpu) {
        if (list.length < TEMPLATE_WINDOWS)
          throw new Error(`template ${t} gave ${list.length} windows for a GPU, expected ${TEMPLATE_WINDOWS}`);
        list.length = TEMPLATE_WINDOWS;
      }
      this.byTemplate.push(byGpu);
    }
  }

  /**
   * GPU `gpu` of `host`, window number `n` (any integer; hosts cycle their template), as
   * the bytes an agent sends for the window starting at `startMs`; `owned` says whether it
   * carries an owner (a `gpu_owner_window` point in InfluxDB).
   */
  window(host: SimHostIdentity, gpu: number, n: number, startMs: number): { bytes: Buffer; owned: boolean } {
    const list = this.byTemplate[host.template]?.[gpu % GPUS_PER_HOST];
    const rec = list?.[(n + host.template * 7 + gpu) % TEMPLATE_WINDOWS];
    if (!rec) throw new Error(`no template window for GPU ${gpu}`);
    const shift = startMs - rec.startMs;
    const owners = rec.processesMax > 0 ? [ownerOf(host, gpu, n, rec)] : undefined;
    const bytes = encodeWindow({
      ...rec,
      uuid: host.uuids[gpu] ?? rec.uuid,
      index: gpu,
      startMs,
      last: { ...rec.last, timeMs: rec.last.timeMs + shift },
      owners,
    });
    return { bytes, owned: owners !== undefined };
  }
}

/** An owner that held the GPU the whole window; the job or pod changes every 30 windows. */
function ownerOf(host: SimHostIdentity, gpu: number, n: number, rec: GpuWindowRecord): WindowOwner {
  const era = Math.floor(n / 30);
  const seconds = {
    observedS: rec.observedS,
    stateS: { ...rec.stateS },
    reportedIdleS: rec.reportedIdleS,
    reportedBusyS: rec.reportedBusyS,
    realBusyS: rec.realBusyS,
  };
  if (host.batch) {
    return { via: "job_mapping", job: `${host.hostname}-${gpu >> 2}-${era}`, user: `user${era % 40}`, ...seconds };
  }
  return {
    via: "pod_resources",
    namespace: `team-${(gpu + era) % 12}`,
    pod: `trainer-${host.hostname}-${gpu}-${era}`,
    container: "main",
    ...seconds,
  };
}
