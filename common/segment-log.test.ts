import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "./log.js";
import { SegmentLog, comparePositions, segmentBytesFor, type LogPosition } from "./segment-log.js";

const dirs: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "trueidle-seglog-"));
  dirs.push(dir);
  return path.join(dir, "log");
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const rec = (i: number, size = 10): Buffer => Buffer.from(`r${i}:`.padEnd(size, "x"));
const text = (records: { payload: Buffer }[]): string[] => records.map((r) => r.payload.toString());

async function appendOk(log: SegmentLog, payloads: Buffer[]): Promise<LogPosition[]> {
  const res = await log.append(payloads);
  if (res.full) throw new Error("log unexpectedly full");
  return res.ends;
}

/** Every byte of every file in `dir`: segments, cursor and anything else the log left. */
function dirBytes(dir: string): number {
  return fs.readdirSync(dir).reduce((n, name) => n + fs.statSync(path.join(dir, name)).size, 0);
}

function segFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => n.endsWith(".seg"))
    .sort();
}

describe("SegmentLog", () => {
  it("reads back what was appended, in order, and consumes from the head", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, logger: recordingLogger() });
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    const ends = await appendOk(log, [rec(1), rec(2)]);
    await appendOk(log, [rec(3)]);
    expect(ends).toHaveLength(2);
    expect(comparePositions(ends[0] as LogPosition, ends[1] as LogPosition)).toBeLessThan(0);
    const all = await log.read(undefined, 100);
    expect(text(all)).toEqual([rec(1), rec(2), rec(3)].map(String));
    expect(log.stats().bytes).toBe(3 * (8 + 10));
    // Reading is not consuming; maxRecords and maxBytes bound a read (at least one record).
    expect(text(await log.read(undefined, 2))).toEqual([rec(1), rec(2)].map(String));
    expect(text(await log.read(undefined, 10, 20))).toEqual([rec(1), rec(2)].map(String));
    expect(text(await log.read(undefined, 10, 19))).toEqual([rec(1)].map(String));
    expect(text(await log.read(undefined, 10, 1))).toEqual([rec(1)].map(String));
    expect(text(await log.read(all[0]?.end, 10))).toEqual([rec(2), rec(3)].map(String));
    log.consume(all[1]?.end as LogPosition);
    expect(text(await log.read(undefined, 10))).toEqual([rec(3)].map(String));
    expect(log.stats().bytes).toBe(8 + 10);
    expect(log.head()).toEqual(all[1]?.end);
    expect(log.tail()).toEqual(all[2]?.end);
    await log.close();
  });

  it("keeps unconsumed records in order across close and reopen", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, segmentBytes: 100, logger: recordingLogger() });
    for (let i = 0; i < 20; i++) await appendOk(log, [rec(i)]);
    const first = await log.read(undefined, 7);
    log.consume(first[6]?.end as LogPosition);
    await log.close();
    const again = await SegmentLog.open({ dir, segmentBytes: 100, logger: recordingLogger() });
    const rest = await again.read(undefined, 100);
    expect(text(rest)).toEqual(Array.from({ length: 13 }, (_, i) => String(rec(i + 7))));
    // Appends continue after the old tail.
    await appendOk(again, [rec(20)]);
    expect(text(await again.read(rest[12]?.end, 10))).toEqual([String(rec(20))]);
    expect(again.stats().corruptRecords).toBe(0);
    await again.close();
  });

  it("cuts a torn tail off the last segment, logs it and counts it", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, logger: recordingLogger() });
    await appendOk(log, [rec(1), rec(2), rec(3)]);
    await log.close();
    const [file] = segFiles(dir);
    const full = path.join(dir, file as string);
    fs.truncateSync(full, 3 * 18 - 5); // the last record loses its last 5 bytes
    const logger = recordingLogger();
    const again = await SegmentLog.open({ dir, logger });
    expect(text(await again.read(undefined, 10))).toEqual([rec(1), rec(2)].map(String));
    expect(again.stats()).toMatchObject({ corruptRecords: 1, truncatedBytes: 13 });
    expect(logger.lines.filter((l) => l.level === "warn")).toHaveLength(1);
    expect(fs.statSync(full).size).toBe(36);
    // The next append follows the last good record.
    await appendOk(again, [rec(4)]);
    expect(text(await again.read(undefined, 10))).toEqual([rec(1), rec(2), rec(4)].map(String));
    await again.close();
  });

  it("cuts the log at a record whose bytes changed", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, logger: recordingLogger() });
    await appendOk(log, [rec(1), rec(2), rec(3)]);
    await log.close();
    const full = path.join(dir, segFiles(dir)[0] as string);
    const bytes = fs.readFileSync(full);
    bytes.writeUInt8(bytes.readUInt8(18 + 8 + 2) ^ 0xff, 18 + 8 + 2); // a payload byte of the second record
    fs.writeFileSync(full, bytes);
    const again = await SegmentLog.open({ dir, logger: recordingLogger() });
    expect(text(await again.read(undefined, 10))).toEqual([String(rec(1))]);
    expect(again.stats()).toMatchObject({ corruptRecords: 1, truncatedBytes: 36 });
    await again.close();
  });

  it("ends an older segment at a corrupt record and keeps the segments after it", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, segmentBytes: 40, logger: recordingLogger() });
    for (let i = 0; i < 6; i++) await appendOk(log, [rec(i)]); // two records a segment
    await log.close();
    const files = segFiles(dir);
    expect(files).toHaveLength(3);
    const second = path.join(dir, files[1] as string);
    const bytes = fs.readFileSync(second);
    bytes.writeUInt8(bytes.readUInt8(18 + 4) ^ 0x01, 18 + 4); // the checksum of the second record of segment 2
    fs.writeFileSync(second, bytes);
    const again = await SegmentLog.open({ dir, segmentBytes: 40, logger: recordingLogger() });
    expect(text(await again.read(undefined, 10))).toEqual([0, 1, 2, 4, 5].map((i) => String(rec(i))));
    expect(again.stats()).toMatchObject({ corruptRecords: 1, truncatedBytes: 18, segments: 3 });
    await again.close();
  });

  it("rolls segments and deletes the ones fully consumed", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, segmentBytes: 50, logger: recordingLogger() });
    const ends: LogPosition[] = [];
    for (let i = 0; i < 10; i++) ends.push(...(await appendOk(log, [rec(i)])));
    expect(segFiles(dir)).toHaveLength(5); // 18-byte records: two fit a 50-byte segment
    expect(log.stats().segments).toBe(segFiles(dir).length);
    log.consume(ends[4] as LogPosition);
    await log.close();
    expect(segFiles(dir)).toHaveLength(3); // segments 3, 4 and 5 hold records 5 to 9
    const again = await SegmentLog.open({ dir, segmentBytes: 50, logger: recordingLogger() });
    expect(text(await again.read(undefined, 100))).toEqual([5, 6, 7, 8, 9].map((i) => String(rec(i))));
    again.consume(again.tail());
    expect(again.stats().bytes).toBe(0);
    await again.close();
    expect(segFiles(dir)).toHaveLength(1); // the active segment stays
  });

  it("refuses appends past maxBytes without writing them", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, maxBytes: 50, logger: recordingLogger() });
    await appendOk(log, [rec(1), rec(2)]); // 36 bytes
    expect(await log.append([rec(3)])).toEqual({ full: true });
    expect(text(await log.read(undefined, 10))).toEqual([rec(1), rec(2)].map(String));
    const [first] = await log.read(undefined, 1);
    log.consume(first?.end as LogPosition);
    await appendOk(log, [rec(3)]);
    expect(text(await log.read(undefined, 10))).toEqual([rec(2), rec(3)].map(String));
    await log.close();
  });

  it("writes appends that arrive together with one fsync between them", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, logger: recordingLogger() });
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => log.append([rec(i)])));
    expect(results.every((r) => !r.full)).toBe(true);
    const syncs = log.stats().syncs;
    expect(syncs).toBeGreaterThan(0);
    // The first append starts a write alone; everything queued behind it shares the next one.
    expect(syncs).toBeLessThanOrEqual(2);
    const all = await log.read(undefined, 1000);
    expect(text(all)).toEqual(Array.from({ length: 200 }, (_, i) => String(rec(i))));
    await log.close();
  });

  it("streams big logs in bounded reads", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, segmentBytes: 1 << 20, logger: recordingLogger() });
    const payloads = Array.from({ length: 300 }, (_, i) => rec(i, 10_000));
    await appendOk(log, payloads);
    let from: LogPosition | undefined;
    let n = 0;
    for (;;) {
      const batch = await log.read(from, 1000, 100_000);
      if (batch.length === 0) break;
      expect(batch.length).toBeLessThanOrEqual(10);
      for (const r of batch) expect(r.payload.equals(payloads[n++] as Buffer)).toBe(true);
      from = batch[batch.length - 1]?.end;
    }
    expect(n).toBe(300);
    await log.close();
  });

  it("stops a read bounded by maxBytes inside a segment there, even when the next segment's first record would fit", async () => {
    // Segment 1 holds records of 20, 20 and 40 payload bytes (28 + 28 + 48 = 104 of 120); the
    // next 20 does not fit and starts segment 2. A read of 60 bytes takes 20 + 20, then stops at
    // the 40: the 20 that starts segment 2 would fit, but taking it would skip the 40, and a
    // reader consuming up to the last record read (the spool's drainer) would lose it.
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, segmentBytes: 120, logger: recordingLogger() });
    const payloads = [rec(0, 20), rec(1, 20), rec(2, 40), rec(3, 20), rec(4, 20)];
    for (const p of payloads) await appendOk(log, [p]);
    expect(log.stats().segments).toBe(2);
    expect(text(await log.read(undefined, 100, 60))).toEqual([rec(0, 20), rec(1, 20)].map(String));

    // Read and consumed in bounded reads, every record comes once, in order.
    const seen: string[] = [];
    for (;;) {
      const batch = await log.read(undefined, 100, 60);
      const last = batch[batch.length - 1];
      if (!last) break;
      seen.push(...text(batch));
      log.consume(last.end);
    }
    expect(seen).toEqual(payloads.map(String));
    await log.close();
  });

  it("is safe to close twice and refuses appends after close", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, logger: recordingLogger() });
    const pending = log.append([rec(1)]);
    const c1 = log.close();
    const c2 = log.close();
    await Promise.all([c1, c2]);
    expect((await pending).full).toBe(false); // queued before close: written
    await expect(log.append([rec(2)])).rejects.toThrow(/closed/);
    const again = await SegmentLog.open({ dir, logger: recordingLogger() });
    expect(text(await again.read(undefined, 10))).toEqual([String(rec(1))]);
    await again.close();
  });

  it("replays from the start when the cursor is lost, and reads nothing twice within a run", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, logger: recordingLogger() });
    const ends = await appendOk(log, [rec(1), rec(2)]);
    log.consume(ends[0] as LogPosition);
    await log.close();
    fs.rmSync(path.join(dir, "cursor"));
    const again = await SegmentLog.open({ dir, logger: recordingLogger() });
    expect(text(await again.read(undefined, 10))).toEqual([rec(1), rec(2)].map(String));
    await again.close();
  });

  it("rolls the segment being appended to once half of it is consumed, and deletes it once all of it is", async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, segmentBytes: 1000, logger: recordingLogger() });
    const ends = await appendOk(
      log,
      Array.from({ length: 30 }, (_, i) => rec(i)),
    ); // 540 bytes in segment 1
    log.consume(ends[28] as LogPosition); // one record left in it
    await appendOk(log, [rec(30)]);
    expect(segFiles(dir)).toEqual(["0000000000000001.seg", "0000000000000002.seg"]);
    expect(text(await log.read(undefined, 10))).toEqual([rec(29), rec(30)].map(String));
    log.consume(log.tail());
    await appendOk(log, [rec(31)]);
    expect(segFiles(dir)).toEqual(["0000000000000002.seg"]);
    await log.close();
    const again = await SegmentLog.open({ dir, segmentBytes: 1000, logger: recordingLogger() });
    expect(text(await again.read(undefined, 10))).toEqual([String(rec(31))]);
    await again.close();
  });

  it("sizes segments from the bound: a sixteenth of it, 64 KiB to 8 MiB", () => {
    expect(segmentBytesFor(Infinity)).toBe(8 << 20);
    expect(segmentBytesFor(1 << 20)).toBe(64 << 10);
    expect(segmentBytesFor(16 << 20)).toBe(1 << 20);
    expect(segmentBytesFor(256 << 20)).toBe(8 << 20);
    expect(segmentBytesFor(1 << 30)).toBe(8 << 20);
  });

  it("keeps the bytes on disk within maxBytes plus one segment while many times that goes through, and replays what is left in order", async () => {
    const dir = tempDir();
    const maxBytes = 1 << 20;
    // The stated bound: maxBytes, plus the consumed front of one segment, plus the cursor file.
    const limit = maxBytes + segmentBytesFor(maxBytes) + 100;
    const open = (): Promise<SegmentLog> => SegmentLog.open({ dir, maxBytes, logger: recordingLogger() });
    let log = await open();
    /** The unconsumed records, oldest first, as the log must replay them. */
    const queue: Array<{ payload: Buffer; end: LogPosition }> = [];
    let seed = 1;
    const random = (n: number): number => {
      // mulberry32: a fixed seed, so every run goes through the same cases.
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
    };
    let id = 0;
    let appended = 0;
    let highest = 0;
    const check = (): void => {
      const bytes = dirBytes(dir);
      highest = Math.max(highest, bytes);
      expect(bytes).toBeLessThanOrEqual(limit);
    };
    const readAll = async (l: SegmentLog): Promise<Buffer[]> => {
      const out: Buffer[] = [];
      let from: LogPosition | undefined;
      for (;;) {
        const batch = await l.read(from, 10_000);
        if (batch.length === 0) return out;
        out.push(...batch.map((r) => r.payload));
        from = batch[batch.length - 1]?.end;
      }
    };
    for (let step = 0; appended < 12 << 20; step++) {
      const burst = Array.from({ length: 1 + random(16) }, () => rec(id++, 40 + random(4000)));
      const res = await log.append(burst);
      check();
      if (!res.full) {
        for (const [i, payload] of burst.entries()) queue.push({ payload, end: res.ends[i] as LogPosition });
        appended += burst.reduce((n, p) => n + 8 + p.length, 0);
      }
      // Phases of 150 steps: a collector that keeps up (nearly everything consumed at once),
      // then an outage (nothing consumed until the log is full, then a little at a time).
      const keepingUp = Math.floor(step / 150) % 2 === 0;
      const n = keepingUp
        ? Math.max(0, queue.length - random(4))
        : res.full
          ? 1 + random(Math.min(queue.length, 40))
          : 0;
      if (n > 0) {
        log.consume((queue[n - 1] as { end: LogPosition }).end);
        queue.splice(0, n);
      }
      check();
      if (step % 400 === 399) {
        // A restart replays exactly the unconsumed records, in order, and the bound still holds.
        await log.close();
        check();
        log = await open();
        expect((await readAll(log)).map(String)).toEqual(queue.map((r) => String(r.payload)));
      }
    }
    // The run went through the bound's worth of unconsumed records, and through far more than the old 8 MiB segment.
    expect(highest).toBeGreaterThan(maxBytes * 0.9);
    expect(appended).toBeGreaterThan(8 << 20);
    await log.close();
    check();
    const again = await open();
    expect((await readAll(again)).map(String)).toEqual(queue.map((r) => String(r.payload)));
    await again.close();
  }, 120_000);
});
