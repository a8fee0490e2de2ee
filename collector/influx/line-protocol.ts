/**
 * `gpu_window` points in InfluxDB 1.x line protocol, one line per GPU window (and
 * `gpu_owner_window` points for its owners, see HostLineEncoder):
 *
 *   gpu_window,gpu=0,host=h1,model=NVIDIA\ H100,site=dc1,uuid=GPU-… observed_s=10,…,processes_max=1i 1709251200000
 *
 * The row of a board in MIG mode (GpuWindow.mig_board) is a `mig_board_window` point instead,
 * never a `gpu_window` or `gpu_owner_window` one: the tags of a whole GPU (`host`, `gpu`,
 * `uuid`, `model`, the host's labels) and the board's own fields `observed_s`,
 * `unavailable_s`, `power_w`, `power_max_w`, `power_floor_w`, `power_limit_w` and
 * `mem_total_bytes` (an integer), each omitted where the agent did not have it; the same
 * timestamp, so it too overwrites itself when sent again.
 *
 * Tags: `host`, `gpu` (index), `uuid`, `model`, for a MIG instance `parent_uuid` and
 * `mig_profile`, and the host's configured labels, sorted by
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
import { windowOwnerGroups, type OwnerLabel, type OwnerSeconds } from "../owner-ledger.js";
import { MEASUREMENT_BOARD_WINDOW, MEASUREMENT_OWNER_WINDOW, MEASUREMENT_WINDOW } from "./schema.js";

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
  if (!Number.isFinite(x))
    throw new TrueidleError("bad_input", `field ${field} is ${x}; line protocol takes finite numbers only`);
  return String(x);
}

function checkedTag(key: string, value: string): string {
  const problem = tagValueProblem(value);
  if (problem) throw new TrueidleError("bad_input", `tag ${key} ${JSON.stringify(value.slice(0, 80))} ${problem}`);
  return escapeTag(value);
}

/** Tags of one GPU that come from the window itself. */
const GPU_TAG_KEYS = ["gpu", "uuid", "model", "parent_uuid", "mig_profile"] as const;

/**
 * Encodes the windows of one host (one agent stream). The host's tags are checked and
 * escaped once; each GPU's whole tag set is cached by (index, uuid, model), so the
 * steady state costs one field string per window.
 *
 * With `ownerLabels`, a window's owners also become `gpu_owner_window` points (DESIGN
 * "Public names"): one per owner group of the window (owners that share the values of the
 * configured owner fields are one, see windowOwnerGroups), tagged like the window (host,
 * gpu, uuid, model, the host's labels, so a report can mix owner fields with any of them)
 * plus the owner fields that are not empty, with the nine seconds fields of the owner's
 * share of the window. Owners with none of the configured fields are not written.
 */
export class HostLineEncoder {
  /** Host-level tags, sorted by key, escaped: [key, "key=value"]. */
  private readonly hostTags: ReadonlyArray<readonly [string, string]>;
  private readonly cache = new Map<string, string>();
  /** Series keys of board rows, apart: a board's uuid is a whole GPU's once it leaves MIG mode. */
  private readonly boardCache = new Map<string, string>();
  private static readonly MAX_CACHED = 1024;

  /** Throws a bad_input error when the host name or a label cannot be stored exactly. */
  constructor(
    host: string,
    labels: Readonly<Record<string, string>>,
    private readonly ownerLabels: readonly OwnerLabel[] = [],
  ) {
    const tags: Array<readonly [string, string]> = [["host", `host=${checkedTag("host", host)}`]];
    for (const [key, value] of Object.entries(labels)) {
      if (key === "host" || (GPU_TAG_KEYS as readonly string[]).includes(key)) {
        throw new TrueidleError("bad_input", `label ${key} would replace trueidle's own tag of that name`);
      }
      if (key.length === 0 || CONTROL_RE.test(key) || key.endsWith("\\"))
        throw new TrueidleError("bad_input", `label key ${JSON.stringify(key)} cannot be a tag key`);
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

  /**
   * The window's point, without a trailing newline: `gpu_window`, or `mig_board_window` for a
   * board's row. Throws bad_input on a value line protocol cannot carry.
   */
  line(w: GpuWindow): string {
    if (w.migBoard) return `${this.boardSeriesKey(w)} ${boardFields(w)} ${w.startMs}`;
    return `${this.seriesKey(w)} ${fields(w)} ${w.startMs}`;
  }

  /**
   * Appends the window's `gpu_owner_window` lines to `out` and returns how many; none
   * without owner labels. An owner value line protocol cannot carry throws bad_input
   * (validation refuses such values first).
   */
  ownerLines(w: GpuWindow, out: string[]): number {
    // A board's row has no owners (validate.ts): its instances are the GPUs that do.
    if (this.ownerLabels.length === 0 || w.owners.length === 0 || w.migBoard) return 0;
    const groups = windowOwnerGroups(this.ownerLabels, w.owners);
    if (groups.length === 0) return 0;
    const gpuTags = this.gpuTags(w);
    for (const g of groups) {
      const tags = [...gpuTags];
      this.ownerLabels.forEach((label, i) => {
        const v = g.values[i] ?? "";
        if (v !== "") tags.push([label, `${label}=${checkedTag(label, v)}`]);
      });
      out.push(`${seriesOf(MEASUREMENT_OWNER_WINDOW, tags)} ${ownerFields(g.seconds)} ${w.startMs}`);
    }
    return groups.length;
  }

  /** The tags of a whole GPU, and of a board's row: the host's, gpu, uuid and model. */
  private deviceTags(w: GpuWindow): Array<readonly [string, string]> {
    const tags: Array<readonly [string, string]> = [
      ...this.hostTags,
      ["gpu", `gpu=${w.index}`],
      ["uuid", `uuid=${checkedTag("uuid", w.uuid)}`],
    ];
    if (w.model !== "") tags.push(["model", `model=${checkedTag("model", w.model)}`]);
    return tags;
  }

  private gpuTags(w: GpuWindow): Array<readonly [string, string]> {
    const tags = this.deviceTags(w);
    // A MIG instance: its board and profile, so the report groups and joins by them.
    if (w.parentUuid !== "") {
      tags.push(["parent_uuid", `parent_uuid=${checkedTag("parent_uuid", w.parentUuid)}`]);
      tags.push(["mig_profile", `mig_profile=${checkedTag("mig_profile", w.migProfile)}`]);
    }
    return tags;
  }

  private seriesKey(w: GpuWindow): string {
    const cacheKey = `${w.index}\u0000${w.uuid}\u0000${w.model}\u0000${w.parentUuid}\u0000${w.migProfile}`;
    const hit = this.cache.get(cacheKey);
    if (hit !== undefined) return hit;
    const key = seriesOf(MEASUREMENT_WINDOW, this.gpuTags(w));
    if (this.cache.size >= HostLineEncoder.MAX_CACHED) this.cache.clear();
    this.cache.set(cacheKey, key);
    return key;
  }

  private boardSeriesKey(w: GpuWindow): string {
    const cacheKey = `${w.index}\u0000${w.uuid}\u0000${w.model}`;
    const hit = this.boardCache.get(cacheKey);
    if (hit !== undefined) return hit;
    const key = seriesOf(MEASUREMENT_BOARD_WINDOW, this.deviceTags(w));
    if (this.boardCache.size >= HostLineEncoder.MAX_CACHED) this.boardCache.clear();
    this.boardCache.set(cacheKey, key);
    return key;
  }
}

/** `measurement,k1=v1,k2=v2…` with the tags sorted by key (InfluxDB's own order). */
function seriesOf(measurement: string, tags: Array<readonly [string, string]>): string {
  tags.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let key = measurement;
  for (const [, pair] of tags) key += `,${pair}`;
  return key;
}

function ownerFields(s: OwnerSeconds): string {
  return (
    `observed_s=${float(s.observedS, "observed_s")}` +
    `,free_idle_s=${float(s.freeIdleS, "free_idle_s")}` +
    `,held_idle_s=${float(s.heldIdleS, "held_idle_s")}` +
    `,busy_phantom_s=${float(s.busyPhantomS, "busy_phantom_s")}` +
    `,active_s=${float(s.activeS, "active_s")}` +
    `,unavailable_s=${float(s.unavailableS, "unavailable_s")}` +
    `,reported_idle_s=${float(s.reportedIdleS, "reported_idle_s")}` +
    `,reported_busy_s=${float(s.reportedBusyS, "reported_busy_s")}` +
    `,real_busy_s=${float(s.realBusyS, "real_busy_s")}`
  );
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

/** The fields of a board's row: its own figures only (see the top of this file). */
function boardFields(w: GpuWindow): string {
  let s = `observed_s=${float(w.observedS, "observed_s")},unavailable_s=${float(w.unavailableS, "unavailable_s")}`;
  if (w.powerMeanW !== undefined) s += `,power_w=${float(w.powerMeanW, "power_w")}`;
  if (w.powerMaxW !== undefined) s += `,power_max_w=${float(w.powerMaxW, "power_max_w")}`;
  if (w.powerFloorW !== undefined) s += `,power_floor_w=${float(w.powerFloorW, "power_floor_w")}`;
  if (w.powerLimitW !== undefined) s += `,power_limit_w=${float(w.powerLimitW, "power_limit_w")}`;
  if (w.memTotalBytes !== undefined) s += `,mem_total_bytes=${w.memTotalBytes}i`;
  return s;
}

/**
 * One `gpu_window` line (`mig_board_window` for a board's row) for a window of `host` with the host's configured labels.
 * For many windows of one host, a `HostLineEncoder` does the host's part once.
 */
export function windowToLine(host: string, labels: Readonly<Record<string, string>>, w: GpuWindow): string {
  return new HostLineEncoder(host, labels).line(w);
}
