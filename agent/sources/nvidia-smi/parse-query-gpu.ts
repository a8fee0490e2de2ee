/**
 * Pure parser of `nvidia-smi --query-gpu=… --format=csv[,noheader][,nounits]` output.
 *
 * Lines are fed one at a time (the loop-mode child prints a line per GPU per tick) or as
 * a whole output. One bad GPU never blanks the host: a line such as
 * `Unable to determine the device handle for GPU 0000:3B:00.0: Unknown Error` becomes an
 * error for that GPU (matched by PCI bus id), the other GPUs' lines parse normally, and a
 * line that makes no sense is reported as invalid for the caller to count, never thrown.
 */
import type { GpuReading } from "../../../common/types.js";
import { IDLE_REASON_FIELD, IDLE_REASON_FIELD_OLD } from "./fields.js";
import { isMissing, parseActive, parseBytes, parseInteger, parsePercent, parseText, parseWatts } from "./values.js";

/** A column of the CSV: the field asked for and the unit a header gave it, if any. */
export interface QueryColumn {
  field: string;
  unit?: string | undefined;
}

/** A GPU nvidia-smi could not read at all, named by its PCI bus id. */
export interface GpuLineError {
  /** Bus id as printed; compare with `busIdKey`. */
  busId: string;
  message: string;
}

export type QueryGpuLine =
  | { kind: "reading"; reading: GpuReading }
  | ({ kind: "gpu_error" } & GpuLineError)
  | { kind: "header"; columns: QueryColumn[] }
  | { kind: "blank" }
  | { kind: "invalid"; line: string; reason: string };

export interface QueryGpuOutput {
  readings: GpuReading[];
  gpuErrors: GpuLineError[];
  invalid: Array<{ line: string; reason: string }>;
  columns: QueryColumn[];
}

/** Other names nvidia-smi accepts for the fields this parser reads. */
const ALIASES: Readonly<Record<string, string>> = {
  gpu_name: "name",
  gpu_uuid: "uuid",
  gpu_bus_id: "pci.bus_id",
  gpu_serial: "serial",
  "gpu.power.current_limit": "enforced.power.limit",
  "gpu.power.requested_limit": "power.limit",
  [IDLE_REASON_FIELD_OLD]: IDLE_REASON_FIELD,
};

/** The units nvidia-smi uses for these fields when `nounits` drops them from the values. */
const DEFAULT_UNITS: Readonly<Record<string, string>> = {
  "memory.used": "MiB",
  "memory.total": "MiB",
};

const HEADER_CELL = /^([A-Za-z][A-Za-z0-9_.]*)(?:\s+\[([^\]]+)\])?$/;
const DEVICE_HANDLE_ERROR =
  /^Unable to determine the device handle for GPU\s*([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]+)\s*:\s*(.*)$/i;

export function columnsFromFields(fields: readonly string[]): QueryColumn[] {
  return fields.map((field) => ({ field }));
}

/** Columns of a CSV header line (`memory.used [MiB], power.draw [W]`), or undefined if it is not one. */
export function parseHeaderLine(line: string): QueryColumn[] | undefined {
  const cells = splitCells(stripEol(line));
  if (cells.length === 0 || cells[0] === "") return undefined;
  const columns: QueryColumn[] = [];
  for (const cell of cells) {
    const m = HEADER_CELL.exec(cell.trim());
    if (!m) return undefined;
    columns.push({ field: m[1]!, unit: m[2] });
  }
  return columns;
}

/**
 * A canonical form of a PCI bus id for matching: nvidia-smi prints an 8-hex-digit domain
 * in CSV (`00000000:3B:00.0`) but 4 digits in messages (`0000:3B:00.0`).
 */
export function busIdKey(busId: string): string | undefined {
  const m = /^\s*([0-9A-Fa-f]+):([0-9A-Fa-f]+):([0-9A-Fa-f]+)\.([0-9A-Fa-f]+)\s*$/.exec(busId);
  if (!m) return undefined;
  const hex = (s: string, width: number): string => parseInt(s, 16).toString(16).toUpperCase().padStart(width, "0");
  return `${hex(m[1]!, 4)}:${hex(m[2]!, 2)}:${hex(m[3]!, 2)}.${hex(m[4]!, 1)}`;
}

/** The GPU and message of an `Unable to determine the device handle for GPU …` line. */
export function parseDeviceHandleError(line: string): GpuLineError | undefined {
  const m = DEVICE_HANDLE_ERROR.exec(stripEol(line).trim());
  if (!m) return undefined;
  const message = m[2]!.replace(/\s+/g, " ").trim() || "Unknown Error";
  return { busId: m[1]!, message };
}

/** One line of output, parsed against the columns asked for (or given by a header). */
export function parseQueryGpuLine(columns: readonly QueryColumn[], rawLine: string): QueryGpuLine {
  const line = stripEol(rawLine);
  if (line.trim() === "") return { kind: "blank" };
  const handleError = parseDeviceHandleError(line);
  if (handleError) return { kind: "gpu_error", ...handleError };
  // A header describes the lines after it, even when it lists other fields than were asked
  // for (a stand-in that prints a captured CSV). Values never look like one: every query
  // has the numeric index.
  const header = parseHeaderLine(line);
  if (header) return { kind: "header", columns: header };
  const cells = splitCells(line);
  if (cells.length !== columns.length) {
    return { kind: "invalid", line, reason: `expected ${columns.length} values, got ${cells.length}` };
  }
  const values = new Map<string, { raw: string; unit: string | undefined }>();
  columns.forEach((c, i) => {
    const key = canonical(c.field);
    if (!values.has(key)) values.set(key, { raw: cells[i]!, unit: c.unit });
  });
  const raw = (field: string): string | undefined => values.get(field)?.raw;
  const bytes = (field: string): number | undefined => {
    const v = values.get(field);
    if (!v) return undefined;
    return parseBytes(v.raw, v.unit ?? DEFAULT_UNITS[field] ?? "MiB");
  };

  const uuid = parseText(raw("uuid"));
  const index = parseInteger(raw("index"));
  if (uuid === undefined) return { kind: "invalid", line, reason: "no GPU uuid" };
  if (index === undefined) return { kind: "invalid", line, reason: "no GPU index" };

  const enforced = parseWatts(raw("enforced.power.limit"));
  const mediaValues = ["utilization.encoder", "utilization.decoder", "utilization.jpeg", "utilization.ofa"]
    .map((f) => parsePercent(raw(f)))
    .filter((v): v is number => v !== undefined);
  const reading: GpuReading = {
    uuid,
    index,
    model: parseText(raw("name")) ?? "unknown",
    busId: parseText(raw("pci.bus_id")),
    driverVersion: parseText(raw("driver_version")),
    util: parsePercent(raw("utilization.gpu")),
    memUsedBytes: bytes("memory.used"),
    memTotalBytes: bytes("memory.total"),
    powerW: parseWatts(raw("power.draw")),
    powerLimitW: enforced ?? parseWatts(raw("power.limit")),
    idleReason: parseActive(raw(IDLE_REASON_FIELD)),
    media: mediaValues.length > 0 ? Math.max(...mediaValues) : undefined,
  };
  const error = lineError(cells, reading);
  if (error !== undefined) reading.error = error;
  return { kind: "reading", reading };
}

/**
 * A whole output. Without `columns` the first line must be the CSV header (`--format=csv`);
 * with them a header line, if present, is still read for its units.
 */
export function parseQueryGpuOutput(text: string, columns?: readonly QueryColumn[]): QueryGpuOutput {
  const out: QueryGpuOutput = { readings: [], gpuErrors: [], invalid: [], columns: columns ? [...columns] : [] };
  let cols: QueryColumn[] | undefined = columns ? [...columns] : undefined;
  for (const line of text.split("\n")) {
    if (cols === undefined) {
      if (line.trim() === "") continue;
      const handleError = parseDeviceHandleError(line);
      if (handleError) {
        out.gpuErrors.push(handleError);
        continue;
      }
      cols = parseHeaderLine(line);
      if (cols === undefined) out.invalid.push({ line: stripEol(line), reason: "no CSV header before the values" });
      else out.columns = cols;
      continue;
    }
    const parsed = parseQueryGpuLine(cols, line);
    switch (parsed.kind) {
      case "reading":
        out.readings.push(parsed.reading);
        break;
      case "gpu_error":
        out.gpuErrors.push({ busId: parsed.busId, message: parsed.message });
        break;
      case "header":
        cols = parsed.columns;
        out.columns = cols;
        break;
      case "invalid":
        out.invalid.push({ line: parsed.line, reason: parsed.reason });
        break;
      case "blank":
        break;
    }
  }
  return out;
}

/**
 * Why a line with a uuid is still no valid reading: a value says the GPU is lost, or not
 * one of utilization, memory and power could be read.
 */
function lineError(cells: readonly string[], r: GpuReading): string | undefined {
  const lost = cells.find((c) => /^\[?gpu is lost\]?$/i.test(c.trim()));
  if (lost !== undefined) return "GPU is lost";
  if (r.util === undefined && r.memUsedBytes === undefined && r.memTotalBytes === undefined && r.powerW === undefined) {
    const placeholder = cells.find((c) => isMissing(c) && c.trim() !== "[N/A]" && c.trim() !== "");
    return `nvidia-smi gave no utilization, memory or power value${placeholder ? ` (${placeholder.trim()})` : ""}`;
  }
  return undefined;
}

function canonical(field: string): string {
  return ALIASES[field] ?? field;
}

/** nvidia-smi separates values with ", " and never quotes them. */
function splitCells(line: string): string[] {
  return line.split(",").map((c) => c.trim());
}

function stripEol(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}
