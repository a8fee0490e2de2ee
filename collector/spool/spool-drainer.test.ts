/**
 * The drainer's lifecycle against an in-memory store and a fake writer: it drains in order and
 * ends once caught up, and stop() — before start(), twice, with a chunk in the writer or in
 * the pause before a retry — resolves once it has ended, withdrawing what it handed over and
 * leaving no timer behind. The drainer inside the spooling sink: spooling-sink.test.ts.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { recordingLogger } from "../../common/log.js";
import type { AppendResult, LogPosition, LogRecord } from "../../common/segment-log.js";
import type { WriteOutcome } from "../influx/writer.js";
import type { WriterPort } from "./durable-sink.js";
import { SpoolDrainer } from "./spool-drainer.js";
import { encodeRecord, type SpoolStore } from "./spool-record.js";

afterEach(() => {
  vi.useRealTimers();
});

/** Records at offsets 1, 2, …; `fail` makes every read reject. */
class MemoryStore implements SpoolStore {
  readonly records: Buffer[] = [];
  head = 0;
  reads = 0;
  fail = false;

  append(payloads: Buffer[]): Promise<AppendResult> {
    this.records.push(...payloads);
    return Promise.resolve({
      full: false,
      ends: payloads.map((_, i) => pos(this.records.length - payloads.length + i + 1)),
    });
  }

  read(from: LogPosition | undefined, maxRecords: number): Promise<LogRecord[]> {
    this.reads++;
    if (this.fail) return Promise.reject(new Error("EIO: i/o error, read"));
    const start = from?.offset ?? this.head;
    const out = this.records
      .slice(start, start + maxRecords)
      .map((payload, i) => ({ payload, end: pos(start + i + 1) }));
    return Promise.resolve(out);
  }

  consume(upTo: LogPosition): void {
    this.head = upTo.offset;
  }

  stats(): { bytes: number } {
    return { bytes: this.records.slice(this.head).reduce((n, r) => n + r.length, 0) };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

const pos = (offset: number): LogPosition => ({ segment: 1, offset });

/** Takes every write ("ok"), or holds it until its signal aborts ("hang"). */
class FakeWriter implements WriterPort {
  mode: "ok" | "hang" = "ok";
  readonly written: string[] = [];
  readonly signals: AbortSignal[] = [];

  submit(lines: readonly string[], signal?: AbortSignal): Promise<WriteOutcome> {
    if (signal) this.signals.push(signal);
    if (this.mode === "ok") {
      this.written.push(...lines);
      return Promise.resolve({ status: "done", written: lines.length, rejected: 0 });
    }
    return new Promise((resolve) => {
      signal?.addEventListener("abort", () => resolve({ status: "withdrawn" }), { once: true });
    });
  }
}

function drainer(store: SpoolStore, writer: WriterPort): { drainer: SpoolDrainer; drained: string[] } {
  const drained: string[] = [];
  const d = new SpoolDrainer({
    store,
    writer,
    logger: recordingLogger(),
    drained: (lines) => drained.push(...lines),
    appendMark: () => 0,
    caughtUp: () => Promise.resolve(true),
  });
  return { drainer: d, drained };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within 5 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("SpoolDrainer", () => {
  it("drains the store in order, consumes it, and ends once caught up", async () => {
    const store = new MemoryStore();
    await store.append([encodeRecord(["a 1", "b 2"]), encodeRecord(["c 3"])]);
    const writer = new FakeWriter();
    const { drainer: d, drained } = drainer(store, writer);
    d.start();
    d.start();
    await d.finished;
    expect(writer.written).toEqual(["a 1", "b 2", "c 3"]);
    expect(drained).toEqual(["a 1", "b 2", "c 3"]);
    expect(store.head).toBe(2);
    await d.stop();
  });

  it("stops before start(): stop resolves, twice, and a later start() reads nothing", async () => {
    const store = new MemoryStore();
    await store.append([encodeRecord(["a 1"])]);
    const { drainer: d } = drainer(store, new FakeWriter());
    await d.stop();
    await d.stop();
    d.start();
    await d.finished;
    expect(store.reads).toBe(0);
    expect(store.head).toBe(0);
  });

  it("withdraws the chunks in the writer at stop and resolves, twice, once it has ended; nothing is consumed", async () => {
    const store = new MemoryStore();
    await store.append([encodeRecord(["a 1"])]);
    const writer = new FakeWriter();
    writer.mode = "hang";
    const { drainer: d, drained } = drainer(store, writer);
    d.start();
    await until("a chunk in the writer", () => writer.signals.length > 0);
    await Promise.all([d.stop(), d.stop()]);
    await d.finished;
    expect(writer.signals.every((s) => s.aborted)).toBe(true);
    expect(drained).toEqual([]);
    expect(store.head).toBe(0);
  });

  it("ends the pause before a retry at stop, leaving no timer", async () => {
    vi.useFakeTimers();
    const store = new MemoryStore();
    store.fail = true;
    const { drainer: d } = drainer(store, new FakeWriter());
    d.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(store.reads).toBe(1);
    // The read failed: the drainer waits a second before it reads again.
    expect(vi.getTimerCount()).toBe(1);
    await d.stop();
    expect(vi.getTimerCount()).toBe(0);
    expect(store.reads).toBe(1);
  });
});
