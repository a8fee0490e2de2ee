/**
 * Collector ingest throughput: encoded StreamRequest batches through the collector's own
 * per-message path, without the network — the gRPC service's request deserializer, then
 * `IngestSession.handle` (validation of every window, FleetState updates, the ack), then
 * the response serializer grpc-js runs on the ack.
 *
 * Baseline, in the same rounds: bare `fromBinary(StreamRequestSchema, bytes)` of the same
 * bytes. Every round sends new windows (later start times), so the fleet state is updated
 * in steady state rather than answering replays as duplicates.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { silentLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { ingestServiceDefinition } from "../common/grpc-service.js";
import { StreamRequestSchema, type GpuWindow } from "../gen/trueidle/v1/ingest_pb.js";
import { FleetState } from "../collector/fleet-state.js";
import { IngestSession, type DecodedRequest, type SessionDeps } from "../collector/ingest-session.js";
import { SelfMetrics } from "../collector/self-metrics.js";
import { DEFAULT_WINDOW_LIMITS } from "../collector/validate.js";
import { collectGarbage, rounds, sink, spread, type Spread } from "./harness.js";
import { GPUS_PER_HOST } from "./sim-hosts.js";
import {
  WINDOW_MS,
  type WindowTemplates,
  benchHost,
  encodeBatch,
  helloRequest,
  type BenchHost,
} from "./fleet-windows.js";

export interface IngestCase {
  name: string;
  hosts: number;
  /** Windows each GPU sends per batch (1: a live agent; many: an agent catching up). */
  windowsPerGpu: number;
  /** Batches each host sends per round, one after another. */
  batchesPerHost: number;
  /** Batches timed together before switching between ingest and decode. */
  batchesPerSlice: number;
}

export interface IngestCaseResult {
  name: string;
  hosts: number;
  gpus: number;
  windowsPerBatch: number;
  batchesPerRound: number;
  windowsPerRound: number;
  bytesPerWindow: number;
  /** Windows per second through the collector's path. */
  ingestWindowsPerS: Spread;
  /** Windows per second for bare decode of the same bytes. */
  decodeWindowsPerS: Spread;
  /** Ingest ÷ decode throughput, paired per round. */
  ratio: Spread;
}

/** A fixed collector clock; windows start in the days before it. */
export const BENCH_NOW_MS = Date.UTC(2026, 0, 8);
const FIRST_START_MS = BENCH_NOW_MS - 3 * 86_400_000;

export function sessionDeps(fleet: FleetState, self: SelfMetrics): SessionDeps {
  return {
    fleet,
    self,
    thresholds: DEFAULT_THRESHOLDS,
    collectorId: "bench",
    limits: DEFAULT_WINDOW_LIMITS,
    logger: silentLogger,
    now: () => BENCH_NOW_MS,
  };
}

/** A session that has said Hello, as after a stream opened. */
export function openSession(deps: SessionDeps, host: BenchHost): IngestSession {
  const session = new IngestSession(deps, `bench:${host.hostname}`);
  const step = session.handle({ ok: true, msg: helloRequest(host) });
  if (step.kind !== "reply")
    throw new Error(`the collector refused the bench Hello: ${step.kind === "fail" ? step.message : step.kind}`);
  return session;
}

/** The windows of batch `round` of `host`: oldest first, every GPU at each start time. */
export function hostBatchWindows(
  templates: WindowTemplates,
  host: BenchHost,
  round: number,
  windowsPerGpu: number,
): GpuWindow[] {
  const out: GpuWindow[] = [];
  for (let k = 0; k < windowsPerGpu; k++) {
    const n = round * windowsPerGpu + k;
    for (let g = 0; g < GPUS_PER_HOST; g++) out.push(templates.window(host, g, n, FIRST_START_MS + n * WINDOW_MS));
  }
  return out;
}

const { requestDeserialize, responseSerialize } = ingestServiceDefinition.stream;

/** What the gRPC server does with one message of a stream, transport aside. */
function serveOne(session: IngestSession, buf: Buffer): number {
  let req: DecodedRequest;
  try {
    req = { ok: true, msg: requestDeserialize(buf) };
  } catch (err) {
    req = { ok: false, error: String(err) };
  }
  const step = session.handle(req);
  if (step.kind !== "reply")
    throw new Error(`the collector ended a bench stream: ${step.kind === "fail" ? step.message : step.kind}`);
  sink.value += responseSerialize(step.response).length;
  const msg = step.response.msg;
  if (msg.case !== "ack") throw new Error(`the collector answered a batch with ${msg.case}`);
  return msg.value.accepted;
}

/**
 * Within a round, ingest and bare decode take turns over slices of the same batches, the
 * first side alternating, so both see the same machine load and cache state; a round's
 * figure is the sum over its slices. Each round's bytes are built before it, untimed.
 */
export function runIngestCase(
  templates: WindowTemplates,
  c: IngestCase,
  warmup: number,
  measured: number,
): IngestCaseResult {
  const fleet = new FleetState({ now: () => BENCH_NOW_MS });
  const self = new SelfMetrics();
  const deps = sessionDeps(fleet, self);
  const hosts = Array.from({ length: c.hosts }, (_, h) => benchHost(h));
  const sessions = hosts.map((h) => openSession(deps, h));
  const windowsPerBatch = c.windowsPerGpu * GPUS_PER_HOST;
  const windowsPerRound = windowsPerBatch * c.hosts * c.batchesPerHost;
  let bytes = 0;
  let seq = 0;

  const results = rounds(warmup, measured, () => {
    // Batch b of every host, then b + 1: the order a fleet of agents sends them in.
    const batches: Array<{ session: IngestSession; buf: Buffer }> = [];
    for (let b = 0; b < c.batchesPerHost; b++) {
      seq++;
      hosts.forEach((h, i) => {
        const buf = encodeBatch(seq, hostBatchWindows(templates, h, seq - 1, c.windowsPerGpu));
        bytes += buf.length;
        batches.push({ session: sessions[i] as IngestSession, buf });
      });
    }
    let ingestMs = 0;
    let decodeMs = 0;
    let accepted = 0;
    let decoded = 0;
    const ingest = (from: number, to: number): void => {
      const t0 = performance.now();
      for (let i = from; i < to; i++) {
        const x = batches[i] as { session: IngestSession; buf: Buffer };
        accepted += serveOne(x.session, x.buf);
      }
      ingestMs += performance.now() - t0;
    };
    const decode = (from: number, to: number): void => {
      const t0 = performance.now();
      for (let i = from; i < to; i++) {
        const m = fromBinary(StreamRequestSchema, (batches[i] as { buf: Buffer }).buf).msg;
        if (m.case === "batch") decoded += m.value.windows.length;
      }
      decodeMs += performance.now() - t0;
    };
    collectGarbage();
    for (let from = 0, slice = 0; from < batches.length; from += c.batchesPerSlice, slice++) {
      const to = Math.min(batches.length, from + c.batchesPerSlice);
      if (slice % 2 === 0) {
        decode(from, to);
        ingest(from, to);
      } else {
        ingest(from, to);
        decode(from, to);
      }
    }
    sink.value += decoded;
    if (accepted !== windowsPerRound || decoded !== windowsPerRound) {
      throw new Error(
        `"${c.name}": the collector accepted ${accepted} and decode saw ${decoded} of ${windowsPerRound} windows; the bench must send only valid windows`,
      );
    }
    return { ingest: windowsPerRound / (ingestMs / 1000), decode: windowsPerRound / (decodeMs / 1000) };
  });
  if (fleet.size !== c.hosts * GPUS_PER_HOST)
    throw new Error(`the fleet holds ${fleet.size} GPUs, expected ${c.hosts * GPUS_PER_HOST}`);
  for (const s of sessions) s.close("bench done");
  return {
    name: c.name,
    hosts: c.hosts,
    gpus: c.hosts * GPUS_PER_HOST,
    windowsPerBatch,
    batchesPerRound: c.hosts * c.batchesPerHost,
    windowsPerRound,
    bytesPerWindow: Math.round(bytes / (windowsPerRound * (warmup + measured))),
    ingestWindowsPerS: spread(results.map((x) => x.ingest)),
    decodeWindowsPerS: spread(results.map((x) => x.decode)),
    ratio: spread(results.map((x) => x.ingest / x.decode)),
  };
}
