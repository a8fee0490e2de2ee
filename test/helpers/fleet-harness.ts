/**
 * A fleet of real processes for fault tests: a private InfluxDB, collector subprocesses
 * writing to it (each with a disk spool), and agent subprocesses with the sim source and
 * an on-disk state dir — each can be stopped, killed and started again on the same ports
 * and directories (fleet-nodes.ts). `accountWindows` (fleet-accounting.ts) then checks
 * InfluxDB against what the agents measured.
 *
 * Agents sample every 100 ms into 1 s windows. The sim source is deterministic and windows
 * are aligned to wall-clock seconds, so while an agent runs, each of its GPUs yields one
 * window per second, each of ten samples.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { loadScenario } from "../../agent/sim/scenario.js";
import { RP_WINDOW, MEASUREMENT_WINDOW } from "../../collector/influx/schema.js";
import { findInfluxd, INFLUXD_MISSING_HELP, startPrivateInfluxd } from "../../demo/private-influxd.js";
import { AgentNode, CollectorNode, INTERVAL_MS, WINDOW_MS, type AgentSpec, type CollectorSpec } from "./fleet-nodes.js";
import { influxQuery, type PrivateInfluxd } from "./influxdb.js";
import { freePort } from "./ports.js";
import { TcpProxy } from "./tcp-proxy.js";
import { REPO_ROOT } from "./trueidle-process.js";
import { eventually } from "./eventually.js";

export {
  AgentNode,
  CollectorNode,
  FULL_WINDOW_S,
  INTERVAL_MS,
  rssBytes,
  WINDOW_MS,
  type AgentRun,
  type AgentSpec,
  type CollectorSpec,
} from "./fleet-nodes.js";
export { parseExposition, sumOf, type ExpositionSample } from "./exposition.js";

/** The scenario files of the fault tests. */
export const SCENARIO_DIR = path.join(REPO_ROOT, "test", "faults", "scenarios");

export { eventually };

/** One window point in InfluxDB. */
export interface WindowPoint {
  uuid: string;
  host: string;
  timeMs: number;
  observedS: number;
}

/**
 * The InfluxDB, collectors and agents of one fault test, under one temp dir.
 *
 * Collectors reach InfluxDB through a TCP proxy on a port that never changes, so InfluxDB
 * can be stopped for real and started again from its data dir (on new ports, as
 * startPrivateInfluxd picks them) while the collectors keep their --influx-url.
 */
export class Fleet {
  readonly collectors: CollectorNode[] = [];
  readonly agents: AgentNode[] = [];
  /** Names handed out so far; taken before any await, so concurrent starts never share one. */
  private collectorsNamed = 0;
  private agentsNamed = 0;

  private constructor(
    readonly dir: string,
    private influxd: PrivateInfluxd | undefined,
    private readonly influxProxy: TcpProxy,
    readonly database: string,
  ) {}

  /** Starts a private InfluxDB; `name` names the temp dir and the database. */
  static async start(name: string): Promise<Fleet> {
    if (!findInfluxd()) throw new Error(`${INFLUXD_MISSING_HELP} Run the tests with \`npm test\`, which installs it.`);
    const dir = mkdtempSync(path.join(tmpdir(), `trueidle-${name}-`));
    const influxd = await startPrivateInfluxd({ dir: path.join(dir, "influxd"), cqRunInterval: "1s" });
    const proxy = await TcpProxy.start({ targetPort: influxd.port });
    return new Fleet(dir, influxd, proxy, name.replace(/[^a-z0-9_]/gi, "_"));
  }

  /** InfluxDB's base URL for queries; throws while it is stopped. */
  get influxBase(): string {
    if (!this.influxd) throw new Error("InfluxDB is stopped");
    return this.influxd.url;
  }

  /** The --influx-url collectors use (through the proxy, with the database). */
  get influxUrl(): string {
    return `http://127.0.0.1:${this.influxProxy.port}/${this.database}`;
  }

  /** Stops InfluxDB (SIGTERM; its data stays); collectors get "connection refused". */
  async stopInflux(): Promise<void> {
    await this.influxProxy.down();
    await this.influxd?.stop();
    this.influxd = undefined;
  }

  /** Starts InfluxDB again from its data dir. */
  async startInflux(): Promise<void> {
    if (this.influxd) throw new Error("InfluxDB is running");
    this.influxd = await startPrivateInfluxd({ dir: path.join(this.dir, "influxd"), cqRunInterval: "1s" });
    await this.influxProxy.up(this.influxd.port);
  }

  /** Starts a collector writing to this fleet's InfluxDB; waits until it listens. */
  async startCollector(spec: CollectorSpec = {}): Promise<CollectorNode> {
    const name = `collector-${++this.collectorsNamed}`;
    const grpcHost = spec.grpcHost ?? "127.0.0.1";
    const grpcPort = spec.grpcPort ?? (await freePort());
    const httpPort = await freePort();
    const spoolDir = spec.spool === false ? undefined : path.join(this.dir, name, "spool");
    const argv = [
      "collector",
      "--plaintext",
      "--grpc-listen",
      `${grpcHost}:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--influx-url",
      this.influxUrl,
      "--influx-flush-interval",
      "100ms",
      ...(spoolDir ? ["--spool-dir", spoolDir] : []),
      ...(spec.args ?? []),
    ];
    const node = new CollectorNode(name, grpcPort, httpPort, spoolDir, argv, spec.env ?? {}, grpcHost);
    this.collectors.push(node);
    await node.start();
    return node;
  }

  /** Starts an agent for a scenario; waits until it samples. */
  async startAgent(spec: AgentSpec): Promise<AgentNode> {
    const scenarioPath = path.isAbsolute(spec.scenario) ? spec.scenario : path.join(SCENARIO_DIR, spec.scenario);
    const stateDir = path.join(this.dir, `agent-${++this.agentsNamed}`, "state");
    mkdirSync(path.dirname(stateDir), { recursive: true });
    const host = loadScenario(scenarioPath).host ?? "";
    const httpPort = spec.httpListen ? await freePort() : undefined;
    const argv = [
      "agent",
      "--plaintext",
      "--source",
      "sim",
      "--scenario",
      scenarioPath,
      "--hostname",
      host,
      "--interval",
      `${INTERVAL_MS}ms`,
      "--window",
      `${WINDOW_MS}ms`,
      "--state-dir",
      stateDir,
      "--collector",
      spec.collectors.join(","),
      ...(httpPort !== undefined ? ["--http-listen", `127.0.0.1:${httpPort}`] : []),
      ...(spec.args ?? []),
    ];
    const node = new AgentNode(scenarioPath, stateDir, argv, spec.env ?? {}, httpPort);
    this.agents.push(node);
    await node.start();
    return node;
  }

  /** SIGTERM to every running agent at once; their final log fields by host. */
  async stopAgents(): Promise<Map<string, Record<string, unknown>>> {
    const running = this.agents.filter((a) => a.running);
    const finals = await Promise.all(running.map((a) => a.stop()));
    return new Map(running.map((a, i) => [a.host, finals[i]!]));
  }

  /**
   * Waits until every running collector's spool is empty and InfluxDB's window count has
   * stopped moving (two polls a second apart agree); returns count and sum per GPU.
   */
  async settle(timeoutMs = 90_000): Promise<Map<string, { count: number; sum: number }>> {
    let last = -1;
    return eventually(
      "the collectors' spools to drain and InfluxDB to settle",
      async () => {
        for (const c of this.collectors.filter((x) => x.running)) {
          const bytes = await c.metric("trueidle_spool_bytes");
          if (bytes !== 0) throw new Error(`collector ${c.name} still spools ${bytes} bytes`);
        }
        const totals = await this.influxTotals();
        const count = [...totals.values()].reduce((n, t) => n + t.count, 0);
        if (count === last) return totals;
        last = count;
        return undefined;
      },
      timeoutMs,
      1_000,
    );
  }

  /** settle(), then every window point. */
  async settledWindows(timeoutMs = 90_000): Promise<WindowPoint[]> {
    await this.settle(timeoutMs);
    return this.windowPoints();
  }

  /** Every gpu_window point, per series. */
  async windowPoints(): Promise<WindowPoint[]> {
    const q = `SELECT "observed_s", "host" FROM "${this.database}"."${RP_WINDOW}"."${MEASUREMENT_WINDOW}" GROUP BY "uuid"`;
    const results = await influxQuery(this.influxBase, q, this.database);
    const out: WindowPoint[] = [];
    for (const s of results[0]?.series ?? []) {
      const cols = s.columns;
      const t = cols.indexOf("time"),
        o = cols.indexOf("observed_s"),
        h = cols.indexOf("host");
      for (const v of s.values ?? []) {
        out.push({ uuid: s.tags?.["uuid"] ?? "", host: String(v[h]), timeMs: Number(v[t]), observedS: Number(v[o]) });
      }
    }
    return out;
  }

  /** count(observed_s) and sum(observed_s) per uuid, as InfluxDB computes them. */
  async influxTotals(): Promise<Map<string, { count: number; sum: number }>> {
    const q = `SELECT count("observed_s"), sum("observed_s") FROM "${this.database}"."${RP_WINDOW}"."${MEASUREMENT_WINDOW}" GROUP BY "uuid"`;
    const results = await influxQuery(this.influxBase, q, this.database);
    const out = new Map<string, { count: number; sum: number }>();
    for (const s of results[0]?.series ?? []) {
      const v = s.values?.[0];
      if (v) out.set(s.tags?.["uuid"] ?? "", { count: Number(v[1]), sum: Number(v[2]) });
    }
    return out;
  }

  /** Every process's output, for failure messages. */
  output(): string {
    return [...this.collectors.map((c) => c.output()), ...this.agents.map((a) => a.output())].join("\n");
  }

  /** Kills what still runs and removes InfluxDB and the temp dir; safe twice. */
  async stop(): Promise<void> {
    await Promise.all([
      ...this.agents.filter((a) => a.running).map((a) => a.current!.proc.stop("SIGKILL")),
      ...this.collectors.filter((c) => c.running).map((c) => c.kill("SIGKILL")),
    ]);
    await this.influxProxy.close();
    await this.influxd?.stop();
    this.influxd = undefined;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
