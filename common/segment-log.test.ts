import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "./log.js";
import { SegmentLog, comparePositions, type LogPosition } from "./segment-log.js";

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

function segFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
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
});
