#!/usr/bin/env node
// `npm run release`: builds release/trueidle-VERSION-linux-x64.tar.xz and its .sha256, a
// release for GPU nodes that needs nothing installed. The tarball holds one folder,
// trueidle-VERSION-linux-x64/:
//   bin/trueidle        launcher (scripts/release/launcher.sh): the bundled Node.js on bin/trueidle.js
//   bin/trueidle.js     the package's entry point
//   node/bin/node       the Node.js running this script (Node 20 or later, linux-x64), as it is
//   node/LICENSE        Node.js's license, which its binary must travel with
//   dist/               the sources compiled afresh (tsconfig.build.json, no source maps)
//   node_modules/       the production install (`npm ci --omit=dev`, as the container images
//                       do), less what never loads at run time: TypeScript sources and
//                       declarations, source maps, and koffi's musl build (the bundled
//                       Node.js is a glibc one)
//   demo/scenarios/     the demo's hosts
//   deploy/             install-agent.sh, the systemd units, the env examples, the Slurm prolog
//                       and epilog
//   package.json, package-lock.json
//   RELEASE             KEY=VALUE lines: the version, the platform, the Node.js version, the
//                       oldest glibc the binaries load on; install-agent.sh reads it
//
// Usage: node scripts/release/build.mjs [--out-dir DIR] [--node-license FILE]
//   --out-dir DIR       where the tarball and its .sha256 go [default: release/]
//   --node-license FILE Node.js's LICENSE, where it is not found beside the running binary
// Entries are owned by root, sorted, with the last commit's time (SOURCE_DATE_EPOCH wins).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const PLATFORM = "linux-x64";
/** What a node needs from deploy/ (the rest of it serves clusters, Prometheus and Grafana). */
const DEPLOY_FILES = [
  "install-agent.sh",
  "agent.env.example",
  "collector.env.example",
  "systemd/trueidle-agent.service",
  "systemd/trueidle-collector.service",
  "slurm/prolog.sh",
  "slurm/epilog.sh",
];

function fail(message) {
  process.stderr.write(`release: ${message}\n`);
  process.exit(1);
}

function say(message) {
  process.stdout.write(`==> ${message}\n`);
}

function parseArgs(argv) {
  const opts = { outDir: path.join(ROOT, "release"), nodeLicense: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    if (a === "--out-dir") opts.outDir = path.resolve(value());
    else if (a === "--node-license") opts.nodeLicense = path.resolve(value());
    else if (a === "--help" || a === "-h") {
      process.stdout.write("Usage: npm run release [-- --out-dir DIR] [--node-license FILE]\n");
      process.exit(0);
    } else fail(`unknown argument: ${a}`);
  }
  return opts;
}

/** Runs a command, its output shown only when it fails. */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20, ...opts });
  if (r.error) fail(`${cmd} could not be run: ${r.error.message}`);
  if (r.status !== 0) fail(`\`${[cmd, ...args].join(" ")}\` failed (exit ${r.status}):\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Node.js's license: beside an official binary (PREFIX/LICENSE), or where distributions put it. */
function findNodeLicense(given) {
  if (given) {
    if (!existsSync(given)) fail(`--node-license ${given}: no such file`);
    return given;
  }
  const prefix = path.dirname(path.dirname(process.execPath));
  const candidates = [
    path.join(prefix, "LICENSE"),
    path.join(prefix, "share", "doc", "node", "LICENSE"),
    "/usr/share/doc/nodejs/LICENSE",
    "/usr/share/licenses/nodejs/LICENSE",
  ];
  const found = candidates.find(
    (f) => existsSync(f) && readFileSync(f, "utf8").startsWith("Node.js is licensed for use as follows"),
  );
  if (!found)
    fail(
      `Node.js's LICENSE is in none of ${candidates.join(", ")}; give it with --node-license FILE (the release may not ship ${process.execPath} without it)`,
    );
  return found;
}

/**
 * The newest GLIBC_x.y symbol version an ELF64 little-endian file needs (its SHT_GNU_verneed
 * entries), or undefined when it needs none: the oldest glibc it loads on.
 */
export function glibcNeeded(file) {
  const b = readFileSync(file);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1)
    throw new Error(`${file} is not a 64-bit little-endian ELF file`);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const section = (i) => {
    const o = shoff + i * shentsize;
    return {
      type: b.readUInt32LE(o + 4),
      offset: Number(b.readBigUInt64LE(o + 0x18)),
      link: b.readUInt32LE(o + 0x28),
      info: b.readUInt32LE(o + 0x2c),
    };
  };
  const cstring = (at) => b.toString("latin1", at, b.indexOf(0, at));
  let newest;
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== 0x6ffffffe) continue; // SHT_GNU_verneed: sh_info entries, names in sh_link's table
    const strtab = section(s.link).offset;
    let need = s.offset;
    for (let n = 0; n < s.info; n++) {
      let aux = need + b.readUInt32LE(need + 8);
      for (let k = 0; k < b.readUInt16LE(need + 2); k++) {
        const m = /^GLIBC_(\d+(?:\.\d+)+)$/.exec(cstring(strtab + b.readUInt32LE(aux + 8)));
        if (m && (!newest || compareVersions(m[1], newest) > 0)) newest = m[1];
        aux += b.readUInt32LE(aux + 12);
      }
      need += b.readUInt32LE(need + 12);
    }
  }
  return newest;
}

function compareVersions(a, b) {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Every file under `dir` (no links followed), absolute. */
function walk(dir) {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath ?? e.path, e.name));
}

function sha256(file) {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file)
      .on("data", (d) => h.update(d))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

function sourceDateEpoch() {
  const env = process.env.SOURCE_DATE_EPOCH;
  if (env && /^\d+$/.test(env)) return Number(env);
  const git = spawnSync("git", ["log", "-1", "--format=%ct"], { cwd: ROOT, encoding: "utf8" });
  if (git.status === 0 && /^\d+\s*$/.test(git.stdout)) return Number(git.stdout);
  return Math.floor(Date.now() / 1000);
}

function commit() {
  const git = spawnSync("git", ["describe", "--always", "--dirty", "--abbrev=12"], { cwd: ROOT, encoding: "utf8" });
  return git.status === 0 ? git.stdout.trim() : undefined;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (`${process.platform}-${process.arch}` !== PLATFORM)
    fail(`this builds a ${PLATFORM} release with the running Node.js, which is ${process.platform}-${process.arch}`);
  const nodeMajor = Number(process.versions.node.split(".")[0]);
  if (nodeMajor < 20)
    fail(`the release bundles the running Node.js, ${process.version}; trueidle needs Node.js 20 or later`);
  for (const tool of ["tar", "xz"]) {
    if (spawnSync(tool, ["--version"], { stdio: "ignore" }).status !== 0)
      fail(`${tool} is not on PATH (Debian: apt install ${tool === "xz" ? "xz-utils" : "tar"})`);
  }
  const nodeLicense = findNodeLicense(opts.nodeLicense);
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  const name = `trueidle-${pkg.version}-${PLATFORM}`;

  mkdirSync(opts.outDir, { recursive: true });
  const work = mkdtempSync(path.join(opts.outDir, ".build-"));
  try {
    const tree = path.join(work, name);
    mkdirSync(tree);

    say(`Compiling the sources into ${name}/dist (tsc -p tsconfig.build.json).`);
    run(
      process.execPath,
      [
        path.join(ROOT, "node_modules", "typescript", "bin", "tsc"),
        "-p",
        "tsconfig.build.json",
        "--outDir",
        path.join(tree, "dist"),
        "--sourceMap",
        "false",
        "--declaration",
        "false",
      ],
      { cwd: ROOT },
    );

    say("Installing the production dependencies (npm ci --omit=dev).");
    for (const f of ["package.json", "package-lock.json"]) copyFileSync(path.join(ROOT, f), path.join(tree, f));
    // The npm that runs `npm run release`, else the one on PATH.
    const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ["npm"];
    run(
      npm[0],
      [...npm.slice(1), "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
      { cwd: tree },
    );
    const modules = path.join(tree, "node_modules");
    for (const f of walk(modules)) {
      if (/\.(?:[cm]?ts|map)$/.test(f)) rmSync(f);
    }
    rmSync(path.join(modules, "@koromix", "koffi-linux-x64", "musl_x64"), { recursive: true, force: true });

    say(
      `Adding Node.js ${process.version} (${process.execPath}), its license (${nodeLicense}), the launcher and deploy/.`,
    );
    mkdirSync(path.join(tree, "node", "bin"), { recursive: true });
    copyFileSync(process.execPath, path.join(tree, "node", "bin", "node"));
    chmodSync(path.join(tree, "node", "bin", "node"), 0o755);
    copyFileSync(nodeLicense, path.join(tree, "node", "LICENSE"));
    mkdirSync(path.join(tree, "bin"));
    copyFileSync(path.join(ROOT, "bin", "trueidle.js"), path.join(tree, "bin", "trueidle.js"));
    copyFileSync(path.join(ROOT, "scripts", "release", "launcher.sh"), path.join(tree, "bin", "trueidle"));
    chmodSync(path.join(tree, "bin", "trueidle"), 0o755);
    cpSync(path.join(ROOT, "demo", "scenarios"), path.join(tree, "demo", "scenarios"), { recursive: true });
    for (const f of DEPLOY_FILES) {
      mkdirSync(path.dirname(path.join(tree, "deploy", f)), { recursive: true });
      copyFileSync(path.join(ROOT, "deploy", f), path.join(tree, "deploy", f));
      chmodSync(path.join(tree, "deploy", f), statSync(path.join(ROOT, "deploy", f)).mode & 0o777);
    }

    // The oldest glibc every native binary of the release loads on.
    const natives = [path.join(tree, "node", "bin", "node"), ...walk(modules).filter((f) => f.endsWith(".node"))];
    const glibc = natives
      .map(glibcNeeded)
      .filter(Boolean)
      .reduce((a, b) => (compareVersions(a, b) >= 0 ? a : b));
    const rev = commit();
    writeFileSync(
      path.join(tree, "RELEASE"),
      [
        "# A trueidle release for GPU nodes: bin/trueidle runs the Node.js in node/, nothing needs installing.",
        "# Install the agent with deploy/install-agent.sh (--help for its options).",
        `TRUEIDLE_VERSION=${pkg.version}`,
        `TRUEIDLE_PLATFORM=${PLATFORM}`,
        ...(rev ? [`TRUEIDLE_COMMIT=${rev}`] : []),
        `NODE_VERSION=${process.versions.node}`,
        `GLIBC_MINIMUM=${glibc}`,
        "",
      ].join("\n"),
    );

    const tarball = path.join(opts.outDir, `${name}.tar.xz`);
    say(`Packing ${tarball} (xz -9).`);
    run(
      "tar",
      [
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mode=u+rwX,go+rX,go-w",
        `--mtime=@${sourceDateEpoch()}`,
        "-C",
        work,
        "-cJf",
        `${tarball}.partial`,
        name,
      ],
      { env: { ...process.env, XZ_OPT: "-9 -T0" } },
    );
    renameSync(`${tarball}.partial`, tarball);
    const digest = await sha256(tarball);
    writeFileSync(`${tarball}.sha256`, `${digest}  ${path.basename(tarball)}\n`);
    const mib = (statSync(tarball).size / (1 << 20)).toFixed(1);
    say(`Wrote ${tarball} (${mib} MiB, Node.js ${process.versions.node}, glibc ${glibc} or later) and its .sha256:`);
    process.stdout.write(`${digest}  ${path.basename(tarball)}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
