/**
 * The spool's state machine against a fake InfluxDB writer and a real segment log in a temp
 * dir: direct writes, switching to the spool when a write is slow or the queue is full,
 * draining in order and switching back, the size bound, stop and restart, the lock, and the
 * fallback when the spool cannot be written. Real InfluxDB and gRPC: test/spool.test.ts.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { recordingLogger, type LoggedLine } from "../../common/log.js";
import { SegmentLog } from "../../common/segment-log.js";
import type { WriteOutcome } from "../influx/writer.js";
import type { WriterPort } from "./durable-sink.js";
import { LOCK_FILE } from "./spool-lock.js";
import { SpoolingSink, type SpoolingSinkOptions } from "./spooling-sink.js";
import { WaitForInfluxSink } from "./wait-for-influx-sink.js";

const dirs: string[] = [];
const sinks: SpoolingSink[] = [];
afterEach(async () => {
  await Promise.all(sinks.splice(0).map((s) => s.stop()));
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-spool-"));
  dirs.push(dir);
  return path.join(dir, "spool");
}

/** A writer whose InfluxDB is up ("ok"), hangs ("hang": writes wait until release), or whose queue is full. */
class FakeWriter implements WriterPort {
  mode: "ok" | "hang" | "full" = "ok";
  /** Every line InfluxDB took, in order. */
  readonly written: string[] = [];
  readonly submissions: string[][] = [];
  private hung: Array<{
    lines: readonly string[];
    signal: AbortSignal | undefined;
    resolve: (o: WriteOutcome) => void;
  }> = [];

  submit(lines: readonly string[], signal?: AbortSignal): Promise<WriteOutcome> {
    this.submissions.push([...lines]);
    if (signal?.aborted) return Promise.resolve({ status: "withdrawn" });
    if (this.mode === "full") return Promise.resolve({ status: "queue_full" });
    if (this.mode === "ok") {
      this.written.push(...lines);
      return Promise.resolve({ status: "done", written: lines.length, rejected: 0 });
    }
    return new Promise((resolve) => {
      const entry = { lines, signal, resolve };
      this.hung.push(entry);
      signal?.addEventListener(
        "abort",
        () => {
          this.hung = this.hung.filter((h) => h !== entry);
          resolve({ status: "withdrawn" });
        },
        { once: true },
      );
    });
  }

  /** InfluxDB is back: waiting writes complete, in order, and new ones at once. */
  release(): void {
    this.mode = "ok";
    for (const h of this.hung.splice(0)) {
      this.written.push(...h.lines);
      h.resolve({ status: "done", written: h.lines.length, rejected: 0 });
    }
  }
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const batch = (b: number, n = 3): string[] =>
  Array.from({ length: n }, (_, i) => `gpu_window,host=h${b} observed_s=10 ${1_700_000_000_000 + b * 1000 + i}`);
const never = new AbortController().signal;

async function open(extra: Partial<SpoolingSinkOptions> & { writer: WriterPort; dir: string }): Promise<{
  sink: SpoolingSink;
  logger: ReturnType<typeof recordingLogger>;
  counters: { spoolBytes: number; spooledWindows: number };
}> {
  const logger = recordingLogger();
  const counters = { spoolBytes: 0, spooledWindows: 0 };
  const sink = await SpoolingSink.open({ logger, counters, spoolAfterMs: 50, ...extra });
  sinks.push(sink);
  sink.start();
  return { sink, logger, counters };
}

describe("SpoolingSink", () => {
  it("writes directly while InfluxDB keeps up, spools when it is slow, drains in order and writes directly again", async () => {
    const writer = new FakeWriter();
    const starts: number[] = [];
    const { sink, logger, counters } = await open({ writer, dir: tempDir(), written: (t) => starts.push(t) });

    expect(await sink.submit(batch(1), never)).toEqual({ status: "written" });
    expect(counters).toEqual({ spoolBytes: 0, spooledWindows: 0 });
    expect(starts).toHaveLength(3);

    // InfluxDB hangs: the batch goes to the spool after spoolAfterMs, later ones straight to it.
    writer.mode = "hang";
    expect(await sink.submit(batch(2), never)).toEqual({ status: "spooled" });
    expect(await sink.submit(batch(3), never)).toEqual({ status: "spooled" });
    expect(await sink.submit(batch(4, 5), never)).toEqual({ status: "spooled" });
    expect(counters.spooledWindows).toBe(11);
    expect(counters.spoolBytes).toBeGreaterThan(0);
    const warns = logger.lines.filter((l) => l.level === "warn");
    expect(warns).toHaveLength(1);
    expect(warns[0]?.msg).toMatch(/InfluxDB is slow or away \(a write to InfluxDB was not done within 50 ms\)/);

    writer.release();
    await until("the spool drained", () => logger.lines.some((l) => /The spool is drained: 11 windows/.test(l.msg)));
    expect(counters.spoolBytes).toBe(0);
    // Batch 2's lines may be written twice (withdrawn from a request that went out); never out of order from the spool.
    const fromSpool = writer.written.slice(writer.written.lastIndexOf(batch(2)[0]!));
    expect(fromSpool).toEqual([...batch(2), ...batch(3), ...batch(4, 5)]);
    expect(starts.length).toBeGreaterThanOrEqual(14);

    // Direct again: the next batch goes to the writer and is not spooled.
    const before = counters.spooledWindows;
    expect(await sink.submit(batch(5), never)).toEqual({ status: "written" });
    expect(counters.spooledWindows).toBe(before);

    // A second spell of spooling soon after is logged at debug, not as another WARN.
    writer.mode = "hang";
    expect(await sink.submit(batch(6), never)).toEqual({ status: "spooled" });
    writer.release();
    await until("the spool drained again", () =>
      logger.lines.some((l) => l.level === "debug" && /The spool is drained: 3 windows/.test(l.msg)),
    );
    expect(logger.lines.filter((l) => l.level === "warn")).toHaveLength(1);
    expect(logger.lines.some((l) => l.level === "debug" && /InfluxDB is slow or away/.test(l.msg))).toBe(true);
    expect(logger.lines.filter((l) => l.level === "error")).toEqual([]);
  });

  it("spools at once when the write queue is full, and pushes back when the spool is full", async () => {
    const writer = new FakeWriter();
    writer.mode = "full";
    const { sink, counters, logger } = await open({ writer, dir: tempDir(), maxBytes: 400, random: () => 0.5 });
    expect(await sink.submit(batch(1), never)).toEqual({ status: "spooled" });
    expect(warnMatching(logger, /the InfluxDB write queue is full/)).toBe(true);
    let outcome = await sink.submit(batch(2), never);
    while (outcome.status === "spooled") outcome = await sink.submit(batch(3), never);
    expect(outcome).toEqual({ status: "full", retryAfterMs: 20_000 });
    expect(counters.spoolBytes).toBeLessThanOrEqual(400);
    expect(warnMatching(logger, /The spool at .* is full \(\d+ bytes of 400B\)/)).toBe(true);
    // The drainer keeps trying; once the queue has room the spool empties and new batches fit.
    writer.mode = "ok";
    await until("the spool drained", () => counters.spoolBytes === 0);
    expect(await sink.submit(batch(4), never)).toEqual({ status: "written" });
  });

  it("moves writes in flight to the spool at stop, keeps the spool, and drains it at the next start", async () => {
    const dir = tempDir();
    const writer = new FakeWriter();
    writer.mode = "hang";
    const first = await open({ writer, dir, spoolAfterMs: 60_000 });
    const pending = [first.sink.submit(batch(1), never), first.sink.submit(batch(2), never)];
    await first.sink.beginStop();
    expect(await Promise.all(pending)).toEqual([{ status: "spooled" }, { status: "spooled" }]);
    expect(await first.sink.submit(batch(3), never)).toEqual({ status: "stopped" });
    const summary = await first.sink.stop();
    expect(summary).toMatchObject({ windowsWritten: 0, windowsSpooled: 6, windowsDrained: 0 });
    expect(summary.spoolBytesLeft).toBeGreaterThan(0);
    expect(
      infoMatching(first.logger, /Moved 2 batches \(6 windows\) still waiting for InfluxDB to the spool at shutdown/),
    ).toBe(true);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);

    const writer2 = new FakeWriter();
    const second = await open({ writer: writer2, dir });
    expect(infoMatching(second.logger, /holds \d+ bytes of windows from an earlier run/)).toBe(true);
    await until(
      "the spool drained",
      () => second.counters.spoolBytes === 0 && infoMatching(second.logger, /The spool is drained/),
    );
    expect(writer2.written).toEqual([...batch(1), ...batch(2)]);
    expect(await second.sink.submit(batch(4), never)).toEqual({ status: "written" });
  });

  it("drains an earlier run's spool only from start(); stop() before start() keeps it and releases the lock, twice", async () => {
    const dir = tempDir();
    const writer = new FakeWriter();
    writer.mode = "hang";
    const first = await open({ writer, dir, spoolAfterMs: 60_000 });
    const pending = first.sink.submit(batch(1), never);
    await first.sink.stop();
    expect(await pending).toEqual({ status: "spooled" });

    const writer2 = new FakeWriter();
    const logger = recordingLogger();
    const counters = { spoolBytes: 0, spooledWindows: 0 };
    const idle = await SpoolingSink.open({ dir, writer: writer2, logger, counters });
    await new Promise((r) => setTimeout(r, 100));
    expect(writer2.submissions).toEqual([]);
    const [a, b] = await Promise.all([idle.stop(), idle.stop()]);
    expect(b).toBe(a);
    expect(a.spoolBytesLeft).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
    idle.start();
    expect(writer2.submissions).toEqual([]);

    const third = await open({ writer: writer2, dir });
    await until("the spool drained", () => third.counters.spoolBytes === 0);
    expect(writer2.written).toEqual(batch(1));
  });

  it("keeps a second collector off a spool directory in use, and takes over a lock its dead owner left", async () => {
    const dir = tempDir();
    const first = await open({ writer: new FakeWriter(), dir });
    await expect(open({ writer: new FakeWriter(), dir })).rejects.toThrow(
      /is in use by another collector \(pid \d+ on .*\); give each collector its own --spool-dir/,
    );
    await first.sink.stop();

    // A collector killed with SIGKILL leaves its lock: a pid that no longer runs.
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ host: os.hostname(), pid: 2 ** 22 + 12345 }));
    const next = await open({ writer: new FakeWriter(), dir });
    expect(
      warnMatching(
        next.logger,
        /Took over the lock of the spool directory .*: its owner, pid \d+, is no longer running/,
      ),
    ).toBe(true);
    // A lock from another host cannot be checked: the error names the file to delete.
    await next.sink.stop();
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ host: "elsewhere", pid: 1 }));
    await expect(open({ writer: new FakeWriter(), dir })).rejects.toThrow(
      /if that collector is gone for good, delete .*lock/,
    );
  });

  it("withdraws a direct write when its stream ends", async () => {
    const writer = new FakeWriter();
    writer.mode = "hang";
    const { sink, counters } = await open({ writer, dir: tempDir(), spoolAfterMs: 60_000 });
    const stream = new AbortController();
    const outcome = sink.submit(batch(1), stream.signal);
    stream.abort();
    expect(await outcome).toEqual({ status: "withdrawn" });
    expect(counters.spooledWindows).toBe(0);
  });

  it("falls back to acks that wait for InfluxDB when the spool cannot be written, with one ERROR", async () => {
    const writer = new FakeWriter();
    writer.mode = "hang";
    const { sink, logger, counters } = await open({
      writer,
      dir: tempDir(),
      openStore: async (dir, maxBytes, log) => {
        const real = await SegmentLog.open({ dir, maxBytes, logger: log });
        return {
          append: () => Promise.reject(new Error("EIO: i/o error, write")),
          read: (from, n, b) => real.read(from, n, b),
          consume: (p) => real.consume(p),
          stats: () => real.stats(),
          close: () => real.close(),
        };
      },
    });
    const first = sink.submit(batch(1), never);
    await until("the ERROR", () => logger.lines.some((l) => l.level === "error"));
    const second = sink.submit(batch(2), never);
    let settled = false;
    void Promise.all([first, second]).then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(settled).toBe(false);
    writer.release();
    expect(await Promise.all([first, second])).toEqual([{ status: "written" }, { status: "written" }]);
    expect(counters.spooledWindows).toBe(0);
    const errors = logger.lines.filter((l) => l.level === "error");
    expect(errors).toHaveLength(1);
    expect(errors[0]?.msg).toMatch(
      /Could not write the spool at .* \(EIO: i\/o error, write\); agents are now acknowledged only once InfluxDB has their windows/,
    );
  });
});

describe("WaitForInfluxSink", () => {
  it("acknowledges once written, answers busy on a full queue, and gives writes in flight a grace at stop", async () => {
    const writer = new FakeWriter();
    const logger = recordingLogger();
    const sink = new WaitForInfluxSink({ writer, logger, graceMs: 100 });
    expect(await sink.submit(batch(1), never)).toEqual({ status: "written" });
    writer.mode = "full";
    expect(await sink.submit(batch(2), never)).toEqual({ status: "busy" });
    writer.mode = "hang";
    const late = sink.submit(batch(3), never);
    expect(await sink.stop()).toEqual({ windowsWritten: 3, windowsSpooled: 0, windowsDrained: 0, spoolBytesLeft: 0 });
    expect(await late).toEqual({ status: "stopped" });
    expect(
      warnMatching(
        logger,
        /1 of 1 batches were still waiting for InfluxDB 0 s into the shutdown; their agents were not acknowledged/,
      ),
    ).toBe(true);
    expect(await sink.submit(batch(4), never)).toEqual({ status: "stopped" });
  });

  it("begins its stop before start(), and stop() is safe twice and clears the grace timer", async () => {
    vi.useFakeTimers();
    try {
      const writer = new FakeWriter();
      const sink = new WaitForInfluxSink({ writer, logger: recordingLogger(), graceMs: 10_000 });
      const early = new WaitForInfluxSink({ writer, logger: recordingLogger() });
      await Promise.all([early.beginStop(), early.beginStop()]);
      expect(await early.submit(batch(1), never)).toEqual({ status: "stopped" });
      await early.stop();

      sink.start();
      writer.mode = "hang";
      const pending = sink.submit(batch(1), never);
      const stopping = sink.beginStop();
      expect(vi.getTimerCount()).toBe(1);
      writer.release();
      await stopping;
      expect(vi.getTimerCount()).toBe(0);
      const [a, b] = await Promise.all([sink.stop(), sink.stop()]);
      expect(a).toEqual(b);
      expect(a.windowsWritten).toBe(3);
      expect(await pending).toEqual({ status: "written" });
    } finally {
      vi.useRealTimers();
    }
  });

  it("acknowledges writes that finish within the grace", async () => {
    const writer = new FakeWriter();
    writer.mode = "hang";
    const sink = new WaitForInfluxSink({ writer, logger: recordingLogger(), graceMs: 10_000 });
    const pending = sink.submit(batch(1), never);
    const stopped = sink.stop();
    setTimeout(() => writer.release(), 50);
    expect(await pending).toEqual({ status: "written" });
    expect((await stopped).windowsWritten).toBe(3);
  });
});

function warnMatching(logger: { lines: LoggedLine[] }, re: RegExp): boolean {
  return logger.lines.some((l) => l.level === "warn" && re.test(l.msg));
}

function infoMatching(logger: { lines: LoggedLine[] }, re: RegExp): boolean {
  return logger.lines.some((l) => l.level === "info" && re.test(l.msg));
}
