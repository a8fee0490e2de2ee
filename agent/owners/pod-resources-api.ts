/**
 * The kubelet's pod-resources API (`v1.PodResourcesLister`, vendored in
 * proto/k8s.io/kubelet/pkg/apis/podresources/v1/api.proto) as a @grpc/grpc-js service
 * definition built from the protobuf-es schemas, as common/grpc-service.ts does for
 * trueidle's own service: messages cross the wire with toBinary/fromBinary. The agent is a
 * client of it; test/helpers/pod-resources-server.ts serves it.
 */
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { protobufCodec } from "../../common/grpc-service.js";
import {
  AllocatableResourcesRequestSchema,
  AllocatableResourcesResponseSchema,
  GetPodResourcesRequestSchema,
  GetPodResourcesResponseSchema,
  ListPodResourcesRequestSchema,
  ListPodResourcesResponseSchema,
  PodResourcesLister,
  type AllocatableResourcesRequest,
  type AllocatableResourcesResponse,
  type GetPodResourcesRequest,
  type GetPodResourcesResponse,
  type ListPodResourcesRequest,
  type ListPodResourcesResponse,
} from "../../gen/k8s.io/kubelet/pkg/apis/podresources/v1/api_pb.js";
import { AGENT_SETTINGS } from "../settings.js";

/** Where the kubelet serves the API unless its root directory was moved. */
export const DEFAULT_POD_RESOURCES_SOCKET: string = AGENT_SETTINGS.podResourcesSocket.default;

function methodPath(name: string): string {
  return `/${PodResourcesLister.typeName}/${name}`;
}

/** `/v1.PodResourcesLister/List`, as the kubelet routes it. */
export const LIST_METHOD_PATH = methodPath(PodResourcesLister.method.list.name);
/** `/v1.PodResourcesLister/GetAllocatableResources` (Kubernetes 1.21+, on by default from 1.23). */
export const GET_ALLOCATABLE_METHOD_PATH = methodPath(PodResourcesLister.method.getAllocatableResources.name);
/** `/v1.PodResourcesLister/Get` (Kubernetes 1.27+ behind a feature gate). */
export const GET_METHOD_PATH = methodPath(PodResourcesLister.method.get.name);

const listReq = protobufCodec(ListPodResourcesRequestSchema);
const listRes = protobufCodec(ListPodResourcesResponseSchema);
const allocReq = protobufCodec(AllocatableResourcesRequestSchema);
const allocRes = protobufCodec(AllocatableResourcesResponseSchema);
const getReq = protobufCodec(GetPodResourcesRequestSchema);
const getRes = protobufCodec(GetPodResourcesResponseSchema);

export const podResourcesListerDefinition = {
  list: {
    path: LIST_METHOD_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: listReq.serialize,
    requestDeserialize: listReq.deserialize,
    responseSerialize: listRes.serialize,
    responseDeserialize: listRes.deserialize,
    originalName: "List",
  } satisfies MethodDefinition<ListPodResourcesRequest, ListPodResourcesResponse>,
  getAllocatableResources: {
    path: GET_ALLOCATABLE_METHOD_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: allocReq.serialize,
    requestDeserialize: allocReq.deserialize,
    responseSerialize: allocRes.serialize,
    responseDeserialize: allocRes.deserialize,
    originalName: "GetAllocatableResources",
  } satisfies MethodDefinition<AllocatableResourcesRequest, AllocatableResourcesResponse>,
  get: {
    path: GET_METHOD_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: getReq.serialize,
    requestDeserialize: getReq.deserialize,
    responseSerialize: getRes.serialize,
    responseDeserialize: getRes.deserialize,
    originalName: "Get",
  } satisfies MethodDefinition<GetPodResourcesRequest, GetPodResourcesResponse>,
} satisfies ServiceDefinition;

export type PodResourcesListerDefinition = typeof podResourcesListerDefinition;
