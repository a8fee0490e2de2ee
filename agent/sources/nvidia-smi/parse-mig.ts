/**
 * Pure parsers of what nvidia-smi prints about MIG (Multi-Instance GPU): the board list
 * (`nvidia-smi -L`), the XML report (`nvidia-smi -q -x`) and the text report (`nvidia-smi -q`).
 *
 * Contract shared by all three: they never throw. Empty, garbled, truncated or unknown
 * input yields whatever could be read (often `[]`); lines and tags they do not know are
 * skipped. Values nvidia-smi could not read (`N/A`, `[Not Supported]`, …) are `undefined`,
 * never 0 (see values.ts). Memory is in bytes.
 *
 * How the outputs fit together, as the real captures in the tests show:
 * - `-L` gives each MIG device's UUID and its index under the board (`Device  N`); that
 *   index is the `<index>` of `<mig_device>` in `-q -x` and `Index` of `MIG Device` in `-q`,
 *   which carry the GPU instance (GI) and compute instance (CI) ids.
 * - Processes are listed under the physical board with their GI and CI ids (`-q`, `-q -x`);
 *   `--query-compute-apps` lists them with the board UUID only. `instanceProcesses` picks
 *   those of one instance.
 */
import { parseBytes, parseInteger, parseText } from "./values.js";

/** One MIG device line of `nvidia-smi -L`. */
export interface ListedMigDevice {
  /** Profile as printed, e.g. "3g.40gb", "1g.10gb+me", "1c.3g.20gb". */
  profile: string;
  /** Index under its board (`Device  0`): the `<index>` of the matching `<mig_device>`. */
  deviceIndex: number;
  /** As printed: `MIG-<uuid>` (R470 and later) or `MIG-GPU-<board uuid>/<gi>/<ci>` (R450, R460). */
  uuid: string;
  /** GPU instance id; only the R450/R460 form carries it (inside the uuid). */
  gpuInstanceId?: number;
  /** Compute instance id; only the R450/R460 form carries it (inside the uuid). */
  computeInstanceId?: number;
}

/** One board of `nvidia-smi -L`. */
export interface ListedGpu {
  /** nvidia-smi's index (`GPU 0:`). */
  index: number;
  name: string;
  /** `GPU-…`; undefined when the line carries none. */
  uuid: string | undefined;
  /** In printed order; empty for a board without MIG. */
  migDevices: ListedMigDevice[];
}

/** MIG mode as printed ("Enabled", "Disabled"); undefined where the board has none (N/A). */
export interface MigMode {
  current: string | undefined;
  /** The mode after the next GPU reset. */
  pending: string | undefined;
}

/** A MIG device: one compute instance (CI) inside a GPU instance (GI). */
export interface MigDevice {
  /** Index under the board; the `deviceIndex` of `-L`. */
  index: number | undefined;
  /** `MIG-…`, where the report prints it (`<uuid>` of `<mig_device>` in some drivers' XML). */
  uuid?: string | undefined;
  gpuInstanceId: number | undefined;
  computeInstanceId: number | undefined;
  /** Streaming multiprocessors of the device. */
  multiprocessorCount: number | undefined;
  /** Framebuffer memory of the GPU instance, shared by its compute instances. */
  memoryTotalBytes: number | undefined;
  memoryUsedBytes: number | undefined;
}

/** A process on a board, with the MIG instance it runs in. */
export interface MigProcess {
  pid: number;
  name: string | undefined;
  /** "C" (compute), "G" (graphics) or "C+G". */
  type: string | undefined;
  /** Undefined when the board is not in MIG mode (N/A) or the driver predates MIG. */
  gpuInstanceId: number | undefined;
  computeInstanceId: number | undefined;
  usedMemoryBytes: number | undefined;
}

/** One physical board of `nvidia-smi -q -x` or `nvidia-smi -q`. */
export interface MigBoard {
  /** Position in the report; nvidia-smi prints boards in index order. */
  index: number;
  /** `domain:bus:device.function`, e.g. "00000000:01:00.0". */
  pciBusId: string | undefined;
  name: string | undefined;
  uuid: string | undefined;
  /** The `/dev/nvidiaN` number; not always equal to `index`. */
  minorNumber: number | undefined;
  migMode: MigMode;
  /** In printed order; empty when MIG is off or unsupported. */
  migDevices: MigDevice[];
  /** All processes of the board, in printed order. */
  processes: MigProcess[];
}

/**
 * The processes running in one GPU instance; with `computeInstanceId`, only those of that
 * compute instance.
 */
export function instanceProcesses(board: MigBoard, gpuInstanceId: number, computeInstanceId?: number): MigProcess[] {
  return board.processes.filter(
    (p) =>
      p.gpuInstanceId === gpuInstanceId &&
      (computeInstanceId === undefined || p.computeInstanceId === computeInstanceId),
  );
}

// ---------------------------------------------------------------------------------------
// nvidia-smi -L

const GPU_LINE = /^GPU\s+(\d+):(?:\s+(.*))?$/;
const UUID_PART = /^\(UUID:\s*([^\s)]+)\s*\)$/;
const MIG_LINE = /^MIG\s+(\S+)\s+Device\s+(\d+):\s*\(UUID:\s*([^\s)]+)\s*\)$/;
const LEGACY_MIG_UUID = /^MIG-GPU-[0-9A-Fa-f-]+\/(\d+)\/(\d+)$/;

/**
 * `nvidia-smi -L`. A MIG line belongs to the board line above it; MIG lines before any
 * board, and lines of any other form, are skipped.
 */
export function parseGpuList(text: string): ListedGpu[] {
  const boards: ListedGpu[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const gpu = GPU_LINE.exec(line);
    if (gpu) {
      const rest = gpu[2] ?? "";
      const at = rest.lastIndexOf("(UUID:");
      const uuid = at < 0 ? undefined : UUID_PART.exec(rest.slice(at))?.[1];
      const name = (uuid === undefined ? rest : rest.slice(0, at)).trimEnd();
      if (name === "" && uuid === undefined) continue;
      boards.push({ index: Number(gpu[1]), name, uuid, migDevices: [] });
      continue;
    }
    const mig = MIG_LINE.exec(line);
    const board = boards.at(-1);
    if (!mig || !board) continue;
    const device: ListedMigDevice = { profile: mig[1]!, deviceIndex: Number(mig[2]), uuid: mig[3]! };
    const legacy = LEGACY_MIG_UUID.exec(device.uuid);
    if (legacy) {
      device.gpuInstanceId = Number(legacy[1]);
      device.computeInstanceId = Number(legacy[2]);
    }
    board.migDevices.push(device);
  }
  return boards;
}

// ---------------------------------------------------------------------------------------
// nvidia-smi -q -x

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

/**
 * `nvidia-smi -q -x`, with or without the embedded DTD (`--dtd`). A report cut short
 * yields the boards, devices and processes read before the cut.
 */
export function parseMigXml(xml: string): MigBoard[] {
  const doc = readXml(xml);
  const log = doc.children.find((c) => c.name === "nvidia_smi_log") ?? doc;
  return log.children
    .filter((c) => c.name === "gpu")
    .map((gpu, index) => ({
      index,
      pciBusId: parseText(gpu.attrs["id"] ?? textAt(gpu, "pci/pci_bus_id")),
      name: parseText(textAt(gpu, "product_name")),
      uuid: parseText(textAt(gpu, "uuid")),
      minorNumber: parseInteger(textAt(gpu, "minor_number")),
      migMode: {
        current: parseText(textAt(gpu, "mig_mode/current_mig")),
        pending: parseText(textAt(gpu, "mig_mode/pending_mig")),
      },
      migDevices: elementsAt(gpu, "mig_devices/mig_device").map((d) => ({
        index: parseInteger(textAt(d, "index")),
        uuid: parseText(textAt(d, "uuid")),
        gpuInstanceId: parseInteger(textAt(d, "gpu_instance_id")),
        computeInstanceId: parseInteger(textAt(d, "compute_instance_id")),
        multiprocessorCount: parseInteger(textAt(d, "device_attributes/shared/multiprocessor_count")),
        memoryTotalBytes: parseBytes(textAt(d, "fb_memory_usage/total")),
        memoryUsedBytes: parseBytes(textAt(d, "fb_memory_usage/used")),
      })),
      processes: elementsAt(gpu, "processes/process_info").flatMap((p) => {
        const pid = parseInteger(textAt(p, "pid"));
        if (pid === undefined) return [];
        return [
          {
            pid,
            name: parseText(textAt(p, "process_name")),
            type: parseText(textAt(p, "type")),
            gpuInstanceId: parseInteger(textAt(p, "gpu_instance_id")),
            computeInstanceId: parseInteger(textAt(p, "compute_instance_id")),
            usedMemoryBytes: parseBytes(textAt(p, "used_memory")),
          },
        ];
      }),
    }));
}

/** Elements at a slash-separated path of child names (every match at every step). */
function elementsAt(el: XmlElement, path: string): XmlElement[] {
  let level = [el];
  for (const name of path.split("/")) level = level.flatMap((e) => e.children.filter((c) => c.name === name));
  return level;
}

function textAt(el: XmlElement, path: string): string | undefined {
  return elementsAt(el, path)[0]?.text;
}

/**
 * A forgiving reader for the XML nvidia-smi writes: elements, attributes, text and the five
 * entities; declarations, DOCTYPE (with an internal DTD), comments and processing
 * instructions are skipped. An end tag closes the nearest open element of its name and is
 * ignored when none is open; whatever is still open at the end is closed there.
 */
function readXml(xml: string): XmlElement {
  const root: XmlElement = { name: "#document", attrs: {}, children: [], text: "" };
  const stack = [root];
  const top = (): XmlElement => stack[stack.length - 1]!;
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf("<", i);
    if (lt < 0) {
      top().text += decodeEntities(xml.slice(i));
      break;
    }
    top().text += decodeEntities(xml.slice(i, lt));
    if (xml.startsWith("<!--", lt)) {
      i = endAfter(xml, "-->", lt + 4);
    } else if (xml.startsWith("<![CDATA[", lt)) {
      const end = xml.indexOf("]]>", lt + 9);
      top().text += xml.slice(lt + 9, end < 0 ? xml.length : end);
      i = end < 0 ? xml.length : end + 3;
    } else if (xml.startsWith("<?", lt)) {
      i = endAfter(xml, "?>", lt + 2);
    } else if (xml.startsWith("<!", lt)) {
      i = declarationEnd(xml, lt + 2);
    } else {
      const gt = tagEnd(xml, lt + 1);
      if (gt < 0) break;
      const body = xml.slice(lt + 1, gt);
      i = gt + 1;
      if (body.startsWith("/")) {
        const name = body.slice(1).trim();
        for (let k = stack.length - 1; k > 0; k--) {
          if (stack[k]!.name === name) {
            stack.length = k;
            break;
          }
        }
        continue;
      }
      const selfClosing = body.endsWith("/");
      const m = /^([^\s/>]+)([\s\S]*)$/.exec(selfClosing ? body.slice(0, -1) : body);
      if (!m) continue;
      const el: XmlElement = { name: m[1]!, attrs: readAttributes(m[2]!), children: [], text: "" };
      top().children.push(el);
      if (!selfClosing) stack.push(el);
    }
  }
  return root;
}

function endAfter(xml: string, marker: string, from: number): number {
  const at = xml.indexOf(marker, from);
  return at < 0 ? xml.length : at + marker.length;
}

/** End of `<!DOCTYPE …>`, stepping over an internal subset `[ … ]` and its comments and quotes. */
function declarationEnd(xml: string, from: number): number {
  let depth = 0;
  for (let j = from; j < xml.length; j++) {
    const c = xml[j];
    if (c === '"' || c === "'") {
      const close = xml.indexOf(c, j + 1);
      if (close < 0) return xml.length;
      j = close;
    } else if (xml.startsWith("<!--", j)) {
      j = endAfter(xml, "-->", j + 4) - 1;
    } else if (c === "[") depth++;
    else if (c === "]") depth = Math.max(0, depth - 1);
    else if (c === ">" && depth === 0) return j + 1;
  }
  return xml.length;
}

/** Index of the `>` that ends a tag, skipping quoted attribute values; -1 when cut short. */
function tagEnd(xml: string, from: number): number {
  for (let j = from; j < xml.length; j++) {
    const c = xml[j];
    if (c === '"' || c === "'") {
      const close = xml.indexOf(c, j + 1);
      if (close < 0) return -1;
      j = close;
    } else if (c === ">") return j;
  }
  return -1;
}

/** `name="value"` pairs; a name without a quoted value is skipped. Scans once, left to right. */
function readAttributes(source: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  const space = (k: number): boolean => k < source.length && /\s/.test(source[k]!);
  let j = 0;
  while (j < source.length) {
    while (space(j)) j++;
    const nameStart = j;
    while (j < source.length && !space(j) && source[j] !== "=") j++;
    const name = source.slice(nameStart, j);
    while (space(j)) j++;
    if (source[j] !== "=") continue;
    j++;
    while (space(j)) j++;
    const quote = source[j];
    if (quote !== '"' && quote !== "'") continue;
    const close = source.indexOf(quote, j + 1);
    if (close < 0) break;
    if (name !== "") attrs[name] = decodeEntities(source.slice(j + 1, close));
    j = close + 1;
  }
  return attrs;
}

const NAMED_ENTITIES: Readonly<Record<string, string>> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  if (!s.includes("&")) return s;
  return s.replace(/&(#x[0-9A-Fa-f]+|#\d+|[A-Za-z]+);/g, (whole, ref: string) => {
    if (!ref.startsWith("#")) return NAMED_ENTITIES[ref] ?? whole;
    const code = ref[1] === "x" ? Number.parseInt(ref.slice(2), 16) : Number(ref.slice(1));
    return Number.isInteger(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
  });
}

// ---------------------------------------------------------------------------------------
// nvidia-smi -q

interface TextNode {
  key: string;
  value: string | undefined;
  indent: number;
  children: TextNode[];
}

const BOARD_HEADER = /^GPU\s+([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]+)\s*$/;
/** The ` : ` between a key and its value; keys never hold one, values may hold ":" ("09:00:44"). */
const SEPARATOR = /\s:(?=\s|$)/;
const FB_MEMORY = /^(shared )?fb memory usage$/;

/**
 * `nvidia-smi -q` (the text report). Sections are told apart by indentation only, and a
 * `MIG Device` block is found at any depth under its board. The captured layout (R590:
 * `MIG Device` right under the board, `Shared FB Memory Usage`) is read, and so would be
 * one that wraps the blocks in a `MIG Devices` section or says `FB Memory Usage`.
 */
export function parseMigTextQ(text: string): MigBoard[] {
  const boards: MigBoard[] = [];
  let root: TextNode | undefined;
  let stack: TextNode[] = [];
  const flush = (): void => {
    if (root) boards.push(boardFromText(root, boards.length));
    root = undefined;
  };
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    const body = line.trimStart();
    if (body === "") continue;
    const indent = line.length - body.length;
    if (indent === 0) {
      flush();
      const header = BOARD_HEADER.exec(body);
      if (header) {
        root = { key: header[1]!, value: undefined, indent: -1, children: [] };
        stack = [root];
      }
      continue;
    }
    if (!root) continue;
    const sep = SEPARATOR.exec(body);
    const key = sep ? body.slice(0, sep.index).trimEnd() : body;
    const value = sep ? body.slice(sep.index + 2).trimStart() : "";
    const node: TextNode = { key: key.toLowerCase(), value: value === "" ? undefined : value, indent, children: [] };
    while (stack.length > 1 && stack[stack.length - 1]!.indent >= indent) stack.pop();
    stack[stack.length - 1]!.children.push(node);
    stack.push(node);
  }
  flush();
  return boards;
}

function boardFromText(root: TextNode, index: number): MigBoard {
  const migMode = child(root, "mig mode");
  return {
    index,
    pciBusId: root.key,
    name: parseText(child(root, "product name")?.value),
    uuid: parseText(child(root, "gpu uuid")?.value),
    minorNumber: parseInteger(child(root, "minor number")?.value),
    migMode: {
      current: parseText(migMode && child(migMode, "current")?.value),
      pending: parseText(migMode && child(migMode, "pending")?.value),
    },
    migDevices: findAll(root, "mig device").map((d) => {
      const memory = d.children.find((c) => FB_MEMORY.test(c.key));
      return {
        index: parseInteger(child(d, "index")?.value),
        uuid: parseText(child(d, "uuid")?.value ?? child(d, "mig uuid")?.value),
        gpuInstanceId: parseInteger(child(d, "gpu instance id")?.value),
        computeInstanceId: parseInteger(child(d, "compute instance id")?.value),
        multiprocessorCount: parseInteger(findAll(d, "multiprocessor count")[0]?.value),
        memoryTotalBytes: parseBytes(memory && child(memory, "total")?.value),
        memoryUsedBytes: parseBytes(memory && child(memory, "used")?.value),
      };
    }),
    processes: processesFromText(child(root, "processes")),
  };
}

/**
 * The entries under `Processes`: each `Process ID` line takes the `GPU instance ID` and
 * `Compute instance ID` lines printed before it (drivers without MIG print none).
 */
function processesFromText(section: TextNode | undefined): MigProcess[] {
  const out: MigProcess[] = [];
  let gi: number | undefined;
  let ci: number | undefined;
  for (const node of section?.children ?? []) {
    if (node.key === "gpu instance id") gi = parseInteger(node.value);
    else if (node.key === "compute instance id") ci = parseInteger(node.value);
    else if (node.key === "process id") {
      const pid = parseInteger(node.value);
      if (pid !== undefined) {
        out.push({
          pid,
          name: parseText(child(node, "name")?.value),
          type: parseText(child(node, "type")?.value),
          gpuInstanceId: gi,
          computeInstanceId: ci,
          usedMemoryBytes: parseBytes(child(node, "used gpu memory")?.value),
        });
      }
      gi = undefined;
      ci = undefined;
    }
  }
  return out;
}

function child(node: TextNode, key: string): TextNode | undefined {
  return node.children.find((c) => c.key === key);
}

/** Descendants with this key, outermost first; the search does not go inside a match. */
function findAll(node: TextNode, key: string): TextNode[] {
  return node.children.flatMap((c) => (c.key === key ? [c] : findAll(c, key)));
}
