#!/usr/bin/env node
/**
 * What the trueidle agent costs this GPU node, whole process, as an operator would see it:
 * agents at the sampling interval streaming to a collector on loopback, beside a bare
 * `nvidia-smi --query-gpu … -lms` loop and a bare Node process with a timer, all side by
 * side over the same seconds after a warm-up. CPU is every thread and every child, from
 * /proc (proc-cpu.mjs); per GPU-sample = CPU ÷ (samples × GPUs). Plain JavaScript for the
 * bare Node of the GPU kit (run.sh runs it after the table); `npm run bench` measures the
 * same way against the stub (bench/agent-process.ts).
 *
 *   node agent-cpu.mjs --trueidle BIN --nvidia-smi PATH [--nvml-lib PATH] [--interval-ms 1000]
 *                      [--warmup-s 30] [--seconds 60] --out DIR
 *
 * Writes DIR/agent-cpu.md (the table) and DIR/agent-cpu.json.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readProcessCpu } from "./proc-cpu.mjs";

const { values: opt } = parseArgs({
  options: {
    trueidle: { type: "string" },
    "nvidia-smi": { type: "string" },
    "nvml-lib": { type: "string" },
    "interval-ms": { type: "string", default: "1000" },
    "warmup-s": { type: "string", default: "30" },
    seconds: { type: "string", default: "60" },
    out: { type: "string" },
  },
});
for (const k of ["trueidle", "nvidia-smi", "out"]) {
  if (!opt[k]) {
    process.stderr.write(`agent-cpu.mjs: --${k} is required\n`);
    process.exit(2);
  }
}
const intervalMs = Number(opt["interval-ms"]);
const warmupS = Number(opt["warmup-s"]);
const seconds = Number(opt["seconds"]);
const node = process.execPath;
const bin = opt["trueidle"];
const smi = opt["nvidia-smi"];
/** What a dashboard loop asks nvidia-smi for: the common fields of the exporters. */
const SMI_FIELDS = "index,uuid,utilization.gpu,memory.used,memory.total,power.draw,enforced.power.limit,clocks.sm";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const say = (s) => process.stderr.write(`agent-cpu: ${s}\n`);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen({ host: "127.0.0.1", port: 0 }, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const running = [];
function start(name, cmd, args) {
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (b) => {
    err = (err + b.toString()).slice(-4000);
  });
  const p = { name, child, stderr: () => err };
  running.push(p);
  return p;
}

async function metrics(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    return res.ok ? await res.text() : "";
  } catch {
    return "";
  }
}
const metric = (text, name) => {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
};

async function main() {
  const [grpc, http, nvmlHttp, smiHttp] = [await freePort(), await freePort(), await freePort(), await freePort()];
  start("collector", node, [
    bin,
    "collector",
    "--plaintext",
    "--grpc-listen",
    `127.0.0.1:${grpc}`,
    "--http-listen",
    `127.0.0.1:${http}`,
    "--log-level",
    "warn",
  ]);
  await sleep(1500);
  const agent = (source, port, extra) => [
    bin,
    "agent",
    "--source",
    source,
    ...extra,
    "--plaintext",
    "--collector",
    `127.0.0.1:${grpc}`,
    "--interval",
    `${intervalMs}ms`,
    "--hostname",
    `cpu-${source}`,
    "--http-listen",
    `127.0.0.1:${port}`,
    "--log-level",
    "warn",
  ];
  const rows = [
    {
      label: "trueidle agent --source nvml",
      p: start("nvml", node, agent("nvml", nvmlHttp, opt["nvml-lib"] ? ["--nvml-lib", opt["nvml-lib"]] : [])),
      port: nvmlHttp,
    },
    {
      label: "trueidle agent --source nvidia-smi (with its nvidia-smi)",
      p: start("nvidia-smi", node, agent("nvidia-smi", smiHttp, ["--nvidia-smi", smi])),
      port: smiHttp,
    },
    {
      label: `bare nvidia-smi --query-gpu=… -lms ${intervalMs}`,
      p: start("bare-smi", smi, [
        `--query-gpu=${SMI_FIELDS}`,
        "--format=csv,noheader,nounits",
        "-lms",
        String(intervalMs),
      ]),
    },
    {
      label: "bare Node, one timer at the interval",
      p: start("bare-node", node, ["-e", `setInterval(() => {}, ${intervalMs});`]),
    },
  ];
  say(`warming up for ${warmupS} s`);
  await sleep(warmupS * 1000);
  const pids = rows.map((r) => r.p.child.pid);
  const t0 = performance.now();
  const a = readProcessCpu(pids);
  await sleep(seconds * 1000);
  const b = readProcessCpu(pids);
  const spanS = (performance.now() - t0) / 1000;

  let gpus = 0;
  for (const r of rows) {
    if (r.port === undefined) continue;
    const text = await metrics(r.port);
    r.gpus = metric(text, "trueidle_agent_gpus");
    r.selfReported = metric(text, "process_cpu_seconds_total");
    gpus = Math.max(gpus, r.gpus ?? 0);
  }
  if (gpus === 0) say("no agent reported its GPUs (trueidle_agent_gpus); per GPU-sample figures assume 1 GPU");
  const perSampleDiv = ((spanS * 1000) / intervalMs) * Math.max(1, gpus);
  const out = rows.map((r, i) => {
    const ownUs = (b[i].selfNs - a[i].selfNs) / 1000;
    const childUs = (b[i].childrenNs - a[i].childrenNs) / 1000;
    return {
      process: r.label,
      alive: b[i].alive,
      gpus: r.gpus,
      usPerGpuSample: (ownUs + childUs) / perSampleDiv,
      childUsPerGpuSample: childUs / perSampleDiv,
      coreShare: (ownUs + childUs) / (spanS * 1e6),
      rssMiB: (b[i].rssKiB ?? 0) / 1024,
      precise: a[i].precise && b[i].precise,
      stderr: b[i].alive ? undefined : r.p.stderr().trim().split("\n").slice(-3).join(" | "),
    };
  });
  const lines = [
    `| process | CPU µs per GPU-sample | of which children | share of one core | RSS MiB |`,
    `| --- | ---: | ---: | ---: | ---: |`,
    ...out.map(
      (x) =>
        `| ${x.process}${x.alive ? "" : ` (exited: ${x.stderr ?? "?"})`} | ${x.usPerGpuSample.toFixed(0)} | ${x.childUsPerGpuSample.toFixed(0)} | ${(x.coreShare * 100).toFixed(3)}% | ${x.rssMiB.toFixed(0)} |`,
    ),
    "",
    `${gpus} GPU(s), a sample every ${intervalMs} ms; ${spanS.toFixed(1)} s measured after ${warmupS} s of warm-up, all processes side by side. ` +
      "CPU: user + system of every thread and every child process, from /proc" +
      (out.every((x) => x.precise) ? " (schedstat, ns)" : " (clock ticks)") +
      `; per GPU-sample = CPU ÷ (${((spanS * 1000) / intervalMs).toFixed(0)} samples × ${Math.max(1, gpus)} GPUs); the agents stream to a collector on loopback (not counted).`,
  ];
  writeFileSync(join(opt.out, "agent-cpu.md"), `${lines.join("\n")}\n`);
  writeFileSync(
    join(opt.out, "agent-cpu.json"),
    `${JSON.stringify({ intervalMs, warmupS, spanS, gpus, rows: out, selfReported: rows.map((r) => r.selfReported) }, null, 2)}\n`,
  );
  process.stdout.write(`${lines.join("\n")}\n`);
}

async function stopAll() {
  for (const p of running) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGTERM");
  await sleep(800);
  for (const p of running) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
}

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.once(signal, () => {
    say(`${signal}: stopping what was started`);
    void stopAll().then(() => process.exit(1));
  });
}

main().then(stopAll, async (err) => {
  process.stderr.write(`agent-cpu.mjs: ${err?.stack ?? err}\n`);
  await stopAll();
  process.exit(1);
});
