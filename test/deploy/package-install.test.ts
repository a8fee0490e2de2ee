/**
 * Install as a package, the way an operator does: `npm pack` this checkout (dist/ is built by
 * the test setup), `npm install -g` the tarball into a temp prefix from the npm registry, and
 * run the installed `trueidle` with no dev dependency present: `--help`, `agent --once`
 * against the fake nvidia-smi and through NVML against the stub library (koffi and the NVML
 * worker load from the installed package), and a collector that answers /healthz and
 * exits 0 on SIGTERM.
 * The tarball holds what runs and what deploys (bin, dist, demo scenarios, deploy/) and
 * nothing else: no sources, tests or local files.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GPU_C01_STEADY_STATES, GPU_SOURCES, pick } from "../helpers/gpu-sources.js";
import { freePort } from "../helpers/ports.js";
import { REPO_ROOT } from "../helpers/trueidle-process.js";

const run = promisify(execFile);

let tmp: string;
let tarball: string;
let packed: string[];
let prefix: string;
let trueidle: string;
let installed: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), "trueidle-package-"));
  // --ignore-scripts: `prepare` would rebuild dist/ under other tests' feet; the setup built it.
  const pack = await run("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", tmp], {
    cwd: REPO_ROOT,
    maxBuffer: 16 << 20,
  });
  const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  tarball = path.join(tmp, info!.filename);
  packed = info!.files.map((f) => f.path).sort();
  prefix = path.join(tmp, "prefix");
  await run("npm", ["install", "-g", "--prefix", prefix, tarball, "--no-audit", "--no-fund", "--prefer-offline"], {
    cwd: tmp,
    maxBuffer: 16 << 20,
  });
  trueidle = path.join(prefix, "bin", "trueidle");
  installed = path.join(prefix, "lib", "node_modules", "trueidle");
}, 120_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe("npm pack", () => {
  it("packs what runs and what deploys, and nothing else", () => {
    const top = [...new Set(packed.map((p) => (p.includes("/") ? p.slice(0, p.indexOf("/") + 1) : p)))].sort();
    expect(top).toEqual(["README.md", "bin/", "demo/", "deploy/", "dist/", "package.json"]);
    for (const f of [
      "bin/trueidle.js",
      "dist/cli/main.js",
      "dist/gen/trueidle/v1/ingest_pb.js",
      "dist/demo/demo.js",
      "demo/scenarios/gpu-a01.json",
      "deploy/install-agent.sh",
      "deploy/systemd/trueidle-agent.service",
      "deploy/systemd/trueidle-collector.service",
      "deploy/agent.env.example",
      "deploy/docker/Dockerfile.agent",
    ]) {
      expect(packed, f).toContain(f);
    }
    expect(packed.filter((p) => p.startsWith("demo/")).every((p) => p.startsWith("demo/scenarios/"))).toBe(true);
    // (deploy/prometheus's promtool rule tests are data an operator runs, so they ship.)
    expect(packed.filter((p) => /\.test\.[cm]?js$|\.map$|\.ts$|^\.tmp|^test\//.test(p))).toEqual([]);
  });
});

describe("npm install -g of the tarball", () => {
  it("installs no dev dependency", () => {
    const modules = path.join(installed, "node_modules");
    // influx (node-influx) is only the benchmarks' baseline: the collector and report speak to InfluxDB through common/influx/.
    for (const dev of [
      "typescript",
      "vitest",
      "vite",
      "tsx",
      "@bufbuild/buf",
      "@bufbuild/protoc-gen-es",
      "@biomejs/biome",
      "influx",
    ]) {
      expect(existsSync(path.join(modules, dev)), dev).toBe(false);
    }
    expect(readdirSync(modules)).toEqual(
      expect.arrayContaining(["@grpc", "@bufbuild", "echarts", "koffi", "prom-client", "systeminformation"]),
    );
  });

  it("runs `trueidle --help`", async () => {
    const { stdout } = await run(trueidle, ["--help"]);
    expect(stdout).toMatch(/^Usage: trueidle <command> \[flags\]$/m);
    for (const cmd of ["agent", "collector", "demo", "report"]) expect(stdout).toMatch(new RegExp(`^  ${cmd} `, "m"));
  });

  // The same scenario and states through each source: for NVML this is what proves that the
  // installed package loads koffi and its worker thread without the sources or tsx.
  it.each(GPU_SOURCES)("runs `trueidle agent --once` through $name", async (kind) => {
    const src = kind.prepare(
      mkdtempSync(path.join(tmp, `${kind.name}-`)),
      path.join(REPO_ROOT, "demo", "scenarios", "gpu-c01.json"),
    );
    const { stdout } = await run(trueidle, ["agent", "--once", ...src.flags], {
      cwd: tmp,
      env: { ...process.env, ...src.env },
    });
    expect(stdout).toMatch(src.sourceLine);
    expect(stdout).toMatch(/^GPU +MODEL +REPORTED +SM +REAL \(SOURCE\) +STATE /m);
    const rows = stdout.split("\n").filter((l) => /^\d+ +L40S /.test(l));
    expect(rows).toHaveLength(8);
    const states = new Map(
      rows.map((l) => [
        Number(l.split(" ")[0]),
        / (active|busy_phantom|held_idle|free_idle|unavailable)\b/.exec(l)?.[1],
      ]),
    );
    expect(pick(states, GPU_C01_STEADY_STATES)).toEqual(GPU_C01_STEADY_STATES);
  });

  it("runs `trueidle collector --plaintext`: /healthz answers 200, SIGTERM exits 0", async () => {
    const httpPort = await freePort();
    const grpcPort = await freePort();
    const child = spawn(
      trueidle,
      ["collector", "--plaintext", "--grpc-listen", `127.0.0.1:${grpcPort}`, "--http-listen", `127.0.0.1:${httpPort}`],
      {
        cwd: tmp,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    let out = "";
    try {
      await new Promise<void>((resolve, reject) => {
        const onData = (d: Buffer): void => {
          out += d.toString();
          if (out.includes("The collector is listening for agents")) resolve();
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
        void exited.then((code) => reject(new Error(`the installed collector exited (${code}):\n${out}`)));
      });
      const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: "ok" });
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
