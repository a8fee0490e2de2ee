import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import { segmentBytesFor } from "../../common/segment-log.js";
import { WindowBuffer, type BufferEntry } from "./window-buffer.js";

const dirs: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-wbuf-"));
  dirs.push(dir);
  return path.join(dir, "buffer");
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const w = (i: number): Buffer => Buffer.from(`window-${String(i).padStart(4, "0")}`);
const names = (entries: readonly BufferEntry[]): string[] => entries.map((e) => e.data.toString());
const range = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => String(w(from + i)));

/** Resolves once everything pushed so far is written (sendable). */
async function settled(buf: WindowBuffer, expectUnsent: number): Promise<void> {
  for (let i = 0; i < 500 && !(expectUnsent === 0 || buf.hasUnsent()); i++) await new Promise((r) => setTimeout(r, 10));
  // takeUnsent stops at a window still being written; wait until nothing is pending.
  for (let i = 0; i < 500; i++) {
    const probe = (buf as unknown as { entries: BufferEntry[] }).entries.some((e) => e.state === "pending");
    if (!probe) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("windows stayed pending");
}

describe("WindowBuffer in memory", () => {
  it("hands out windows in order, takes them back after a break, frees them on completion", () => {
    const buf = WindowBuffer.memory({ maxWindows: 100, logger: recordingLogger() });
    buf.push([w(0), w(1), w(2), w(3), w(4)]);
    const b1 = buf.takeUnsent(2);
    const b2 = buf.takeUnsent(2);
    expect(names(b1)).toEqual(range(0, 2));
    expect(names(b2)).toEqual(range(2, 4));
    buf.complete(b2); // acknowledged out of order
    expect(buf.stats().windows).toBe(3);
    buf.unsendAll();
    // The unacknowledged first batch goes out again first; the acknowledged one does not.
    expect(names(buf.takeUnsent(10))).toEqual([String(w(0)), String(w(1)), String(w(4))]);
    buf.complete(b1);
    expect(buf.stats()).toMatchObject({ windows: 1, bytes: w(4).length, dropped: 0 });
  });

  it("cuts a batch at its byte bound, but never below one window", () => {
    const buf = WindowBuffer.memory({ maxWindows: 100, logger: recordingLogger() });
    buf.push([w(0), w(1), w(2), Buffer.alloc(100), w(4)]);
    // Each window is 11 bytes plus 6 of framing: two fit in 40 bytes, three do not.
    expect(names(buf.takeUnsent(10, 40))).toEqual(range(0, 2));
    expect(names(buf.takeUnsent(10, 40))).toEqual(range(2, 3));
    // A window larger than the bound still goes, alone.
    expect(buf.takeUnsent(10, 40).map((e) => e.data.length)).toEqual([100]);
    expect(names(buf.takeUnsent(10, 40))).toEqual(range(4, 5));
  });

  it("drops the oldest unsent windows beyond the bound, counts them and logs once", () => {
    const logger = recordingLogger();
    const buf = WindowBuffer.memory({ maxWindows: 5, logger, now: () => 1000 });
    buf.push([w(0), w(1)]);
    const inFlight = buf.takeUnsent(2);
    buf.push(range(2, 10).map((s) => Buffer.from(s)));
    // Windows in flight stay; the oldest unsent ones go.
    expect(buf.stats()).toMatchObject({ windows: 5, dropped: 5 });
    buf.push([w(10)]);
    expect(buf.stats()).toMatchObject({ windows: 5, dropped: 6 });
    expect(names(buf.takeUnsent(10))).toEqual(range(8, 11));
    expect(names(inFlight)).toEqual(range(0, 2));
    expect(logger.lines.filter((l) => l.level === "error")).toHaveLength(1);
  });

  it("bounds the encoded bytes too", () => {
    const buf = WindowBuffer.memory({ maxWindows: 1000, maxBytes: 3 * w(0).length, logger: recordingLogger() });
    buf.push(range(0, 5).map((s) => Buffer.from(s)));
    expect(buf.stats()).toMatchObject({ windows: 3, bytes: 3 * w(0).length, dropped: 2 });
    expect(names(buf.takeUnsent(10))).toEqual(range(2, 5));
  });
});

describe("WindowBuffer on disk", () => {
  it("keeps unacknowledged windows across a restart and gives them back first, in order", async () => {
    const dir = tempDir();
    const buf = await WindowBuffer.open(dir, { maxWindows: 1000, logger: recordingLogger() });
    buf.push(range(0, 4).map((s) => Buffer.from(s)));
    buf.push(range(4, 10).map((s) => Buffer.from(s)));
    await settled(buf, 10);
    const b1 = buf.takeUnsent(3);
    const b2 = buf.takeUnsent(3);
    buf.complete(b1);
    expect(names(b2)).toEqual(range(3, 6));
    await buf.close();

    const logger = recordingLogger();
    const again = await WindowBuffer.open(dir, { maxWindows: 1000, logger });
    expect(again.stats()).toMatchObject({ windows: 7, loaded: 7 });
    expect(logger.lines.some((l) => l.level === "info" && /sent first/.test(l.msg))).toBe(true);
    again.push([w(10)]);
    await settled(again, 8);
    expect(names(again.takeUnsent(100))).toEqual(range(3, 11));
    await again.close();
  });

  it("consumes only up to the end of the contiguous acknowledged prefix", async () => {
    const dir = tempDir();
    const buf = await WindowBuffer.open(dir, { maxWindows: 1000, logger: recordingLogger() });
    buf.push(range(0, 6).map((s) => Buffer.from(s)));
    await settled(buf, 6);
    const b1 = buf.takeUnsent(2);
    const b2 = buf.takeUnsent(2);
    buf.complete(b2);
    await buf.close();
    // b1 was not acknowledged, so b2 comes back too (a harmless duplicate; the collector dedups).
    const again = await WindowBuffer.open(dir, { maxWindows: 1000, logger: recordingLogger() });
    const all = again.takeUnsent(100);
    expect(names(all)).toEqual(range(0, 6));
    expect(names(b1)).toEqual(range(0, 2));
    again.complete(all.slice(2, 4));
    again.complete(all.slice(0, 2));
    await again.close();
    const third = await WindowBuffer.open(dir, { maxWindows: 1000, logger: recordingLogger() });
    expect(names(third.takeUnsent(100))).toEqual(range(4, 6));
    await third.close();
  });

  it("drops the oldest windows found on disk beyond the bound, and counts them", async () => {
    const dir = tempDir();
    const buf = await WindowBuffer.open(dir, { maxWindows: 1000, logger: recordingLogger() });
    buf.push(range(0, 8).map((s) => Buffer.from(s)));
    await buf.close();
    const logger = recordingLogger();
    const again = await WindowBuffer.open(dir, { maxWindows: 5, logger });
    expect(again.stats()).toMatchObject({ windows: 5, dropped: 3, loaded: 8 });
    expect(names(again.takeUnsent(100))).toEqual(range(3, 8));
    expect(logger.lines.filter((l) => l.level === "error")).toHaveLength(1);
    await again.close();
    // The dropped windows were consumed from the log: they do not come back.
    const third = await WindowBuffer.open(dir, { maxWindows: 1000, logger: recordingLogger() });
    expect(names(third.takeUnsent(100))).toEqual(range(3, 8));
    await third.close();
  });

  it("writes a burst of handovers with fewer fsyncs than handovers", async () => {
    const dir = tempDir();
    const buf = await WindowBuffer.open(dir, { maxWindows: 10_000, logger: recordingLogger() });
    for (let i = 0; i < 50; i++) buf.push([w(i)]);
    await settled(buf, 50);
    const log = (buf as unknown as { log: { stats(): { syncs: number } } }).log;
    expect(log.stats().syncs).toBeLessThan(50);
    expect(names(buf.takeUnsent(100))).toEqual(range(0, 50));
    await buf.close();
    await buf.close();
  });

  it("holds its directory within the byte bound plus one segment through outages and acks, and replays what is left in order", async () => {
    const dir = tempDir();
    const maxBytes = 1 << 20; // --max-buffer-size 1MiB
    // The stated bound: the byte bound, plus the consumed front of one segment, plus the cursor file.
    const limit = maxBytes + segmentBytesFor(maxBytes) + 100;
    const opts = { maxWindows: 200_000, maxBytes, logger: recordingLogger() };
    const dirBytes = (): number =>
      fs.readdirSync(dir).reduce((n, name) => n + fs.statSync(path.join(dir, name)).size, 0);
    let highest = 0;
    const check = (): void => {
      const bytes = dirBytes();
      highest = Math.max(highest, bytes);
      expect(bytes).toBeLessThanOrEqual(limit);
    };
    /** Pushes and waits until the windows are written and fsynced. */
    const pushWritten = async (b: WindowBuffer, windows: Buffer[]): Promise<void> => {
      const written = new Promise<void>((resolve) => (b.onSendable = resolve));
      b.push(windows);
      await written;
    };
    let seed = 3;
    const random = (n: number): number => {
      // mulberry32: a fixed seed, so every run goes through the same steps.
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
    };
    let buf = await WindowBuffer.open(dir, opts);
    let id = 0;
    let pushed = 0;
    for (let step = 0; pushed < 10 << 20; step++) {
      const windows = Array.from({ length: 1 + random(16) }, () =>
        Buffer.from(`${id++}:`.padEnd(100 + random(2000), "w")),
      );
      await pushWritten(buf, windows);
      pushed += windows.reduce((n, b) => n + b.length, 0);
      check();
      // Phases of 120 handovers: a collector that acknowledges everything, then one that is
      // away (the bound is hit and the oldest windows are dropped).
      if (Math.floor(step / 120) % 2 === 0) buf.complete(buf.takeUnsent(100_000));
      check();
      if (step % 300 === 299) {
        // A restart gives back exactly the windows not yet done, in order.
        buf.unsendAll();
        const left = names(buf.takeUnsent(1_000_000));
        buf.unsendAll();
        await buf.close();
        check();
        buf = await WindowBuffer.open(dir, opts);
        expect(buf.stats()).toMatchObject({ windows: left.length, dropped: 0 });
        expect(names(buf.takeUnsent(1_000_000))).toEqual(left);
        buf.unsendAll();
      }
    }
    expect(buf.stats().dropped).toBeGreaterThan(0);
    expect(highest).toBeGreaterThan(maxBytes * 0.9);
    await buf.close();
  }, 120_000);
});
