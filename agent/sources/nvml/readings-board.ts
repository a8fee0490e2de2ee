/**
 * The board: shared memory where the NVML worker leaves each GPU's latest numeric reading
 * for the agent's event loop to pick up at its own tick. No message crosses per tick, so
 * neither thread pays for serialising, waking or collecting reading objects every second;
 * what changes rarely (identities, process lists, log lines) still travels as messages.
 *
 * One slot per GPU the worker lists: the numbers of one reading (NaN where the value is
 * missing) behind a sequence counter (a seqlock). The worker makes its driver calls first
 * and then copies the finished reading into the slot in one go, so a call that hangs never
 * leaves a slot half written; the reader retries the rare read that overlaps a write.
 */

/** The numbers of one reading, in slot order. */
import { CALL_ID, type CallName } from "./protocol.js";

export const FIELDS = [
  /** Wall-clock ms the reading was taken; 0: none yet. */
  "atMs",
  /** The identity version the reading belongs to (see NvmlGpu.version). */
  "version",
  /**
   * NaN when the GPU answered. Else why it did not: an NVML return code with the call in
   * `failedCall`, or 0 for "listed with an error at discovery" (NvmlGpu.error says which).
   */
  "failedCode",
  "failedCall",
  "util",
  "memUsedBytes",
  "memTotalBytes",
  "powerW",
  "powerLimitW",
  /** 1 or 0: the gpu_idle clocks event reason. */
  "idleReason",
  "smActive",
  "smOccupancy",
  "tensorActive",
  "dramActive",
  "smClockMHz",
  "media",
] as const;
export type Field = (typeof FIELDS)[number];
export const F: Readonly<Record<Field, number>> = Object.fromEntries(FIELDS.map((n, i) => [n, i])) as Record<
  Field,
  number
>;
export const SLOT_FIELDS = FIELDS.length;

/** Reads that overlap a write are retried this often before the reader keeps what it had. */
const READ_ATTEMPTS = 64;

export class ReadingsBoard {
  readonly slots: number;
  /** Per slot: odd while the worker writes it. Then one counter: implausible values read as missing. */
  private readonly seq: Int32Array;
  private readonly values: Float64Array;

  /** A board for `slots` GPUs, in new shared memory. */
  static create(slots: number): ReadingsBoard {
    return new ReadingsBoard(new SharedArrayBuffer(headerBytes(slots) + slots * SLOT_FIELDS * 8), slots);
  }

  constructor(
    readonly buffer: SharedArrayBuffer,
    slots: number,
  ) {
    this.slots = slots;
    this.seq = new Int32Array(buffer, 0, slots + 1);
    this.values = new Float64Array(buffer, headerBytes(slots), slots * SLOT_FIELDS);
  }

  /** Worker side: publishes a finished reading (SLOT_FIELDS numbers) into `slot`. */
  write(slot: number, reading: Float64Array): void {
    Atomics.add(this.seq, slot, 1);
    this.values.set(reading, slot * SLOT_FIELDS);
    Atomics.add(this.seq, slot, 1);
  }

  /** Event-loop side: copies `slot` into `into`; false when every attempt overlapped a write. */
  read(slot: number, into: Float64Array): boolean {
    const from = slot * SLOT_FIELDS;
    for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
      const before = Atomics.load(this.seq, slot);
      if ((before & 1) !== 0) continue;
      for (let i = 0; i < SLOT_FIELDS; i++) into[i] = this.values[from + i]!;
      if (Atomics.load(this.seq, slot) === before) return true;
    }
    return false;
  }

  /** Worker side: counts implausible values. */
  addBadValues(n: number): void {
    Atomics.add(this.seq, this.slots, n);
  }

  badValues(): number {
    return Atomics.load(this.seq, this.slots);
  }
}

/** The counters ahead of the readings, rounded up so the readings start on an 8-byte boundary. */
function headerBytes(slots: number): number {
  return Math.ceil(((slots + 1) * 4) / 8) * 8;
}

/** A reading's numbers, all missing: the worker's scratch for one GPU. */
/**
 * Sets `out` to a reading that holds only its time and the GPU's version, nothing read;
 * for a GPU whose call failed, also that call and its NVML code.
 */
export function blankReading(
  out: Float64Array,
  atMs: number,
  version: number,
  failure?: { readonly code: number; readonly call: CallName },
): void {
  out.fill(Number.NaN);
  out[F.atMs] = atMs;
  out[F.version] = version;
  if (failure) {
    out[F.failedCode] = failure.code;
    out[F.failedCall] = CALL_ID[failure.call];
  }
}

export function emptyReading(): Float64Array {
  const r = new Float64Array(SLOT_FIELDS).fill(Number.NaN);
  r[F.atMs] = 0;
  return r;
}
