/**
 * A window record straight to GpuWindow protobuf bytes, without building the message
 * object first: the agent encodes every window it measures, once, and the reflective
 * encoder of protobuf-es costs about as much per window as a GPU-second of sampling.
 *
 * The bytes are exactly what `toBinary(GpuWindowSchema, windowToProto(w))` writes
 * (encode-window.test.ts checks it over many windows, and that every field of the schema is
 * written here): fields in number order, proto3 implicit-presence scalars left out at their
 * zero value (-0 is not zero), `optional` ones written whenever set, strings cut as
 * windowToProto cuts them. A field added to proto/trueidle/v1/ingest.proto must be added
 * here too; the test fails until it is.
 */
import { cutText, MAX_ERROR_LENGTH, MAX_HOLDER_NAME_LENGTH, MAX_HOLDERS } from "../../common/wire-limits.js";
import type { GpuWindowRecord, WindowHolder, WindowLast, WindowOwner } from "../window.js";
import { OWNER_SOURCE_TO_PB, ownerText, sentOwners, SOURCE_TO_PB, STATE_TO_PB } from "./to-proto.js";

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;

/** A growing byte buffer with the few protobuf writes a window needs. */
class Writer {
  buf = Buffer.allocUnsafe(512);
  pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** A non-negative integer below 2^53, or a negative one as the 64-bit two's complement (int64). */
  varint(v: number): void {
    if (v < 0) {
      this.bigVarint(BigInt.asUintN(64, BigInt(v)));
      return;
    }
    this.room(10);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  private bigVarint(v: bigint): void {
    this.room(10);
    while (v >= 0x80n) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  double(field: number, v: number): void {
    this.tag(field, FIXED64);
    this.room(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  string(field: number, s: string): void {
    const n = Buffer.byteLength(s, "utf8");
    this.tag(field, LEN);
    this.varint(n);
    this.room(n);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  /** A nested message, written by `body` into its own length-delimited field. */
  message(field: number, body: (w: Writer) => void): void {
    const inner = new Writer();
    body(inner);
    this.tag(field, LEN);
    this.varint(inner.pos);
    this.room(inner.pos);
    inner.buf.copy(this.buf, this.pos, 0, inner.pos);
    this.pos += inner.pos;
  }

  // proto3 implicit presence: written only away from the zero value.
  implicitDouble(field: number, v: number): void {
    if (!Object.is(v, 0)) this.double(field, v);
  }
  implicitVarint(field: number, v: number): void {
    if (v !== 0) {
      this.tag(field, VARINT);
      this.varint(v);
    }
  }
  implicitString(field: number, s: string): void {
    if (s !== "") this.string(field, s);
  }
  // `optional`: written whenever set.
  optionalDouble(field: number, v: number | undefined): void {
    if (v !== undefined) this.double(field, v);
  }
  optionalUint64(field: number, v: number | undefined): void {
    if (v !== undefined) {
      this.tag(field, VARINT);
      this.varint(Math.round(v));
    }
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export function encodeWindow(w: GpuWindowRecord): Buffer {
  const out = new Writer();
  out.implicitString(1, w.uuid);
  out.implicitVarint(2, w.index);
  out.implicitString(3, w.model);
  out.implicitString(4, w.driverVersion);
  out.implicitVarint(5, w.startMs);
  out.implicitVarint(6, w.durationMs);
  out.implicitDouble(10, w.observedS);
  out.implicitDouble(11, w.stateS.free_idle);
  out.implicitDouble(12, w.stateS.held_idle);
  out.implicitDouble(13, w.stateS.busy_phantom);
  out.implicitDouble(14, w.stateS.active);
  out.implicitDouble(15, w.stateS.unavailable);
  out.implicitDouble(16, w.reportedIdleS);
  out.implicitDouble(17, w.reportedBusyS);
  out.implicitDouble(18, w.realBusyS);
  out.optionalDouble(20, w.powerMeanW);
  out.optionalDouble(21, w.powerMaxW);
  out.optionalDouble(22, w.powerFloorW);
  out.optionalDouble(23, w.powerLimitW);
  out.optionalUint64(24, w.memUsedMaxBytes);
  out.optionalUint64(25, w.memTotalBytes);
  out.implicitVarint(26, w.processesMax);
  out.message(30, (m) => writeLast(m, w.last));
  const holders = w.topHolders.length > MAX_HOLDERS ? w.topHolders.slice(0, MAX_HOLDERS) : w.topHolders;
  for (const h of holders) out.message(31, (m) => writeHolder(m, h));
  if (w.heldByS) {
    out.implicitDouble(32, w.heldByS.process);
    out.implicitDouble(33, w.heldByS.memory);
    out.implicitDouble(34, w.heldByS.allocation);
  }
  for (const o of sentOwners(w)) out.message(35, (m) => writeOwner(m, o));
  out.implicitString(36, w.parentUuid ?? "");
  out.implicitString(37, w.migProfile ?? "");
  out.implicitVarint(38, w.migBoard === true ? 1 : 0);
  return out.bytes();
}

function writeLast(m: Writer, l: WindowLast): void {
  m.implicitVarint(1, l.timeMs);
  m.implicitVarint(2, STATE_TO_PB[l.state]);
  m.implicitDouble(3, l.real);
  m.implicitVarint(4, SOURCE_TO_PB[l.realSource]);
  m.optionalDouble(5, l.utilPercent);
  m.optionalDouble(6, l.powerW);
  m.optionalUint64(7, l.memUsedBytes);
  m.implicitVarint(8, l.processes);
  m.implicitDouble(9, l.idleStreakS);
  m.implicitString(10, cutText(l.error ?? "", MAX_ERROR_LENGTH));
  m.implicitVarint(11, l.heldBy ?? 0);
}

function writeOwner(m: Writer, o: WindowOwner): void {
  m.implicitVarint(1, OWNER_SOURCE_TO_PB[o.via]);
  m.implicitString(2, ownerText(o.namespace));
  m.implicitString(3, ownerText(o.pod));
  m.implicitString(4, ownerText(o.container));
  m.implicitString(5, ownerText(o.podUid));
  m.implicitString(6, ownerText(o.job));
  m.implicitString(7, ownerText(o.step));
  m.implicitString(8, ownerText(o.user));
  m.implicitString(9, ownerText(o.runtime));
  m.implicitString(10, ownerText(o.containerId));
  m.implicitVarint(11, o.pid ?? 0);
  m.implicitString(12, ownerText(o.command));
  m.implicitDouble(20, o.observedS);
  m.implicitDouble(21, o.stateS.free_idle);
  m.implicitDouble(22, o.stateS.held_idle);
  m.implicitDouble(23, o.stateS.busy_phantom);
  m.implicitDouble(24, o.stateS.active);
  m.implicitDouble(25, o.stateS.unavailable);
  m.implicitDouble(26, o.reportedIdleS);
  m.implicitDouble(27, o.reportedBusyS);
  m.implicitDouble(28, o.realBusyS);
}

function writeHolder(m: Writer, h: WindowHolder): void {
  m.implicitVarint(1, h.pid);
  m.implicitString(2, cutText(h.name, MAX_HOLDER_NAME_LENGTH));
  m.optionalUint64(3, h.usedMemoryBytes);
  m.optionalDouble(4, h.smShare);
}
