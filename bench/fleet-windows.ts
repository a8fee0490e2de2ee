/**
 * Windows a fleet of simulated hosts sends, built the way the agent builds them: sim
 * readings → SamplePipeline → GpuWindowRecord → windowToProto. Each host template is run
 * through the pipeline once; hosts then reuse their template's windows under their own
 * GPU uuids and at the start times asked for, so every window is realistic and valid.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { SamplePipeline } from "../agent/pipeline.js";
import { windowToProto } from "../agent/shipper/to-proto.js";
import { readingsAt } from "../agent/sim/evaluate.js";
import { fakeUuid } from "../agent/sim/scenario.js";
import type { GpuWindowRecord } from "../agent/window.js";
import {
  HelloSchema,
  StreamRequestSchema,
  WindowBatchSchema,
  type GpuWindow,
  type StreamRequest,
} from "../gen/trueidle/v1/ingest_pb.js";
import { GPUS_PER_HOST, TEMPLATE_COUNT, hostScenario } from "./sim-hosts.js";

export const WINDOW_MS = 60_000;
const INTERVAL_MS = 1_000;
/** Windows per GPU each template is run for; hosts cycle through them. */
const TEMPLATE_WINDOWS = 30;

export interface BenchHost {
  hostname: string;
  labels: Record<string, string>;
  template: number;
  uuids: string[];
}

export function benchHost(h: number): BenchHost {
  const hostname = `gpu-node-${String(h).padStart(5, "0")}`;
  return {
    hostname,
    labels: { cluster: `c${h % 4}`, pool: h % 3 === 0 ? "training" : "inference" },
    template: h % TEMPLATE_COUNT,
    uuids: Array.from({ length: GPUS_PER_HOST }, (_, i) => fakeUuid(hostname, i)),
  };
}

export function helloRequest(host: BenchHost): StreamRequest {
  return create(StreamRequestSchema, {
    msg: {
      case: "hello",
      value: create(HelloSchema, {
        agentVersion: "0.1.0",
        source: "nvidia-smi",
        host: { hostname: host.hostname, machineId: "", labels: host.labels },
        windowMs: WINDOW_MS,
      }),
    },
  });
}

/** Window records of every template, by template, then GPU index, then window. */
export class WindowTemplates {
  private readonly byTemplate: GpuWindowRecord[][][] = [];

  constructor() {
    for (let t = 0; t < TEMPLATE_COUNT; t++) {
      const scenario = hostScenario(t, `bench-template-${t}`);
      const pipeline = new SamplePipeline({
        windowMs: WINDOW_MS,
        intervalMs: INTERVAL_MS,
        thresholds: DEFAULT_THRESHOLDS,
      });
      // Ten minutes first, so the baselines are learned, as on a long-running agent.
      const start = Date.UTC(2026, 0, 1);
      const from = start - 10 * WINDOW_MS;
      for (let ts = from; ts < start + TEMPLATE_WINDOWS * WINDOW_MS; ts += INTERVAL_MS) {
        pipeline.ingest(ts, readingsAt(scenario, ts));
      }
      const byGpu: GpuWindowRecord[][] = Array.from({ length: GPUS_PER_HOST }, () => []);
      for (const w of pipeline.flushAll()) if (w.startMs >= start) byGpu[w.index]?.push(w);
      for (const list of byGpu) {
        if (list.length !== TEMPLATE_WINDOWS)
          throw new Error(`template ${t} gave ${list.length} windows for a GPU, expected ${TEMPLATE_WINDOWS}`);
      }
      this.byTemplate.push(byGpu);
    }
  }

  /** The `n`-th window of GPU `gpu` of `host`, starting at `startMs`. */
  window(host: BenchHost, gpu: number, n: number, startMs: number): GpuWindow {
    const list = this.byTemplate[host.template]?.[gpu];
    const rec = list?.[(n + host.template * 7 + gpu) % TEMPLATE_WINDOWS];
    if (!rec) throw new Error(`no template window for GPU ${gpu}`);
    const shift = startMs - rec.startMs;
    return windowToProto({
      ...rec,
      uuid: host.uuids[gpu] ?? rec.uuid,
      startMs,
      last: { ...rec.last, timeMs: rec.last.timeMs + shift },
    });
  }
}

/** A StreamRequest holding one batch, encoded as an agent puts it on the wire. */
export function encodeBatch(seq: number, windows: GpuWindow[]): Buffer {
  const req = create(StreamRequestSchema, {
    msg: { case: "batch", value: create(WindowBatchSchema, { seq: BigInt(seq), windows }) },
  });
  return Buffer.from(toBinary(StreamRequestSchema, req));
}
