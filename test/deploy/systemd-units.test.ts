/**
 * The systemd units in deploy/systemd, checked with systemd's own tools and run for real:
 *
 * - `systemd-analyze verify` accepts them and `systemd-analyze security --offline` rates
 *   their exposure low, with ExecStart pointing at this checkout's bin/trueidle.js (the way
 *   install-agent.sh points it at the installed binary);
 * - they carry what an operator relies on: the trueidle user, the state dir, the env file,
 *   the hardening, and for the agent none of the settings that would hide /dev/nvidia*;
 * - their ExecStart command lines, with the settings of deploy/*.env.example (the files
 *   under /etc/trueidle swapped for test certificates), start the real collector and agent,
 *   which talk over TLS, and stop with exit 0 on the unit's KillSignal; the agent keeps the
 *   default `--source auto` and is run twice, once finding only the fake nvidia-smi and
 *   once only the stub libnvidia-ml.so (NVML, no nvidia-smi at all), and the collector sees
 *   the same GPU states each time, and the job that TRUEIDLE_JOB_MAPPING_DIR (what
 *   install-agent.sh --job-mapping-dir writes) gives a GPU as its owner; an env file naming a
 *   file that is not there exits 2, the status the units do not restart on;
 * - every setting agent.env.example names is a flag of `trueidle agent --help`.
 *
 * systemd need not be running: systemd-analyze works on unit files (Debian's systemd package).
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { makeTestCerts, type TestCerts } from "../helpers/certs.js";
import { parseExposition } from "../helpers/exposition.js";
import { GPU_C01_STEADY_STATES, GPU_SOURCES, gpuStatesOf, pick } from "../helpers/gpu-sources.js";
import { freePort } from "../helpers/ports.js";
import {
  REPO_ROOT,
  TRUEIDLE_BIN,
  runTrueidle,
  startTrueidle,
  type TrueidleProcess,
} from "../helpers/trueidle-process.js";

const run = promisify(execFile);
const SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze";
const UNIT_DIR = path.join(REPO_ROOT, "deploy", "systemd");
/** The binary path the shipped units name; install-agent.sh replaces it with the release's /opt/trueidle/bin/trueidle. */
const SHIPPED_BIN = "/usr/local/bin/trueidle";

type Unit = Map<string, Map<string, string[]>>;

/** Sections of a unit file, each key with all its values in order (keys may repeat). */
function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf("=");
    if (!section || eq < 0) throw new Error(`not a unit file line: ${raw}`);
    const key = line.slice(0, eq);
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1)]);
  }
  return unit;
}

/** The single value of `key` in [Service]. */
function service(unit: Unit, key: string): string | undefined {
  const values = unit.get("Service")?.get(key);
  if (values && values.length > 1) throw new Error(`${key} is set ${values.length} times`);
  return values?.[0];
}

/** KEY=VALUE lines of an env file, as systemd's EnvironmentFile= reads them (no quoting used). */
function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`not an env file line: ${raw}`);
    expect(m[2], `${m[1]} is quoted; systemd and shells read quotes differently`).not.toMatch(/["'\\]/);
    env[m[1]!] = m[2]!;
  }
  return env;
}

function seconds(span: string): number {
  const m = /^(\d+)(s|min)?$/.exec(span);
  if (!m) throw new Error(`unexpected time span ${span}`);
  return Number(m[1]) * (m[2] === "min" ? 60 : 1);
}

const units = {
  agent: parseUnit(readFileSync(path.join(UNIT_DIR, "trueidle-agent.service"), "utf8")),
  collector: parseUnit(readFileSync(path.join(UNIT_DIR, "trueidle-collector.service"), "utf8")),
};

/** ExecStart split into words, the binary checked and dropped. */
function execArgs(unit: Unit): string[] {
  const words = service(unit, "ExecStart")!.split(/\s+/);
  expect(words[0]).toBe(SHIPPED_BIN);
  for (const w of words)
    expect(w, "ExecStart words are plain (no quoting, no specifiers)").toMatch(/^[A-Za-z0-9_./=-]+$/);
  return words.slice(1);
}

let tmp: string;
let certs: TestCerts;
const procs: TrueidleProcess[] = [];

beforeAll(() => {
  if (!existsSync(SYSTEMD_ANALYZE)) {
    throw new Error(`${SYSTEMD_ANALYZE} is missing: install Debian's systemd package (it need not run).`);
  }
  tmp = mkdtempSync(path.join(tmpdir(), "trueidle-systemd-"));
  certs = makeTestCerts();
});

afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.stop("SIGKILL")));
});

afterAll(() => {
  certs?.cleanup();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe("systemd-analyze", () => {
  /** The units as install-agent.sh writes them, with this checkout's binary. */
  function installedCopies(): string[] {
    const dir = mkdtempSync(path.join(tmp, "units-"));
    return ["trueidle-agent.service", "trueidle-collector.service"].map((name) => {
      const text = readFileSync(path.join(UNIT_DIR, name), "utf8");
      const out = path.join(dir, name);
      writeFileSync(out, text.replace(/^ExecStart=\/usr\/local\/bin\/trueidle\b/m, `ExecStart=${TRUEIDLE_BIN}`));
      return out;
    });
  }

  it("verify finds nothing wrong", async () => {
    const files = installedCopies();
    const { stdout, stderr } = await run(SYSTEMD_ANALYZE, ["verify", "--man=no", ...files]);
    expect(stdout + stderr).toBe("");
  });

  it("security --offline rates both units' exposure low", async () => {
    const [agent, collector] = installedCopies();
    // Exposure is 0-10 (0 best); --threshold takes tenths. The agent keeps devices and /proc
    // open for nvidia-smi, so it scores higher than the collector.
    const a = await run(SYSTEMD_ANALYZE, ["security", "--offline=true", "--threshold=25", agent!]);
    expect(a.stdout).toMatch(/Overall exposure level for trueidle-agent\.service: [0-2]\.\d OK/);
    const c = await run(SYSTEMD_ANALYZE, ["security", "--offline=true", "--threshold=15", collector!]);
    expect(c.stdout).toMatch(/Overall exposure level for trueidle-collector\.service: [0-1]\.\d OK/);
  });
});

describe("what the units set", () => {
  it.each(Object.entries(units))("%s: user, state dir, env file, restart policy, hardening", (name, unit) => {
    expect(service(unit, "User")).toBe("trueidle");
    expect(service(unit, "Group")).toBe("trueidle");
    expect(service(unit, "StateDirectory")).toBe("trueidle");
    expect(service(unit, "EnvironmentFile")).toBe(`/etc/trueidle/${name}.env`);
    expect(service(unit, "Restart")).toBe("on-failure");
    expect(seconds(service(unit, "RestartSec")!)).toBeGreaterThan(0);
    expect(service(unit, "RestartPreventExitStatus")).toBe("2");
    expect(service(unit, "KillSignal")).toBe("SIGTERM");
    // The agent drains for up to 5 s and the collector gives InfluxDB up to 10 s on SIGTERM.
    expect(seconds(service(unit, "TimeoutStopSec")!)).toBeGreaterThanOrEqual(20);
    for (const [key, value] of Object.entries({
      NoNewPrivileges: "yes",
      CapabilityBoundingSet: "",
      AmbientCapabilities: "",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
      ProtectKernelTunables: "yes",
      ProtectKernelModules: "yes",
      ProtectKernelLogs: "yes",
      ProtectControlGroups: "yes",
      RestrictNamespaces: "yes",
      RestrictSUIDSGID: "yes",
      LockPersonality: "yes",
      SystemCallArchitectures: "native",
    })) {
      expect(service(unit, key), key).toBe(value);
    }
    expect(service(unit, "RestrictAddressFamilies")!.split(" ").sort()).toEqual([
      "AF_INET",
      "AF_INET6",
      "AF_NETLINK",
      "AF_UNIX",
    ]);
    expect(unit.get("Service")!.get("SystemCallFilter")![0]).toBe("@system-service");
    // Node.js's JIT writes executable memory.
    expect(service(unit, "MemoryDenyWriteExecute")).toBeUndefined();
    expect(unit.get("Install")!.get("WantedBy")).toEqual(["multi-user.target"]);
  });

  it("agent: keeps /dev/nvidia* and /proc/driver/nvidia reachable for nvidia-smi, and a state dir", () => {
    const a = units.agent;
    // Each of these would hide the NVIDIA devices (ProtectClock= implies a device allow-list).
    for (const key of [
      "PrivateDevices",
      "DevicePolicy",
      "DeviceAllow",
      "ProtectClock",
      "ProcSubset",
      "ProtectProc",
      "PrivateUsers",
    ]) {
      expect(service(a, key), key).toBeUndefined();
    }
    expect(service(a, "SupplementaryGroups")).toBe("video");
    expect(execArgs(a)).toEqual(["agent", "--state-dir", "/var/lib/trueidle"]);
    // The job mapping directory (/run/trueidle-jobs) stays readable: nothing hides /run or makes it private.
    for (const key of [
      "InaccessiblePaths",
      "TemporaryFileSystem",
      "RuntimeDirectory",
      "BindPaths",
      "BindReadOnlyPaths",
    ]) {
      expect(service(a, key), key).toBeUndefined();
    }
  });

  it("agent: every setting agent.env.example names, set or commented out, is a flag of `trueidle agent --help`", async () => {
    const help = await runTrueidle(["agent", "--help"]);
    expect(help.code, help.output).toBe(0);
    expect(help.output).toContain("Every flag can also be set in the environment as TRUEIDLE_<FLAG>");
    const example = readFileSync(path.join(REPO_ROOT, "deploy", "agent.env.example"), "utf8");
    const keys = [...new Set([...example.matchAll(/^#?(TRUEIDLE_[A-Z0-9_]+)=/gm)].map((m) => m[1]!))];
    expect(keys).toContain("TRUEIDLE_JOB_MAPPING_DIR");
    expect(help.output).toMatch(/^ {2}--job-mapping-dir DIR +\S/m);
    // TRUEIDLE_TOKEN is the one setting with no flag (never on a command line); the help names it.
    const unknown = keys.filter((k) => {
      const flag = `--${k.slice("TRUEIDLE_".length).toLowerCase().replace(/_/g, "-")}`;
      return !new RegExp(`^ {2}${flag}\\b`, "m").test(help.output) && !help.output.includes(k);
    });
    expect(unknown).toEqual([]);
  });

  it("collector: every setting collector.env.example names, set or commented out, is a flag of `trueidle collector --help`, by its current name", async () => {
    const help = await runTrueidle(["collector", "--help"]);
    expect(help.code, help.output).toBe(0);
    const flags = new Set(
      [...help.output.matchAll(/^ {2}--([a-z][a-z0-9.-]*)/gm)].map(
        (m) => `TRUEIDLE_${m[1]!.toUpperCase().replace(/[-.]/g, "_")}`,
      ),
    );
    const example = readFileSync(path.join(REPO_ROOT, "deploy", "collector.env.example"), "utf8");
    const keys = [...new Set([...example.matchAll(/^#?(TRUEIDLE_[A-Z0-9_]+)=/gm)].map((m) => m[1]!))];
    expect(keys).toEqual(expect.arrayContaining(["TRUEIDLE_AGENT_TOKENS_FILE", "TRUEIDLE_WEB_CONFIG_FILE"]));
    // The deprecated TRUEIDLE_TOKENS_FILE still works, but the example uses the current name.
    expect(keys.filter((k) => !flags.has(k))).toEqual([]);
  });

  it("collector: closes devices too, and takes everything from its env file", () => {
    const c = units.collector;
    expect(service(c, "PrivateDevices")).toBe("yes");
    expect(service(c, "ProtectClock")).toBe("yes");
    expect(Number(service(c, "LimitNOFILE"))).toBeGreaterThan(20_000);
    expect(execArgs(c)).toEqual(["collector"]);
  });
});

describe("ExecStart with the example env files", () => {
  /** The example's settings, with files under /etc/trueidle swapped for test files. */
  function exampleEnv(name: "agent" | "collector", files: Record<string, string>): Record<string, string> {
    const env = parseEnvFile(readFileSync(path.join(REPO_ROOT, "deploy", `${name}.env.example`), "utf8"));
    for (const [key, value] of Object.entries(env)) {
      if (!value.startsWith("/etc/trueidle/")) continue;
      const swapped = files[value];
      if (swapped === undefined) throw new Error(`${name}.env.example: ${key}=${value} has no test stand-in`);
      env[key] = swapped;
    }
    return env;
  }

  // Both sources run this whole check: it is the one place the unit's agent reads GPUs.
  it.each(GPU_SOURCES)(
    "start the collector and the agent (auto source, finding $name), which connect over TLS and stop cleanly on SIGTERM",
    async (kind) => {
      const grpcPort = await freePort();
      const httpPort = await freePort();
      const collectorEnv = {
        ...exampleEnv("collector", {
          "/etc/trueidle/collector.crt": certs.serverCert,
          "/etc/trueidle/collector.key": certs.serverKey,
        }),
        // Loopback on free ports instead of the defaults (0.0.0.0:9746, 0.0.0.0:9745).
        TRUEIDLE_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
        TRUEIDLE_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      };
      const collector = startTrueidle(execArgs(units.collector), collectorEnv);
      procs.push(collector);
      await collector.waitForOutput(/The collector is listening for agents/);
      expect(collector.output()).toMatch(/TLS/);

      const stateDir = path.join(tmp, `agent-state-${kind.name}`);
      // What a Slurm prolog keeps (deploy/slurm/), here named by index as dcgm-exporter's: job 4242 of alice holds GPU 3.
      const jobs = mkdtempSync(path.join(tmp, "jobs-"));
      writeFileSync(path.join(jobs, "3"), "4242 alice\n");
      const src = kind.prepare(
        mkdtempSync(path.join(tmp, "source-")),
        path.join(REPO_ROOT, "demo", "scenarios", "gpu-c01.json"),
      );
      const args = execArgs(units.agent).map((a) => (a === "/var/lib/trueidle" ? stateDir : a));
      const agentEnv = {
        ...exampleEnv("agent", { "/etc/trueidle/ca.crt": certs.caCert }),
        TRUEIDLE_COLLECTOR: `127.0.0.1:${grpcPort}`,
        // TRUEIDLE_NVIDIA_SMI is what install-agent.sh adds when nvidia-smi is outside systemd's
        // PATH; TRUEIDLE_NVML_LIB stands for the driver's libnvidia-ml.so.1. Each variant has
        // one of them and a missing path for the other.
        ...src.autoSettings,
        ...src.env,
        // Short windows so the first one arrives soon; the example leaves the 10 s default.
        TRUEIDLE_WINDOW: "1s",
        // What install-agent.sh --job-mapping-dir adds to the env file.
        TRUEIDLE_JOB_MAPPING_DIR: jobs,
        TRUEIDLE_TOKEN: "",
      };
      const agent = startTrueidle(args, agentEnv);
      procs.push(agent);
      await agent.waitForOutput(/Connected to the collector/);
      expect(agent.output()).toMatch(/The agent connects with TLS/);
      expect(agent.output()).toMatch(src.autoChoice);

      // The example's labels reach the collector's metrics with the agent's windows.
      const deadline = Date.now() + 30_000;
      let metrics = "";
      while (!/trueidle_gpu_up\{[^}]*site="eu-west"[^}]*\} 1/.test(metrics)) {
        if (Date.now() > deadline)
          throw new Error(
            `no GPU with site="eu-west" in /metrics:\n${metrics.slice(0, 3000)}\n${agent.output().slice(-3000)}`,
          );
        await new Promise((r) => setTimeout(r, 250));
        metrics = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then(
          (r) => r.text(),
          () => "",
        );
      }
      expect(metrics).toMatch(/cluster="c1"/);
      expect(metrics).toMatch(/pool="training"/);
      // The scenario's GPUs, in the states it implies (the ones that do not cycle).
      const host = parseExposition(metrics).find((s) => s.name === "trueidle_gpu_up")!.labels["host"]!;
      expect(pick(gpuStatesOf(parseExposition(metrics), host), GPU_C01_STEADY_STATES)).toEqual(GPU_C01_STEADY_STATES);
      // The job owns GPU 3 (held idle anyway) and no other.
      const owners = (text: string) => parseExposition(text).filter((s) => s.name === "trueidle_gpu_owner_info");
      while (owners(metrics).length === 0) {
        if (Date.now() > deadline)
          throw new Error(
            `no trueidle_gpu_owner_info in /metrics:\n${metrics.slice(0, 3000)}\n${agent.output().slice(-3000)}`,
          );
        await new Promise((r) => setTimeout(r, 250));
        metrics = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then(
          (r) => r.text(),
          () => "",
        );
      }
      expect(owners(metrics).map((s) => [s.labels["gpu"], s.labels["job"], s.labels["user"], s.value])).toEqual([
        ["3", "4242", "alice", 1],
      ]);

      expect(await agent.stop("SIGTERM")).toBe(0);
      expect(await collector.stop("SIGTERM")).toBe(0);
      expect(existsSync(path.join(stateDir, "buffer"))).toBe(true);
    },
  );

  it("an env file naming a missing file exits 2, which the units do not restart on", async () => {
    // The examples as shipped: /etc/trueidle/ca.crt and collector.crt are not on this machine.
    const agent = startTrueidle(
      execArgs(units.agent).map((a) => (a === "/var/lib/trueidle" ? path.join(tmp, "unused") : a)),
      parseEnvFile(readFileSync(path.join(REPO_ROOT, "deploy", "agent.env.example"), "utf8")),
    );
    procs.push(agent);
    expect(await agent.exited).toBe(2);
    expect(agent.output()).toContain("--tls-ca /etc/trueidle/ca.crt cannot be read");

    const collector = startTrueidle(execArgs(units.collector), {
      ...parseEnvFile(readFileSync(path.join(REPO_ROOT, "deploy", "collector.env.example"), "utf8")),
      TRUEIDLE_GRPC_LISTEN: "127.0.0.1:0",
      TRUEIDLE_HTTP_LISTEN: "127.0.0.1:0",
    });
    procs.push(collector);
    expect(await collector.exited).toBe(2);
    expect(collector.output()).toContain("/etc/trueidle/collector.crt cannot be read");
  });
});
