/**
 * Collectors for the collector's own tests: loopback, free ports, the fixed clock the test
 * windows are built around, every log line kept; all stopped (with their probes) after
 * each test.
 */
import { createLogger } from "../../common/log.js";
import { DEFAULT_THRESHOLDS } from "../../common/types.js";
import { ProbeFactory } from "../../test/helpers/ingest-probe.js";
import { startCollector, type Collector, type CollectorOptions } from "../collector.js";
import { T0 } from "./windows.js";

/** The collectors' clock: just after the test windows' start. */
export const NOW = T0 + 10_000;

export class TestCollectors {
  readonly probes = new ProbeFactory();
  private readonly running: Collector[] = [];

  async start(extra: Partial<CollectorOptions> = {}): Promise<{ collector: Collector; logs: string[] }> {
    const logs: string[] = [];
    const collector = await startCollector({
      grpcListen: "127.0.0.1:0",
      httpListen: "127.0.0.1:0",
      thresholds: DEFAULT_THRESHOLDS,
      logger: createLogger({ write: (l) => void logs.push(l), level: "debug" }),
      now: () => NOW,
      collectorId: "collector-under-test",
      ...extra,
    });
    this.running.push(collector);
    return { collector, logs };
  }

  /** For afterEach: closes the probes, stops every collector started. */
  async stopAll(): Promise<void> {
    this.probes.close();
    await Promise.all(this.running.splice(0).map((c) => c.stop()));
  }
}
