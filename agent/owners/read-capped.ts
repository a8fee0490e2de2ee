/**
 * Reads a small host file whole, never more than a cap, never throwing. `/proc` files report
 * a size of 0, so the cap is enforced by reading, not by `stat`.
 */
import { open } from "node:fs/promises";

export type ReadCapped =
  | { ok: true; bytes: Buffer }
  /**
   * `missing`: the file or its process is gone (ENOENT, ESRCH). `too_large`: more than the
   * cap. `aborted`: the signal fired. Otherwise the errno code in lower case (`eacces`,
   * `eisdir`, `eio`, …), or `unknown`.
   */
  | { ok: false; reason: string };

const CHUNK = 64 * 1024;

export async function readCapped(path: string, maxBytes: number, signal?: AbortSignal): Promise<ReadCapped> {
  if (signal?.aborted) return { ok: false, reason: "aborted" };
  let handle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    return { ok: false, reason: reasonOf(err) };
  }
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      if (signal?.aborted) return { ok: false, reason: "aborted" };
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, maxBytes + 1 - total));
      const { bytesRead } = await handle.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
      if (total > maxBytes) return { ok: false, reason: "too_large" };
    }
    return { ok: true, bytes: Buffer.concat(chunks, total) };
  } catch (err) {
    return { ok: false, reason: reasonOf(err) };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function reasonOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOENT" || code === "ESRCH") return "missing";
  return typeof code === "string" ? code.toLowerCase() : "unknown";
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Bytes as text, or undefined for binary content: a NUL byte or invalid UTF-8, which no file
 * the kernel or a passwd writer produces.
 */
export function textOf(bytes: Buffer): string | undefined {
  if (bytes.includes(0)) return undefined;
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}
