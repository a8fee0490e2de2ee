/**
 * The gRPC server's two stop phases on their own: beginStop() and stop() before listen(),
 * twice, and after it, when stop() leaves the port closed. Streams ended at stop, with their
 * acks first: collector.test.ts and test/spool.test.ts.
 */
import * as net from "node:net";
import { describe, expect, it } from "vitest";
import { recordingLogger } from "../common/log.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { FleetState } from "./fleet-state.js";
import { IngestServer } from "./grpc-server.js";
import { SelfMetrics } from "./self-metrics.js";

function server(): IngestServer {
  const self = new SelfMetrics();
  return new IngestServer(
    {
      fleet: new FleetState(),
      self,
      thresholds: { ...DEFAULT_THRESHOLDS },
      collectorId: "grpc-server-test",
      limits: { maxFutureMs: 300_000, maxAgeMs: 86_400_000, maxWindowsPerBatch: 100, maxGpusPerHost: 8 },
      logger: recordingLogger(),
      now: Date.now,
    },
    undefined,
    { maxConnections: 10, maxConnectionsPerAddress: 10, connectionCounters: self.connections.grpc },
  );
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("IngestServer stop phases", () => {
  it("begins and ends its stop before listen(), each safe twice", async () => {
    const s = server();
    await Promise.all([s.beginStop(), s.beginStop()]);
    await Promise.all([s.stop(), s.stop()]);
    await s.stop();
  });

  it("stops taking connections at stop(), which resolves twice", async () => {
    const s = server();
    const port = await s.listen({ host: "127.0.0.1", port: 0 });
    expect(await connects(port)).toBe(true);
    await s.beginStop();
    await Promise.all([s.stop(), s.stop()]);
    expect(await connects(port)).toBe(false);
    expect(s.connectionCount).toBe(0);
    await s.stop();
  });
});
