/**
 * The durable path of the collector's spool and the agent's disk buffer: `SegmentLog.append`
 * (common/segment-log.ts), which resolves once the records are written and fdatasynced, with
 * group commit (appends waiting together share one write and one fdatasync).
 *
 * Records are what the spool writes: one acknowledged batch's InfluxDB lines joined by "\n"
 * (`encodeRecord`), here one live agent's batch of 8 windows (`HostLineEncoder.line` of
 * simulated hosts' windows), about 3.6 KB. Records are built beforehand (untimed), once.
 *
 * - **group** — `agents` concurrent appends a burst, one record each, all issued in the
 *   same turn and awaited together (as many agents' batches spooling at once), then the next
 *   burst; timed until every append of every burst has resolved.
 * - **one at a time** — appends with no concurrency: each awaits its own fdatasync before the
 *   next is issued (what the log would cost without group commit).
 * - **bare** (the baseline) — the same bytes (record headers included, built beforehand)
 *   written by one `FileHandle.writev` and one `datasync` per burst: the least any durable
 *   log must do for a burst.
 *
 * Each side writes into a fresh directory in the OS temp dir (opened untimed, removed
 * afterwards); the sides take turns, the first side rotating from round to round. The
 * self-check reads every log back and must find every record, byte for byte and in the order
 * appended; the bare file must hold every byte.
 */
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { silentLogger } from "../common/log.js";
import { comparePositions, SegmentLog, type LogPosition } from "../common/segment-log.js";
import { encodeHeader, HEADER_BYTES } from "../common/segment-file.js";
import { HostLineEncoder } from "../collector/influx/line-protocol.js";
import { encodeRecord } from "../collector/spool/spool-record.js";
import { WINDOW_MS, benchHost, type WindowTemplates } from "./fleet-windows.js";
import { collectGarbage, spread, type Spread } from "./harness.js";
import { GPUS_PER_HOST } from "./sim-hosts.js";

export interface SpoolAppendOptions {
  /** Concurrent appends a burst, one record (one agent's batch) each. */
  agents: number;
  burstsPerRound: number;
  /** Records a round for the one-at-a-time side. */
  serialRecords: number;
  warmup: number;
  rounds: number;
}

export interface SpoolAppendResult {
  agents: number;
  burstsPerRound: number;
  recordsPerRound: number;
  serialRecordsPerRound: number;
  linesPerRecord: number;
  /** Mean record size on disk, header included. */
  bytesPerRecord: number;
  meanLineBytes: number;
  groupRecordsPerS: Spread;
  groupMiBPerS: Spread;
  /** fdatasync calls per round (`stats().syncs`). */
  groupSyncsPerRound: Spread;
  serialRecordsPerS: Spread;
  serialMiBPerS: Spread;
  serialSyncsPerRound: Spread;
  bareRecordsPerS: Spread;
  bareMiBPerS: Spread;
  /** One per burst, by construction. */
  bareSyncsPerRound: number;
  /** group ÷ bare throughput, paired per round. */
  ratio: Spread;
  /** one-at-a-time ÷ bare throughput, paired per round. */
  serialRatio: Spread;
  tmpDir: string;
}

const SIDES = ["group", "serial", "bare"] as const;
type Side = (typeof SIDES)[number];

interface SideRun {
  ms: number;
  syncs: number;
}

export async function runSpoolAppendBench(
  templates: WindowTemplates,
  o: SpoolAppendOptions,
): Promise<SpoolAppendResult> {
  // One record per (burst, agent): the agent's 8 windows of one window time, as lines.
  const start = Date.UTC(2026, 0, 1);
  let lineBytes = 0;
  let lineCount = 0;
  const bursts: Buffer[][] = Array.from({ length: o.burstsPerRound }, () => []);
  for (let a = 0; a < o.agents; a++) {
    const host = benchHost(a);
    const enc = new HostLineEncoder(host.hostname, host.labels);
    for (let b = 0; b < o.burstsPerRound; b++) {
      const lines = Array.from({ length: GPUS_PER_HOST }, (_, g) =>
        enc.line(templates.window(host, g, b, start + b * WINDOW_MS)),
      );
      for (const l of lines) lineBytes += Buffer.byteLength(l);
      lineCount += lines.length;
      (bursts[b] as Buffer[]).push(encodeRecord(lines));
    }
  }
  const records = bursts.flat();
  const serial = records.slice(0, o.serialRecords);
  const recordBytes = (list: readonly Buffer[]): number => list.reduce((s, p) => s + HEADER_BYTES + p.length, 0);
  const bytesPerRound = recordBytes(records);
  const serialBytesPerRound = recordBytes(serial);
  // The bare side writes the same bytes as the log: header and payload per record.
  const bareBursts: Buffer[][] = bursts.map((burst) => burst.flatMap((p) => [encodeHeader(p), p]));

  const tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), "trueidle-bench-spool-"));
  let dirs = 0;
  const freshDir = (): string => path.join(tmpDir, String(++dirs));

  /** Reads the whole log back: every record, byte for byte, in append order. */
  const checkLog = async (
    log: SegmentLog,
    want: readonly Buffer[],
    ends: readonly LogPosition[],
    side: Side,
  ): Promise<void> => {
    const got = await log.read(undefined, Number.MAX_SAFE_INTEGER);
    if (got.length !== want.length)
      throw new Error(`the ${side} log reads back ${got.length} records, ${want.length} were appended`);
    for (let i = 0; i < want.length; i++) {
      const g = got[i] as { payload: Buffer; end: LogPosition };
      if (!g.payload.equals(want[i] as Buffer))
        throw new Error(`record ${i} of the ${side} log reads back different from what was appended`);
      if (comparePositions(g.end, ends[i] as LogPosition) !== 0)
        throw new Error(`record ${i} of the ${side} log ends elsewhere than its append said`);
    }
  };

  const runSide = async (side: Side): Promise<SideRun> => {
    const dir = freshDir();
    if (side === "bare") {
      await fs.mkdir(dir);
      const file = path.join(dir, "bare.seg");
      const fh = await fs.open(file, "wx", 0o600);
      let ms: number;
      try {
        collectGarbage();
        const t0 = performance.now();
        let pos = 0;
        for (const bufs of bareBursts) {
          pos = await writevAll(fh, bufs, pos);
          await fh.datasync();
        }
        ms = performance.now() - t0;
      } finally {
        await fh.close();
      }
      const size = (await fs.stat(file)).size;
      if (size !== bytesPerRound) throw new Error(`the bare file holds ${size} bytes, ${bytesPerRound} were written`);
      await fs.rm(dir, { recursive: true, force: true });
      return { ms, syncs: bareBursts.length };
    }
    const log = await SegmentLog.open({ dir, logger: silentLogger });
    const ends: LogPosition[] = [];
    let ms: number;
    try {
      collectGarbage();
      const t0 = performance.now();
      if (side === "group") {
        for (const burst of bursts) {
          const results = await Promise.all(burst.map((p) => log.append([p])));
          for (const r of results) {
            if (r.full) throw new Error("the group log refused an append as full");
            ends.push(r.ends[0] as LogPosition);
          }
        }
      } else {
        for (const p of serial) {
          const r = await log.append([p]);
          if (r.full) throw new Error("the one-at-a-time log refused an append as full");
          ends.push(r.ends[0] as LogPosition);
        }
      }
      ms = performance.now() - t0;
      await checkLog(log, side === "group" ? records : serial, ends, side);
    } finally {
      await log.close();
    }
    const syncs = log.stats().syncs;
    await fs.rm(dir, { recursive: true, force: true });
    return { ms, syncs };
  };

  try {
    const rows: Array<Record<Side, SideRun>> = [];
    for (let r = 0; r < o.warmup + o.rounds; r++) {
      const run: Partial<Record<Side, SideRun>> = {};
      // The first side rotates, so none always meets a disk the previous one left busy.
      for (let i = 0; i < SIDES.length; i++) {
        const side = SIDES[(i + r) % SIDES.length] as Side;
        run[side] = await runSide(side);
      }
      if (r >= o.warmup) rows.push(run as Record<Side, SideRun>);
    }
    const perS = (n: number, ms: number): number => n / (ms / 1000);
    const groupRecords = rows.map((x) => perS(records.length, x.group.ms));
    const serialRecords = rows.map((x) => perS(serial.length, x.serial.ms));
    const bareRecords = rows.map((x) => perS(records.length, x.bare.ms));
    return {
      agents: o.agents,
      burstsPerRound: o.burstsPerRound,
      recordsPerRound: records.length,
      serialRecordsPerRound: serial.length,
      linesPerRecord: GPUS_PER_HOST,
      bytesPerRecord: bytesPerRound / records.length,
      meanLineBytes: lineBytes / lineCount,
      groupRecordsPerS: spread(groupRecords),
      groupMiBPerS: spread(rows.map((x) => perS(bytesPerRound, x.group.ms) / 2 ** 20)),
      groupSyncsPerRound: spread(rows.map((x) => x.group.syncs)),
      serialRecordsPerS: spread(serialRecords),
      serialMiBPerS: spread(rows.map((x) => perS(serialBytesPerRound, x.serial.ms) / 2 ** 20)),
      serialSyncsPerRound: spread(rows.map((x) => x.serial.syncs)),
      bareRecordsPerS: spread(bareRecords),
      bareMiBPerS: spread(rows.map((x) => perS(bytesPerRound, x.bare.ms) / 2 ** 20)),
      bareSyncsPerRound: bareBursts.length,
      ratio: spread(groupRecords.map((g, i) => g / (bareRecords[i] as number))),
      serialRatio: spread(serialRecords.map((s, i) => s / (bareRecords[i] as number))),
      tmpDir: os.tmpdir(),
    };
  } finally {
    await fs.rm(tmpDir, { recursive: true, force: true });
  }
}

/** writev at `position`, resumed after a short write; returns the position after the bytes. */
async function writevAll(fh: fs.FileHandle, bufs: Buffer[], position: number): Promise<number> {
  let pos = position;
  let part = bufs;
  let left = part.reduce((s, b) => s + b.length, 0);
  while (left > 0) {
    const { bytesWritten } = await fh.writev(part, pos);
    pos += bytesWritten;
    left -= bytesWritten;
    if (left > 0) part = [Buffer.concat(part).subarray(bytesWritten)];
  }
  return pos;
}
