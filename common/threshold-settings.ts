/**
 * The idle model's thresholds as settings (common/settings.ts): DEFAULT_THRESHOLDS in
 * common/types.ts, the collector's check of the thresholds it pushes to agents, and the
 * --util-busy-percent, --real-active-ratio and --held-memory-mib flags all come from here.
 */
import type { NumericSetting } from "./settings.js";

const MiB = 1024 * 1024;

/** Held memory as the flag takes it, in MiB (fractions allowed); the thresholds hold bytes. */
export const HELD_MEMORY_MIB = {
  kind: "number",
  default: 256,
  min: 0,
  max: 1_048_576,
  meaning: "GPU memory above the idle baseline that makes a GPU held, MiB.",
} satisfies NumericSetting;

export const THRESHOLD_SETTINGS = {
  utilBusyPercent: {
    kind: "number",
    default: 5,
    min: 0,
    minExclusive: true,
    max: 100,
    meaning: "U: utilization.gpu (percent) at or above which a reading is reported busy.",
  },
  realActiveRatio: {
    kind: "number",
    default: 0.1,
    min: 0,
    minExclusive: true,
    max: 1,
    meaning: "R: real utilization (0-1) at or above which a GPU is active.",
  },
  heldMemoryBytes: {
    kind: "integer",
    default: HELD_MEMORY_MIB.default * MiB,
    min: HELD_MEMORY_MIB.min * MiB,
    max: HELD_MEMORY_MIB.max * MiB,
    meaning: "Memory above the idle baseline that makes a GPU held, bytes.",
  },
} satisfies Record<string, NumericSetting>;
