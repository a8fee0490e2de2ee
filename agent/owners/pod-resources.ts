/**
 * Kubernetes allocations from the kubelet's pod-resources API (`v1.PodResourcesLister`,
 * the API dcgm-exporter labels GPUs from), over its unix socket. The agent needs read
 * access to the socket and nothing else: no API server, no RBAC, no host PID namespace.
 *
 * Every `pollMs` the source calls `List` with a deadline and keeps the answer; `current()`
 * returns it without a call. A kubelet that is absent, restarting, hung or answering
 * garbage never blocks or crashes the agent: each failed read is counted by reason (one
 * table, `classifyFailure`), logged once per reason, and retried with backoff; the last
 * good answer is kept for `staleAfterMs` and then dropped, so an allocation the kubelet can
 * no longer confirm does not hold a GPU forever. `GetAllocatableResources` is asked after
 * each (re)connection and every `allocatableEveryMs`; kubelets before 1.23 (or with the
 * feature gate off) answer UNIMPLEMENTED, which is noted once and not asked again until
 * the socket is replaced.
 */
import { stat } from "node:fs/promises";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { silentLogger, type Logger } from "../../common/log.js";
import { errorMessage } from "../../common/errors.js";
import { Backoff } from "../shipper/backoff.js";
import {
  AllocatableResourcesRequestSchema,
  ListPodResourcesRequestSchema,
} from "../../gen/k8s.io/kubelet/pkg/apis/podresources/v1/api_pb.js";
import type { AllocationSource, AllocationSourceStats } from "./allocations.js";
import { DEFAULT_MAX_ALLOCATIONS_PER_GPU } from "./allocations.js";
import { DEVICE_ID_FORM_TEXT, type MatchedDeviceIdForm } from "./device-ids.js";
import { DEFAULT_POD_RESOURCES_SOCKET, podResourcesListerDefinition } from "./pod-resources-api.js";
import {
  allocatableGpus,
  allocationsFromList,
  type PodResourcesRejection,
  type Rejected,
} from "./pod-resources-parse.js";
import { PolledAllocations } from "./polled-allocations.js";

export { DEFAULT_POD_RESOURCES_SOCKET } from "./pod-resources-api.js";

export interface PodResourcesOptions {
  /** The kubelet's socket; default /var/lib/kubelet/pod-resources/kubelet.sock. */
  socketPath?: string;
  /** True when the operator named the socket: its absence is then a WARN, not an INFO. */
  configured?: boolean;
  /** Between two List calls while the kubelet answers; default 10 s. */
  pollMs?: number;
  /** Each call's deadline; default 2 s. */
  deadlineMs?: number;
  /** How long the last good answer outlives the kubelet's silence; default 60 s. */
  staleAfterMs?: number;
  /** Between two GetAllocatableResources calls on one connection; default 5 min. */
  allocatableEveryMs?: number;
  /** Retry delays after a failed call: exponential with jitter, 1 s to 60 s by default. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Owners one GPU keeps at most (time-slicing can give a GPU many pods); default 16. */
  maxOwnersPerGpu?: number;
  /** Largest List answer accepted; default 16 MiB. */
  maxMessageBytes?: number;
  /** Resource names counted as GPUs besides nvidia.com/gpu(.shared) and nvidia.com/mig-*. */
  extraResourceNames?: readonly string[];
  /** Index → uuid of the host's GPUs, for device ids that name GPUs by index. */
  gpuByIndex?: () => ReadonlyMap<number, string>;
  logger?: Logger;
  /** Clock for the age of answers (tests); call deadlines use the real clock. */
  now?: () => number;
}

/** Why a read gave no answer. */
export const POD_RESOURCES_FAILURES = [
  "socket_missing",
  "not_a_socket",
  "permission_denied",
  "deadline",
  "unavailable",
  "bad_answer",
  "too_large",
  "unimplemented",
  "error",
] as const;
export type PodResourcesFailure = (typeof POD_RESOURCES_FAILURES)[number];

const FAILURE_TEXT: Readonly<Record<PodResourcesFailure, string>> = {
  socket_missing:
    "the socket does not exist (no kubelet on this host, the kubelet restarting, or the directory not mounted)",
  not_a_socket: "the path is not a unix socket",
  permission_denied:
    "the agent may not open the socket (it needs read and write access to it, as root or the socket's group)",
  deadline: "the kubelet did not answer before the deadline",
  unavailable:
    "the kubelet could not be reached, broke the connection or did not speak gRPC (a socket file mounted on its own goes dead when the kubelet restarts: mount its directory)",
  bad_answer: "the kubelet's answer could not be decoded",
  too_large: "the kubelet's answer was larger than the agent accepts",
  unimplemented: "the kubelet does not serve the v1 pod-resources API",
  error: "the call failed",
};

/** The one table from a failed call to its reason. */
const STATUS_FAILURE: ReadonlyMap<number, PodResourcesFailure> = new Map([
  [grpc.status.DEADLINE_EXCEEDED, "deadline"],
  [grpc.status.UNAVAILABLE, "unavailable"],
  [grpc.status.INTERNAL, "bad_answer"],
  [grpc.status.RESOURCE_EXHAUSTED, "too_large"],
  [grpc.status.UNIMPLEMENTED, "unimplemented"],
  [grpc.status.PERMISSION_DENIED, "permission_denied"],
  [grpc.status.UNAUTHENTICATED, "permission_denied"],
]);

export function classifyFailure(err: unknown): PodResourcesFailure {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "number") return STATUS_FAILURE.get(code) ?? "error";
  if (code === "ENOENT") return "socket_missing";
  if (code === "EACCES" || code === "EPERM") return "permission_denied";
  return "error";
}

export interface PodResourcesStats extends AllocationSourceStats {
  /** Times the socket was found replaced (a kubelet restart) and the agent reconnected. */
  socketReplaced: number;
  /** GPU device ids matched to a uuid since start, by the form they were written in. */
  matched: Partial<Record<MatchedDeviceIdForm, number>>;
  /** Pods in the last good answer. */
  pods: number | undefined;
  /** GPUs the kubelet can allocate (GetAllocatableResources); undefined until known. */
  allocatableGpus: number | undefined;
  /** False once the kubelet answered UNIMPLEMENTED to GetAllocatableResources. */
  allocatableSupported: boolean | undefined;
}

export class PodResourcesSource extends PolledAllocations implements AllocationSource {
  readonly name = "pod_resources" as const;
  readonly socketPath: string;
  private readonly o: Required<
    Omit<PodResourcesOptions, "gpuByIndex" | "extraResourceNames" | "socketPath" | "logger" | "now">
  >;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private inFlight: grpc.ClientUnaryCall | undefined;
  private client: grpc.Client | undefined;
  /** dev:inode of the socket last seen, to tell a replaced socket (a kubelet restart). */
  private socketInode: string | undefined;
  private allocatable: ReadonlySet<string> | undefined;
  private allocatableSupported: boolean | undefined;
  private allocatableAt = -Infinity;
  private readonly logged = new Set<string>();
  private warnedSinceOk = false;
  private readonly s: PodResourcesStats = {
    reads: 0,
    failures: {},
    rejected: {},
    staleDrops: 0,
    ownersDropped: 0,
    lastGoodMs: undefined,
    socketReplaced: 0,
    matched: {},
    pods: undefined,
    allocatableGpus: undefined,
    allocatableSupported: undefined,
  };

  constructor(private readonly opts: PodResourcesOptions = {}) {
    super(opts.now ?? Date.now, opts.staleAfterMs ?? 60_000);
    this.socketPath = path.resolve(opts.socketPath ?? DEFAULT_POD_RESOURCES_SOCKET);
    this.o = {
      configured: opts.configured ?? false,
      pollMs: opts.pollMs ?? 10_000,
      deadlineMs: opts.deadlineMs ?? 2_000,
      staleAfterMs: opts.staleAfterMs ?? 60_000,
      allocatableEveryMs: opts.allocatableEveryMs ?? 300_000,
      backoffInitialMs: opts.backoffInitialMs ?? 1_000,
      backoffMaxMs: opts.backoffMaxMs ?? 60_000,
      maxOwnersPerGpu: opts.maxOwnersPerGpu ?? DEFAULT_MAX_ALLOCATIONS_PER_GPU,
      maxMessageBytes: opts.maxMessageBytes ?? 16 * 1024 * 1024,
    };
    this.log = (opts.logger ?? silentLogger).child({ component: "pod-resources" });
    this.backoff = new Backoff({ initialMs: this.o.backoffInitialMs, maxMs: this.o.backoffMaxMs });
  }

  get where(): string {
    return this.socketPath;
  }

  protected override interrupt(): void {
    this.inFlight?.cancel();
  }

  protected override closed(): void {
    this.closeClient();
  }

  /** GPU uuids the kubelet can hand to pods; undefined until known or where unsupported. */
  allocatableUuids(): ReadonlySet<string> | undefined {
    return this.allocatable;
  }

  stats(): PodResourcesStats {
    return {
      ...this.s,
      failures: { ...this.s.failures },
      rejected: { ...this.s.rejected },
      matched: { ...this.s.matched },
    };
  }

  /** read() handles what it expects; anything else is a bug, logged once, never thrown. */
  protected readFailed(err: unknown): number {
    this.fail("error", err);
    return this.o.pollMs;
  }

  /** One read; returns the delay before the next. */
  protected async read(): Promise<number> {
    let st;
    try {
      st = await stat(this.socketPath);
    } catch (err) {
      this.closeClient();
      this.fail(classifyFailure(err), err);
      return this.o.pollMs;
    }
    if (this.stopped) return this.o.pollMs;
    if (!st.isSocket()) {
      this.closeClient();
      this.fail("not_a_socket");
      return this.o.pollMs;
    }
    const inode = `${st.dev}:${st.ino}`;
    if (this.socketInode !== undefined && this.socketInode !== inode) {
      this.s.socketReplaced++;
      this.log.info("The kubelet's pod-resources socket was replaced (the kubelet restarted); reconnecting.", {
        socket: this.socketPath,
      });
      this.closeClient();
      // A new kubelet may be newer: ask again what it can allocate, and whether it can say.
      this.allocatableAt = -Infinity;
      if (this.allocatableSupported === false) this.allocatableSupported = undefined;
    }
    this.socketInode = inode;
    if (this.client === undefined) this.openClient();
    let resp;
    try {
      resp = await this.call(podResourcesListerDefinition.list, create(ListPodResourcesRequestSchema));
    } catch (err) {
      if (this.stopped) return this.o.pollMs;
      this.closeClient();
      this.fail(classifyFailure(err), err);
      return this.backoff.next();
    }
    this.backoff.reset();
    const gpuByIndex = this.opts.gpuByIndex?.();
    const parsed = allocationsFromList(resp, {
      gpuByIndex,
      extraResourceNames: this.opts.extraResourceNames,
      maxOwnersPerGpu: this.o.maxOwnersPerGpu,
    });
    this.answer = { at: this.now(), byGpu: parsed.byGpu };
    this.s.reads++;
    this.s.lastGoodMs = this.answer.at;
    this.s.pods = parsed.pods;
    this.s.ownersDropped += parsed.ownersDropped;
    for (const [form, n] of Object.entries(parsed.matched))
      this.s.matched[form as MatchedDeviceIdForm] = (this.s.matched[form as MatchedDeviceIdForm] ?? 0) + n;
    this.noteRejected(parsed.rejected);
    if (parsed.ownersDropped > 0)
      this.once(
        "owners_dropped",
        "warn",
        `A GPU is allocated to more than ${this.o.maxOwnersPerGpu} pod containers; owners past that bound are left out and counted.`,
      );
    if (!this.logged.has("first_answer") || this.warnedSinceOk) {
      this.logged.add("first_answer");
      this.log.info(
        this.warnedSinceOk
          ? "The kubelet's pod-resources API answers again."
          : "Reading Kubernetes allocations from the kubelet's pod-resources API.",
        {
          socket: this.socketPath,
          pods: parsed.pods,
          allocatedGpus: parsed.byGpu.size,
        },
      );
      this.warnedSinceOk = false;
    }
    // The first read ends with List's outcome: GetAllocatableResources is not waited for.
    this.firstReadEnded();
    if (this.allocatableSupported !== false && this.now() - this.allocatableAt >= this.o.allocatableEveryMs)
      await this.readAllocatable(gpuByIndex);
    return this.o.pollMs;
  }

  private async readAllocatable(gpuByIndex: ReadonlyMap<number, string> | undefined): Promise<void> {
    this.allocatableAt = this.now();
    try {
      const resp = await this.call(
        podResourcesListerDefinition.getAllocatableResources,
        create(AllocatableResourcesRequestSchema),
      );
      const { gpus, rejected } = allocatableGpus(resp, {
        gpuByIndex,
        extraResourceNames: this.opts.extraResourceNames,
      });
      this.allocatable = gpus;
      this.allocatableSupported = true;
      this.s.allocatableGpus = gpus.size;
      this.s.allocatableSupported = true;
      this.noteRejected(rejected);
    } catch (err) {
      if (this.stopped) return;
      if ((err as { code?: unknown }).code === grpc.status.UNIMPLEMENTED) {
        this.allocatableSupported = false;
        this.s.allocatableSupported = false;
        this.once(
          "allocatable_unimplemented",
          "info",
          "The kubelet does not serve GetAllocatableResources (Kubernetes before 1.23, or its feature gate is off); allocations still come from List.",
        );
        return;
      }
      // List answered a moment ago; this one failing changes no allocation: counted, and noted once.
      const reason = classifyFailure(err);
      this.s.failures[`allocatable_${reason}`] = (this.s.failures[`allocatable_${reason}`] ?? 0) + 1;
      this.once(
        `allocatable_${reason}`,
        "info",
        `The kubelet answered List but not GetAllocatableResources: ${FAILURE_TEXT[reason]}. Allocations still come from List; this is logged once.`,
        { reason, error: errorMessage(err) },
      );
    }
  }

  private call<Req, Res>(method: grpc.MethodDefinition<Req, Res>, req: Req): Promise<Res> {
    const client = this.client;
    if (client === undefined || this.stopped)
      return Promise.reject(Object.assign(new Error("the source is stopped"), { code: grpc.status.CANCELLED }));
    return new Promise<Res>((resolve, reject) => {
      // grpc-js enforces the deadline; the timer is a backstop should a call outlive it.
      const backstop = setTimeout(() => call.cancel(), this.o.deadlineMs + 1_000);
      backstop.unref();
      const call = client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        req,
        new grpc.Metadata(),
        { deadline: Date.now() + this.o.deadlineMs },
        (err, value) => {
          clearTimeout(backstop);
          if (this.inFlight === call) this.inFlight = undefined;
          if (err !== null)
            reject(
              err.code === grpc.status.CANCELLED && !this.stopped
                ? Object.assign(err, { code: grpc.status.DEADLINE_EXCEEDED })
                : err,
            );
          else if (value === undefined) reject(new Error("the kubelet sent no message"));
          else resolve(value);
        },
      );
      this.inFlight = call;
    });
  }

  private openClient(): void {
    this.client = new grpc.Client(`unix:${this.socketPath}`, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": this.o.maxMessageBytes,
      "grpc.max_send_message_length": 1024,
      "grpc.enable_retries": 0,
      "grpc.service_config_disable_resolution": 1,
      "grpc.enable_channelz": 0,
    });
  }

  private closeClient(): void {
    this.client?.close();
    this.client = undefined;
  }

  private fail(reason: PodResourcesFailure, err?: unknown): void {
    this.s.failures[reason] = (this.s.failures[reason] ?? 0) + 1;
    if (this.logged.has(`failure_${reason}`)) return;
    this.logged.add(`failure_${reason}`);
    const level = reason === "socket_missing" && !this.o.configured && this.answer === undefined ? "info" : "warn";
    const msg =
      reason === "socket_missing" && this.answer === undefined
        ? `No kubelet pod-resources socket at ${this.socketPath}; Kubernetes allocations are off until it appears.`
        : `The kubelet's pod-resources API gave no answer: ${FAILURE_TEXT[reason]}. The agent keeps its last answer for ${Math.round(this.o.staleAfterMs / 1000)} s and retries; this is logged once.`;
    this.log[level](msg, {
      socket: this.socketPath,
      reason,
      ...(err === undefined ? {} : { error: errorMessage(err) }),
    });
    if (level === "warn") this.warnedSinceOk = true;
  }

  private noteRejected(rejected: ReadonlyMap<PodResourcesRejection, Rejected>): void {
    for (const [kind, r] of rejected) {
      this.s.rejected[kind] = (this.s.rejected[kind] ?? 0) + r.count;
      const what =
        kind === "dra"
          ? "a GPU allocated through Dynamic Resource Allocation, which only the API server maps to a uuid"
          : kind === "bad_name"
            ? "a pod, namespace or container name no name can be (left out; the allocation still counts)"
            : DEVICE_ID_FORM_TEXT[kind];
      this.once(
        `rejected_${kind}`,
        "warn",
        `The kubelet named a GPU device trueidle cannot match to a GPU: ${what}. Such devices are counted and left out; this is logged once.`,
        { form: kind, example: r.example },
      );
    }
  }

  protected droppedStale(): void {
    this.s.staleDrops++;
    this.s.pods = undefined;
    this.once(
      "stale",
      "warn",
      `The kubelet has not answered for over ${Math.round(this.o.staleAfterMs / 1000)} s; its last allocations are dropped until it answers again.`,
      { socket: this.socketPath },
    );
    this.warnedSinceOk = true;
  }

  private once(key: string, level: "info" | "warn", msg: string, fields: Record<string, unknown> = {}): void {
    if (this.logged.has(key)) return;
    this.logged.add(key);
    this.log[level](msg, { socket: this.socketPath, ...fields });
  }
}
