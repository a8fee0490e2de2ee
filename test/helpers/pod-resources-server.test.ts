/**
 * The test kubelet speaks the kubelet's wire format: the method paths are the kubelet's,
 * and an answer's bytes are what the upstream proto's field numbers give, checked against
 * bytes written out by hand here (not by the generated code), through a raw HTTP/2 client
 * on the unix socket as a Go client would send it.
 */
import { connect as h2connect, constants as h2 } from "node:http2";
import { connect as netConnect } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { GetPodResourcesRequestSchema } from "../../gen/k8s.io/kubelet/pkg/apis/podresources/v1/api_pb.js";
import {
  GET_ALLOCATABLE_METHOD_PATH,
  GET_METHOD_PATH,
  LIST_METHOD_PATH,
  podResourcesListerDefinition,
} from "../../agent/owners/pod-resources-api.js";
import { gpuPod, PodResourcesServer } from "./pod-resources-server.js";

const GPU0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555";

/** Length-delimited field `n` holding `body`. */
function ld(n: number, body: Buffer): Buffer {
  if (body.length > 127) throw new Error("the test keeps fields short");
  return Buffer.concat([Buffer.from([(n << 3) | 2, body.length]), body]);
}
const str = (n: number, s: string) => ld(n, Buffer.from(s, "utf8"));

/** POST one gRPC call on the socket; the response's message bytes and grpc-status. */
async function rawCall(
  socketPath: string,
  methodPath: string,
  message: Buffer,
): Promise<{ body: Buffer; status: string | undefined }> {
  const session = h2connect("http://localhost", { createConnection: () => netConnect(socketPath) });
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({
        [h2.HTTP2_HEADER_METHOD]: "POST",
        [h2.HTTP2_HEADER_PATH]: methodPath,
        "content-type": "application/grpc",
        te: "trailers",
      });
      const chunks: Buffer[] = [];
      let status: string | undefined;
      req.on("response", (headers) => {
        status ??= headers["grpc-status"] as string | undefined;
      });
      req.on("trailers", (trailers) => {
        status = trailers["grpc-status"] as string | undefined;
      });
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("error", reject);
      req.on("end", () => {
        const all = Buffer.concat(chunks);
        resolve({ body: all.length >= 5 ? all.subarray(5, 5 + all.readUInt32BE(1)) : Buffer.alloc(0), status });
      });
      const head = Buffer.alloc(5);
      head.writeUInt32BE(message.length, 1);
      req.end(Buffer.concat([head, message]));
    });
  } finally {
    session.close();
  }
}

let server: PodResourcesServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

describe("the test kubelet", () => {
  it("routes the kubelet's method paths", () => {
    expect(LIST_METHOD_PATH).toBe("/v1.PodResourcesLister/List");
    expect(GET_ALLOCATABLE_METHOD_PATH).toBe("/v1.PodResourcesLister/GetAllocatableResources");
    expect(GET_METHOD_PATH).toBe("/v1.PodResourcesLister/Get");
  });

  it("answers List with the kubelet's bytes", async () => {
    server = await PodResourcesServer.start({ pods: [gpuPod("ml", "p", "c", [GPU0])] });
    const { body, status } = await rawCall(server.socketPath, "/v1.PodResourcesLister/List", Buffer.alloc(0));
    expect(status).toBe("0");
    // ListPodResourcesResponse{pod_resources(1): PodResources{name(1), namespace(2),
    //   containers(3): ContainerResources{name(1), devices(2): ContainerDevices{resource_name(1), device_ids(2)}}}}
    const devices = Buffer.concat([str(1, "nvidia.com/gpu"), str(2, GPU0)]);
    const container = Buffer.concat([str(1, "c"), ld(2, devices)]);
    const podBytes = Buffer.concat([str(1, "p"), str(2, "ml"), ld(3, container)]);
    expect(body.toString("hex")).toBe(ld(1, podBytes).toString("hex"));
    expect(server.calls.list).toBe(1);
  });

  it("answers GetAllocatableResources with the devices it can allocate, or UNIMPLEMENTED as an older kubelet", async () => {
    server = await PodResourcesServer.start({ pods: [gpuPod("ml", "p", "c", [GPU0])] });
    const ok = await rawCall(server.socketPath, "/v1.PodResourcesLister/GetAllocatableResources", Buffer.alloc(0));
    // AllocatableResourcesResponse{devices(1): ContainerDevices{resource_name(1), device_ids(2)}}
    expect(ok.body.toString("hex")).toBe(
      ld(1, Buffer.concat([str(1, "nvidia.com/gpu"), str(2, GPU0)])).toString("hex"),
    );
    server.setGetAllocatable("unimplemented");
    const old = await rawCall(server.socketPath, "/v1.PodResourcesLister/GetAllocatableResources", Buffer.alloc(0));
    expect(old.status).toBe(String(grpc.status.UNIMPLEMENTED));
  });

  it("answers Get for one pod, NOT_FOUND for another, UNIMPLEMENTED for methods it lacks", async () => {
    server = await PodResourcesServer.start({ pods: [gpuPod("ml", "p", "c", [GPU0])] });
    const client = new grpc.Client(`unix:${server.socketPath}`, grpc.credentials.createInsecure());
    try {
      const get = (podName: string) =>
        new Promise<{ err: grpc.ServiceError | null; pod?: string | undefined }>((resolve) => {
          const def = podResourcesListerDefinition.get;
          client.makeUnaryRequest(
            def.path,
            def.requestSerialize,
            def.responseDeserialize,
            create(GetPodResourcesRequestSchema, { podName, podNamespace: "ml" }),
            (err, value) => resolve({ err, pod: value?.podResources?.name }),
          );
        });
      expect(await get("p")).toEqual({ err: null, pod: "p" });
      expect((await get("q")).err?.code).toBe(grpc.status.NOT_FOUND);
    } finally {
      client.close();
    }
    const watch = await rawCall(server.socketPath, "/v1.PodResourcesLister/Watch", Buffer.alloc(0));
    expect(watch.status).toBe(String(grpc.status.UNIMPLEMENTED));
  });
});
