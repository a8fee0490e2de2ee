/**
 * The release for GPU nodes, built for real once by `npm run release` into a temp folder
 * (minutes: it compiles, installs the production dependencies and packs about 140 MB with
 * xz -9), then held to what it promises:
 * - trueidle-VERSION-linux-x64.tar.xz and its .sha256, which `sha256sum -c` accepts;
 * - one folder holding the launcher, Node.js with its license, dist/, the production
 *   install (no dev dependency, nothing that never loads: sources, declarations, maps),
 *   demo/scenarios/, the node's deploy files and RELEASE, root-owned, nothing
 *   world-writable; RELEASE names the version, the Node.js it holds and the oldest glibc its
 *   binaries load on, as objdump reads them;
 * - unpacked into an empty folder and run with a PATH that has no `node` (checked): `--help`,
 *   `--version`, `agent --once` through the fake nvidia-smi (run by the release's own
 *   Node.js) and through NVML (the stub library, so koffi's prebuilt binary loads from the
 *   release), also through a chain of links like /usr/local/bin/trueidle ->
 *   /opt/trueidle/bin/trueidle;
 * - its own deploy/install-agent.sh installs it into a temp root, with no `node` on PATH,
 *   and the installed agent runs.
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  createReadStream,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFakeNvidiaSmi } from "../helpers/fake-nvidia-smi.js";
import { GPU_C01_STEADY_STATES, NVML_SOURCE, pick } from "../helpers/gpu-sources.js";
import { NODE_COMMANDS, pathWithout } from "../helpers/path-without.js";
import { REPO_ROOT } from "../helpers/trueidle-process.js";

const execFileAsync = promisify(execFile);
const SCENARIO = path.join(REPO_ROOT, "demo", "scenarios", "gpu-c01.json");
const VERSION = (JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;
const NAME = `trueidle-${VERSION}-linux-x64`;
/** What a node needs from deploy/, and all the release carries of it. */
const DEPLOY_FILES = [
  "agent.env.example",
  "collector.env.example",
  "install-agent.sh",
  "slurm/epilog.sh",
  "slurm/prolog.sh",
  "systemd/trueidle-agent.service",
  "systemd/trueidle-collector.service",
];

let tmp: string;
let outDir: string;
let tarball: string;
/** `tar -tv` of the tarball: mode, owner and path of each entry. */
let entries: Array<{ mode: string; owner: string; path: string }>;
/** The release unpacked into a folder that was empty. */
let release: string;
/** A PATH with the system's commands and no Node.js. */
let nodeless: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), "trueidle-release-"));
  outDir = path.join(tmp, "out");
  await execFileAsync("npm", ["run", "--silent", "release", "--", "--out-dir", outDir], {
    cwd: REPO_ROOT,
    maxBuffer: 64 << 20,
  });
  tarball = path.join(outDir, `${NAME}.tar.xz`);
  const { stdout } = await execFileAsync("tar", ["--numeric-owner", "-tvJf", tarball], { maxBuffer: 64 << 20 });
  entries = stdout
    .trim()
    .split("\n")
    .map((l) => {
      const [mode, owner, , , , ...rest] = l.split(/\s+/);
      return { mode: mode!, owner: owner!, path: rest.join(" ").replace(/ -> .*$/, "") };
    });
  const empty = path.join(tmp, "empty");
  mkdirSync(empty);
  await execFileAsync("tar", ["-xJf", tarball, "-C", empty]);
  release = path.join(empty, NAME);
  nodeless = pathWithout(path.join(tmp, "system-bin"), NODE_COMMANDS);
}, 20 * 60_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function sha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file)
      .on("data", (d) => h.update(d))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

/** Runs a command with `env` as its whole environment (PATH included); never rejects. */
function runIn(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  cwd = tmp,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The environment of a node without Node.js: the system's commands, nothing else. */
function nodeEnv(extra: Record<string, string> = {}, pathDirs: string[] = []): Record<string, string> {
  return { PATH: [...pathDirs, nodeless].join(":"), HOME: tmp, ...extra };
}

/** The states `agent --once` printed for gpu-c01's steady GPUs, after checking its table. */
function steadyStates(stdout: string): Map<number, string | undefined> {
  expect(stdout).toMatch(/^GPU +MODEL +REPORTED +SM +REAL \(SOURCE\) +STATE /m);
  const rows = stdout.split("\n").filter((l) => /^\d+ +L40S /.test(l));
  expect(rows).toHaveLength(8);
  const states = new Map(
    rows.map((l) => [Number(l.split(" ")[0]), / (active|busy_phantom|held_idle|free_idle|unavailable)\b/.exec(l)?.[1]]),
  );
  return pick(states, GPU_C01_STEADY_STATES);
}

/** Package folders directly under node_modules (scoped ones as @scope/name). */
function topPackages(modules: string): string[] {
  return readdirSync(modules)
    .filter((n) => !n.startsWith("."))
    .flatMap((n) => (n.startsWith("@") ? readdirSync(path.join(modules, n)).map((m) => `${n}/${m}`) : [n]))
    .sort();
}

describe("npm run release", () => {
  it("writes trueidle-VERSION-linux-x64.tar.xz and a .sha256 that sha256sum -c accepts, and nothing else", async () => {
    expect(readdirSync(outDir).sort()).toEqual([`${NAME}.tar.xz`, `${NAME}.tar.xz.sha256`]);
    expect(readFileSync(`${tarball}.sha256`, "utf8")).toBe(`${await sha256(tarball)}  ${NAME}.tar.xz\n`);
    const check = await execFileAsync("sha256sum", ["-c", `${NAME}.tar.xz.sha256`], { cwd: outDir });
    expect(check.stdout).toBe(`${NAME}.tar.xz: OK\n`);
  });

  it("holds one folder: the launcher, Node.js and its license, dist, the production install, the node's deploy files, RELEASE", () => {
    const rel = entries.map((e) => e.path);
    expect(rel.every((p) => p === `${NAME}/` || p.startsWith(`${NAME}/`))).toBe(true);
    const inside = rel.map((p) => p.slice(NAME.length + 1)).filter(Boolean);
    const top = [...new Set(inside.map((p) => p.replace(/\/.*$/, (m) => (m.length > 0 ? "/" : ""))))].sort();
    expect(top).toEqual([
      "RELEASE",
      "bin/",
      "demo/",
      "deploy/",
      "dist/",
      "node/",
      "node_modules/",
      "package-lock.json",
      "package.json",
    ]);
    const under = (dir: string): string[] =>
      inside
        .filter((p) => p.startsWith(dir) && !p.endsWith("/"))
        .map((p) => p.slice(dir.length))
        .sort();
    expect(under("bin/")).toEqual(["trueidle", "trueidle.js"]);
    expect(under("node/")).toEqual(["LICENSE", "bin/node"]);
    expect(under("deploy/")).toEqual(DEPLOY_FILES);
    expect(under("demo/")).toEqual([
      "scenarios/gpu-a01.json",
      "scenarios/gpu-b01.json",
      "scenarios/gpu-c01.json",
      "scenarios/mig-h100.json",
    ]);
    expect([...new Set(under("dist/").map((p) => p.split("/")[0]))].sort()).toEqual([
      "agent",
      "cli",
      "collector",
      "common",
      "demo",
      "gen",
      "report",
    ]);
    expect(inside).toContain("dist/cli/main.js");
    expect(inside).toContain("dist/agent/sources/nvml/nvml-worker.js");
    // Nothing that never loads at run time, and no tests.
    expect(inside.filter((p) => /\.(?:[cm]?ts|map)$|\.test\.js$/.test(p))).toEqual([]);

    const mode = (p: string): string => entries.find((e) => e.path === `${NAME}/${p}`)!.mode;
    for (const exe of ["bin/trueidle", "node/bin/node", "deploy/install-agent.sh", "deploy/slurm/prolog.sh"])
      expect(mode(exe), exe).toBe("-rwxr-xr-x");
    expect(mode("RELEASE")).toBe("-rw-r--r--");
    expect(entries.filter((e) => e.owner !== "0/0")).toEqual([]);
    expect(entries.filter((e) => !e.mode.startsWith("l") && e.mode[8] === "w")).toEqual([]);
    // The launcher is the one in scripts/release/, and the units and script are this checkout's.
    expect(readFileSync(path.join(release, "bin", "trueidle"), "utf8")).toBe(
      readFileSync(path.join(REPO_ROOT, "scripts", "release", "launcher.sh"), "utf8"),
    );
    for (const f of DEPLOY_FILES)
      expect(readFileSync(path.join(release, "deploy", f), "utf8"), f).toBe(
        readFileSync(path.join(REPO_ROOT, "deploy", f), "utf8"),
      );
  });

  it("its launcher passes shellcheck", async () => {
    const { stdout, stderr } = await execFileAsync("/usr/bin/shellcheck", [path.join(release, "bin", "trueidle")]);
    expect(stdout + stderr).toBe("");
  });

  it("RELEASE names the version, the Node.js it holds and the oldest glibc its binaries load on; Node.js's license travels with it", async () => {
    const values = new Map(
      readFileSync(path.join(release, "RELEASE"), "utf8")
        .split("\n")
        .filter((l) => /^[A-Z_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(values.get("TRUEIDLE_VERSION")).toBe(VERSION);
    expect(values.get("TRUEIDLE_PLATFORM")).toBe("linux-x64");
    const { stdout: nodeVersion } = await execFileAsync(path.join(release, "node", "bin", "node"), ["--version"]);
    expect(`v${values.get("NODE_VERSION")}\n`).toBe(nodeVersion);
    expect(Number(values.get("NODE_VERSION")!.split(".")[0])).toBeGreaterThanOrEqual(20);

    // objdump (binutils, which gcc brings) reads what each native binary needs.
    const natives = [
      path.join(release, "node", "bin", "node"),
      ...readdirSync(path.join(release, "node_modules"), { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile() && e.name.endsWith(".node"))
        .map((e) => path.join(e.parentPath, e.name)),
    ];
    expect(natives.length).toBeGreaterThan(1);
    const needed: string[] = [];
    for (const f of natives) {
      const { stdout } = await execFileAsync("objdump", ["-T", f], { maxBuffer: 64 << 20 });
      needed.push(...[...stdout.matchAll(/\bGLIBC_(\d+(?:\.\d+)+)\b/g)].map((m) => m[1]!));
    }
    const newest = needed.sort((a, b) => a.localeCompare(b, "en", { numeric: true })).at(-1);
    expect(values.get("GLIBC_MINIMUM")).toBe(newest);

    const license = readFileSync(path.join(release, "node", "LICENSE"), "utf8");
    expect(license.startsWith("Node.js is licensed for use as follows:")).toBe(true);
    expect(license).toContain("Copyright Node.js contributors. All rights reserved.");
  });

  it("holds the production dependencies as package-lock.json pins them for linux-x64, and no dev dependency", () => {
    const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { dev?: boolean; os?: string[]; cpu?: string[] }>;
    };
    const production = Object.entries(lock.packages)
      .filter(([k, p]) => /^node_modules\/(?:@[^/]+\/)?[^/]+$/.test(k) && !p.dev)
      .filter(([, p]) => (!p.os || p.os.includes("linux")) && (!p.cpu || p.cpu.includes("x64")))
      .map(([k]) => k.slice("node_modules/".length))
      .sort();
    const modules = path.join(release, "node_modules");
    expect(topPackages(modules)).toEqual(production);
    for (const dev of ["typescript", "vitest", "vite", "tsx", "@bufbuild/buf", "@types/node"]) {
      if (!production.includes(dev)) expect(topPackages(modules), dev).not.toContain(dev);
    }
    // koffi's build for the bundled (glibc) Node.js only.
    expect(readdirSync(path.join(modules, "@koromix", "koffi-linux-x64")).filter((n) => !n.includes("."))).toEqual([
      "linux_x64",
    ]);
  });
});

describe("the release unpacked into an empty folder, on a PATH without node", () => {
  it("has no node on that PATH", async () => {
    const probe = await runIn(
      "sh",
      ["-c", 'for c in node nodejs npm npx; do command -v "$c"; done; echo checked'],
      nodeEnv(),
    );
    expect(probe.stdout).toBe("checked\n");
  });

  it("runs bin/trueidle --help and --version", async () => {
    const help = await runIn(path.join(release, "bin", "trueidle"), ["--help"], nodeEnv());
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: trueidle <command> \[flags\]$/m);
    for (const cmd of ["agent", "collector", "demo", "report"])
      expect(help.stdout).toMatch(new RegExp(`^  ${cmd} `, "m"));
    const version = await runIn(path.join(release, "bin", "trueidle"), ["--version"], nodeEnv());
    expect(version.stdout).toMatch(/^trueidle \S+\n$/);
    expect(version.code).toBe(0);
  });

  it("runs bin/trueidle agent --once through nvidia-smi (the fake, run by the release's Node.js)", async () => {
    const smi = writeFakeNvidiaSmi(
      mkdtempSync(path.join(tmp, "smi-")),
      SCENARIO,
      path.join(release, "node", "bin", "node"),
    );
    const r = await runIn(
      path.join(release, "bin", "trueidle"),
      ["agent", "--once", "--source", "nvidia-smi", "--nvidia-smi", smi],
      nodeEnv(),
      mkdtempSync(path.join(tmp, "cwd-")),
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Source: nvidia-smi \(/m);
    expect(steadyStates(r.stdout)).toEqual(GPU_C01_STEADY_STATES);
  });

  it("runs bin/trueidle agent --once through NVML: koffi loads from the release", async () => {
    const src = NVML_SOURCE.prepare(mkdtempSync(path.join(tmp, "nvml-")), SCENARIO);
    const r = await runIn(path.join(release, "bin", "trueidle"), ["agent", "--once", ...src.flags], nodeEnv(src.env));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(src.sourceLine);
    expect(steadyStates(r.stdout)).toEqual(GPU_C01_STEADY_STATES);
  });

  it("runs as `trueidle` through links, like /usr/local/bin/trueidle -> /opt/trueidle/bin/trueidle with /opt/trueidle -> trueidle-VERSION", async () => {
    const links = mkdtempSync(path.join(tmp, "links-"));
    mkdirSync(path.join(links, "opt"));
    mkdirSync(path.join(links, "bin"));
    symlinkSync(release, path.join(links, "opt", "trueidle"));
    symlinkSync("../opt/trueidle/bin/trueidle", path.join(links, "bin", "trueidle"));
    const smi = writeFakeNvidiaSmi(
      mkdtempSync(path.join(tmp, "smi-")),
      SCENARIO,
      path.join(release, "node", "bin", "node"),
    );
    const r = await runIn(
      "sh",
      ["-c", `trueidle agent --once --source nvidia-smi --nvidia-smi '${smi}'`],
      nodeEnv({}, [path.join(links, "bin")]),
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(steadyStates(r.stdout)).toEqual(GPU_C01_STEADY_STATES);
  });

  it("its install-agent.sh installs it into a root, and the installed agent runs", async () => {
    const root = mkdtempSync(path.join(tmp, "root-"));
    mkdirSync(path.join(root, "dev"));
    writeFileSync(path.join(root, "dev", "nvidiactl"), "");
    const smiDir = mkdtempSync(path.join(tmp, "smi-"));
    const smi = writeFakeNvidiaSmi(smiDir, SCENARIO, path.join(release, "node", "bin", "node"));
    const r = await runIn(
      "bash",
      [path.join(release, "deploy", "install-agent.sh"), "--root", root, "--tarball", tarball],
      nodeEnv({}, [smiDir]),
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`ok       SHA-256 ${await sha256(tarball)} matches ${tarball}.sha256`);
    expect(r.stdout).toMatch(
      new RegExp(
        `ok +release trueidle ${VERSION.replace(/\./g, "\\.")} \\(linux-x64, Node\\.js ${process.versions.node.split(".")[0]}\\.`,
      ),
    );
    expect(r.stdout).toContain(`ok       nvidia-smi (${smi}): 8 GPU(s)`);
    expect(r.stdout).toMatch(/^ {4}trueidle \S+$/m);
    expect(readlinkSync(path.join(root, "opt", "trueidle"))).toBe(`trueidle-${VERSION}`);
    expect(readdirSync(path.join(root, "opt", `trueidle-${VERSION}`)).sort()).toEqual([
      "RELEASE",
      "bin",
      "demo",
      "deploy",
      "dist",
      "node",
      "node_modules",
      "package-lock.json",
      "package.json",
    ]);
    const unit = readFileSync(path.join(root, "etc", "systemd", "system", "trueidle-agent.service"), "utf8");
    expect(unit).toMatch(/^ExecStart=\/opt\/trueidle\/bin\/trueidle agent /m);

    const agent = await runIn(
      path.join(root, "usr", "local", "bin", "trueidle"),
      ["agent", "--once", "--source", "nvidia-smi", "--nvidia-smi", smi],
      nodeEnv(),
    );
    expect(agent.code, agent.stdout + agent.stderr).toBe(0);
    expect(steadyStates(agent.stdout)).toEqual(GPU_C01_STEADY_STATES);
  });
});
