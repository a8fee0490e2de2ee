/**
 * `gpu_window` points in InfluxDB 1.x line protocol, one line per GPU window:
 *
 *   gpu_window,gpu=0,host=h1,model=NVIDIA\ H100,site=dc1,uuid=GPU-… observed_s=10,…,processes_max=1i 1709251200000
 *
 * Tags: `host`, `gpu` (index), `uuid`, `model` and the host's configured labels, sorted by
 * key (InfluxDB's own order, so it need not sort them). Fields as DESIGN.md names them;
 * `mem_used_max_bytes` and `processes_max` are integers (`i`), the rest floats. A value
 * the agent did not have (no power reading) omits its field; it is never written as 0.
 * The timestamp is the window start in milliseconds (write with `precision=ms`), so a
 * window sent again is the same point (same series, same time) and overwrites itself.
 *
 * Escaping, exactly as InfluxDB 1.x parses tags (models/points.go): in a tag key or value
 * `,`, `=` and space are escaped with a backslash; a backslash is written as it is (1.x
 * keeps `\\` as two backslashes, so escaping it would change the value); everything
 * else, quotes and non-ASCII included, is written as UTF-8 unchanged. Two things cannot
 * be stored: control characters (a newline ends the line) and a trailing backslash (it
 * would escape the separator after it). trueidle refuses both at validation — the
 * collector rejects a Hello or window carrying them — rather than storing something other
 * than what the agent sent; `windowToLine` throws on them as a last guard.
 */
import { TrueidleError } from "../../common/errors.js";
import type { GpuWindow } from "../../gen/trueidle/v1/ingest_pb.js";
import { MEASUREMENT_WINDOW } from "./schema.js";

// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const TAG_SPECIAL_RE = /[,= ]/g;
const TAG_SPECIAL_TEST = /[,= ]/;

/** Why `value` cannot be stored exactly as an InfluxDB 1.x tag value, or undefined when it can. */
export function tagValueProblem(value: string): string | undefined {
  if (value.length === 0) return "is empty";
  if (CONTROL_RE.test(value)) return "holds control characters (such as a newline), which line protocol cannot carry";
  if (value.endsWith("\\")) return "ends with a backslash, which line protocol cannot carry in a tag";
  return undefined;
}

/** A tag key or value escaped for line protocol (`,` `=` space); the caller checks `tagValueProblem` first. */
export function escapeTag(value: string): string {
  return TAG_SPECIAL_TEST.test(value) ? value.replace(TAG_SPECIAL_RE, "\\$&") : value;
}

/** A measurement name escaped for line protocol (`,` and space). */
export function escapeMeasurement(name: string): string {
  return name.replace(/[, ]/g, "\\$&");
}

/** A float field value: JavaScript's shortest round-trip form, which InfluxDB parses back exactly. */
function float(x: number, field: string): string {
  if (!Number.isFinite(x)) throw new TrueidleError("bad_input", `field ${field} is ${x}; line protocol takes finite numbers only`);
  return String(x);
}

function checkedTag(key: string, value: string): string {
  const problem = tagValueProblem(value);
  if (problem) throw new TrueidleError("bad_input", `tag ${key} ${JSON.stringify(value.slice(0, 80))} ${problem}`);
  return escapeTag(value);
}

/** Tags of one GPU that come from the window itself. */
const GPU_TAG_KEYS = ["gpu", "uuid", "model"] as const;

/**
 * Encodes the windows of one host (one agent stream). The host's tags are checked and
 * escaped once; each GPU's whole tag set is cached by (index, uuid, model), so the
 * steady state costs one field string per window.
 */
export class HostLineEncoder {
  /** Host-level tags, sorted by key, escaped: [key, "key=value"]. */
  private readonly hostTags: ReadonlyArray<readonly [string, string]>;
  private readonly cache = new Map<string, string>();
  private static readonly MAX_CACHED = 1024;

  /** Throws a bad_input error when the host name or a label cannot be stored exactly. */
  constructor(host: string, labels: Readonly<Record<string, string>>) {
    const tags: Array<readonly [string, string]> = [["host", `host=${checkedTag("host", host)}`]];
    for (const [key, value] of Object.entries(labels)) {
      if (key === "host" || (GPU_TAG_KEYS as readonly string[]).includes(key)) {
        throw new TrueidleError("bad_input", `label ${key} would replace trueidle's own tag of that name`);
      }
      if (key.length === 0 || CONTROL_RE.test(key) || key.endsWith("\\")) throw new TrueidleError("bad_input", `label key ${JSON.stringify(key)} cannot be a tag key`);
      tags.push([key, `${escapeTag(key)}=${checkedTag(key, value)}`]);
    }
    this.hostTags = tags;
  }

  /** The window field that cannot be stored as a tag (`uuid` or `model`), or undefined. */
  static windowProblem(w: GpuWindow): "uuid" | "model" | undefined {
    if (tagValueProblem(w.uuid) !== undefined) return "uuid";
    // An empty model omits the tag; InfluxDB reads a missing tag as "".
    if (w.model !== "" && tagValueProblem(w.model) !== undefined) return "model";
    return undefined;
  }

  /** One line, without a trailing newline. Throws bad_input on a value line protocol cannot carry. */
  line(w: GpuWindow): string {
    return `${this.seriesKey(w)} ${fields(w)} ${w.startMs}`;
  }

  private seriesKey(w: GpuWindow): string {
    const cacheKey = `${w.index}\u0000${w.uuid}\u0000${w.model}`;
    const hit = this.cache.get(cacheKey);
    if (hit !== undefined) return hit;
    const tags: Array<readonly [string, string]> = [...this.hostTags, ["gpu", `gpu=${w.index}`], ["uuid", `uuid=${checkedTag("uuid", w.uuid)}`]];
    if (w.model !== "") tags.push(["model", `model=${checkedTag("model", w.model)}`]);
    tags.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    let key = MEASUREMENT_WINDOW;
    for (const [, pair] of tags) key += `,${pair}`;
    if (this.cache.size >= HostLineEncoder.MAX_CACHED) this.cache.clear();
    this.cache.set(cacheKey, key);
    return key;
  }
}

function fields(w: GpuWindow): string {
  let s =
    `observed_s=${float(w.observedS, "observed_s")}` +
    `,free_idle_s=${float(w.freeIdleS, "free_idle_s")}` +
    `,held_idle_s=${float(w.heldIdleS, "held_idle_s")}` +
    `,busy_phantom_s=${float(w.busyPhantomS, "busy_phantom_s")}` +
    `,active_s=${float(w.activeS, "active_s")}` +
    `,unavailable_s=${float(w.unavailableS, "unavailable_s")}` +
    `,reported_idle_s=${float(w.reportedIdleS, "reported_idle_s")}` +
    `,reported_busy_s=${float(w.reportedBusyS, "reported_busy_s")}` +
    `,real_busy_s=${float(w.realBusyS, "real_busy_s")}`;
  if (w.powerMeanW !== undefined) s += `,power_w=${float(w.powerMeanW, "power_w")}`;
  if (w.powerMaxW !== undefined) s += `,power_max_w=${float(w.powerMaxW, "power_max_w")}`;
  if (w.memUsedMaxBytes !== undefined) s += `,mem_used_max_bytes=${w.memUsedMaxBytes}i`;
  s += `,processes_max=${w.processesMax}i`;
  return s;
}

/**
 * One `gpu_window` line for a window of `host` with the host's configured labels.
 * For many windows of one host, a `HostLineEncoder` does the host's part once.
 */
export function windowToLine(host: string, labels: Readonly<Record<string, string>>, w: GpuWindow): string {
  return new HostLineEncoder(host, labels).line(w);
}
