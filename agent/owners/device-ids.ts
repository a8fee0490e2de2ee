/**
 * Device ids as schedulers name GPUs, matched to the GPU uuid trueidle keys readings by.
 * Pure: fed a string and the host's index → uuid map, it says which GPU and in what form.
 *
 * Forms seen in the kubelet's pod-resources answers (what the device plugin advertised):
 * - `GPU-<uuid>`: NVIDIA's k8s-device-plugin, default `--device-id-strategy=uuid`.
 * - `MIG-<uuid>` and the pre-R470 `MIG-GPU-<uuid>/<gi>/<ci>`: a MIG instance, which is a
 *   GPU of its own to trueidle (DESIGN "MIG").
 * - `<uuid>::<n>`: replica n of a time-sliced GPU (k8s-device-plugin sharing.timeSlicing).
 * - `<uuid><suffix>`: a uuid some platforms extend with their own suffix (a replica or a
 *   vGPU slot); the leading uuid names the GPU.
 * - `<n>`: the GPU's index (k8s-device-plugin `--device-id-strategy=index`).
 * - `nvidia<n>` and `nvidia<n>/vgpu<m>`: GKE's device plugin, whole and time-shared GPUs.
 * Forms that name no GPU the host can resolve: `<n>:<m>` (a MIG instance by index), GKE's
 * `nvidia<n>/gi<m>` (a MIG instance by index), an index the host has no GPU for, and
 * anything else. Callers count and log those once per form.
 */

/** The form a device id was written in; the first group names a GPU, the rest do not. */
export const MATCHED_DEVICE_ID_FORMS = [
  "uuid",
  "mig_uuid",
  "time_sliced",
  "uuid_suffix",
  "index",
  "gke_index",
  "gke_time_shared",
] as const;
export const UNMATCHED_DEVICE_ID_FORMS = ["mig_index", "gke_mig", "index_unknown", "unknown"] as const;
export type MatchedDeviceIdForm = (typeof MATCHED_DEVICE_ID_FORMS)[number];
export type UnmatchedDeviceIdForm = (typeof UNMATCHED_DEVICE_ID_FORMS)[number];
export type DeviceIdForm = MatchedDeviceIdForm | UnmatchedDeviceIdForm;

export type DeviceIdMatch =
  | { uuid: string; form: MatchedDeviceIdForm }
  | { uuid: undefined; form: UnmatchedDeviceIdForm };

/** What each form is, for a log line that names it. */
export const DEVICE_ID_FORM_TEXT: Readonly<Record<DeviceIdForm, string>> = {
  uuid: "a GPU uuid (GPU-…)",
  mig_uuid: "a MIG instance uuid (MIG-…)",
  time_sliced: "a time-sliced replica (<uuid>::<n>)",
  uuid_suffix: "a uuid with a platform's suffix",
  index: "a GPU index",
  gke_index: "a GKE device name (nvidia<n>)",
  gke_time_shared: "a GKE time-shared device (nvidia<n>/vgpu<m>)",
  mig_index: "a MIG instance by index (<gpu>:<mig>), which names no uuid",
  gke_mig: "a GKE MIG instance (nvidia<n>/gi<m>), which names no uuid",
  index_unknown: "a GPU index this host has no GPU for",
  unknown: "a form trueidle does not know",
};

const HEX_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
/** A GPU, MIG or pre-R470 MIG uuid at the start of a device id; group 1 is the uuid, group 2 the rest. */
const UUID_PREFIX_RE = new RegExp(
  `^((?:GPU-${HEX_UUID})|(?:MIG-GPU-${HEX_UUID}/\\d+/\\d+)|(?:MIG-${HEX_UUID}))(.*)$`,
  "s",
);
const TIME_SLICED_RE = /^::\d+$/;
const INDEX_RE = /^\d{1,4}$/;
const MIG_INDEX_RE = /^\d{1,4}:\d{1,4}$/;
const GKE_RE = /^nvidia(\d{1,4})(?:\/vgpu\d+)?$/;
const GKE_MIG_RE = /^nvidia\d{1,4}\/gi\d+(?:\/vgpu\d+)?$/;

/** True for a string that is a whole GPU or MIG uuid, nothing before or after it. */
export function isGpuUuid(text: string): boolean {
  const m = UUID_PREFIX_RE.exec(text);
  return m !== null && m[2] === "";
}

/**
 * The GPU a device id names. `gpuByIndex` resolves index forms; without it (or without that
 * index in it) an index form is `index_unknown`.
 */
export function matchDeviceId(id: string, gpuByIndex?: ReadonlyMap<number, string>): DeviceIdMatch {
  const u = UUID_PREFIX_RE.exec(id);
  if (u !== null) {
    const uuid = u[1] as string;
    const rest = u[2] ?? "";
    if (rest === "") return { uuid, form: uuid.startsWith("MIG-") ? "mig_uuid" : "uuid" };
    if (TIME_SLICED_RE.test(rest)) return { uuid, form: "time_sliced" };
    // A hex digit or a dash straight after the uuid would make it a longer, different id.
    if (/^[0-9a-fA-F]/.test(rest)) return { uuid: undefined, form: "unknown" };
    return { uuid, form: "uuid_suffix" };
  }
  if (INDEX_RE.test(id)) return byIndex(Number(id), "index", gpuByIndex);
  const g = GKE_RE.exec(id);
  if (g !== null) return byIndex(Number(g[1]), id.includes("/") ? "gke_time_shared" : "gke_index", gpuByIndex);
  if (MIG_INDEX_RE.test(id)) return { uuid: undefined, form: "mig_index" };
  if (GKE_MIG_RE.test(id)) return { uuid: undefined, form: "gke_mig" };
  return { uuid: undefined, form: "unknown" };
}

function byIndex(
  index: number,
  form: "index" | "gke_index" | "gke_time_shared",
  gpuByIndex: ReadonlyMap<number, string> | undefined,
): DeviceIdMatch {
  const uuid = gpuByIndex?.get(index);
  return uuid === undefined ? { uuid: undefined, form: "index_unknown" } : { uuid, form };
}
