/**
 * The agent's settings (common/settings.ts): the defaults the agent, its sources and owner
 * sources fall back to, and the bounds and defaults of `trueidle agent`'s flags
 * (cli/agent-command.ts builds them from here).
 */
import type { Setting } from "../common/settings.js";
import { MAX_WINDOW_MS, MIN_WINDOW_MS } from "../common/wire-limits.js";

export const AGENT_SETTINGS = {
  intervalMs: { kind: "duration", default: 1_000, min: 100, max: 60_000, meaning: "Sampling interval." },
  windowMs: {
    kind: "duration",
    default: 10_000,
    min: MIN_WINDOW_MS,
    max: MAX_WINDOW_MS,
    meaning: "Window length; a whole multiple of the sampling interval, aligned to wall-clock multiples.",
  },
  processIntervalMs: {
    kind: "duration",
    default: 5_000,
    min: 500,
    max: 300_000,
    meaning: "How often the NVML and nvidia-smi sources list compute processes.",
  },
  migIntervalMs: {
    kind: "duration",
    default: 15_000,
    min: 1_000,
    max: 600_000,
    meaning:
      "How often the nvidia-smi source reads MIG instances (nvidia-smi -L and -q -x, hundreds of milliseconds of CPU on a big host), where a board may be in MIG mode. The NVML source looks every 2 s at no such cost.",
  },
  maxBufferedWindows: {
    kind: "integer",
    default: 200_000,
    min: 100,
    max: 10_000_000,
    meaning: "Unacknowledged windows kept at most; the oldest beyond it are dropped.",
  },
  maxBufferBytes: {
    kind: "size",
    default: 256 * 1024 * 1024,
    min: 1024 * 1024,
    meaning: "Encoded bytes of unacknowledged windows kept at most; the oldest beyond it are dropped.",
  },
  nvidiaSmiPath: {
    kind: "text",
    default: "nvidia-smi",
    meaning: "The nvidia-smi executable: a path, or a name looked up in $PATH.",
  },
  podResourcesSocket: {
    kind: "text",
    default: "/var/lib/kubelet/pod-resources/kubelet.sock",
    meaning: "The kubelet's pod-resources socket, where the kubelet serves it unless its root directory was moved.",
  },
  hostRoot: {
    kind: "text",
    default: "/",
    meaning: "The host's root, where /proc and /etc/passwd are read.",
  },
} satisfies Record<string, Setting>;
