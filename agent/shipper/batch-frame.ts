/**
 * A WindowBatch request framed around windows already encoded. The agent encodes each
 * window once, when it is measured (the buffer holds those bytes, in memory or on disk);
 * a batch is then those bytes with a few bytes of protobuf framing around them, instead of
 * decoding every window back into a message only to encode it again.
 *
 * The bytes are what `toBinary(StreamRequestSchema, { msg: { case: "batch", value: { seq,
 * windows } } })` writes for the same windows (batch-frame.test.ts checks it):
 *   StreamRequest.batch   = field 2, length-delimited: tag 0x12, length, WindowBatch
 *   WindowBatch.seq       = field 1, varint: tag 0x08, seq (left out when 0, as proto3 does)
 *   WindowBatch.windows[] = field 2, length-delimited: tag 0x12, length, GpuWindow bytes
 */

export function frameBatch(seq: bigint, windows: readonly Uint8Array[]): Buffer {
  let inner = seq === 0n ? 0 : 1 + varintLength(seq);
  for (const w of windows) inner += 1 + varintLength(BigInt(w.length)) + w.length;
  const out = Buffer.allocUnsafe(1 + varintLength(BigInt(inner)) + inner);
  let o = 0;
  out[o++] = 0x12;
  o = writeVarint(out, o, BigInt(inner));
  if (seq !== 0n) {
    out[o++] = 0x08;
    o = writeVarint(out, o, seq);
  }
  for (const w of windows) {
    out[o++] = 0x12;
    o = writeVarint(out, o, BigInt(w.length));
    out.set(w, o);
    o += w.length;
  }
  return out;
}

function varintLength(v: bigint): number {
  let n = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, o: number, v: bigint): number {
  while (v >= 0x80n) {
    buf[o++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  buf[o++] = Number(v);
  return o;
}
