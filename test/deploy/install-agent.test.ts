/**
 * deploy/install-agent.sh, run for real with bash and a PATH without Node.js (a GPU node needs
 * none): it installs a release, here small stand-in releases built by the tests with this
 * checkout's deploy/ files (release.test.ts installs the real one from `npm run release`).
 * `--dry-run` into a temp root with the fake nvidia-smi on PATH (every check passes, every
 * step is printed, nothing is written), without any nvidia-smi or NVML library, and with an
 * nvidia-smi that fails like a driver whose module is not loaded (each says what is missing
 * and how to fix it, and installs nothing); a node with the NVML library (the stub
 * libnvidia-ml.so.1) and no nvidia-smi, found where the loader looks or given with
 * --nvml-lib, passes. The release: its SHA-256 against the .sha256 beside it or --sha256, a
 * wrong one refused; a file that is no release refused; from a URL (a local HTTP server)
 * with curl, and without curl or wget a clear problem; from the unpacked release the script
 * is in; a release whose binary does not run here, or that needs a newer glibc, leaves the
 * node as it was. Real installs into a temp root: /opt/trueidle-VERSION with the link
 * /opt/trueidle and /usr/local/bin/trueidle, the unit with ExecStart=/opt/trueidle/bin/trueidle,
 * the env file, an existing env file kept on a second run, TRUEIDLE_NVML_LIB for --nvml-lib;
 * an upgrade switches the link and keeps the previous version, the next one removes the
 * oldest; --job-mapping-dir: written into the env file, refused where the unit hides it or
 * the agent cannot read it, and with --create-job-mapping-dir made 0755 now and by a
 * tmpfiles.d entry that the real systemd-tmpfiles applies. shellcheck finds nothing in the
 * script.
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  createReadStream,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFakeNvidiaSmi } from "../helpers/fake-nvidia-smi.js";
import { buildNvmlStub } from "../helpers/nvml-stub.js";
import { NODE_COMMANDS, pathWithout } from "../helpers/path-without.js";
import { REPO_ROOT } from "../helpers/trueidle-process.js";

const SCRIPT = path.join(REPO_ROOT, "deploy", "install-agent.sh");
const SHELLCHECK = "/usr/bin/shellcheck";
const SCENARIO = path.join(REPO_ROOT, "demo", "scenarios", "gpu-c01.json");
const UNIT = path.join(REPO_ROOT, "deploy", "systemd", "trueidle-agent.service");
const ENV_EXAMPLE = path.join(REPO_ROOT, "deploy", "agent.env.example");

let tmp: string;
let fakeBin: string;
/** The whole PATH of the script's runs: the system's commands without Node.js. */
let basePath: string;
/** The stub NVML library, built by the tests that use it (without gcc they fail, naming it). */
let nvmlLib = "";

beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), "trueidle-install-"));
  fakeBin = mkdtempSync(path.join(tmp, "fake-bin-"));
  writeFakeNvidiaSmi(fakeBin, SCENARIO);
  basePath = pathWithout(path.join(tmp, "system-bin"), NODE_COMMANDS);
});

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Runs `script` (install-agent.sh) with bash; PATH is only what the test gives (no nvidia-smi unless given). */
function install(
  args: string[],
  pathDirs: string[] = [],
  script = SCRIPT,
  base = basePath,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [script, ...args], {
      cwd: tmp,
      env: { ...process.env, PATH: [...pathDirs, base].join(":") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
  });
}

/** A target root with /dev/nvidiactl, as the NVIDIA module creates it. */
function newRoot(withDevice = true): string {
  const root = mkdtempSync(path.join(tmp, "root-"));
  if (withDevice) {
    mkdirSync(path.join(root, "dev"));
    writeFileSync(path.join(root, "dev", "nvidiactl"), "");
  }
  return root;
}

/** An `ldconfig` that lists `lib` as the loader's libnvidia-ml.so.1 (as a driver's install does), in a new folder. */
function ldconfigListing(lib: string): string {
  const dir = mkdtempSync(path.join(tmp, "ldconfig-bin-"));
  writeFileSync(
    path.join(dir, "ldconfig"),
    [
      "#!/bin/sh",
      '[ "$1" = -p ] || exit 1',
      "echo '3 libs found in cache `/etc/ld.so.cache'",
      // The 32-bit library first: the script takes the 64-bit one.
      `printf '\\tlibnvidia-ml.so.1 (libc6) => /usr/lib/i386-linux-gnu/libnvidia-ml.so.1\\n'`,
      `printf '\\tlibnvidia-ml.so.1 (libc6,x86-64) => %s\\n' '${lib}'`,
      `printf '\\tlibnvidia-ml.so (libc6,x86-64) => %s\\n' '${lib}'`,
      "",
    ].join("\n"),
  );
  chmodSync(path.join(dir, "ldconfig"), 0o755);
  return dir;
}

interface StandIn {
  /** trueidle-VERSION-linux-x64.tar.xz, with its .sha256 beside it. */
  tarball: string;
  /** The folder it was packed from (an unpacked release). */
  dir: string;
  sha256: string;
}

/**
 * A small release standing in for `npm run release`'s, laid out the same: RELEASE, a
 * bin/trueidle and a node/bin/node that answer --version (or fail like a binary whose glibc
 * is missing, with `runs: false`), and this checkout's install script, unit and env example.
 */
const standIns = new Map<string, Promise<StandIn>>();
function standInRelease(version: string, opts: { runs?: boolean; glibc?: string } = {}): Promise<StandIn> {
  const key = JSON.stringify([version, opts]);
  let made = standIns.get(key);
  if (!made) {
    made = (async () => {
      const base = mkdtempSync(path.join(tmp, "release-"));
      const name = `trueidle-${version}-linux-x64`;
      const dir = path.join(base, name);
      const put = (rel: string, text: string, mode = 0o644): void => {
        mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
        writeFileSync(path.join(dir, rel), text);
        chmodSync(path.join(dir, rel), mode);
      };
      put(
        "RELEASE",
        [
          `TRUEIDLE_VERSION=${version}`,
          "TRUEIDLE_PLATFORM=linux-x64",
          "NODE_VERSION=20.99.0",
          `GLIBC_MINIMUM=${opts.glibc ?? "2.17"}`,
          "",
        ].join("\n"),
      );
      const answer =
        opts.runs === false
          ? 'echo "$0: /lib/x86_64-linux-gnu/libc.so.6: version \\`GLIBC_2.99\' not found" >&2\nexit 1'
          : `echo "trueidle ${version} (stand-in)"`;
      put("bin/trueidle", `#!/bin/sh\n${answer}\n`, 0o755);
      put("node/bin/node", "#!/bin/sh\necho v20.99.0\n", 0o755);
      put("deploy/install-agent.sh", readFileSync(SCRIPT, "utf8"), 0o755);
      put("deploy/systemd/trueidle-agent.service", readFileSync(UNIT, "utf8"));
      put("deploy/agent.env.example", readFileSync(ENV_EXAMPLE, "utf8"));
      const tarball = path.join(base, `${name}.tar.xz`);
      await promisify(execFile)("tar", ["-C", base, "-cJf", tarball, name]);
      const sha256 = await fileSha256(tarball);
      writeFileSync(`${tarball}.sha256`, `${sha256}  ${path.basename(tarball)}\n`);
      return { tarball, dir, sha256 };
    })();
    standIns.set(key, made);
  }
  return made;
}

function fileSha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file)
      .on("data", (d) => h.update(d))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

/** Every file under `dir` (links included, not followed), relative to it. */
function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

/** The shipped unit as the script installs it. */
function installedUnit(): string {
  return readFileSync(UNIT, "utf8").replace(
    "ExecStart=/usr/local/bin/trueidle ",
    "ExecStart=/opt/trueidle/bin/trueidle ",
  );
}

describe("install-agent.sh", () => {
  it("shellcheck finds nothing", async () => {
    if (!existsSync(SHELLCHECK)) throw new Error(`${SHELLCHECK} is missing: install Debian's shellcheck package.`);
    const { stdout, stderr } = await promisify(execFile)(SHELLCHECK, [SCRIPT]);
    expect(stdout + stderr).toBe("");
  });

  it("runs with no Node.js on PATH", async () => {
    const probe = await promisify(execFile)("sh", ["-c", "command -v node || echo none"], { env: { PATH: basePath } });
    expect(probe.stdout.trim()).toBe("none");
  });

  it("--help names every option; a bad one exits 2; from a checkout it needs --tarball", async () => {
    const help = await install(["--help"]);
    expect(help.code).toBe(0);
    for (const opt of [
      "--tarball FILE|URL",
      "--sha256 HEX|FILE|URL",
      "--env-file FILE",
      "--nvml-lib FILE",
      "--job-mapping-dir DIR",
      "--create-job-mapping-dir",
      "--root DIR",
      "--dry-run",
      "--help",
    ]) {
      expect(help.out).toContain(opt);
    }
    const bad = await install(["--frobnicate"]);
    expect(bad.code).toBe(2);
    expect(bad.out).toContain("unknown argument: --frobnicate");
    // The npm registry is no way onto a node any more (the package is not published there).
    expect((await install(["--version", "1.0.0"])).out).toContain("unknown argument: --version");
    const none = await install(["--dry-run"]);
    expect(none.out).toContain(
      "give --tarball FILE|URL: a release, trueidle-VERSION-linux-x64.tar.xz from `npm run release`",
    );
    expect(none.code).toBe(2);
    for (const [args, message] of [
      [["--create-job-mapping-dir"], "--create-job-mapping-dir needs --job-mapping-dir DIR"],
      [["--job-mapping-dir", "jobs"], "--job-mapping-dir jobs: give an absolute path"],
      // It goes unquoted into the env file and tmpfiles.d.
      [["--job-mapping-dir", "/run/my jobs"], "--job-mapping-dir /run/my jobs: give an absolute path"],
      [["--job-mapping-dir"], "--job-mapping-dir needs a DIR"],
      [["--tarball"], "--tarball needs a FILE or URL"],
    ] as const) {
      const r = await install([...args]);
      expect(r.out, args.join(" ")).toContain(message);
      expect(r.code, args.join(" ")).toBe(2);
    }
  });

  it("--dry-run with a working nvidia-smi passes every check and prints every step, writing nothing", async () => {
    const root = newRoot();
    const { tarball, sha256 } = await standInRelease("9.9.9");
    const { code, out } = await install(["--dry-run", "--root", root, "--tarball", tarball], [fakeBin]);
    expect(out).toContain("dry run: nothing is changed");
    expect(out).toContain(`ok       SHA-256 ${sha256} matches ${tarball}.sha256`);
    expect(out).toContain(`ok       release trueidle 9.9.9 (linux-x64, Node.js 20.99.0) from ${tarball}`);
    expect(out).toMatch(/ok +glibc 2\.\d+ \(the release needs 2\.17 or later\)/);
    expect(out).toContain(`ok       nvidia-smi (${fakeBin}/nvidia-smi): 8 GPU(s), driver 570.86.15`);
    expect(out).toContain(`ok       ${root}/dev/nvidiactl`);
    expect(out).not.toContain("MISSING");
    // No Node.js or npm is looked for.
    expect(out).not.toMatch(/ok +(Node\.js|npm)|MISSING +(Node\.js|npm)/);
    const partial = `${root}/opt/.trueidle-9.9.9.partial`;
    expect(out).toContain(`+ tar -xf ${tarball} -C ${partial} --strip-components=1 --no-same-owner`);
    expect(out).toContain(`+ ${partial}/bin/trueidle --version`);
    expect(out).toContain(`+ mv -T ${partial} ${root}/opt/trueidle-9.9.9`);
    expect(out).toContain(`+ install -d -m 0750 ${root}/etc/trueidle`);
    expect(out).toContain(
      `+ install ${root}/opt/trueidle-9.9.9/deploy/systemd/trueidle-agent.service as ${root}/etc/systemd/system/trueidle-agent.service with ExecStart=/opt/trueidle/bin/trueidle agent`,
    );
    expect(out).toContain(
      `+ install -m 0600 ${root}/opt/trueidle-9.9.9/deploy/agent.env.example ${root}/etc/trueidle/agent.env`,
    );
    // This nvidia-smi is outside systemd's PATH: the env file names it.
    expect(out).toContain(`+ echo TRUEIDLE_NVIDIA_SMI=${fakeBin}/nvidia-smi >> ${root}/etc/trueidle/agent.env`);
    expect(out).toContain(`+ mv -T ${root}/opt/.trueidle.link ${root}/opt/trueidle`);
    expect(out).toContain(`+ ln -sfn ../../../opt/trueidle/bin/trueidle ${root}/usr/local/bin/trueidle`);
    // Under --root nothing touches the running system; what is left is printed.
    expect(out).not.toMatch(/\+ (useradd|systemctl)/);
    expect(out).toMatch(
      /Next:\n(.*\n)* {2}id trueidle >\/dev\/null 2>&1 \|\| useradd --system --user-group --groups video/,
    );
    expect(out).toContain("Edit /etc/trueidle/agent.env");
    expect(out).toContain("systemctl enable --now trueidle-agent");
    expect(out).toContain("/opt/trueidle/bin/trueidle agent --once");
    expect(out).toContain("Dry run: nothing was changed.");
    expect(code).toBe(0);
    expect(files(root)).toEqual(["dev/nvidiactl"]);
  });

  it("without nvidia-smi, NVML or /dev/nvidiactl says what is missing and how to fix it, and installs nothing", async () => {
    const onPath = readdirSync(basePath).filter((n) => n === "nvidia-smi");
    expect(onPath, "this case needs a machine without nvidia-smi in the system PATH").toEqual([]);
    const { stdout: cache } = await promisify(execFile)("/sbin/ldconfig", ["-p"]);
    expect(cache, "this case needs a machine whose loader finds no libnvidia-ml.so.1").not.toContain(
      "libnvidia-ml.so.1 ",
    );
    const root = newRoot(false);
    const { code, out } = await install([
      "--dry-run",
      "--root",
      root,
      "--tarball",
      (await standInRelease("9.9.9")).tarball,
    ]);
    expect(out).toContain(
      "MISSING  nvidia-smi: not on PATH, and no libnvidia-ml.so.1 where the loader looks, so the NVIDIA driver is not installed.",
    );
    expect(out).toContain("--nvml-lib FILE names its libnvidia-ml.so.1.");
    expect(out).toContain("Install the NVIDIA driver with its utilities: Debian: apt install nvidia-driver");
    expect(out).toContain(`MISSING  ${root}/dev/nvidiactl: the NVIDIA kernel module has not created its devices.`);
    expect(out).toContain("modprobe nvidia");
    expect(out).toContain("2 problem(s) above; nothing was installed.");
    expect(out).not.toContain("Steps:");
    expect(code).toBe(1);
    expect(files(root)).toEqual([]);
  });

  it("with an nvidia-smi that cannot reach the driver shows its message and what to check", async () => {
    const broken = mkdtempSync(path.join(tmp, "broken-bin-"));
    // What nvidia-smi prints when the kernel module is not loaded or does not match.
    writeFileSync(
      path.join(broken, "nvidia-smi"),
      '#!/bin/sh\necho "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."\nexit 9\n',
    );
    chmodSync(path.join(broken, "nvidia-smi"), 0o755);
    const root = newRoot();
    const { code, out } = await install(
      ["--dry-run", "--root", root, "--tarball", (await standInRelease("9.9.9")).tarball],
      [broken],
    );
    expect(out).toContain(`MISSING  a working NVIDIA driver: \`${broken}/nvidia-smi\` failed (exit 9):`);
    expect(out).toContain("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.");
    expect(out).toContain("Is the kernel module loaded (lsmod | grep nvidia; modprobe nvidia)?");
    expect(out).toContain("1 problem(s) above; nothing was installed.");
    expect(code).toBe(1);
  });

  // The NVML variant of the checks: the agent reads GPUs through libnvidia-ml.so.1 and needs
  // no nvidia-smi (its own choice is tested through the units and manifests).
  it("--dry-run on a node with the NVML library where the loader looks and no nvidia-smi passes, naming no nvidia-smi", async () => {
    nvmlLib = buildNvmlStub();
    const root = newRoot();
    const { code, out } = await install(
      ["--dry-run", "--root", root, "--tarball", (await standInRelease("9.9.9")).tarball],
      [ldconfigListing(nvmlLib)],
    );
    expect(out).toContain(
      `ok       NVML (${nvmlLib}): nvidia-smi is not on PATH, so the agent reads the GPUs through NVML`,
    );
    expect(out).not.toContain("MISSING");
    expect(out).not.toContain("TRUEIDLE_NVIDIA_SMI");
    // Found by the loader: the service finds it too, so the env file need not name it.
    expect(out).not.toContain("TRUEIDLE_NVML_LIB");
    expect(out).toContain("Dry run: nothing was changed.");
    expect(code).toBe(0);
    expect(files(root)).toEqual(["dev/nvidiactl"]);
  });

  it("--nvml-lib: a file that is not there is a problem; with nvidia-smi too, both are named as found", async () => {
    nvmlLib = buildNvmlStub();
    const root = newRoot();
    const { tarball } = await standInRelease("9.9.9");
    const missingLib = path.join(tmp, "nowhere", "libnvidia-ml.so.1");
    const bad = await install(["--dry-run", "--root", root, "--tarball", tarball, "--nvml-lib", missingLib]);
    expect(bad.out).toContain(`MISSING  --nvml-lib ${missingLib}: no such file.`);
    expect(bad.out).toContain("1 problem(s) above; nothing was installed.");
    expect(bad.code).toBe(1);
    const both = await install(["--dry-run", "--root", root, "--tarball", tarball, "--nvml-lib", nvmlLib], [fakeBin]);
    expect(both.out).toContain(`ok       nvidia-smi (${fakeBin}/nvidia-smi): 8 GPU(s), driver 570.86.15`);
    expect(both.out).toContain(`ok       NVML (${nvmlLib})`);
    expect(both.out).toContain(`+ echo TRUEIDLE_NVML_LIB=${nvmlLib} >> ${root}/etc/trueidle/agent.env`);
    expect(both.code, both.out).toBe(0);
  });

  it("installs into a root: the release in /opt with its links, the unit pointing at it, the env file; a second run keeps the edited env file", async () => {
    const { tarball } = await standInRelease("9.9.9");
    const root = newRoot();
    const first = await install(["--root", root, "--tarball", tarball], [fakeBin]);
    expect(first.code, first.out).toBe(0);
    expect(first.out).toContain("trueidle 9.9.9 (stand-in)");
    expect(first.out).toContain("Installed.");
    expect(readlinkSync(path.join(root, "opt/trueidle"))).toBe("trueidle-9.9.9");
    expect(readlinkSync(path.join(root, "usr/local/bin/trueidle"))).toBe("../../../opt/trueidle/bin/trueidle");
    expect(readdirSync(path.join(root, "opt")).sort()).toEqual(["trueidle", "trueidle-9.9.9"]);
    expect(readFileSync(path.join(root, "opt/trueidle-9.9.9/RELEASE"), "utf8")).toContain("TRUEIDLE_VERSION=9.9.9\n");
    // Through both links, as an operator's `trueidle` runs.
    const { stdout } = await promisify(execFile)(path.join(root, "usr/local/bin/trueidle"), ["--version"]);
    expect(stdout).toBe("trueidle 9.9.9 (stand-in)\n");

    expect(readFileSync(path.join(root, "etc/systemd/system/trueidle-agent.service"), "utf8")).toBe(installedUnit());
    expect(statSync(path.join(root, "etc/trueidle")).mode & 0o777).toBe(0o750);
    const envPath = path.join(root, "etc/trueidle/agent.env");
    expect(statSync(envPath).mode & 0o777).toBe(0o600);
    const example = readFileSync(ENV_EXAMPLE, "utf8");
    const env = readFileSync(envPath, "utf8");
    expect(env.startsWith(example)).toBe(true);
    expect(env.slice(example.length)).toMatch(new RegExp(`\\nTRUEIDLE_NVIDIA_SMI=${fakeBin}/nvidia-smi\\n$`));

    const edited = "TRUEIDLE_COLLECTOR=collector.site.internal:9746\nTRUEIDLE_PLAINTEXT=true\n";
    writeFileSync(envPath, edited);
    const second = await install(["--root", root, "--tarball", tarball], [fakeBin]);
    expect(second.code, second.out).toBe(0);
    expect(second.out).toContain(`${envPath} exists: kept as it is`);
    expect(second.out).not.toContain("Edit /etc/trueidle/agent.env");
    expect(readFileSync(envPath, "utf8")).toBe(edited);
    // The same version again replaces its folder and removes nothing else.
    expect(second.out).toContain(`+ mv -T ${root}/opt/trueidle-9.9.9 ${root}/opt/.trueidle-9.9.9.replaced`);
    expect(readdirSync(path.join(root, "opt")).sort()).toEqual(["trueidle", "trueidle-9.9.9"]);
  });

  it("an upgrade switches /opt/trueidle and keeps the previous version for a rollback; the next one removes the oldest", async () => {
    const root = newRoot();
    for (const v of ["1.0.0", "1.1.0"]) {
      const r = await install(["--root", root, "--tarball", (await standInRelease(v)).tarball], [fakeBin]);
      expect(r.code, r.out).toBe(0);
    }
    const upgraded = readdirSync(path.join(root, "opt")).sort();
    expect(upgraded).toEqual(["trueidle", "trueidle-1.0.0", "trueidle-1.1.0"]);
    expect(readlinkSync(path.join(root, "opt/trueidle"))).toBe("trueidle-1.1.0");

    const third = await install(["--root", root, "--tarball", (await standInRelease("1.2.0")).tarball], [fakeBin]);
    expect(third.code, third.out).toBe(0);
    expect(third.out).toContain(`+ rm -rf ${root}/opt/trueidle-1.0.0`);
    expect(third.out).toContain(
      "/opt/trueidle-1.1.0 is kept: roll back with ln -sfn trueidle-1.1.0 /opt/trueidle && systemctl restart trueidle-agent",
    );
    expect(readdirSync(path.join(root, "opt")).sort()).toEqual(["trueidle", "trueidle-1.1.0", "trueidle-1.2.0"]);
    expect(readlinkSync(path.join(root, "opt/trueidle"))).toBe("trueidle-1.2.0");
    const { stdout } = await promisify(execFile)(path.join(root, "usr/local/bin/trueidle"), ["--version"]);
    expect(stdout).toBe("trueidle 1.2.0 (stand-in)\n");
  });

  it("checks the SHA-256: a wrong .sha256 or --sha256 is refused, --sha256 HEX passes, none beside it is noted", async () => {
    const { tarball, sha256 } = await standInRelease("2.0.0");
    const copy = path.join(mkdtempSync(path.join(tmp, "copy-")), path.basename(tarball));
    copyFileSync(tarball, copy);
    const root = newRoot();

    const unchecked = await install(["--dry-run", "--root", root, "--tarball", copy], [fakeBin]);
    expect(unchecked.out).toContain(
      `note     SHA-256 ${sha256} not checked: no ${path.basename(copy)}.sha256 beside it (--sha256 checks it)`,
    );
    expect(unchecked.code, unchecked.out).toBe(0);

    const wrong = "0".repeat(64);
    writeFileSync(`${copy}.sha256`, `${wrong}  ${path.basename(copy)}\n`);
    const beside = await install(["--root", root, "--tarball", copy], [fakeBin]);
    expect(beside.out).toContain(
      `MISSING  SHA-256 of ${path.basename(copy)} is ${sha256}; ${copy}.sha256 says ${wrong}.`,
    );
    expect(beside.out).toContain("The tarball is damaged or not the one the digest is for: fetch both again.");
    expect(beside.code).toBe(1);
    const given = await install(["--root", root, "--tarball", copy, "--sha256", wrong.replace(/^0/, "1")], [fakeBin]);
    expect(given.out).toContain(`says 1${"0".repeat(63)}`);
    expect(given.code).toBe(1);
    expect(files(root)).toEqual(["dev/nvidiactl"]);

    const right = await install(
      ["--dry-run", "--root", root, "--tarball", copy, "--sha256", sha256.toUpperCase()],
      [fakeBin],
    );
    expect(right.out).toContain(`ok       SHA-256 ${sha256} matches --sha256`);
    expect(right.code, right.out).toBe(0);
    const fromFile = await install(
      ["--dry-run", "--root", root, "--tarball", copy, "--sha256", `${tarball}.sha256`],
      [fakeBin],
    );
    expect(fromFile.out).toContain(`ok       SHA-256 ${sha256} matches ${tarball}.sha256`);
    expect(fromFile.code, fromFile.out).toBe(0);
  });

  it("refuses what is not a release: a missing file, an npm package tarball, a tarball of something else", async () => {
    const root = newRoot();
    const nowhere = path.join(tmp, "trueidle-0.0.0-linux-x64.tar.xz");
    const missing = await install(["--dry-run", "--root", root, "--tarball", nowhere], [fakeBin]);
    expect(missing.out).toContain(`MISSING  release ${nowhere}: no such file.`);
    expect(missing.code).toBe(1);

    // `npm pack`'s layout: package/...
    const other = mkdtempSync(path.join(tmp, "npm-"));
    mkdirSync(path.join(other, "package", "bin"), { recursive: true });
    writeFileSync(path.join(other, "package", "package.json"), "{}");
    const npmTarball = path.join(other, "trueidle-0.1.0.tgz");
    await promisify(execFile)("tar", ["-C", other, "-czf", npmTarball, "package"]);
    const npm = await install(["--dry-run", "--root", root, "--tarball", npmTarball], [fakeBin]);
    expect(npm.out).toContain("MISSING  release");
    expect(npm.out).toContain(
      "not a trueidle release (one folder trueidle-VERSION-linux-x64/ with RELEASE, bin/trueidle, node/ and deploy/)",
    );
    expect(npm.out).toContain("not the npm package from `npm pack`");
    expect(npm.code).toBe(1);

    const notTar = path.join(other, "trueidle-0.1.0-linux-x64.tar.xz");
    writeFileSync(notTar, "not a tarball");
    const garbage = await install(["--dry-run", "--root", root, "--tarball", notTar], [fakeBin]);
    expect(garbage.out).toContain(`MISSING  release ${notTar}: tar cannot list it:`);
    expect(garbage.code).toBe(1);
    expect(files(root)).toEqual(["dev/nvidiactl"]);
  });

  describe("from a URL", () => {
    let server: Server;
    let base: string;
    let served: StandIn;

    beforeAll(async () => {
      served = await standInRelease("3.0.0");
      const dir = path.dirname(served.tarball);
      server = createServer((req, res) => {
        const file = path.join(dir, path.basename(decodeURIComponent((req.url ?? "/").split("?")[0]!)));
        if (!existsSync(file) || !lstatSync(file).isFile()) {
          res.writeHead(404).end("not found\n");
          return;
        }
        res.writeHead(200, { "content-type": "application/octet-stream" });
        createReadStream(file).pipe(res);
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });

    afterAll(async () => {
      await new Promise((resolve) => server?.close(resolve));
    });

    it("downloads it with curl, checks URL.sha256 and installs it", async () => {
      const root = newRoot();
      const url = `${base}/${path.basename(served.tarball)}`;
      const r = await install(["--root", root, "--tarball", url], [fakeBin]);
      expect(r.out).toContain(`ok       downloaded ${url}`);
      expect(r.out).toContain(`ok       SHA-256 ${served.sha256} matches ${url}.sha256`);
      expect(r.out).toContain(`ok       release trueidle 3.0.0 (linux-x64, Node.js 20.99.0) from `);
      expect(r.code, r.out).toBe(0);
      expect(readlinkSync(path.join(root, "opt/trueidle"))).toBe("trueidle-3.0.0");
    });

    it("a URL that fails is a problem; without curl or wget it says to install one or give a path", async () => {
      const root = newRoot();
      const gone = await install(
        ["--dry-run", "--root", root, "--tarball", `${base}/trueidle-9.0.0-linux-x64.tar.xz`],
        [fakeBin],
      );
      expect(gone.out).toContain(
        `MISSING  release ${base}/trueidle-9.0.0-linux-x64.tar.xz: the download failed (above).`,
      );
      expect(gone.code).toBe(1);

      const bare = pathWithout(path.join(tmp, "no-download-bin"), [...NODE_COMMANDS, "curl", "wget"]);
      const r = await install(
        ["--dry-run", "--root", root, "--tarball", `${base}/${path.basename(served.tarball)}`],
        [fakeBin],
        SCRIPT,
        bare,
      );
      expect(r.out).toContain("MISSING  curl or wget: neither is on PATH, and --tarball is a URL.");
      expect(r.out).toContain("or download the release elsewhere and give --tarball its path");
      expect(r.code).toBe(1);
      expect(files(root)).toEqual(["dev/nvidiactl"]);
    });
  });

  it("installs the unpacked release it is part of, without --tarball", async () => {
    const { dir } = await standInRelease("4.0.0");
    const root = newRoot();
    const r = await install(["--root", root], [fakeBin], path.join(dir, "deploy", "install-agent.sh"));
    expect(r.out).toContain(`ok       release trueidle 4.0.0 (linux-x64, Node.js 20.99.0) from ${dir}`);
    expect(r.out).toContain(`+ cp -R ${dir}/. ${root}/opt/.trueidle-4.0.0.partial/`);
    expect(r.code, r.out).toBe(0);
    expect(readlinkSync(path.join(root, "opt/trueidle"))).toBe("trueidle-4.0.0");
    expect(readFileSync(path.join(root, "etc/systemd/system/trueidle-agent.service"), "utf8")).toBe(installedUnit());
    // Run again from the installed copy: nothing to unpack, the rest as before.
    const again = await install(
      ["--root", root],
      [fakeBin],
      path.join(root, "opt", "trueidle", "deploy", "install-agent.sh"),
    );
    expect(again.out).toContain(`is the installed /opt/trueidle-4.0.0: nothing to unpack`);
    expect(again.code, again.out).toBe(0);
  });

  it("a release that does not run here, or needs a newer glibc, leaves the node as it was", async () => {
    const root = newRoot();
    const good = await install(["--root", root, "--tarball", (await standInRelease("5.0.0")).tarball], [fakeBin]);
    expect(good.code, good.out).toBe(0);
    const before = files(root);

    const broken = await install(
      ["--root", root, "--tarball", (await standInRelease("5.1.0", { runs: false })).tarball],
      [fakeBin],
    );
    expect(broken.out).toContain("version `GLIBC_2.99' not found");
    expect(broken.out).toContain(
      `The release's bin/trueidle does not run on this node (above); nothing was switched: ${root}/opt/trueidle is as it was.`,
    );
    expect(broken.code).toBe(1);
    expect(files(root)).toEqual(before);
    expect(readlinkSync(path.join(root, "opt/trueidle"))).toBe("trueidle-5.0.0");

    const newer = await install(
      ["--dry-run", "--root", root, "--tarball", (await standInRelease("5.2.0", { glibc: "9.99" })).tarball],
      [fakeBin],
    );
    expect(newer.out).toMatch(
      /MISSING {2}glibc 9\.99 or later: this node has glibc 2\.\d+, too old for the release's Node\.js 20\.99\.0\./,
    );
    expect(newer.code).toBe(1);
  });

  it("refuses an /opt/trueidle that is not a link", async () => {
    const root = newRoot();
    mkdirSync(path.join(root, "opt", "trueidle"), { recursive: true });
    writeFileSync(path.join(root, "opt", "trueidle", "hand-made"), "");
    const r = await install(
      ["--dry-run", "--root", root, "--tarball", (await standInRelease("9.9.9")).tarball],
      [fakeBin],
    );
    expect(r.out).toContain(
      `MISSING  ${root}/opt/trueidle exists and is not a link; this install makes it a link to /opt/trueidle-VERSION.`,
    );
    expect(r.code).toBe(1);
  });

  it("installs on a node with only the NVML library given by --nvml-lib: the env file names it and no nvidia-smi", async () => {
    nvmlLib = buildNvmlStub();
    const root = newRoot();
    const r = await install([
      "--root",
      root,
      "--tarball",
      (await standInRelease("9.9.9")).tarball,
      "--nvml-lib",
      nvmlLib,
    ]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(
      `ok       NVML (${nvmlLib}): nvidia-smi is not on PATH, so the agent reads the GPUs through NVML`,
    );
    const example = readFileSync(ENV_EXAMPLE, "utf8");
    const env = readFileSync(path.join(root, "etc/trueidle/agent.env"), "utf8");
    expect(env.startsWith(example)).toBe(true);
    expect(env.slice(example.length)).toMatch(
      new RegExp(`^\\n# .*\\nTRUEIDLE_NVML_LIB=${nvmlLib.replace(/[.]/g, "\\.")}\\n$`),
    );
  });

  it("--job-mapping-dir where the unit hides it, on a file, or on a directory the agent cannot read is a problem; --create-job-mapping-dir fixes the last", async () => {
    const { tarball } = await standInRelease("9.9.9");
    for (const dir of ["/tmp/trueidle-jobs", "/var/tmp/jobs", "/home/slurm/jobs", "/root/jobs"]) {
      const root = newRoot();
      const r = await install(["--dry-run", "--root", root, "--tarball", tarball, "--job-mapping-dir", dir], [fakeBin]);
      expect(r.out, dir).toContain(`MISSING  --job-mapping-dir ${dir}: the service cannot see it`);
      expect(r.out, dir).toContain("1 problem(s) above; nothing was installed.");
      expect(r.code, dir).toBe(1);
    }
    const root = newRoot();
    writeFileSync(path.join(root, "jobs"), "");
    const notDir = await install(
      ["--dry-run", "--root", root, "--tarball", tarball, "--job-mapping-dir", "/jobs"],
      [fakeBin],
    );
    expect(notDir.out).toContain(`MISSING  --job-mapping-dir ${root}/jobs: exists and is not a directory.`);
    expect(notDir.code).toBe(1);

    mkdirSync(path.join(root, "run", "trueidle-jobs"), { recursive: true, mode: 0o700 });
    chmodSync(path.join(root, "run", "trueidle-jobs"), 0o700);
    const closed = await install(
      ["--dry-run", "--root", root, "--tarball", tarball, "--job-mapping-dir", "/run/trueidle-jobs"],
      [fakeBin],
    );
    expect(closed.out).toMatch(
      new RegExp(
        `MISSING  job mapping directory ${root}/run/trueidle-jobs \\(mode 700, group \\S+\\): the agent \\(user trueidle\\) cannot read it\\.`,
      ),
    );
    expect(closed.out).toContain(`chmod 0755 ${root}/run/trueidle-jobs`);
    expect(closed.code).toBe(1);
    const fixed = await install(
      [
        "--dry-run",
        "--root",
        root,
        "--tarball",
        tarball,
        "--job-mapping-dir",
        "/run/trueidle-jobs",
        "--create-job-mapping-dir",
      ],
      [fakeBin],
    );
    expect(fixed.out).toContain(`ok       job mapping directory ${root}/run/trueidle-jobs`);
    expect(fixed.out).toContain(`+ install -d -m 0755 ${root}/run/trueidle-jobs`);
    expect(fixed.out).toContain(
      `+ install ${root}/etc/tmpfiles.d/trueidle-agent.conf: d /run/trueidle-jobs 0755 root root -`,
    );
    expect(fixed.out).toContain(`+ echo TRUEIDLE_JOB_MAPPING_DIR=/run/trueidle-jobs >> ${root}/etc/trueidle/agent.env`);
    expect(fixed.code, fixed.out).toBe(0);
    // A dry run changes nothing.
    expect(statSync(path.join(root, "run", "trueidle-jobs")).mode & 0o777).toBe(0o700);
    expect(files(root)).toEqual(["dev/nvidiactl", "jobs"]);
  });

  it("installs with --job-mapping-dir and --create-job-mapping-dir: the env file names it, it is 0755, and systemd-tmpfiles makes it again at boot", async () => {
    const { tarball } = await standInRelease("9.9.9");
    const root = newRoot();
    const jobs = path.join(root, "run", "trueidle-jobs");
    // Left 0700 by an earlier hand-made setup: made readable for the agent.
    mkdirSync(jobs, { recursive: true, mode: 0o700 });
    chmodSync(jobs, 0o700);
    const r = await install(
      ["--root", root, "--tarball", tarball, "--job-mapping-dir", "/run/trueidle-jobs/", "--create-job-mapping-dir"],
      [fakeBin],
    );
    expect(r.code, r.out).toBe(0);
    const example = readFileSync(ENV_EXAMPLE, "utf8");
    const envPath = path.join(root, "etc/trueidle/agent.env");
    const env = readFileSync(envPath, "utf8");
    expect(env.startsWith(example)).toBe(true);
    expect(env.slice(example.length)).toMatch(
      new RegExp(
        `\\nTRUEIDLE_NVIDIA_SMI=${fakeBin}/nvidia-smi\\n\\n# .*\\nTRUEIDLE_JOB_MAPPING_DIR=/run/trueidle-jobs\\n$`,
      ),
    );
    expect(statSync(jobs).mode & 0o777).toBe(0o755);
    const tmpfiles = path.join(root, "etc/tmpfiles.d/trueidle-agent.conf");
    expect(statSync(tmpfiles).mode & 0o777).toBe(0o644);
    expect(
      readFileSync(tmpfiles, "utf8")
        .split("\n")
        .filter((l) => l !== "" && !l.startsWith("#")),
    ).toEqual(["d /run/trueidle-jobs 0755 root root -"]);
    // The default directory of deploy/slurm/: nothing to tell the prolog.
    expect(r.out).not.toContain("Give the batch system's prolog");

    // A reboot empties /run; systemd-tmpfiles (the real one) makes the directory again.
    rmSync(jobs, { recursive: true });
    await promisify(execFile)("systemd-tmpfiles", ["--create", `--root=${root}`]);
    const made = statSync(jobs);
    expect(made.isDirectory()).toBe(true);
    expect(made.mode & 0o777).toBe(0o755);
    expect([made.uid, made.gid]).toEqual([0, 0]);

    // Again with another directory: the env file is kept, and what to change is printed.
    const again = await install(
      ["--root", root, "--tarball", tarball, "--job-mapping-dir", "/var/lib/trueidle-jobs"],
      [fakeBin],
    );
    expect(again.code, again.out).toBe(0);
    expect(readFileSync(envPath, "utf8")).toBe(env);
    expect(again.out).toContain(
      `ok       job mapping directory ${root}/var/lib/trueidle-jobs: not there yet; the agent sees no job until the prolog creates it`,
    );
    expect(again.out).toContain(
      "Set TRUEIDLE_JOB_MAPPING_DIR=/var/lib/trueidle-jobs in /etc/trueidle/agent.env (kept as it was), then: systemctl restart trueidle-agent",
    );
    expect(again.out).toContain(
      "Give the batch system's prolog and epilog TRUEIDLE_JOB_MAPPING_DIR=/var/lib/trueidle-jobs",
    );
    expect(existsSync(path.join(root, "var/lib/trueidle-jobs"))).toBe(false);
  });
});
