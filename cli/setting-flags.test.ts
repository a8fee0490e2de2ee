/**
 * One source for every default and bound: each flag built from a setting shows the
 * setting's default in --help and parses to it, its parser bounds are the setting's, the
 * collector's library API refuses what the flag refuses, and the components, constructed
 * without the option, use the same default.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { formatHelp, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";
import { agentSpec } from "./agent-command.js";
import { collectorSpec } from "./collector-command.js";
import { demoSpec } from "./demo-command.js";
import { reportSpec } from "./report-command.js";
import { settingOf } from "./setting-flags.js";
import { parseDuration } from "../common/duration.js";
import { recordingLogger, silentLogger } from "../common/log.js";
import type { NumericSetting, Setting } from "../common/settings.js";
import { parseSize } from "../common/size.js";
import { HELD_MEMORY_MIB, THRESHOLD_SETTINGS } from "../common/threshold-settings.js";
import { DEFAULT_THRESHOLDS } from "../common/types.js";
import { Agent } from "../agent/agent.js";
import { AGENT_SETTINGS } from "../agent/settings.js";
import { Shipper } from "../agent/shipper/shipper.js";
import { NvidiaSmiSource } from "../agent/sources/nvidia-smi/nvidia-smi-source.js";
import { createSource } from "../agent/sources/registry.js";
import type { GpuSource } from "../agent/sources/source.js";
import { AgentRegistry } from "../collector/agent-registry.js";
import { startCollector, type CollectorOptions } from "../collector/collector.js";
import { FleetState } from "../collector/fleet-state.js";
import { DEFAULT_AGENT_RATE_LIMITS } from "../collector/rate-limit.js";
import { COLLECTOR_INFLUX_SETTINGS, COLLECTOR_SETTINGS, COLLECTOR_SPOOL_SETTINGS } from "../collector/settings.js";
import { DEFAULT_WINDOW_LIMITS } from "../collector/validate.js";
import { buildReport } from "../report/report.js";
import { REPORT_SETTINGS } from "../report/settings.js";
import { FleetHistoryModel } from "../demo/fleet-history.js";
import { DEMO_SETTINGS } from "../demo/settings.js";

const SPECS: readonly CommandSpec[] = [agentSpec, collectorSpec, reportSpec, demoSpec];

/** Numeric flags with a default or a bound of their own, not a component's: the demo's run length and backfill range. */
const OWN_FLAGS = new Set(["demo --duration", "demo --backfill"]);

const MiB = 1024 * 1024;

/** A number as a flag spells it for the setting's kind. */
function flagText(s: NumericSetting, v: number): string {
  return s.kind === "duration" ? `${v}ms` : String(v);
}

/** A flag's default text from --help, read back as the setting's value. */
function readDefault(s: Setting, text: string): number | string {
  if (s.kind === "text") return text;
  if (s.kind === "duration") return parseDuration(text);
  if (s.kind === "size") return parseSize(text);
  return Number(text);
}

/** The --help rows of one flag (the help may wrap onto the next line). */
function helpOf(spec: CommandSpec, flag: FlagSpec): string {
  const help = formatHelp(spec);
  const at = help.search(new RegExp(`\\n  --${flag.name}[ \\n]`));
  expect(at, `--${flag.name} in ${spec.name} --help`).toBeGreaterThanOrEqual(0);
  const end = help.indexOf("\n  --", at + 1);
  return help.slice(at, end < 0 ? undefined : end);
}

const fromSettings = SPECS.flatMap((spec) =>
  spec.flags.flatMap((flag) => {
    const setting = settingOf(flag);
    return setting ? [{ spec, flag, setting, label: `${spec.name} --${flag.name}` }] : [];
  }),
);

describe("flags built from settings", () => {
  it("are every numeric flag with a default or a bound, but the demo's own", () => {
    const own = SPECS.flatMap((spec) =>
      spec.flags
        .filter((f) => ["number", "duration", "size"].includes(f.type))
        .filter((f) => f.default !== undefined || f.min !== undefined || f.max !== undefined)
        .filter((f) => settingOf(f) === undefined)
        .map((f) => `${spec.name} --${f.name}`),
    );
    expect(own.sort()).toEqual([...OWN_FLAGS].sort());
    expect(fromSettings.length).toBeGreaterThan(40);
  });

  it.each(fromSettings)(
    "$label: --help shows the setting's default and the parser takes it",
    ({ spec, flag, setting }) => {
      const help = helpOf(spec, flag);
      const parsed = parseFlags(spec, [], {})[flag.name];
      if (setting.default === undefined) {
        expect(help).not.toContain("[default:");
        expect(parsed).toBeUndefined();
        return;
      }
      const shown = /\[default: ([^\]]*)\]/.exec(help)?.[1];
      expect(shown).toBeDefined();
      expect(readDefault(setting, shown!)).toBe(setting.default);
      expect(parsed).toBe(setting.default);
    },
  );

  it.each(fromSettings)("$label: the parser's bounds are the setting's", ({ spec, flag, setting }) => {
    if (setting.kind === "text") {
      expect(flag.choices).toBe(setting.choices);
      return;
    }
    expect([flag.min, flag.minExclusive, flag.max]).toEqual([setting.min, setting.minExclusive, setting.max]);
    const unit = setting.kind === "duration" ? " ms" : setting.kind === "size" ? " bytes" : "";
    const parse = (v: number): unknown => parseFlags(spec, [`--${flag.name}`, flagText(setting, v)], {})[flag.name];
    const step = setting.kind === "number" ? 0.5 : 1;
    if (setting.min !== undefined) {
      if (setting.minExclusive) {
        expect(() => parse(setting.min!)).toThrow(`--${flag.name}: must be more than ${setting.min}${unit}`);
      } else {
        expect(parse(setting.min)).toBe(setting.min);
        expect(() => parse(setting.min! - step)).toThrow(`--${flag.name}: must be at least ${setting.min}${unit}`);
      }
    }
    if (setting.max !== undefined) {
      expect(parse(setting.max)).toBe(setting.max);
      expect(() => parse(setting.max! + step)).toThrow(`--${flag.name}: must be at most ${setting.max}${unit}`);
    }
  });
});

/** Where each collector flag's setting lands in startCollector's options, and its scale. */
function collectorOption(setting: Setting): { path: readonly string[]; scale: number } | undefined {
  const groups: [readonly string[], Readonly<Record<string, Setting>>][] = [
    [[], COLLECTOR_SETTINGS],
    [["influx"], COLLECTOR_INFLUX_SETTINGS],
    [["spool"], COLLECTOR_SPOOL_SETTINGS],
    [["thresholds"], THRESHOLD_SETTINGS],
  ];
  if (setting === HELD_MEMORY_MIB) return { path: ["thresholds", "heldMemoryBytes"], scale: MiB };
  for (const [prefix, settings] of groups) {
    for (const [key, s] of Object.entries(settings)) if (s === setting) return { path: [...prefix, key], scale: 1 };
  }
  return undefined;
}

const tempDirs: string[] = [];
afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/**
 * startCollector's options with one option set (the others valid, with InfluxDB and a spool
 * where the option is theirs); the error it gives, or undefined when it starts.
 */
async function collectorProblem(path: readonly string[], value: number): Promise<string | undefined> {
  const opts: Record<string, unknown> = {
    grpcListen: "127.0.0.1:0",
    httpListen: "127.0.0.1:0",
    thresholds: { ...DEFAULT_THRESHOLDS },
    logger: silentLogger,
  };
  if (path[0] === "influx" || path[0] === "spool")
    opts["influx"] = { target: { baseUrl: "http://127.0.0.1:1", database: "trueidle" } };
  if (path[0] === "spool") {
    const dir = mkdtempSync(join(tmpdir(), "trueidle-settings-"));
    tempDirs.push(dir);
    opts["spool"] = { dir: join(dir, "spool") };
  }
  if (path.length === 1) opts[path[0]!] = value;
  else (opts[path[0]!] as Record<string, unknown>)[path[1]!] = value;
  try {
    const c = await startCollector(opts as unknown as CollectorOptions);
    await c.stop();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

describe("the collector's library API", () => {
  const collectorFlags = fromSettings
    .filter((f) => f.spec === collectorSpec && f.setting.kind !== "text")
    .map((f) => ({ ...f, option: collectorOption(f.setting) }));

  it("has an option for every numeric flag", () => {
    expect(collectorFlags.filter((f) => f.option === undefined).map((f) => f.label)).toEqual([]);
  });

  // The spool's size is the one bound the API takes below the flag's: tests fill a small spool.
  it.each(collectorFlags.filter((f) => f.flag.name !== "spool-max-size"))(
    "$label: refuses what the flag refuses, naming the option",
    async ({ spec, flag, setting, option }) => {
      const s = setting as NumericSetting;
      const name = option!.path.join(".");
      const step = s.kind === "number" ? 0.5 : 1;
      const out: number[] = [];
      if (s.min !== undefined) out.push(s.minExclusive ? s.min : s.min - step);
      if (s.max !== undefined) out.push(s.max + step);
      expect(out.length).toBeGreaterThan(0);
      for (const v of out) {
        expect(() => parseFlags(spec, [`--${flag.name}`, flagText(s, v)], {})).toThrow(`--${flag.name}: must be`);
        expect(await collectorProblem(option!.path, v * option!.scale)).toContain(`${name} must be`);
      }
      if (s.min !== undefined && !s.minExclusive) {
        expect((await collectorProblem(option!.path, s.min * option!.scale)) ?? "").not.toContain(`${name} must be`);
      }
    },
  );
});

describe("components constructed without the option", () => {
  afterEach(() => void vi.restoreAllMocks());

  it("the collector's fleet, registry and limits take the settings' defaults", () => {
    const fleet = new FleetState({});
    expect([fleet.staleAfterWindows, fleet.expireAfterMs, fleet.maxGpusPerHost, fleet.maxGpus]).toEqual([
      COLLECTOR_SETTINGS.staleAfterWindows.default,
      COLLECTOR_SETTINGS.expireAfterMs.default,
      COLLECTOR_SETTINGS.maxGpusPerHost.default,
      COLLECTOR_SETTINGS.maxGpus.default,
    ]);
    expect(new AgentRegistry().maxAgents).toBe(COLLECTOR_SETTINGS.maxAgents.default);
    expect(DEFAULT_WINDOW_LIMITS).toEqual({
      maxFutureMs: COLLECTOR_SETTINGS.maxWindowFutureMs.default,
      maxAgeMs: COLLECTOR_SETTINGS.maxWindowAgeMs.default,
      maxWindowsPerBatch: COLLECTOR_SETTINGS.maxWindowsPerBatch.default,
      maxGpusPerHost: COLLECTOR_SETTINGS.maxGpusPerHost.default,
    });
    expect(DEFAULT_AGENT_RATE_LIMITS.windowsPerS).toBe(COLLECTOR_SETTINGS.agentRateLimit.default);
  });

  it("the collector serves the default connection limits and Hello timeout", async () => {
    const logger = recordingLogger();
    const collector = await startCollector({
      grpcListen: "127.0.0.1:0",
      httpListen: "127.0.0.1:0",
      thresholds: DEFAULT_THRESHOLDS,
      logger,
    });
    await collector.stop();
    const started = logger.lines.find((l) => l.msg.startsWith("The collector is listening"));
    const http = COLLECTOR_SETTINGS.httpMaxConnections.default;
    expect(started?.fields?.["http_connections"]).toBe(`${http} in all, ${http / 4} per address`);
    const grpc = /^(\d+) in all, (\d+) per address; a stream must say Hello within (\d+) s$/.exec(
      String(started?.fields?.["grpc_connections"]),
    );
    expect(grpc).not.toBeNull();
    // Per address: the default, unless the descriptors the process may hold cut the whole below it.
    const [all, perAddress, helloS] = grpc!.slice(1).map(Number) as [number, number, number];
    expect(perAddress).toBe(Math.min(all, COLLECTOR_SETTINGS.maxConnectionsPerAddress.default));
    expect(helloS * 1000).toBe(COLLECTOR_SETTINGS.helloTimeoutMs.default);
  });

  it("the agent's buffer and the shipper's take the settings' bounds", async () => {
    const source: GpuSource = {
      name: "test",
      start: async () => {},
      sample: () => [],
      stop: async () => {},
      stats: () => ({ restarts: 0, parseErrors: 0 }),
    };
    const host = { hostname: "h", machineId: "m", labels: {} };
    type Buffered = { buffer: { opts: { maxWindows: number }; maxBytes: number } };
    const bounds = (b: Buffered["buffer"]): number[] => [b.opts.maxWindows, b.maxBytes];
    const expected = [AGENT_SETTINGS.maxBufferedWindows.default, AGENT_SETTINGS.maxBufferBytes.default];

    const agent = new Agent({
      source,
      host,
      collectors: ["127.0.0.1:1"],
      intervalMs: AGENT_SETTINGS.intervalMs.default,
      windowMs: AGENT_SETTINGS.windowMs.default,
      thresholds: DEFAULT_THRESHOLDS,
      logger: silentLogger,
    });
    await agent.start();
    try {
      expect(bounds((agent as unknown as Buffered).buffer)).toEqual(expected);
    } finally {
      await agent.stop();
    }

    const shipper = new Shipper({
      targets: ["127.0.0.1:1"],
      host,
      agentVersion: "test",
      source: "test",
      windowMs: AGENT_SETTINGS.windowMs.default,
      logger: silentLogger,
    });
    expect(bounds((shipper as unknown as Buffered).buffer)).toEqual(expected);
  });

  it("the nvidia-smi source reads MIG instances at the default interval, or at --mig-interval", () => {
    const of = (src: unknown): number => (src as { migIntervalMs: number }).migIntervalMs;
    const base = {
      source: "nvidia-smi",
      intervalMs: 1000,
      processIntervalMs: 5000,
      nvidiaSmiPath: "nvidia-smi",
    } as const;
    expect(of(createSource({ ...base, logger: silentLogger }))).toBe(AGENT_SETTINGS.migIntervalMs.default);
    expect(of(createSource({ ...base, migIntervalMs: 30_000, logger: silentLogger }))).toBe(30_000);
    expect(parseFlags(agentSpec, ["--mig-interval", "30s"], {})["mig-interval"]).toBe(30_000);
    expect(parseFlags(agentSpec, [], { TRUEIDLE_MIG_INTERVAL: "1m" })["mig-interval"]).toBe(60_000);
    expect(parseFlags(agentSpec, [], {})["mig-interval"]).toBe(15_000);
    expect(() => parseFlags(agentSpec, ["--mig-interval", "100ms"], {})).toThrow(/--mig-interval/);
  });

  it("the nvidia-smi source lists processes at the default interval", () => {
    const src = new NvidiaSmiSource({ path: "nvidia-smi", intervalMs: 1000, logger: silentLogger });
    expect((src as unknown as { processIntervalMs: number }).processIntervalMs).toBe(
      AGENT_SETTINGS.processIntervalMs.default,
    );
  });

  it("the report gives each query the default timeout", async () => {
    const server = createServer((req, res) => {
      res.writeHead(req.url?.startsWith("/ping") ? 204 : 500).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const timeouts = vi.spyOn(AbortSignal, "timeout");
    try {
      const { port } = server.address() as AddressInfo;
      await buildReport({
        influxUrl: `http://127.0.0.1:${port}/trueidle`,
        range: { startMs: Date.UTC(2026, 0, 1), endMs: Date.UTC(2026, 0, 2) },
        by: ["model"],
      }).catch(() => undefined);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    // The first is the /ping's own, shorter bound; the queries take the report's timeout.
    expect(timeouts.mock.calls.slice(1).map((c) => c[0])).toContain(REPORT_SETTINGS.queryTimeoutMs.default);
  });

  it("the demo's fleet history takes the default seed", () => {
    expect((new FleetHistoryModel() as unknown as { seed: number }).seed).toBe(DEMO_SETTINGS.seed.default);
  });
});
