/**
 * The gRPC service definition of trueidle.v1.IngestService for @grpc/grpc-js, built from
 * the protobuf-es schemas: messages cross the wire with toBinary/fromBinary.
 */
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { ServiceDefinition, MethodDefinition } from "@grpc/grpc-js";
import {
  IngestService,
  StreamRequestSchema,
  StreamResponseSchema,
  type StreamRequest,
  type StreamResponse,
} from "../gen/trueidle/v1/ingest_pb.js";

/** toBinary/fromBinary of one protobuf-es message, as grpc-js' serialize/deserialize. */
export function protobufCodec<D extends DescMessage>(schema: D) {
  return {
    serialize: (msg: MessageShape<D>): Buffer => Buffer.from(toBinary(schema, msg)),
    deserialize: (buf: Buffer): MessageShape<D> => fromBinary(schema, buf),
  };
}

const req = protobufCodec(StreamRequestSchema);
const res = protobufCodec(StreamResponseSchema);

export const STREAM_METHOD_PATH = `/${IngestService.typeName}/${IngestService.method.stream.name}`;

export const ingestServiceDefinition = {
  stream: {
    path: STREAM_METHOD_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: req.serialize,
    requestDeserialize: req.deserialize,
    responseSerialize: res.serialize,
    responseDeserialize: res.deserialize,
    originalName: "Stream",
  } satisfies MethodDefinition<StreamRequest, StreamResponse>,
} satisfies ServiceDefinition;

export type IngestServiceDefinition = typeof ingestServiceDefinition;

/**
 * The agent's side of the same method: a request may also be written already encoded (a
 * window batch framed around windows encoded once, when they were measured; see
 * agent/shipper/batch-frame.ts), and then goes on the wire as it is.
 */
export const ingestClientDefinition = {
  stream: {
    ...ingestServiceDefinition.stream,
    requestSerialize: (m: StreamRequest | Buffer): Buffer => (Buffer.isBuffer(m) ? m : req.serialize(m)),
  } satisfies MethodDefinition<StreamRequest | Buffer, StreamResponse>,
} satisfies ServiceDefinition;

/** Default ports of the public CLI. */
export const DEFAULT_GRPC_PORT = 9746;
export const DEFAULT_HTTP_PORT = 9745;

/**
 * Trailer the collector sets on RESOURCE_EXHAUSTED (and may set on UNAVAILABLE): milliseconds
 * the agent waits before it reconnects.
 */
export const RETRY_AFTER_METADATA_KEY = "trueidle-retry-after-ms";
