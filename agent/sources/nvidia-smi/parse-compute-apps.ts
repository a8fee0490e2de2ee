/**
 * Pure parser of `nvidia-smi --query-compute-apps=… --format=csv[,noheader][,nounits]`.
 *
 * nvidia-smi separates values with ", " and never quotes them, and a process name may
 * contain anything, commas and spaces included (Windows paths such as
 * `C:\Program Files\NZXT CAM\NZXT CAM.exe`). So the columns left of `process_name` are
 * taken from the start of the line, those right of it from the end, and the name is
 * whatever lies between. Memory `[N/A]` (Windows WDDM) stays undefined.
 */
import type { GpuProcess } from "../../../common/types.js";
import { parseDeviceHandleError, parseHeaderLine, type GpuLineError, type QueryColumn } from "./parse-query-gpu.js";
import { parseBytes, parseInteger, parseText } from "./values.js";

/** The fields the sampler asks for. */
export const COMPUTE_APPS_FIELDS = ["gpu_uuid", "pid", "process_name", "used_gpu_memory"] as const;

export interface ComputeAppsOutput {
  /** Processes per GPU uuid; a GPU with none has no entry. */
  byUuid: Map<string, GpuProcess[]>;
  gpuErrors: GpuLineError[];
  invalid: Array<{ line: string; reason: string }>;
}

const ALIASES: Readonly<Record<string, string>> = { uuid: "gpu_uuid", name: "process_name" };
const NONE_LINES = /^no running (compute )?processes found\.?$/i;

/**
 * A whole output. Without `columns` the first line must be the CSV header; with them a
 * header line, if present, is read for its units.
 */
export function parseComputeApps(text: string, columns?: readonly QueryColumn[]): ComputeAppsOutput {
  const out: ComputeAppsOutput = { byUuid: new Map(), gpuErrors: [], invalid: [] };
  let cols: QueryColumn[] | undefined = columns ? [...columns] : undefined;
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "" || NONE_LINES.test(line.trim())) continue;
    const handleError = parseDeviceHandleError(line);
    if (handleError) {
      out.gpuErrors.push(handleError);
      continue;
    }
    const header = parseHeaderLine(line);
    if (header?.some((c) => canonical(c.field) === "pid") && (!cols || header.length === cols.length)) {
      cols = header;
      continue;
    }
    if (cols === undefined) {
      out.invalid.push({ line, reason: "no CSV header before the values" });
      continue;
    }
    const parsed = parseLine(cols, line);
    if ("reason" in parsed) {
      out.invalid.push({ line, reason: parsed.reason });
      continue;
    }
    const list = out.byUuid.get(parsed.uuid);
    if (list) list.push(parsed.process);
    else out.byUuid.set(parsed.uuid, [parsed.process]);
  }
  return out;
}

function parseLine(
  cols: readonly QueryColumn[],
  line: string,
): { uuid: string; process: GpuProcess } | { reason: string } {
  const parts = line.split(", ");
  if (parts.length < cols.length) return { reason: `expected ${cols.length} values, got ${parts.length}` };
  const nameAt = cols.findIndex((c) => canonical(c.field) === "process_name");
  const cells = new Map<string, { raw: string; unit: string | undefined }>();
  cols.forEach((c, i) => {
    let raw: string;
    if (nameAt < 0 || i < nameAt) raw = parts[i]!;
    else if (i > nameAt) raw = parts[parts.length - (cols.length - i)]!;
    else raw = parts.slice(nameAt, parts.length - (cols.length - 1 - nameAt)).join(", ");
    cells.set(canonical(c.field), { raw, unit: c.unit });
  });
  if (nameAt < 0 && parts.length !== cols.length)
    return { reason: `expected ${cols.length} values, got ${parts.length}` };
  const uuid = parseText(cells.get("gpu_uuid")?.raw);
  if (uuid === undefined) return { reason: "no GPU uuid" };
  const pid = parseInteger(cells.get("pid")?.raw);
  if (pid === undefined) return { reason: "no process id" };
  const mem = cells.get("used_gpu_memory");
  const name = parseText(cells.get("process_name")?.raw);
  return {
    uuid,
    process: {
      pid,
      name: name ?? "unknown",
      usedMemoryBytes: mem === undefined ? undefined : parseBytes(mem.raw, mem.unit ?? "MiB"),
    },
  };
}

function canonical(field: string): string {
  return ALIASES[field] ?? field;
}
