/**
 * A raw gRPC client for hostile-input tests: speaks HTTP/2 (node:http2) and gRPC's
 * length-prefixed framing by hand, so a test can send what no well-behaved client would —
 * bytes that are not protobuf, a frame whose length prefix promises more than follows, a
 * frame past the size limit, a Hello no agent would build, a wrong or missing token — and
 * read the status the server ends the call with.
 *
 * Every call opens its own HTTP/2 session and closes it afterwards.
 */
import {
  connect,
  constants as h2,
  type ClientHttp2Session,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
} from "node:http2";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { STREAM_METHOD_PATH } from "../../common/grpc-service.js";
import {
  HelloSchema,
  StreamRequestSchema,
  StreamResponseSchema,
  WindowBatchSchema,
  type StreamResponse,
} from "../../gen/trueidle/v1/ingest_pb.js";

export interface RawGrpcOptions {
  /** The `authorization` header, e.g. "Bearer abc"; none when undefined. */
  authorization?: string | undefined;
  /** Further request headers. */
  headers?: Record<string, string>;
  /** Close the request side after the last chunk (default true). */
  end?: boolean;
  /** Give up (and report `timedOut`) after this long without a status; default 15 s. */
  timeoutMs?: number;
}

export interface RawGrpcResult {
  /** HTTP status of the response headers; 0 when none came. */
  httpStatus: number;
  /** The grpc-status the call ended with (from the trailers, or from a trailers-only answer). */
  grpcStatus: number | undefined;
  /** The grpc-message, percent-decoded. */
  grpcMessage: string;
  /** Response headers and trailers together, as strings. */
  metadata: Record<string, string>;
  /** Messages the server sent before the status, decoded. */
  responses: StreamResponse[];
  /** Set when the exchange failed below gRPC (reset, refused, timed out). */
  error?: string | undefined;
  timedOut: boolean;
}

/** One gRPC message frame: flag 0 (not compressed), a 4-byte big-endian length, the payload. */
export function grpcFrame(payload: Uint8Array, declaredLength = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(0, 0);
  head.writeUInt32BE(declaredLength, 1);
  return Buffer.concat([head, payload]);
}

/** A StreamRequest carrying a Hello, serialized. Defaults make a valid Hello. */
export function helloPayload(init: {
  hostname: string;
  labels?: Record<string, string>;
  machineId?: string;
  agentVersion?: string;
  source?: string;
  windowMs?: number;
}): Uint8Array {
  const hello = create(HelloSchema, {
    agentVersion: init.agentVersion ?? "0.1.0",
    host: { hostname: init.hostname, machineId: init.machineId ?? "", labels: init.labels ?? {} },
    source: init.source ?? "sim",
    windowMs: init.windowMs ?? 1_000,
  });
  return toBinary(StreamRequestSchema, create(StreamRequestSchema, { msg: { case: "hello", value: hello } }));
}

/** A StreamRequest carrying a WindowBatch, serialized. */
export function batchPayload(init: MessageInitShape<typeof WindowBatchSchema>): Uint8Array {
  return toBinary(
    StreamRequestSchema,
    create(StreamRequestSchema, { msg: { case: "batch", value: create(WindowBatchSchema, init) } }),
  );
}

/**
 * Opens IngestService/Stream on `address` (HOST:PORT, plaintext HTTP/2), writes `chunks`
 * as they are (build them with grpcFrame), ends the request side unless told not to, and
 * resolves with how the server answered. Never rejects for what the server does.
 */
export async function rawGrpcCall(
  address: string,
  chunks: readonly Buffer[],
  opts: RawGrpcOptions = {},
): Promise<RawGrpcResult> {
  const result: RawGrpcResult = {
    httpStatus: 0,
    grpcStatus: undefined,
    grpcMessage: "",
    metadata: {},
    responses: [],
    timedOut: false,
  };
  let session: ClientHttp2Session | undefined;
  try {
    session = connect(`http://${address}`);
    session.on("error", (err: Error) => void (result.error ??= `session error: ${err.message}`));
    const headers: Record<string, string> = {
      [h2.HTTP2_HEADER_METHOD]: "POST",
      [h2.HTTP2_HEADER_PATH]: STREAM_METHOD_PATH,
      [h2.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
      te: "trailers",
      ...opts.headers,
    };
    if (opts.authorization !== undefined) headers["authorization"] = opts.authorization;
    const stream = session.request(headers, { endStream: false });
    let received = Buffer.alloc(0);

    const take = (h: IncomingHttpHeaders & IncomingHttpStatusHeader): void => {
      for (const [k, v] of Object.entries(h)) {
        if (v === undefined) continue;
        result.metadata[k] = Array.isArray(v) ? v.join(", ") : String(v);
      }
      const code = h["grpc-status"];
      if (code !== undefined) result.grpcStatus = Number(code);
      const message = h["grpc-message"];
      if (message !== undefined) result.grpcMessage = percentDecode(String(message));
    };
    stream.on("response", (h) => {
      result.httpStatus = Number(h[h2.HTTP2_HEADER_STATUS] ?? 0);
      take(h);
    });
    stream.on("trailers", (h) => take(h as IncomingHttpHeaders & IncomingHttpStatusHeader));
    stream.on("data", (d: Buffer) => {
      received = Buffer.concat([received, d]);
      while (received.length >= 5) {
        const len = received.readUInt32BE(1);
        if (received.length < 5 + len) break;
        const body = received.subarray(5, 5 + len);
        received = received.subarray(5 + len);
        try {
          result.responses.push(fromBinary(StreamResponseSchema, body));
        } catch (err) {
          result.error ??= `undecodable response message: ${(err as Error).message}`;
        }
      }
    });

    const done = new Promise<void>((resolve) => {
      stream.on("close", () => {
        if (result.grpcStatus === undefined && stream.rstCode !== undefined && stream.rstCode !== h2.NGHTTP2_NO_ERROR) {
          result.error ??= `the stream was reset with HTTP/2 code ${stream.rstCode}`;
        }
        resolve();
      });
      stream.on("error", (err: Error) => void (result.error ??= `stream error: ${err.message}`));
    });
    for (const c of chunks) {
      if (stream.destroyed || stream.closed) break;
      stream.write(c);
    }
    if (opts.end !== false && !stream.destroyed) stream.end();

    const timeoutMs = opts.timeoutMs ?? 15_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        result.timedOut = true;
        resolve();
      }, timeoutMs);
    });
    await Promise.race([done, timedOut]);
    clearTimeout(timer);
    if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
  } catch (err) {
    result.error ??= `request failed: ${(err as Error).message}`;
  } finally {
    session?.close();
    session?.destroy();
  }
  return result;
}

/** grpc-message is percent-encoded (RFC 3986 style); undecodable text is returned as sent. */
function percentDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
