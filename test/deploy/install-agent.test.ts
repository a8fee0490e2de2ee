/**
 * deploy/install-agent.sh, run for real with bash: `--dry-run` into a temp root with the fake
 * nvidia-smi on PATH (every check passes, every step is printed, nothing is written), without
 * any nvidia-smi or NVML library, and with an nvidia-smi that fails like a driver whose module
 * is not loaded (each says what is missing and how to fix it, and installs nothing); a node
 * with the NVML library (the stub libnvidia-ml.so.1) and no nvidia-smi, found where the loader
 * looks or given with --nvml-lib, passes (the agent reads GPUs through NVML there); then real
 * installs into a temp root from a small stand-in package tarball (the real package's install
 * is package-install.test.ts): the unit with ExecStart where npm put the binary, the env
 * file, an existing env file kept on a second run, and TRUEIDLE_NVML_LIB for --nvml-lib;
 * --job-mapping-dir: written into the env file, refused where the unit hides it or the agent
 * cannot read it, and with --create-job-mapping-dir made 0755 now and by a tmpfiles.d entry
 * that the real systemd-tmpfiles applies. shellcheck finds nothing in the script.
 */
import { execFile, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFakeNvidiaSmi } from "../helpers/fake-nvidia-smi.js";
import { buildNvmlStub } from "../helpers/nvml-stub.js";
import { REPO_ROOT } from "../helpers/trueidle-process.js";

const SCRIPT = path.join(REPO_ROOT, "deploy", "install-agent.sh");
const SHELLCHECK = "/usr/bin/shellcheck";
const SCENARIO = path.join(REPO_ROOT, "demo", "scenarios", "gpu-c01.json");
/** Where Node.js lives must be on PATH too (and, for the script's check, in systemd's PATH). */
const BASE_PATH = [...new Set([path.dirname(process.execPath), "/usr/local/bin", "/usr/bin", "/bin"])].join(":");

let tmp: string;
let fakeBin: string;
/** The stub NVML library, built by the tests that use it (without gcc they fail, naming it). */
let nvmlLib = "";

beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), "trueidle-install-"));
  fakeBin = mkdtempSync(path.join(tmp, "fake-bin-"));
  writeFakeNvidiaSmi(fakeBin, SCENARIO);
});

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Runs the script with bash; PATH is only what the test gives (no nvidia-smi unless given). */
function install(args: string[], pathDirs: string[] = []): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [SCRIPT, ...args], {
      cwd: tmp,
      env: { ...process.env, PATH: [...pathDirs, BASE_PATH].join(":") },
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
  writeFileSync(path.join(dir, "ldconfig"), [
    "#!/bin/sh",
    "[ \"$1\" = -p ] || exit 1",
    "echo '3 libs found in cache `/etc/ld.so.cache'",
    // The 32-bit library first: the script takes the 64-bit one.
    `printf '\\tlibnvidia-ml.so.1 (libc6) => /usr/lib/i386-linux-gnu/libnvidia-ml.so.1\\n'`,
    `printf '\\tlibnvidia-ml.so.1 (libc6,x86-64) => %s\\n' '${lib}'`,
    `printf '\\tlibnvidia-ml.so (libc6,x86-64) => %s\\n' '${lib}'`,
    "",
  ].join("\n"));
  chmodSync(path.join(dir, "ldconfig"), 0o755);
  return dir;
}

/** A small package tarball standing in for trueidle's (the script installs whatever it is given). */
let standIn: Promise<string> | undefined;
function standInTarball(): Promise<string> {
  standIn ??= (async () => {
    const pkg = mkdtempSync(path.join(tmp, "stub-"));
    mkdirSync(path.join(pkg, "bin"));
    writeFileSync(path.join(pkg, "package.json"), JSON.stringify({ name: "trueidle", version: "0.0.0-stub", bin: { trueidle: "bin/trueidle.js" } }));
    writeFileSync(path.join(pkg, "bin", "trueidle.js"), "#!/usr/bin/env node\nconsole.log('stub');\n");
    const packed = await promisify(execFile)("npm", ["pack", "--pack-destination", tmp, "--ignore-scripts"], { cwd: pkg });
    return path.join(tmp, packed.stdout.trim().split("\n").pop()!);
  })();
  return standIn;
}

/** Every file under `dir`, relative to it. */
function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

describe("install-agent.sh", () => {
  it("shellcheck finds nothing", async () => {
    if (!existsSync(SHELLCHECK)) throw new Error(`${SHELLCHECK} is missing: install Debian's shellcheck package.`);
    const { stdout, stderr } = await promisify(execFile)(SHELLCHECK, [SCRIPT]);
    expect(stdout + stderr).toBe("");
  });

  it("--help names every option; a bad one exits 2", async () => {
    const help = await install(["--help"]);
    expect(help.code).toBe(0);
    for (const opt of ["--tarball FILE", "--version VERSION", "--env-file FILE", "--nvml-lib FILE", "--job-mapping-dir DIR", "--create-job-mapping-dir",
      "--root DIR", "--dry-run", "--help"]) {
      expect(help.out).toContain(opt);
    }
    const bad = await install(["--frobnicate"]);
    expect(bad.code).toBe(2);
    expect(bad.out).toContain("unknown argument: --frobnicate");
    expect((await install(["--tarball", "a.tgz", "--version", "1.0.0"])).out).toContain("give --tarball or --version, not both");
    for (const [args, message] of [
      [["--create-job-mapping-dir"], "--create-job-mapping-dir needs --job-mapping-dir DIR"],
      [["--job-mapping-dir", "jobs"], "--job-mapping-dir jobs: give an absolute path"],
      // It goes unquoted into the env file and tmpfiles.d.
      [["--job-mapping-dir", "/run/my jobs"], "--job-mapping-dir /run/my jobs: give an absolute path"],
      [["--job-mapping-dir"], "--job-mapping-dir needs a DIR"],
    ] as const) {
      const r = await install([...args]);
      expect(r.out, args.join(" ")).toContain(message);
      expect(r.code, args.join(" ")).toBe(2);
    }
  });

  it("--dry-run with a working nvidia-smi passes every check and prints every step, writing nothing", async () => {
    const root = newRoot();
    const tarball = path.join(tmp, "trueidle-9.9.9.tgz");
    writeFileSync(tarball, "");
    const { code, out } = await install(["--dry-run", "--root", root, "--tarball", tarball], [fakeBin]);
    expect(out).toContain("dry run: nothing is changed");
    expect(out).toMatch(/ok +Node\.js 2\d\.\d+\.\d+ \(/);
    expect(out).toMatch(/ok +npm \d+/);
    expect(out).toContain(`ok       nvidia-smi (${fakeBin}/nvidia-smi): 8 GPU(s), driver 570.86.15`);
    expect(out).toContain(`ok       ${root}/dev/nvidiactl`);
    expect(out).toContain(`ok       package ${tarball}`);
    expect(out).not.toContain("MISSING");
    const prefix = out.match(/\+ npm install -g --prefix (\S+) --no-audit --no-fund (\S+)/);
    expect(prefix?.[1]).toMatch(new RegExp(`^${root}/`));
    expect(prefix?.[2]).toBe(tarball);
    expect(out).toContain(`+ install -d -m 0750 ${root}/etc/trueidle`);
    expect(out).toMatch(new RegExp(`\\+ install \\S+/deploy/systemd/trueidle-agent\\.service as ${root}/etc/systemd/system/trueidle-agent\\.service with ExecStart=/\\S+/bin/trueidle agent`));
    expect(out).toContain(`+ install -m 0600 ${REPO_ROOT}/deploy/agent.env.example ${root}/etc/trueidle/agent.env`);
    // This nvidia-smi is outside systemd's PATH: the env file names it.
    expect(out).toContain(`+ echo TRUEIDLE_NVIDIA_SMI=${fakeBin}/nvidia-smi >> ${root}/etc/trueidle/agent.env`);
    // Under --root nothing touches the running system; what is left is printed.
    expect(out).not.toMatch(/\+ (useradd|systemctl)/);
    expect(out).toMatch(/Next:\n(.*\n)*  id trueidle >\/dev\/null 2>&1 \|\| useradd --system --user-group --groups video/);
    expect(out).toContain("Edit /etc/trueidle/agent.env");
    expect(out).toContain("systemctl enable --now trueidle-agent");
    expect(out).toContain("Dry run: nothing was changed.");
    expect(code).toBe(0);
    expect(files(root)).toEqual(["dev/nvidiactl"]);
  });

  it("without nvidia-smi, NVML or /dev/nvidiactl says what is missing and how to fix it, and installs nothing", async () => {
    const onPath = BASE_PATH.split(":").filter((d) => existsSync(path.join(d, "nvidia-smi")));
    expect(onPath, "this case needs a machine without nvidia-smi in the system PATH").toEqual([]);
    const { stdout: cache } = await promisify(execFile)("/sbin/ldconfig", ["-p"]);
    expect(cache, "this case needs a machine whose loader finds no libnvidia-ml.so.1").not.toContain("libnvidia-ml.so.1 ");
    const root = newRoot(false);
    const { code, out } = await install(["--dry-run", "--root", root]);
    expect(out).toContain("MISSING  nvidia-smi: not on PATH, and no libnvidia-ml.so.1 where the loader looks, so the NVIDIA driver is not installed.");
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
    writeFileSync(path.join(broken, "nvidia-smi"),
      "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\"\nexit 9\n");
    chmodSync(path.join(broken, "nvidia-smi"), 0o755);
    const root = newRoot();
    const { code, out } = await install(["--dry-run", "--root", root], [broken]);
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
    const { code, out } = await install(["--dry-run", "--root", root], [ldconfigListing(nvmlLib)]);
    expect(out).toContain(`ok       NVML (${nvmlLib}): nvidia-smi is not on PATH, so the agent reads the GPUs through NVML`);
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
    const missingLib = path.join(tmp, "nowhere", "libnvidia-ml.so.1");
    const bad = await install(["--dry-run", "--root", root, "--nvml-lib", missingLib]);
    expect(bad.out).toContain(`MISSING  --nvml-lib ${missingLib}: no such file.`);
    expect(bad.out).toContain("1 problem(s) above; nothing was installed.");
    expect(bad.code).toBe(1);
    const both = await install(["--dry-run", "--root", root, "--nvml-lib", nvmlLib], [fakeBin]);
    expect(both.out).toContain(`ok       nvidia-smi (${fakeBin}/nvidia-smi): 8 GPU(s), driver 570.86.15`);
    expect(both.out).toContain(`ok       NVML (${nvmlLib})`);
    expect(both.out).toContain(`+ echo TRUEIDLE_NVML_LIB=${nvmlLib} >> ${root}/etc/trueidle/agent.env`);
    expect(both.code, both.out).toBe(0);
  });

  it("installs into a root: binary, unit pointing at it, env file; a second run keeps the edited env file", async () => {
    const tarball = await standInTarball();

    const root = newRoot();
    const first = await install(["--root", root, "--tarball", tarball], [fakeBin]);
    expect(first.code, first.out).toBe(0);
    expect(first.out).toContain("Installed.");
    const { stdout: globalPrefix } = await promisify(execFile)("npm", ["prefix", "-g"]);
    const bin = path.join(globalPrefix.trim(), "bin", "trueidle");
    expect(existsSync(path.join(root, bin))).toBe(true);

    const unit = readFileSync(path.join(root, "etc/systemd/system/trueidle-agent.service"), "utf8");
    const shipped = readFileSync(path.join(REPO_ROOT, "deploy/systemd/trueidle-agent.service"), "utf8");
    expect(unit).toBe(shipped.replace("ExecStart=/usr/local/bin/trueidle ", `ExecStart=${bin} `));
    expect(statSync(path.join(root, "etc/trueidle")).mode & 0o777).toBe(0o750);
    const envPath = path.join(root, "etc/trueidle/agent.env");
    expect(statSync(envPath).mode & 0o777).toBe(0o600);
    const example = readFileSync(path.join(REPO_ROOT, "deploy/agent.env.example"), "utf8");
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
  });

  it("installs on a node with only the NVML library given by --nvml-lib: the env file names it and no nvidia-smi", async () => {
    nvmlLib = buildNvmlStub();
    const root = newRoot();
    const r = await install(["--root", root, "--tarball", await standInTarball(), "--nvml-lib", nvmlLib]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`ok       NVML (${nvmlLib}): nvidia-smi is not on PATH, so the agent reads the GPUs through NVML`);
    const example = readFileSync(path.join(REPO_ROOT, "deploy/agent.env.example"), "utf8");
    const env = readFileSync(path.join(root, "etc/trueidle/agent.env"), "utf8");
    expect(env.startsWith(example)).toBe(true);
    expect(env.slice(example.length)).toMatch(new RegExp(`^\\n# .*\\nTRUEIDLE_NVML_LIB=${nvmlLib.replace(/[.]/g, "\\.")}\\n$`));
  });

  it("--job-mapping-dir where the unit hides it, on a file, or on a directory the agent cannot read is a problem; --create-job-mapping-dir fixes the last", async () => {
    for (const dir of ["/tmp/trueidle-jobs", "/var/tmp/jobs", "/home/slurm/jobs", "/root/jobs"]) {
      const root = newRoot();
      const r = await install(["--dry-run", "--root", root, "--job-mapping-dir", dir], [fakeBin]);
      expect(r.out, dir).toContain(`MISSING  --job-mapping-dir ${dir}: the service cannot see it`);
      expect(r.out, dir).toContain("1 problem(s) above; nothing was installed.");
      expect(r.code, dir).toBe(1);
    }
    const root = newRoot();
    writeFileSync(path.join(root, "jobs"), "");
    const notDir = await install(["--dry-run", "--root", root, "--job-mapping-dir", "/jobs"], [fakeBin]);
    expect(notDir.out).toContain(`MISSING  --job-mapping-dir ${root}/jobs: exists and is not a directory.`);
    expect(notDir.code).toBe(1);

    mkdirSync(path.join(root, "run", "trueidle-jobs"), { recursive: true, mode: 0o700 });
    chmodSync(path.join(root, "run", "trueidle-jobs"), 0o700);
    const closed = await install(["--dry-run", "--root", root, "--job-mapping-dir", "/run/trueidle-jobs"], [fakeBin]);
    expect(closed.out).toMatch(new RegExp(`MISSING  job mapping directory ${root}/run/trueidle-jobs \\(mode 700, group \\S+\\): the agent \\(user trueidle\\) cannot read it\\.`));
    expect(closed.out).toContain(`chmod 0755 ${root}/run/trueidle-jobs`);
    expect(closed.code).toBe(1);
    const fixed = await install(["--dry-run", "--root", root, "--job-mapping-dir", "/run/trueidle-jobs", "--create-job-mapping-dir"], [fakeBin]);
    expect(fixed.out).toContain(`ok       job mapping directory ${root}/run/trueidle-jobs`);
    expect(fixed.out).toContain(`+ install -d -m 0755 ${root}/run/trueidle-jobs`);
    expect(fixed.out).toContain(`+ install ${root}/etc/tmpfiles.d/trueidle-agent.conf: d /run/trueidle-jobs 0755 root root -`);
    expect(fixed.out).toContain(`+ echo TRUEIDLE_JOB_MAPPING_DIR=/run/trueidle-jobs >> ${root}/etc/trueidle/agent.env`);
    expect(fixed.code, fixed.out).toBe(0);
    // A dry run changes nothing.
    expect(statSync(path.join(root, "run", "trueidle-jobs")).mode & 0o777).toBe(0o700);
    expect(files(root)).toEqual(["dev/nvidiactl", "jobs"]);
  });

  it("installs with --job-mapping-dir and --create-job-mapping-dir: the env file names it, it is 0755, and systemd-tmpfiles makes it again at boot", async () => {
    const root = newRoot();
    const jobs = path.join(root, "run", "trueidle-jobs");
    // Left 0700 by an earlier hand-made setup: made readable for the agent.
    mkdirSync(jobs, { recursive: true, mode: 0o700 });
    chmodSync(jobs, 0o700);
    const r = await install(["--root", root, "--tarball", await standInTarball(), "--job-mapping-dir", "/run/trueidle-jobs/", "--create-job-mapping-dir"], [fakeBin]);
    expect(r.code, r.out).toBe(0);
    const example = readFileSync(path.join(REPO_ROOT, "deploy/agent.env.example"), "utf8");
    const envPath = path.join(root, "etc/trueidle/agent.env");
    const env = readFileSync(envPath, "utf8");
    expect(env.startsWith(example)).toBe(true);
    expect(env.slice(example.length)).toMatch(new RegExp(`\\nTRUEIDLE_NVIDIA_SMI=${fakeBin}/nvidia-smi\\n\\n# .*\\nTRUEIDLE_JOB_MAPPING_DIR=/run/trueidle-jobs\\n$`));
    expect(statSync(jobs).mode & 0o777).toBe(0o755);
    const tmpfiles = path.join(root, "etc/tmpfiles.d/trueidle-agent.conf");
    expect(statSync(tmpfiles).mode & 0o777).toBe(0o644);
    expect(readFileSync(tmpfiles, "utf8").split("\n").filter((l) => l !== "" && !l.startsWith("#"))).toEqual(["d /run/trueidle-jobs 0755 root root -"]);
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
    const again = await install(["--root", root, "--tarball", await standInTarball(), "--job-mapping-dir", "/var/lib/trueidle-jobs"], [fakeBin]);
    expect(again.code, again.out).toBe(0);
    expect(readFileSync(envPath, "utf8")).toBe(env);
    expect(again.out).toContain("ok       job mapping directory " + root + "/var/lib/trueidle-jobs: not there yet; the agent sees no job until the prolog creates it");
    expect(again.out).toContain("Set TRUEIDLE_JOB_MAPPING_DIR=/var/lib/trueidle-jobs in /etc/trueidle/agent.env (kept as it was), then: systemctl restart trueidle-agent");
    expect(again.out).toContain("Give the batch system's prolog and epilog TRUEIDLE_JOB_MAPPING_DIR=/var/lib/trueidle-jobs");
    expect(existsSync(path.join(root, "var/lib/trueidle-jobs"))).toBe(false);
  });
});
