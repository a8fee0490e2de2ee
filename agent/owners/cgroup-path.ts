/**
 * Pure parser of `/proc/PID/cgroup`: which container, Kubernetes pod and batch job a process
 * runs in, from the names container runtimes, the kubelet and Slurm give their cgroups.
 *
 * The file has one line per hierarchy, `ID:CONTROLLERS:PATH`: many under cgroup v1, one
 * `0::PATH` under v2, both on a hybrid host. The path may itself hold `:` (containerd's
 * systemd-style `slice:prefix:id` names), so only the first two colons split a line.
 *
 * Paths are read as seen from another cgroup namespace too: an agent in a container with a
 * private cgroup namespace reads `0::/../../kubepods-…-pod<uid>.slice/cri-containerd-<id>.scope`.
 * Nothing here relies on the root of the path, only on the names of its segments, so `..`
 * segments are skipped.
 *
 * Names recognised (each from real hosts: test/fixtures/cgroups/PROVENANCE.md):
 * - containers: `docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
 *   `<slice>:cri-containerd:<id>` (containerd 1.x with the systemd driver under cgroup v1),
 *   `crio-<id>[.scope]`, `libpod-<id>.scope`, `libpod-payload-<id>` (Quadlet),
 *   `nerdctl-<id>.scope`, and a bare id below a pod (cgroupfs driver; the runtime is not named
 *   there, so it stays unknown). Monitors (`crio-conmon-…`, `libpod-conmon-…`) and daemons
 *   (`docker.service`, `containerd.service`) are not containers. When containers nest
 *   (docker in docker, kind), the deepest one is the process's own.
 * - pods: `kubepods[-QOS]-pod<uid>.slice` (systemd driver; the uid's `-` are written `_`,
 *   normalised back here; kind prefixes `kubelet-`) and `pod<uid>` (cgroupfs driver). QoS
 *   is `burstable` or `besteffort` where the path names it, `guaranteed` where the pod sits
 *   right under `kubepods`. Static pods have a 32-hex uid without dashes, kept as it is.
 * - Slurm: below a `slurm` (or `slurm_<node>`, several slurmd per host) segment (cgroup v1)
 *   or a `slurmstepd.scope` (cgroup v2): `job_<id>`, then `step_<id>` (`step_0`,
 *   `step_batch`, `step_extern`, `step_interactive`), with `uid_<uid>` under v1.
 */

export type ContainerRuntime = "docker" | "containerd" | "cri-o" | "podman";
export type QosClass = "guaranteed" | "burstable" | "besteffort";

/** What one cgroup path says about its processes; every field may be missing. */
export interface CgroupOwner {
  runtime?: ContainerRuntime | undefined;
  containerId?: string | undefined;
  /** Kubernetes pod uid, always in the `-` form (`0e886e9a-3879-45f9-b44d-86ef9df03224`). */
  podUid?: string | undefined;
  qos?: QosClass | undefined;
  /** Slurm job id and step (`0`, `batch`, `extern`, …). */
  job?: string | undefined;
  step?: string | undefined;
  /** The uid Slurm names in a cgroup v1 path (`uid_1000`). */
  jobUid?: number | undefined;
}

export type CgroupVersion = "v1" | "v2" | "hybrid";

export type ParsedCgroupFile =
  | { ok: true; version: CgroupVersion; owner: CgroupOwner }
  | { ok: false; reason: "malformed" };

const HEX_ID = "[0-9a-f]{12,128}";
const UID = "[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}";

/** Prefixed container scopes: `<prefix>-<id>[.scope]`. Monitors never match: their ids are not hex. */
const CONTAINER_SCOPES: ReadonlyArray<{ re: RegExp; runtime: ContainerRuntime }> = [
  { re: new RegExp(`^docker-(${HEX_ID})\\.scope$`), runtime: "docker" },
  { re: new RegExp(`^cri-containerd-(${HEX_ID})\\.scope$`), runtime: "containerd" },
  { re: new RegExp(`^nerdctl-(${HEX_ID})\\.scope$`), runtime: "containerd" },
  { re: new RegExp(`^crio-(${HEX_ID})(?:\\.scope)?$`), runtime: "cri-o" },
  { re: new RegExp(`^libpod-(${HEX_ID})\\.scope$`), runtime: "podman" },
  { re: new RegExp(`^libpod-payload-(${HEX_ID})$`), runtime: "podman" },
];

/** The middle part of containerd's `slice:prefix:id` names. */
const COLON_PREFIXES: Readonly<Record<string, ContainerRuntime>> = {
  "cri-containerd": "containerd",
  docker: "docker",
  crio: "cri-o",
};

const HEX_ID_RE = new RegExp(`^(?:${HEX_ID})$`);
const BARE_ID_RE = /^(?:[0-9a-f]{64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
const SYSTEMD_POD_RE = new RegExp(`^(?:[a-z0-9]+-)*kubepods(?:-(burstable|besteffort))?-pod(${UID})\\.slice$`);
const CGROUPFS_POD_RE = new RegExp(`^pod(${UID})$`);
const SLURM_ROOT_RE = /^(?:slurm(?:_[^/]+)?|(?:[^/]+_)?slurmstepd\.scope)$/;
const SLURM_JOB_RE = /^job_(\d{1,20})$/;
const SLURM_STEP_RE = /^step_([A-Za-z0-9_.]{1,32})$/;
const SLURM_UID_RE = /^uid_(\d{1,10})$/;

/** What one cgroup path names. */
export function classifyCgroupPath(path: string): CgroupOwner {
  const out: CgroupOwner = {};
  const segments = path.split("/").filter((s) => s !== "" && s !== "." && s !== "..");
  let inSlurm = false;
  let previous = "";
  let previousWasPod = false;
  for (const raw of segments) {
    let segment = raw;
    let isPod = false;
    const colon = raw.split(":");
    if (colon.length === 3) {
      const runtime = COLON_PREFIXES[colon[1] ?? ""];
      const id = colon[2] ?? "";
      if (runtime !== undefined && HEX_ID_RE.test(id)) {
        out.runtime = runtime;
        out.containerId = id;
      }
      segment = colon[0] ?? "";
    }

    const systemdPod = SYSTEMD_POD_RE.exec(segment);
    const cgroupfsPod = systemdPod ? null : CGROUPFS_POD_RE.exec(segment);
    if (systemdPod) {
      isPod = true;
      out.podUid = normaliseUid(systemdPod[2] ?? "");
      out.qos = qosOf(systemdPod[1]);
    } else if (cgroupfsPod) {
      isPod = true;
      out.podUid = normaliseUid(cgroupfsPod[1] ?? "");
      out.qos =
        previous === "burstable" || previous === "besteffort"
          ? previous
          : previous === "kubepods"
            ? "guaranteed"
            : undefined;
    }

    if (!isPod) {
      const scope = containerScope(segment);
      if (scope) {
        out.runtime = scope.runtime;
        out.containerId = scope.id;
      } else if (previous === "docker" && HEX_ID_RE.test(segment)) {
        out.runtime = "docker";
        out.containerId = segment;
      } else if (previousWasPod && BARE_ID_RE.test(segment)) {
        out.runtime = undefined;
        out.containerId = segment;
      }
    }

    if (SLURM_ROOT_RE.test(segment)) inSlurm = true;
    else if (inSlurm) {
      const uid = SLURM_UID_RE.exec(segment);
      const job = SLURM_JOB_RE.exec(segment);
      const step = out.job !== undefined ? SLURM_STEP_RE.exec(segment) : null;
      if (uid) out.jobUid = Number(uid[1]);
      else if (job) {
        out.job = job[1];
        out.step = undefined;
      } else if (step && out.step === undefined) out.step = step[1];
    }

    previous = segment;
    previousWasPod = isPod;
  }
  return dropUndefined(out);
}

/**
 * A whole `/proc/PID/cgroup`. Of its lines, the path that names the most (container, pod,
 * job) is the answer, the unified (`0::`) line winning ties: under v1 only some controllers
 * may carry the job (Slurm puts it in `freezer`, `cpuset`, `memory`), and on a hybrid host
 * the unified line may name only the daemon (`0::/system.slice/docker.service`). Lines not
 * of the form `ID:CONTROLLERS:PATH` are ignored; a file with none is malformed.
 */
export function parseProcCgroup(text: string): ParsedCgroupFile {
  let best: CgroupOwner | undefined;
  let bestScore = -1;
  let bestUnified = false;
  let unified = false;
  let legacy = false;
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") continue;
    const first = line.indexOf(":");
    const second = first < 0 ? -1 : line.indexOf(":", first + 1);
    if (second < 0) continue;
    const id = line.slice(0, first).trim();
    const path = line.slice(second + 1);
    if (!/^\d+$/.test(id) || !path.startsWith("/")) continue;
    const isUnified = id === "0" && first + 1 === second;
    if (isUnified) unified = true;
    else legacy = true;
    const owner = classifyCgroupPath(path);
    const score = scoreOf(owner);
    if (score > bestScore || (score === bestScore && isUnified && !bestUnified)) {
      best = owner;
      bestScore = score;
      bestUnified = isUnified;
    }
  }
  if (best === undefined) return { ok: false, reason: "malformed" };
  return { ok: true, version: unified && legacy ? "hybrid" : unified ? "v2" : "v1", owner: best };
}

function containerScope(segment: string): { runtime: ContainerRuntime; id: string } | undefined {
  for (const { re, runtime } of CONTAINER_SCOPES) {
    const m = re.exec(segment);
    if (m) return { runtime, id: m[1] ?? "" };
  }
  return undefined;
}

function normaliseUid(uid: string): string {
  return uid.replaceAll("_", "-");
}

function qosOf(level: string | undefined): QosClass {
  return level === "burstable" || level === "besteffort" ? level : "guaranteed";
}

function scoreOf(o: CgroupOwner): number {
  return (o.containerId ? 4 : 0) + (o.podUid ? 4 : 0) + (o.job ? 4 : 0) + (o.step ? 1 : 0) + (o.runtime ? 1 : 0);
}

function dropUndefined(o: CgroupOwner): CgroupOwner {
  for (const k of Object.keys(o) as Array<keyof CgroupOwner>) if (o[k] === undefined) delete o[k];
  return o;
}
