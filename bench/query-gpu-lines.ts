/**
 * Prints simulated readings as `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`
 * does: one line per GPU, values separated by ", ", `[N/A]` where a value is missing, and
 * `Unable to determine the device handle for GPU …` in place of a GPU that cannot be read.
 * Value shapes follow the captures in test/fixtures (two decimals for watts, whole MiB).
 */
import type { GpuReading } from "../common/types.js";

const MiB = 1024 * 1024;
const NA = "[N/A]";

const pad = (n: number, w = 2): string => String(n).padStart(w, "0");

function timestamp(ms: number): string {
  const d = new Date(ms);
  return (
    `${d.getUTCFullYear()}/${pad(d.getUTCMonth() + 1)}/${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`
  );
}

const num = (v: number | undefined): string => (v === undefined ? NA : String(v));
const mib = (bytes: number | undefined): string => (bytes === undefined ? NA : String(Math.round(bytes / MiB)));
const watts = (w: number | undefined): string => (w === undefined ? NA : w.toFixed(2));
const idle = (r: GpuReading): string => (r.util === undefined ? NA : r.util === 0 ? "Active" : "Not Active");

type Cell = (r: GpuReading, timeMs: number) => string;

const CELLS: Readonly<Record<string, Cell>> = {
  timestamp: (_r, t) => timestamp(t),
  index: (r) => String(r.index),
  uuid: (r) => r.uuid,
  "pci.bus_id": (r) => r.busId ?? NA,
  name: (r) => r.model,
  driver_version: (r) => r.driverVersion ?? NA,
  "utilization.gpu": (r) => num(r.util),
  "memory.used": (r) => mib(r.memUsedBytes),
  "memory.total": (r) => mib(r.memTotalBytes),
  "power.draw": (r) => watts(r.powerW),
  "power.limit": (r) => watts(r.powerLimitW),
  "enforced.power.limit": (r) => watts(r.powerLimitW),
  "clocks_event_reasons.gpu_idle": idle,
  "clocks_throttle_reasons.gpu_idle": idle,
  "utilization.encoder": (r) => num(r.media ?? 0),
  "utilization.decoder": () => "0",
  "utilization.jpeg": () => "0",
  "utilization.ofa": () => "0",
};

/** The line nvidia-smi prints for `reading` at `timeMs`, for the fields asked, in their order. */
export function queryGpuLine(fields: readonly string[], reading: GpuReading, timeMs: number): string {
  if (reading.error !== undefined) {
    // Messages print the bus id with a 4-digit domain.
    const busId = (reading.busId ?? "").replace(/^0000(?=[0-9A-Fa-f]{4}:)/, "");
    return `Unable to determine the device handle for GPU ${busId}: ${reading.error}`;
  }
  return fields.map((f) => (CELLS[f] ?? (() => NA))(reading, timeMs)).join(", ");
}
