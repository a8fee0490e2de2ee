/**
 * deploy/docker/Dockerfile.agent and Dockerfile.collector, without a Docker engine (none runs
 * where this project is developed and tested): each is parsed and held to what the images
 * promise (multi-stage on node:20-bookworm-slim, every COPY source in the repository and let
 * through by .dockerignore, a final stage with production dependencies only, a numeric
 * non-root USER, the ports, the health check, the NVIDIA settings for the agent). Then the
 * build stage's sources, as .dockerignore lets them through, are compiled in a temp folder,
 * laid out like the final stage, and run: the collector starts from that layout and the
 * image's health check (deploy/docker/healthcheck.mjs) passes against it, and fails once it
 * has stopped.
 */
import { execFile, spawn } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../helpers/ports.js";
import { REPO_ROOT } from "../helpers/trueidle-process.js";

const run = promisify(execFile);
const DOCKER_DIR = path.join(REPO_ROOT, "deploy", "docker");

interface Instruction {
  cmd: string;
  args: string;
}
interface Stage {
  from: string;
  name?: string;
  steps: Instruction[];
}
interface Dockerfile {
  args: Map<string, string>;
  stages: Stage[];
}

/** Instructions by stage; comments dropped, `\` continuations joined. */
function parseDockerfile(text: string): Dockerfile {
  const lines = text.split("\n").filter((l) => !/^\s*#/.test(l));
  const joined = lines
    .join("\n")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const df: Dockerfile = { args: new Map(), stages: [] };
  for (const line of joined) {
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`not a Dockerfile instruction: ${line}`);
    const cmd = m[1]!.toUpperCase();
    const args = m[2]!;
    if (cmd === "FROM") {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      df.stages.push({ from: f[1]!, ...(f[2] ? { name: f[2] } : {}), steps: [] });
    } else if (df.stages.length === 0) {
      expect(cmd, "only ARG comes before the first FROM").toBe("ARG");
      const [k, v] = args.split("=");
      df.args.set(k!, v ?? "");
    } else {
      df.stages.at(-1)!.steps.push({ cmd, args });
    }
  }
  return df;
}

/** .dockerignore as Docker reads it: the last pattern that matches a path or a parent of it wins. */
function dockerignore(): (rel: string) => boolean {
  const rules = readFileSync(path.join(REPO_ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const negate = l.startsWith("!");
      const glob = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, "");
      const re = glob
        .split("/")
        .map((part) =>
          part === "**"
            ? "(?:.*)"
            : part
                .replace(/[.+^${}()|[\]\\]/g, "\\$&")
                .replace(/\*/g, "[^/]*")
                .replace(/\?/g, "[^/]"),
        )
        .join("/")
        .replace(/\(\?:\.\*\)\//g, "(?:.*/)?");
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (rel) => {
    const parts = rel.split("/");
    let ignored = false;
    for (const r of rules) {
      for (let i = 1; i <= parts.length; i++) {
        if (r.re.test(parts.slice(0, i).join("/"))) {
          ignored = !r.negate;
          break;
        }
      }
    }
    return ignored;
  };
}

/** Files under `rel` (a file or a folder of the repository) that reach the build context. */
function contextFiles(rel: string, ignored: (rel: string) => boolean): string[] {
  const abs = path.join(REPO_ROOT, rel);
  const all = statSync(abs).isDirectory()
    ? readdirSync(abs, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.relative(REPO_ROOT, path.join(e.parentPath, e.name)))
    : [rel];
  return all.filter((f) => !ignored(f));
}

/** COPY's sources and destination (flags such as --from= returned apart). */
function copyArgs(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith("--"));
  const rest = words.filter((w) => !w.startsWith("--"));
  const from = flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
  return { ...(from ? { from } : {}), sources: rest.slice(0, -1), dest: rest.at(-1)! };
}

const images = {
  agent: parseDockerfile(readFileSync(path.join(DOCKER_DIR, "Dockerfile.agent"), "utf8")),
  collector: parseDockerfile(readFileSync(path.join(DOCKER_DIR, "Dockerfile.collector"), "utf8")),
};
const ignored = dockerignore();

describe.each(Object.entries(images))("Dockerfile.%s", (name, df) => {
  const [build, final] = [df.stages[0]!, df.stages.at(-1)!];
  const steps = (stage: Stage, cmd: string): string[] => stage.steps.filter((s) => s.cmd === cmd).map((s) => s.args);

  it("builds in one stage and runs from node:20-bookworm-slim in another", () => {
    expect(df.args.get("NODE_IMAGE")).toBe("node:20-bookworm-slim");
    expect(df.stages).toHaveLength(2);
    expect(build).toMatchObject({ from: "${NODE_IMAGE}", name: "build" });
    expect(final.from).toBe("${NODE_IMAGE}");
    expect(steps(build, "RUN")).toEqual(["npm ci --no-audit --no-fund --ignore-scripts", "npm run build"]);
  });

  it("copies only files that exist and that .dockerignore lets through", () => {
    for (const stage of df.stages) {
      for (const args of steps(stage, "COPY")) {
        const c = copyArgs(args);
        if (c.from !== undefined) {
          // From the build stage only what was compiled.
          expect(c).toEqual({ from: "build", sources: ["/src/dist"], dest: "dist" });
          continue;
        }
        for (const src of c.sources) {
          expect(existsSync(path.join(REPO_ROOT, src)), `${src} exists`).toBe(true);
          expect(ignored(src), `${src} is not excluded by .dockerignore`).toBe(false);
          expect(contextFiles(src, ignored).length, `${src} brings files`).toBeGreaterThan(0);
        }
      }
    }
    // Tests, builds and local files stay out of the context.
    for (const p of [
      "node_modules/typescript/package.json",
      "dist/cli/main.js",
      "release/trueidle-0.1.0-linux-x64.tar.xz",
      "test/cli.test.ts",
      "agent/agent.test.ts",
      "collector/testdata",
      ".git/HEAD",
      ".tmp/x",
    ]) {
      expect(ignored(p), p).toBe(true);
    }
  });

  it("installs production dependencies only in the final stage and runs as a numeric non-root user", () => {
    const runs = steps(final, "RUN").join("\n");
    expect(runs).toContain("npm ci --omit=dev --no-audit --no-fund --ignore-scripts");
    for (const line of runs.split("&&")) {
      if (/\bnpm (ci|install|i)\b/.test(line)) expect(line).toContain("--omit=dev");
    }
    expect(runs).not.toMatch(/npm run build|\btsc\b/);
    const users = steps(final, "USER");
    expect(users).toHaveLength(1);
    expect(users[0]).toMatch(/^[1-9]\d*:[1-9]\d*$/); // numeric, so Kubernetes runAsNonRoot can check it
    expect(steps(final, "ENV").join(" ")).toContain("NODE_ENV=production");
    expect(steps(final, "ENTRYPOINT")).toEqual([`["node", "/opt/trueidle/bin/trueidle.js", "${name}"]`]);
  });

  it("exposes its ports and checks its health on them", () => {
    const ports = name === "agent" ? ["9747"] : ["9745", "9746"];
    expect(steps(final, "EXPOSE").join(" ").split(/\s+/)).toEqual(ports);
    const hc = steps(final, "HEALTHCHECK");
    expect(hc).toHaveLength(1);
    expect(hc[0]).toMatch(new RegExp(`CMD \\["node", "/opt/trueidle/healthcheck\\.mjs", "${ports[0]}"\\]$`));
  });
});

describe("Dockerfile.agent", () => {
  it("asks the NVIDIA runtime for nvidia-smi only, keeps its state on a volume and serves /metrics", () => {
    const final = images.agent.stages.at(-1)!;
    const env = final.steps
      .filter((s) => s.cmd === "ENV")
      .map((s) => s.args)
      .join(" ");
    expect(env).toMatch(/NVIDIA_VISIBLE_DEVICES=all/);
    expect(env).toMatch(/NVIDIA_DRIVER_CAPABILITIES=utility\b/);
    expect(env).toMatch(/TRUEIDLE_STATE_DIR=\/var\/lib\/trueidle/);
    expect(env).toMatch(/TRUEIDLE_HTTP_LISTEN=0\.0\.0\.0:9747/);
    expect(final.steps.filter((s) => s.cmd === "VOLUME").map((s) => s.args)).toEqual(["/var/lib/trueidle"]);
  });
});

describe("the image layout, built and run without Docker", () => {
  let tmp: string;
  let image: string;
  let collector: ReturnType<typeof spawn> | undefined;

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), "trueidle-docker-"));
    // The build stage: its COPY sources as they reach the context, then `npm run build`'s tsc.
    const src = path.join(tmp, "src");
    const build = images.collector.stages[0]!;
    for (const s of build.steps.filter((st) => st.cmd === "COPY")) {
      for (const from of copyArgs(s.args).sources) {
        for (const f of contextFiles(from, ignored)) {
          mkdirSync(path.dirname(path.join(src, f)), { recursive: true });
          cpSync(path.join(REPO_ROOT, f), path.join(src, f));
        }
      }
    }
    symlinkSync(path.join(REPO_ROOT, "node_modules"), path.join(src, "node_modules"));
    await run(
      process.execPath,
      [path.join(REPO_ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"],
      { cwd: src },
    );

    // The final stage: package files, bin, scenarios, the health check, dist from the build.
    image = path.join(tmp, "opt-trueidle");
    const final = images.collector.stages.at(-1)!;
    for (const s of final.steps.filter((st) => st.cmd === "COPY")) {
      const c = copyArgs(s.args);
      if (c.from) {
        cpSync(path.join(src, "dist"), path.join(image, c.dest), { recursive: true });
        continue;
      }
      for (const from of c.sources) {
        const to = c.dest === "./" ? path.join(image, from) : path.join(image, c.dest);
        cpSync(path.join(REPO_ROOT, from), to, {
          recursive: true,
          filter: (p) => !ignored(path.relative(REPO_ROOT, p)) || p === path.join(REPO_ROOT, from),
        });
      }
    }
    // Stands in for `npm ci --omit=dev` (package-install.test.ts checks a production-only install).
    symlinkSync(path.join(REPO_ROOT, "node_modules"), path.join(image, "node_modules"));
  });

  afterEach(() => {
    collector?.kill("SIGKILL");
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("has what the final stage copies", () => {
    for (const f of [
      "package.json",
      "package-lock.json",
      "bin/trueidle.js",
      "dist/cli/main.js",
      "dist/gen/trueidle/v1/ingest_pb.js",
      "demo/scenarios/gpu-a01.json",
      "healthcheck.mjs",
    ]) {
      expect(existsSync(path.join(image, f)), f).toBe(true);
    }
    expect(readdirSync(path.join(image, "dist")).sort()).toEqual([
      "agent",
      "cli",
      "collector",
      "common",
      "demo",
      "gen",
      "report",
    ]);
  });

  it("starts the collector, whose health check passes, and fails once it has stopped", async () => {
    const httpPort = await freePort();
    const env = {
      ...process.env,
      TRUEIDLE_HTTP_LISTEN: `0.0.0.0:${httpPort}`,
      TRUEIDLE_GRPC_LISTEN: "127.0.0.1:0",
      TRUEIDLE_PLAINTEXT: "true",
    };
    const proc = spawn(process.execPath, [path.join(image, "bin", "trueidle.js"), "collector"], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    collector = proc;
    let out = "";
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        out += d.toString();
        if (out.includes("The collector is listening for agents")) resolve();
      };
      proc.stdout!.on("data", onData);
      proc.stderr!.on("data", onData);
      proc.on("exit", (code) => reject(new Error(`the collector exited (${code}):\n${out}`)));
    });
    const healthcheck = (): Promise<number | null> =>
      new Promise((resolve) => {
        // As the image runs it: the port comes from TRUEIDLE_HTTP_LISTEN, 9745 is the fallback.
        const hc = spawn(process.execPath, [path.join(image, "healthcheck.mjs"), "9745"], { env, stdio: "ignore" });
        hc.on("exit", (code) => resolve(code));
      });
    expect(await healthcheck()).toBe(0);
    const exited = new Promise((resolve) => proc.on("exit", resolve));
    proc.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(await healthcheck()).toBe(1);
  });
});
