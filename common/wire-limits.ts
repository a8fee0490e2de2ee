/**
 * Lengths the collector accepts for the free-text fields of a window (collector/validate.ts)
 * and to which the agent cuts them before sending (agent/shipper/to-proto.ts): a process may
 * call itself anything and an error text may run long, and neither should cost the GPU its
 * window.
 */
export const MAX_ERROR_LENGTH = 1024;

/*
 * Bounds of what a real GPU can report. They are far above any hardware, so they only
 * catch garbage: a unit slip, an uninitialised field, a driver glitch, a hostile client. The
 * collector rejects a window beyond them; the NVML source reads such a value as missing.
 */
/** The largest boards draw about 1.2 kW (GB200); 5 kW is beyond any one GPU. */
export const MAX_POWER_W = 5_000;
/** GPU memory is at most a few hundred GB (B300: 288 GB); 16 TiB leaves room for unified memory. */
export const MAX_MEMORY_BYTES = 16 * 2 ** 40;
export const MAX_HOLDERS = 64;
/** Owners one window may carry (the agent sends at most 4: agent/window.ts). */
export const MAX_OWNERS = 8;
/** Each text field of an owner: Kubernetes names are at most 253 characters. */
export const MAX_OWNER_FIELD_LENGTH = 256;
export const MAX_HOLDER_NAME_LENGTH = 256;

/** Window lengths an agent may use (Hello.window_ms, the agent's --window) and a window may cover (duration_ms). */
export const MIN_WINDOW_MS = 1_000;
export const MAX_WINDOW_MS = 3_600_000;

/** `s` cut to at most `max` UTF-16 units, never in the middle of a surrogate pair. */
export function cutText(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return s.slice(0, end);
}
