/**
 * The kubelet's pod-resources answers turned into owners per GPU uuid. Pure: fed decoded
 * messages, no I/O (pod-resources.ts calls the kubelet).
 */
import type { GpuOwner } from "../../common/types.js";
import { unsafeTextProblem } from "../../common/text-safety.js";
import type {
  AllocatableResourcesResponse,
  ListPodResourcesResponse,
} from "../../gen/k8s.io/kubelet/pkg/apis/podresources/v1/api_pb.js";
import { matchDeviceId, type MatchedDeviceIdForm, type UnmatchedDeviceIdForm } from "./device-ids.js";

/** Things in an answer trueidle cannot use, by kind; each is counted and logged once per kind. */
export type PodResourcesRejection = UnmatchedDeviceIdForm | "dra" | "bad_name";

export interface Rejected {
  count: number;
  /** The first one seen, for the log line. */
  example: string;
}

export interface ParseOptions {
  /** Index → uuid of the host's GPUs, for device ids that name a GPU by index. */
  gpuByIndex?: ReadonlyMap<number, string> | undefined;
  /** Resource names counted as NVIDIA GPUs besides the defaults (isNvidiaGpuResource). */
  extraResourceNames?: readonly string[] | undefined;
  /** Owners one GPU keeps at most; the rest are counted. */
  maxOwnersPerGpu: number;
}

export interface ParsedAllocations {
  byGpu: Map<string, GpuOwner[]>;
  pods: number;
  /** GPU device ids in the answer, by the form they were written in. */
  matched: Partial<Record<MatchedDeviceIdForm, number>>;
  rejected: Map<PodResourcesRejection, Rejected>;
  ownersDropped: number;
}

/** The NVIDIA DRA driver's name in a ResourceClaim's allocation. */
const NVIDIA_DRA_DRIVER = "gpu.nvidia.com";
/** Kubernetes object names are at most 253 characters (DNS subdomain). */
const MAX_NAME_LENGTH = 253;

/**
 * `nvidia.com/gpu`, its time-slicing rename `nvidia.com/gpu.shared`, and every MIG
 * resource `nvidia.com/mig-<profile>[.shared]` — the names NVIDIA's device plugin and the
 * GPU operator advertise — plus any the site names.
 */
export function isNvidiaGpuResource(name: string, extra: readonly string[] = []): boolean {
  return (
    name === "nvidia.com/gpu" ||
    name === "nvidia.com/gpu.shared" ||
    name.startsWith("nvidia.com/mig-") ||
    extra.includes(name)
  );
}

function reject(rejected: Map<PodResourcesRejection, Rejected>, kind: PodResourcesRejection, example: string): void {
  const r = rejected.get(kind);
  if (r === undefined) rejected.set(kind, { count: 1, example: example.slice(0, 120) });
  else r.count++;
}

/** A name fit to show, or undefined (counted) when the kubelet sent something no name can be. */
function safeName(value: string, rejected: Map<PodResourcesRejection, Rejected>): string | undefined {
  if (value === "") return undefined;
  if (value.length > MAX_NAME_LENGTH || unsafeTextProblem(value) !== undefined) {
    reject(rejected, "bad_name", JSON.stringify(value.slice(0, 60)));
    return undefined;
  }
  return value;
}

/** Owners per GPU from a List answer: one per pod container a GPU (or a replica of it) is allocated to. */
export function allocationsFromList(resp: ListPodResourcesResponse, opts: ParseOptions): ParsedAllocations {
  const byGpu = new Map<string, GpuOwner[]>();
  const keys = new Map<string, Set<string>>();
  const matched: Partial<Record<MatchedDeviceIdForm, number>> = {};
  const rejected = new Map<PodResourcesRejection, Rejected>();
  let ownersDropped = 0;
  for (const pod of resp.podResources) {
    const namespace = safeName(pod.namespace, rejected);
    const podName = safeName(pod.name, rejected);
    for (const c of pod.containers) {
      let owner: GpuOwner | undefined;
      const key = JSON.stringify([pod.namespace, pod.name, c.name]);
      const add = (uuid: string): void => {
        owner ??= { via: "pod_resources", namespace, pod: podName, container: safeName(c.name, rejected) };
        let seen = keys.get(uuid);
        let list = byGpu.get(uuid);
        if (seen === undefined || list === undefined) {
          seen = new Set();
          list = [];
          keys.set(uuid, seen);
          byGpu.set(uuid, list);
        }
        if (seen.has(key)) return;
        seen.add(key);
        if (list.length >= opts.maxOwnersPerGpu) ownersDropped++;
        else list.push(owner);
      };
      for (const d of c.devices) {
        if (!isNvidiaGpuResource(d.resourceName, opts.extraResourceNames)) continue;
        for (const id of d.deviceIds) {
          const m = matchDeviceId(id, opts.gpuByIndex);
          if (m.uuid === undefined) {
            reject(rejected, m.form, `${d.resourceName} ${JSON.stringify(id.slice(0, 80))}`);
            continue;
          }
          matched[m.form] = (matched[m.form] ?? 0) + 1;
          add(m.uuid);
        }
      }
      // A GPU allocated through Dynamic Resource Allocation is named by driver, pool and
      // device name; only the API server's ResourceSlices map those to a uuid, and the
      // agent asks the kubelet alone (no RBAC), so such claims are counted, not matched.
      for (const dr of c.dynamicResources) {
        for (const cr of dr.claimResources) {
          if (cr.driverName === NVIDIA_DRA_DRIVER)
            reject(rejected, "dra", `${dr.claimNamespace}/${dr.claimName} ${cr.poolName}/${cr.deviceName}`);
        }
      }
    }
  }
  return { byGpu, pods: resp.podResources.length, matched, rejected, ownersDropped };
}

/** The GPUs the kubelet can hand to pods (GetAllocatableResources), by uuid. */
export function allocatableGpus(
  resp: AllocatableResourcesResponse,
  opts: Omit<ParseOptions, "maxOwnersPerGpu">,
): { gpus: Set<string>; rejected: Map<PodResourcesRejection, Rejected> } {
  const gpus = new Set<string>();
  const rejected = new Map<PodResourcesRejection, Rejected>();
  for (const d of resp.devices) {
    if (!isNvidiaGpuResource(d.resourceName, opts.extraResourceNames)) continue;
    for (const id of d.deviceIds) {
      const m = matchDeviceId(id, opts.gpuByIndex);
      if (m.uuid === undefined) reject(rejected, m.form, `${d.resourceName} ${JSON.stringify(id.slice(0, 80))}`);
      else gpus.add(m.uuid);
    }
  }
  return { gpus, rejected };
}
