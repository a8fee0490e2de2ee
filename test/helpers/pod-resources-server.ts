/**
 * A kubelet pod-resources server for tests: `v1.PodResourcesLister` (List,
 * GetAllocatableResources, Get) over a unix socket with @grpc/grpc-js, from the messages
 * generated from the kubelet's own proto, on the kubelet's method paths — what the agent
 * meets on a Kubernetes node, without one.
 *
 * Allocations are set per pod and container (`setPods`). Modes make it misbehave the ways a
 * kubelet or a wrong path can:
 * - `ok`: answers.
 * - `hang`: accepts every call and never answers (a wedged kubelet).
 * - `garbage_message`: answers List with bytes that are no ListPodResourcesResponse.
 * - `error`: ends every call with `errorStatus` (default UNAVAILABLE).
 * - `silent`: a plain unix socket that accepts connections and never speaks HTTP/2.
 * - `garbage_bytes`: a plain unix socket that answers every connection with random bytes.
 * `getAllocatable: "unimplemented"` answers GetAllocatableResources as kubelets before 1.23
 * do. `restart()` replaces the socket as a restarting kubelet does: the old one goes, a new
 * one (a new inode) takes its path.
 */
import { mkdtempSync, rmSync, renameSync } from "node:fs";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  AllocatableResourcesResponseSchema,
  type ContainerDevicesSchema,
  GetPodResourcesResponseSchema,
  ListPodResourcesResponseSchema,
  PodResourcesSchema,
  type AllocatableResourcesRequest,
  type AllocatableResourcesResponse,
  type GetPodResourcesRequest,
  type GetPodResourcesResponse,
  type ListPodResourcesRequest,
  type ListPodResourcesResponse,
} from "../../gen/k8s.io/kubelet/pkg/apis/podresources/v1/api_pb.js";
import { podResourcesListerDefinition } from "../../agent/owners/pod-resources-api.js";

export type PodResourcesServerMode = "ok" | "hang" | "garbage_message" | "error" | "silent" | "garbage_bytes";

/** One pod as List reports it: its containers and the devices each was allocated. */
export type PodAllocation = MessageInitShape<typeof PodResourcesSchema>;
export type DeviceAllocation = MessageInitShape<typeof ContainerDevicesSchema>;

export interface PodResourcesServerOptions {
  /** Where to listen; a fresh temporary directory's kubelet.sock when absent. */
  socketPath?: string;
  pods?: PodAllocation[];
  /** What GetAllocatableResources lists; by default every GPU device some pod holds. */
  allocatable?: DeviceAllocation[];
  getAllocatable?: "ok" | "unimplemented";
  mode?: PodResourcesServerMode;
  errorStatus?: grpc.status;
}

/** A pod with one container holding `deviceIds` of `resourceName` (default nvidia.com/gpu). */
export function gpuPod(
  namespace: string,
  name: string,
  container: string,
  deviceIds: string[],
  resourceName = "nvidia.com/gpu",
): PodAllocation {
  return { namespace, name, containers: [{ name: container, devices: [{ resourceName, deviceIds }] }] };
}

/** Bytes that announce a 5-byte field and end after one: no protobuf decoder accepts them. */
const NOT_A_MESSAGE = Buffer.from([0x0a, 0x05, 0x01]);

const RAW_MODES: ReadonlySet<PodResourcesServerMode> = new Set(["silent", "garbage_bytes"]);

export class PodResourcesServer {
  readonly socketPath: string;
  /** Calls served, by method (raw modes count connections under `connections`). */
  readonly calls = { list: 0, getAllocatableResources: 0, get: 0, connections: 0 };
  private pods: PodAllocation[];
  private allocatable: DeviceAllocation[] | undefined;
  private getAllocatable: "ok" | "unimplemented";
  private mode: PodResourcesServerMode;
  private errorStatus: grpc.status;
  private readonly ownDir: string | undefined;
  private grpcServer: grpc.Server | undefined;
  private rawServer: NetServer | undefined;
  private readonly rawSockets = new Set<Socket>();
  private readonly held: (() => void)[] = [];

  private constructor(opts: PodResourcesServerOptions) {
    if (opts.socketPath === undefined) {
      // Unix socket paths are short (108 bytes); a temporary directory of our own keeps it so.
      this.ownDir = mkdtempSync(path.join(tmpdir(), "ti-kubelet-"));
      this.socketPath = path.join(this.ownDir, "kubelet.sock");
    } else {
      this.socketPath = path.resolve(opts.socketPath);
    }
    this.pods = opts.pods ?? [];
    this.allocatable = opts.allocatable;
    this.getAllocatable = opts.getAllocatable ?? "ok";
    this.mode = opts.mode ?? "ok";
    this.errorStatus = opts.errorStatus ?? grpc.status.UNAVAILABLE;
  }

  static async start(opts: PodResourcesServerOptions = {}): Promise<PodResourcesServer> {
    const s = new PodResourcesServer(opts);
    await s.listen(s.socketPath);
    return s;
  }

  setPods(pods: PodAllocation[]): void {
    this.pods = pods;
  }

  setAllocatable(devices: DeviceAllocation[] | undefined): void {
    this.allocatable = devices;
  }

  setGetAllocatable(v: "ok" | "unimplemented"): void {
    this.getAllocatable = v;
  }

  /** Switches mode; between a gRPC mode and a raw one the listener is replaced on the same path. */
  async setMode(mode: PodResourcesServerMode, errorStatus?: grpc.status): Promise<void> {
    if (errorStatus !== undefined) this.errorStatus = errorStatus;
    const wasRaw = RAW_MODES.has(this.mode);
    this.mode = mode;
    if (mode !== "hang") this.releaseHeld();
    if (wasRaw !== RAW_MODES.has(mode)) {
      await this.close();
      await this.listen(this.socketPath);
    }
  }

  /**
   * What a kubelet restart does to the socket: a new one replaces the old on the same path.
   * The new one is made beside it and renamed over the path once the old is closed, so the
   * path changes inode for certain (a filesystem may reuse a freed inode number).
   */
  async restart(): Promise<void> {
    const next = `${this.socketPath}.new`;
    rmSync(next, { force: true });
    const old = { grpc: this.grpcServer, raw: this.rawServer };
    this.grpcServer = undefined;
    this.rawServer = undefined;
    await this.listen(next);
    await closeServers(old.grpc, old.raw, this.rawSockets, this.held);
    rmSync(this.socketPath, { force: true });
    renameSync(next, this.socketPath);
  }

  /** Closes the listener and removes the socket (as a kubelet that stopped); `listenAgain` brings it back. */
  async remove(): Promise<void> {
    await this.close();
    rmSync(this.socketPath, { force: true });
  }

  async listenAgain(): Promise<void> {
    await this.listen(this.socketPath);
  }

  async stop(): Promise<void> {
    await this.close();
    rmSync(this.socketPath, { force: true });
    rmSync(`${this.socketPath}.new`, { force: true });
    if (this.ownDir !== undefined) rmSync(this.ownDir, { recursive: true, force: true });
  }

  private listResponse(): ListPodResourcesResponse {
    return create(ListPodResourcesResponseSchema, { podResources: this.pods });
  }

  private allocatableResponse(): AllocatableResourcesResponse {
    if (this.allocatable !== undefined)
      return create(AllocatableResourcesResponseSchema, { devices: this.allocatable });
    const byResource = new Map<string, Set<string>>();
    for (const p of this.pods) {
      for (const c of p.containers ?? []) {
        for (const d of c.devices ?? []) {
          const set = byResource.get(d.resourceName ?? "") ?? new Set<string>();
          for (const id of d.deviceIds ?? []) set.add(id);
          byResource.set(d.resourceName ?? "", set);
        }
      }
    }
    return create(AllocatableResourcesResponseSchema, {
      devices: [...byResource].map(([resourceName, ids]) => ({ resourceName, deviceIds: [...ids] })),
    });
  }

  /** Runs `answer` unless the mode says to hang or fail instead. */
  private serve<T>(cb: grpc.sendUnaryData<T>, answer: () => T): void {
    if (this.mode === "hang") {
      this.held.push(() => cb({ code: grpc.status.UNAVAILABLE, details: "the server stopped hanging" }));
      return;
    }
    if (this.mode === "error") {
      cb({ code: this.errorStatus, details: "the test server fails this call" });
      return;
    }
    cb(null, answer());
  }

  private async listen(at: string): Promise<void> {
    rmSync(at, { force: true });
    if (RAW_MODES.has(this.mode)) {
      const srv = createServer((sock) => {
        this.calls.connections++;
        this.rawSockets.add(sock);
        sock.on("error", () => {});
        sock.on("close", () => this.rawSockets.delete(sock));
        sock.on("data", () => {});
        if (this.mode === "garbage_bytes") sock.write(randomBytes(512));
      });
      await new Promise<void>((res, rej) => {
        srv.once("error", rej);
        srv.listen(at, () => res());
      });
      this.rawServer = srv;
      return;
    }
    const server = new grpc.Server();
    const definition = {
      ...podResourcesListerDefinition,
      list: {
        ...podResourcesListerDefinition.list,
        responseSerialize: (m: ListPodResourcesResponse): Buffer =>
          this.mode === "garbage_message" ? NOT_A_MESSAGE : podResourcesListerDefinition.list.responseSerialize(m),
      },
    };
    server.addService(definition, {
      list: (
        _call: grpc.ServerUnaryCall<ListPodResourcesRequest, ListPodResourcesResponse>,
        cb: grpc.sendUnaryData<ListPodResourcesResponse>,
      ) => {
        this.calls.list++;
        this.serve(cb, () => this.listResponse());
      },
      getAllocatableResources: (
        _call: grpc.ServerUnaryCall<AllocatableResourcesRequest, AllocatableResourcesResponse>,
        cb: grpc.sendUnaryData<AllocatableResourcesResponse>,
      ) => {
        this.calls.getAllocatableResources++;
        if (this.getAllocatable === "unimplemented") {
          cb({
            code: grpc.status.UNIMPLEMENTED,
            details: "unknown method GetAllocatableResources for service v1.PodResourcesLister",
          });
          return;
        }
        this.serve(cb, () => this.allocatableResponse());
      },
      get: (
        call: grpc.ServerUnaryCall<GetPodResourcesRequest, GetPodResourcesResponse>,
        cb: grpc.sendUnaryData<GetPodResourcesResponse>,
      ) => {
        this.calls.get++;
        const pod = this.pods.find((p) => p.name === call.request.podName && p.namespace === call.request.podNamespace);
        if (pod === undefined) {
          cb({
            code: grpc.status.NOT_FOUND,
            details: `pod ${call.request.podNamespace}/${call.request.podName} not found`,
          });
          return;
        }
        this.serve(cb, () => create(GetPodResourcesResponseSchema, { podResources: create(PodResourcesSchema, pod) }));
      },
    });
    await new Promise<void>((res, rej) =>
      server.bindAsync(`unix:${at}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
    );
    this.grpcServer = server;
  }

  private releaseHeld(): void {
    for (const release of this.held.splice(0)) release();
  }

  private async close(): Promise<void> {
    const g = this.grpcServer;
    const r = this.rawServer;
    this.grpcServer = undefined;
    this.rawServer = undefined;
    await closeServers(g, r, this.rawSockets, this.held);
  }
}

async function closeServers(
  g: grpc.Server | undefined,
  r: NetServer | undefined,
  sockets: Set<Socket>,
  held: (() => void)[],
): Promise<void> {
  for (const release of held.splice(0)) release();
  if (g !== undefined) g.forceShutdown();
  if (r !== undefined) {
    for (const s of sockets) s.destroy();
    sockets.clear();
    await new Promise<void>((res) => r.close(() => res()));
  }
}
