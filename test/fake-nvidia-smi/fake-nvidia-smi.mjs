#!/usr/bin/env node
/**
 * A fake `nvidia-smi` that answers like the real one for the GPUs of a scenario file, so
 * the nvidia-smi source, the agent and end-to-end tests run without a GPU.
 *
 *   fake-nvidia-smi.mjs --scenario FILE [nvidia-smi arguments]
 *   FAKE_NVIDIA_SMI_SCENARIO=FILE fake-nvidia-smi.mjs [nvidia-smi arguments]
 *
 * Answers:
 *   --help-query-gpu            the captured help of a real driver (465.27 for scenario
 *                               drivers older than 520, else 610.57.04), from
 *                               test/fixtures/nvidia-smi/
 *   --query-gpu=F1,F2 --format=csv[,noheader][,nounits] [-lms N | -l N | --loop-ms=N | --loop=N]
 *                               one line per GPU (per tick in loop mode, ticks aligned to
 *                               the wall clock); values from readingsAt(scenario, now);
 *                               a GPU whose reading has `error` prints
 *                               "Unable to determine the device handle for GPU …: <error>";
 *                               a field the help does not list exits 2 with the real message.
 *                               Loop mode exits after the scenario's `exitAfter`.
 *   --query-compute-apps=F1,… --format=…  one line per process of every GPU without error
 *   -L, --version               plausible answers
 *
 * FAKE_NVIDIA_SMI_NO_HELP=1 makes --help-query-gpu fail, like stand-ins that cannot answer it.
 *
 * Plain JavaScript so it starts fast; the scenario code is the compiled one in dist/
 * (`npm run build`), the same code the simulator source runs.
 */
import { readFileSync } from "node:fs";
import { loadScenario } from "../../dist/agent/sim/scenario.js";
import { readingsAt } from "../../dist/agent/sim/evaluate.js";

const MiB = 1024 * 1024;
const INVALID_ARGS = 'Invalid combination of input arguments. Please run "nvidia-smi -h" for help.';

process.stdout.on("error", () => process.exit(0));

function fail(message, code = 2) {
  process.stdout.write(`${message}\n\n`);
  process.exit(code);
}

// ---- arguments ---------------------------------------------------------------------

const argv = process.argv.slice(2);
let scenarioPath = process.env.FAKE_NVIDIA_SMI_SCENARIO;
if (argv[0] === "--scenario") {
  scenarioPath = argv[1];
  argv.splice(0, 2);
}
if (!scenarioPath) {
  process.stderr.write("fake-nvidia-smi: no scenario; pass --scenario FILE first or set FAKE_NVIDIA_SMI_SCENARIO\n");
  process.exit(1);
}
let scenario;
try {
  scenario = loadScenario(scenarioPath);
} catch (err) {
  process.stderr.write(`fake-nvidia-smi: ${err.message}\n`);
  process.exit(1);
}

const opts = {
  help: false,
  list: false,
  version: false,
  queryGpu: undefined,
  queryApps: undefined,
  format: undefined,
  loopMs: undefined,
};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const fieldValue = (name) => {
    if (a.startsWith(`${name}=`)) return a.slice(name.length + 1);
    const v = argv[++i];
    if (v === undefined) fail(INVALID_ARGS);
    return v;
  };
  if (a === "--help-query-gpu") opts.help = true;
  else if (a === "-L" || a === "--list-gpus") opts.list = true;
  else if (a === "--version") opts.version = true;
  else if (a === "--query-gpu" || a.startsWith("--query-gpu=")) opts.queryGpu = fieldValue("--query-gpu");
  else if (a === "--query-compute-apps" || a.startsWith("--query-compute-apps="))
    opts.queryApps = fieldValue("--query-compute-apps");
  else if (a === "--format" || a.startsWith("--format=")) opts.format = fieldValue("--format");
  else if (a === "-lms" || a === "--loop-ms" || a.startsWith("--loop-ms="))
    opts.loopMs = Number(a === "-lms" ? fieldValue("-lms") : fieldValue("--loop-ms"));
  else if (a === "-l" || a === "--loop" || a.startsWith("--loop="))
    opts.loopMs = 1000 * Number(a === "-l" ? fieldValue("-l") : fieldValue("--loop"));
  else fail(INVALID_ARGS);
}
if (opts.loopMs !== undefined && !(opts.loopMs > 0)) fail(INVALID_ARGS);

const driverMajor = Number(scenario.driverVersion.split(".")[0]);
const helpFile = new URL(
  driverMajor < 520 ? "../fixtures/nvidia-smi/help-query-gpu-465.27.txt" : "../fixtures/nvidia-smi/help-query-gpu.txt",
  import.meta.url,
);

// ---- simple answers ----------------------------------------------------------------

if (opts.help) {
  if (process.env.FAKE_NVIDIA_SMI_NO_HELP === "1") fail(INVALID_ARGS);
  process.stdout.write(readFileSync(helpFile));
  process.exit(0);
}
if (opts.version) {
  const [maj, min] = scenario.driverVersion.split(".");
  const cuda =
    driverMajor >= 580
      ? "13.0"
      : driverMajor >= 550
        ? "12.4"
        : driverMajor >= 535
          ? "12.2"
          : driverMajor >= 520
            ? "12.0"
            : "11.4";
  process.stdout.write(
    `\nNVIDIA-SMI version  : ${scenario.driverVersion}\nNVML version        : ${maj}.${min}\nDRIVER version      : ${scenario.driverVersion}\nCUDA Version        : ${cuda}\n`,
  );
  process.exit(0);
}
if (opts.list) {
  for (const g of scenario.gpus) process.stdout.write(`GPU ${g.index}: ${g.model} (UUID: ${g.uuid})\n`);
  process.exit(0);
}
if (opts.queryGpu === undefined && opts.queryApps === undefined) {
  // The default table is not needed by anything; a short summary says what this is.
  process.stdout.write(`fake nvidia-smi, driver ${scenario.driverVersion}, ${scenario.gpus.length} GPU(s)\n`);
  for (const r of readingsAt(scenario, Date.now())) {
    process.stdout.write(
      `GPU ${r.index}: ${r.model} ${r.error ? `(${r.error})` : `${r.util ?? "N/A"} % ${r.powerW ?? "N/A"} W`}\n`,
    );
  }
  process.exit(0);
}

// ---- queries ----------------------------------------------------------------------

if (opts.format === undefined) fail(INVALID_ARGS);
const formatParts = opts.format.split(",").map((s) => s.trim());
if (formatParts[0] !== "csv" || formatParts.slice(1).some((p) => p !== "noheader" && p !== "nounits"))
  fail(INVALID_ARGS);
const withHeader = !formatParts.includes("noheader");
const withUnits = !formatParts.includes("nounits");

/** Names (and aliases) the real driver's help lists: lines made of quoted field names only. */
function helpFields() {
  const names = new Set();
  for (const line of readFileSync(helpFile, "utf8").split("\n")) {
    const parts = line.trim().split(/\s+or\s+/);
    const found = parts.map((p) => /^"([A-Za-z][A-Za-z0-9_.]*)"$/.exec(p)?.[1]);
    if (found.length > 0 && found.every(Boolean)) for (const n of found) names.add(n);
  }
  return names;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");
function timestamp(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}/${pad(d.getMonth() + 1)}/${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
/** nvidia-smi prints the bus id with an 8-digit domain in CSV and 4 digits in messages. */
const shortBusId = (busId) => busId.replace(/^0000(?=[0-9A-Fa-f]{4}:)/, "");
const mib = (bytes) => (bytes === undefined ? undefined : Math.round(bytes / MiB));
const watts = (w) => (w === undefined ? undefined : w.toFixed(2));
const serialOf = (g) => String(1320000000000 + g.index * 7919);
const idle = (r) => (r.util === undefined ? undefined : r.util === 0 ? "Active" : "Not Active");

/** field → [unit or undefined, value(reading, gpu, timeMs)]; undefined values print as [N/A]. */
const GPU_FIELDS = {
  timestamp: [undefined, (_r, _g, t) => timestamp(t)],
  driver_version: [undefined, () => scenario.driverVersion],
  kmd_version: [undefined, () => scenario.driverVersion],
  count: [undefined, () => scenario.gpus.length],
  name: [undefined, (r) => r.model],
  serial: [undefined, (_r, g) => serialOf(g)],
  uuid: [undefined, (r) => r.uuid],
  "pci.bus_id": [undefined, (r) => r.busId],
  index: [undefined, (r) => r.index],
  persistence_mode: [undefined, () => "Enabled"],
  pstate: [undefined, () => "P0"],
  "mig.mode.current": [undefined, () => "Disabled"],
  compute_mode: [undefined, () => "Default"],
  "temperature.gpu": [undefined, (r) => (r.util === undefined ? 35 : Math.round(32 + r.util * 0.4))],
  "utilization.gpu": ["%", (r) => r.util],
  "utilization.memory": ["%", (r) => (r.util === undefined ? undefined : Math.round(r.util * 0.6))],
  "utilization.encoder": ["%", (r) => r.media ?? 0],
  "utilization.decoder": ["%", () => 0],
  "utilization.jpeg": ["%", () => 0],
  "utilization.ofa": ["%", () => 0],
  "memory.total": ["MiB", (r) => mib(r.memTotalBytes)],
  "memory.used": ["MiB", (r) => mib(r.memUsedBytes)],
  "memory.free": [
    "MiB",
    (r) =>
      r.memTotalBytes === undefined || r.memUsedBytes === undefined ? undefined : mib(r.memTotalBytes - r.memUsedBytes),
  ],
  "memory.reserved": ["MiB", () => 0],
  "power.draw": ["W", (r) => watts(r.powerW)],
  "power.draw.average": ["W", (r) => watts(r.powerW)],
  "power.draw.instant": ["W", (r) => watts(r.powerW)],
  "power.limit": ["W", (r) => watts(r.powerLimitW)],
  "enforced.power.limit": ["W", (r) => watts(r.powerLimitW)],
  "power.default_limit": ["W", (r) => watts(r.powerLimitW)],
  "power.max_limit": ["W", (r) => watts(r.powerLimitW)],
  "clocks_event_reasons.gpu_idle": [undefined, idle],
  "fan.speed": ["%", () => undefined],
};
const GPU_ALIASES = {
  gpu_name: "name",
  gpu_serial: "serial",
  gpu_uuid: "uuid",
  gpu_bus_id: "pci.bus_id",
  "clocks_throttle_reasons.gpu_idle": "clocks_event_reasons.gpu_idle",
  "gpu.power.requested_limit": "power.limit",
  "gpu.power.current_limit": "enforced.power.limit",
};

const APP_FIELDS = {
  timestamp: [undefined, (_p, _r, _g, t) => timestamp(t)],
  gpu_name: [undefined, (_p, r) => r.model],
  gpu_bus_id: [undefined, (_p, r) => r.busId],
  gpu_serial: [undefined, (_p, _r, g) => serialOf(g)],
  gpu_uuid: [undefined, (_p, r) => r.uuid],
  pid: [undefined, (p) => p.pid],
  process_name: [undefined, (p) => p.name],
  used_gpu_memory: ["MiB", (p) => mib(p.usedMemoryBytes)],
};
const APP_ALIASES = { name: "process_name", used_memory: "used_gpu_memory" };

function cell(unit, value) {
  if (value === undefined || value === null) return "[N/A]";
  return withUnits && unit !== undefined ? `${value} ${unit}` : String(value);
}
const headerCell = (field, unit) => (unit === undefined ? field : `${field} [${unit}]`);
const gpuOf = (r) => scenario.gpus.find((g) => g.uuid === r.uuid);

function resolveFields(list, valid, table, aliases) {
  const fields = list.split(",").map((f) => f.trim());
  for (const f of fields) {
    if (f === "" || !valid(f)) fail(`Field "${f}" is not a valid field to query.`);
  }
  return fields.map((f) => {
    const key = aliases[f] ?? f;
    const [unit, value] = table[key] ?? [undefined, () => undefined];
    return { field: f, unit, value };
  });
}

if (opts.queryGpu !== undefined) {
  const supported = helpFields();
  const fields = resolveFields(opts.queryGpu, (f) => supported.has(f), GPU_FIELDS, GPU_ALIASES);
  const printTick = (header) => {
    const t = Date.now();
    let out = header && withHeader ? `${fields.map((f) => headerCell(f.field, f.unit)).join(", ")}\n` : "";
    for (const r of readingsAt(scenario, t)) {
      if (r.error !== undefined) {
        out += `Unable to determine the device handle for GPU ${shortBusId(r.busId)}: ${r.error}\n`;
        continue;
      }
      const g = gpuOf(r);
      out += `${fields.map((f) => cell(f.unit, f.value(r, g, t))).join(", ")}\n`;
    }
    process.stdout.write(out);
  };
  printTick(true);
  if (opts.loopMs === undefined) process.exit(0);
  const interval = opts.loopMs;
  const next = () => {
    const t = setTimeout(
      () => {
        printTick(false);
        next();
      },
      interval - (Date.now() % interval),
    );
    return t;
  };
  next();
  if (scenario.exitAfterMs !== undefined) setTimeout(() => process.exit(0), scenario.exitAfterMs);
} else {
  const fields = resolveFields(opts.queryApps, (f) => f in APP_FIELDS || f in APP_ALIASES, APP_FIELDS, APP_ALIASES);
  const t = Date.now();
  let out = withHeader ? `${fields.map((f) => headerCell(f.field, f.unit)).join(", ")}\n` : "";
  for (const r of readingsAt(scenario, t)) {
    if (r.error !== undefined) continue;
    const g = gpuOf(r);
    for (const p of r.processes ?? []) out += `${fields.map((f) => cell(f.unit, f.value(p, r, g, t))).join(", ")}\n`;
  }
  process.stdout.write(out);
  process.exit(0);
}
