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
 *   -L                          every board, and under a board in MIG mode its MIG devices
 *                               present now, numbered as NVIDIA numbers them (by GPU instance
 *                               id, then compute instance id), in the R470+ form
 *   -q -x                       the XML report, cut down to what MIG needs: each board's
 *                               identity, MIG mode, MIG devices (ids, SMs, memory), memory,
 *                               utilization, power and processes with their GPU and compute
 *                               instance ids, laid out as a real 535+ driver writes them
 *   --version                   a plausible answer
 *
 * A board in MIG mode (a scenario GPU with `mig`) answers as real ones do
 * (test/fixtures/nvidia-smi: csv/query-gpu-h100-mig…, compute-apps/h100-mig…, list/,
 * xml/telegraf-a100…mig…): --query-gpu keeps one row per board, with every utilization.*
 * [N/A], the board's power and as memory used the sum of its instances'; --query-compute-apps
 * lists the instances' processes under the board's uuid; the instances themselves are
 * those of migReadingsOf(scenario, board, now).
 *
 * FAKE_NVIDIA_SMI_NO_HELP=1 makes --help-query-gpu fail, like stand-ins that cannot answer it.
 *
 * Plain JavaScript so it starts fast; the scenario code is the compiled one in dist/
 * (`npm run build`), the same code the simulator source runs.
 */
import { readFileSync } from "node:fs";
import { loadScenario } from "../../dist/agent/sim/scenario.js";
import { migReadingsOf, readingsAt } from "../../dist/agent/sim/evaluate.js";

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
  query: false,
  xml: false,
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
  else if (a === "-q" || a === "--query") opts.query = true;
  else if (a === "-x" || a === "--xml-format") opts.xml = true;
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
if (opts.xml && !opts.query) fail(INVALID_ARGS);

const driverMajor = Number(scenario.driverVersion.split(".")[0]);
const helpFile = new URL(
  driverMajor < 520 ? "../fixtures/nvidia-smi/help-query-gpu-465.27.txt" : "../fixtures/nvidia-smi/help-query-gpu.txt",
  import.meta.url,
);

// ---- what the GPUs show ------------------------------------------------------------

const pad = (n, w = 2) => String(n).padStart(w, "0");
const mib = (bytes) => (bytes === undefined ? undefined : Math.round(bytes / MiB));
const watts = (w) => (w === undefined ? undefined : w.toFixed(2));
const serialOf = (g) => String(1320000000000 + g.index * 7919);
const cudaVersion =
  driverMajor >= 580
    ? "13.0"
    : driverMajor >= 550
      ? "12.4"
      : driverMajor >= 535
        ? "12.2"
        : driverMajor >= 520
          ? "12.0"
          : "11.4";

/**
 * The MIG devices of a board present at `t`, as NVIDIA numbers them (by GPU instance id,
 * then compute instance id): `{ index, inst, reading }`, reading from migReadingsOf.
 */
function migDevicesOf(g, t) {
  const out = [];
  for (const inst of g.mig ?? []) {
    const [reading] = migReadingsOf(scenario, { ...g, mig: [inst] }, t);
    if (reading) out.push({ inst, reading });
  }
  out.sort(
    (a, b) => a.inst.gpuInstanceId - b.inst.gpuInstanceId || a.inst.computeInstanceId - b.inst.computeInstanceId,
  );
  return out.map((d, index) => ({ index, ...d }));
}

/**
 * The boards at `t`, as --query-gpu lists them: readingsAt, and for a board in MIG mode no
 * utilization, as memory used the sum of its instances', their processes, and `idleReason`
 * (gpu_idle) active while no instance has a process.
 */
function boardReadingsAt(t) {
  const boards = readingsAt(scenario, t);
  return scenario.gpus.map((g, i) => {
    const r = boards[i];
    if (!g.mig || r.error !== undefined) return r;
    const devices = migDevicesOf(g, t).filter((d) => d.reading.error === undefined);
    const processes = devices.flatMap((d) => d.reading.processes ?? []);
    return {
      ...r,
      util: undefined,
      media: undefined,
      memUsedBytes: devices.reduce((sum, d) => sum + (d.reading.memUsedBytes ?? 0), 0),
      processes,
      idleReason: processes.length === 0,
    };
  });
}

/** `nvidia-smi -L`: a line per board, then its MIG devices (R470+ form, as list/h100-mig… shows). */
function listText(t) {
  let out = "";
  for (const r of boardReadingsAt(t)) {
    const g = scenario.gpus[r.index];
    out += `GPU ${r.index}: ${r.model} (UUID: ${r.uuid})\n`;
    if (!g.mig || r.error !== undefined) continue;
    for (const d of migDevicesOf(g, t))
      out += `  MIG ${d.inst.profile.padEnd(11)} Device ${String(d.index).padStart(2)}: (UUID: ${d.reading.uuid})\n`;
  }
  return out;
}

const XML_ENTITIES = { "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" };
const xmlEscape = (v) => String(v).replace(/[<>&"']/g, (c) => XML_ENTITIES[c]);
const withUnit = (v, unit) => (v === undefined ? "N/A" : `${v} ${unit}`);
/** "Fri Aug  4 11:44:30 2023", as <timestamp> reads. */
function ctime(ms) {
  const d = new Date(ms);
  const day = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][d.getDay()];
  const month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][d.getMonth()];
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return `${day} ${month} ${String(d.getDate()).padStart(2)} ${time} ${d.getFullYear()}`;
}
function architectureOf(model) {
  const m = model.toLowerCase();
  if (/h100|h200|h800/.test(m)) return "Hopper";
  if (/a100|a30|a800/.test(m)) return "Ampere";
  if (/l40|l4\b/.test(m)) return "Ada Lovelace";
  if (/t4\b/.test(m)) return "Turing";
  return "N/A";
}
/** Slices of a MIG profile: "3g.40gb" 3, a compute instance's "1c.3g.40gb" 1 (its own share). */
function slicesOf(profile) {
  const m = /^(?:(\d+)c\.)?(\d+)g\./.exec(profile);
  return Number(m?.[1] ?? m?.[2] ?? 1);
}
/** Streaming multiprocessors of a MIG device, as H100 and A100 boards give them. */
function multiprocessorsOf(model, profile) {
  const ampere = architectureOf(model) === "Ampere";
  const table = ampere ? { 1: 14, 2: 28, 3: 42, 4: 56, 7: 98 } : { 1: 16, 2: 32, 3: 60, 4: 64, 7: 132 };
  const n = slicesOf(profile);
  return table[n] ?? n * (ampere ? 14 : 16);
}

/**
 * `nvidia-smi -q -x`, cut down to the elements the MIG reader and people look at, each
 * named, nested, indented and written (units, N/A, `None`, `<processes />`) as in
 * xml/telegraf-a100-sxm4-80gb-mig-535.54.03.xml and xml/telegraf-tesla-t4-515.105.01.xml.
 * A board that gives no reading is left out.
 */
function xmlReport(t) {
  const L = [
    '<?xml version="1.0" ?>',
    `<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v${driverMajor >= 535 ? 12 : 11}.dtd">`,
    "<nvidia_smi_log>",
    `    <timestamp>${ctime(t)}</timestamp>`,
    `    <driver_version>${xmlEscape(scenario.driverVersion)}</driver_version>`,
    `    <cuda_version>${cudaVersion}</cuda_version>`,
    `    <attached_gpus>${scenario.gpus.length}</attached_gpus>`,
  ];
  for (const r of boardReadingsAt(t)) {
    if (r.error !== undefined) continue;
    const g = scenario.gpus[r.index];
    const [, bus, device] = /^[0-9A-Fa-f]+:([0-9A-Fa-f]+):([0-9A-Fa-f]+)\./.exec(r.busId);
    const devices = g.mig ? migDevicesOf(g, t) : [];
    const mig = g.mig ? "Enabled" : "Disabled";
    // A board in MIG mode has no utilization of any engine.
    const pct = (v) => (g.mig ? "N/A" : withUnit(v, "%"));
    const used = mib(r.memUsedBytes);
    const total = mib(r.memTotalBytes);
    const limit = withUnit(watts(r.powerLimitW), "W");
    L.push(
      `    <gpu id="${r.busId}">`,
      `        <product_name>${xmlEscape(r.model)}</product_name>`,
      "        <product_brand>NVIDIA</product_brand>",
      `        <product_architecture>${architectureOf(r.model)}</product_architecture>`,
      "        <display_mode>Disabled</display_mode>",
      "        <display_active>Disabled</display_active>",
      "        <persistence_mode>Enabled</persistence_mode>",
      "        <addressing_mode>None</addressing_mode>",
      "        <mig_mode>",
      `            <current_mig>${mig}</current_mig>`,
      `            <pending_mig>${mig}</pending_mig>`,
      "        </mig_mode>",
    );
    if (devices.length === 0) L.push("        <mig_devices>", "            None", "        </mig_devices>");
    else {
      L.push("        <mig_devices>");
      for (const d of devices) L.push(...migDeviceXml(r.model, d));
      L.push("        </mig_devices>");
    }
    L.push(
      "        <accounting_mode>Disabled</accounting_mode>",
      "        <accounting_mode_buffer_size>4000</accounting_mode_buffer_size>",
      `        <serial>${serialOf(g)}</serial>`,
      `        <uuid>${r.uuid}</uuid>`,
      `        <minor_number>${r.index}</minor_number>`,
      "        <pci>",
      `            <pci_bus>${bus}</pci_bus>`,
      `            <pci_device>${device}</pci_device>`,
      "            <pci_domain>0000</pci_domain>",
      `            <pci_bus_id>${r.busId}</pci_bus_id>`,
      "        </pci>",
      "        <performance_state>P0</performance_state>",
      ...memoryXml("        ", total, used),
      "        <compute_mode>Default</compute_mode>",
      "        <utilization>",
      `            <gpu_util>${pct(r.util)}</gpu_util>`,
      `            <memory_util>${pct(r.util === undefined ? undefined : Math.round(r.util * 0.6))}</memory_util>`,
      `            <encoder_util>${pct(r.media ?? 0)}</encoder_util>`,
      `            <decoder_util>${pct(0)}</decoder_util>`,
      `            <jpeg_util>${pct(0)}</jpeg_util>`,
      `            <ofa_util>${pct(0)}</ofa_util>`,
      "        </utilization>",
      "        <gpu_power_readings>",
      "            <power_state>P0</power_state>",
      `            <power_draw>${withUnit(watts(r.powerW), "W")}</power_draw>`,
      `            <current_power_limit>${limit}</current_power_limit>`,
      `            <requested_power_limit>${limit}</requested_power_limit>`,
      `            <default_power_limit>${limit}</default_power_limit>`,
      `            <max_power_limit>${limit}</max_power_limit>`,
      "        </gpu_power_readings>",
    );
    // In MIG mode each process with its instance's ids; on a whole GPU with N/A ones.
    const procs = g.mig
      ? devices
          .filter((d) => d.reading.error === undefined)
          .flatMap((d) => (d.reading.processes ?? []).map((p) => ({ p, inst: d.inst })))
      : (r.processes ?? []).map((p) => ({ p, inst: undefined }));
    if (procs.length === 0) L.push("        <processes />");
    else {
      L.push("        <processes>");
      for (const { p, inst } of procs)
        L.push(
          "            <process_info>",
          `                <gpu_instance_id>${inst ? inst.gpuInstanceId : "N/A"}</gpu_instance_id>`,
          `                <compute_instance_id>${inst ? inst.computeInstanceId : "N/A"}</compute_instance_id>`,
          `                <pid>${p.pid}</pid>`,
          "                <type>C</type>",
          `                <process_name>${xmlEscape(p.name)}</process_name>`,
          `                <used_memory>${withUnit(mib(p.usedMemoryBytes), "MiB")}</used_memory>`,
          "            </process_info>",
        );
      L.push("        </processes>");
    }
    L.push("        <accounted_processes />", "    </gpu>");
  }
  L.push("</nvidia_smi_log>");
  return `${L.join("\n")}\n`;
}

/** `<fb_memory_usage>` at an indentation; an instance that gives no reading shows N/A. */
function memoryXml(indent, total, used) {
  const free = total === undefined || used === undefined ? undefined : total - used;
  return [
    `${indent}<fb_memory_usage>`,
    `${indent}    <total>${withUnit(total, "MiB")}</total>`,
    `${indent}    <reserved>${withUnit(total === undefined ? undefined : 0, "MiB")}</reserved>`,
    `${indent}    <used>${withUnit(used, "MiB")}</used>`,
    `${indent}    <free>${withUnit(free, "MiB")}</free>`,
    `${indent}</fb_memory_usage>`,
  ];
}

function migDeviceXml(model, d) {
  const failed = d.reading.error !== undefined;
  const slices = slicesOf(d.inst.profile);
  const media = /\+me/.test(d.inst.profile) || slices === 7 ? 1 : 0;
  return [
    "            <mig_device>",
    `                <index>${d.index}</index>`,
    `                <gpu_instance_id>${d.inst.gpuInstanceId}</gpu_instance_id>`,
    `                <compute_instance_id>${d.inst.computeInstanceId}</compute_instance_id>`,
    "                <device_attributes>",
    "                    <shared>",
    `                        <multiprocessor_count>${multiprocessorsOf(model, d.inst.profile)}</multiprocessor_count>`,
    `                        <copy_engine_count>${slices}</copy_engine_count>`,
    "                        <encoder_count>0</encoder_count>",
    `                        <decoder_count>${slices}</decoder_count>`,
    `                        <ofa_count>${media}</ofa_count>`,
    `                        <jpg_count>${media}</jpg_count>`,
    "                    </shared>",
    "                </device_attributes>",
    "                <ecc_error_count>",
    "                    <volatile_count>",
    "                        <sram_uncorrectable>0</sram_uncorrectable>",
    "                    </volatile_count>",
    "                </ecc_error_count>",
    ...memoryXml(
      "                ",
      failed ? undefined : mib(d.reading.memTotalBytes),
      failed ? undefined : mib(d.reading.memUsedBytes),
    ),
    "            </mig_device>",
  ];
}

// ---- simple answers ----------------------------------------------------------------

if (opts.help) {
  if (process.env.FAKE_NVIDIA_SMI_NO_HELP === "1") fail(INVALID_ARGS);
  process.stdout.write(readFileSync(helpFile));
  process.exit(0);
}
if (opts.version) {
  const [maj, min] = scenario.driverVersion.split(".");
  process.stdout.write(
    `\nNVIDIA-SMI version  : ${scenario.driverVersion}\nNVML version        : ${maj}.${min}\nDRIVER version      : ${scenario.driverVersion}\nCUDA Version        : ${cudaVersion}\n`,
  );
  process.exit(0);
}
if (opts.list) {
  process.stdout.write(listText(Date.now()));
  process.exit(0);
}
if (opts.query) {
  // The text report (-q without -x) is not needed by anything.
  if (!opts.xml) fail("fake-nvidia-smi answers -q only with -x (the XML report).");
  process.stdout.write(xmlReport(Date.now()));
  process.exit(0);
}
if (opts.queryGpu === undefined && opts.queryApps === undefined) {
  // The default table is not needed by anything; a short summary says what this is.
  process.stdout.write(`fake nvidia-smi, driver ${scenario.driverVersion}, ${scenario.gpus.length} GPU(s)\n`);
  for (const r of boardReadingsAt(Date.now())) {
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

function timestamp(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}/${pad(d.getMonth() + 1)}/${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
/** nvidia-smi prints the bus id with an 8-digit domain in CSV and 4 digits in messages. */
const shortBusId = (busId) => busId.replace(/^0000(?=[0-9A-Fa-f]{4}:)/, "");
const active = (yes) => (yes ? "Active" : "Not Active");
/** gpu_idle: a MIG board's own (boardReadingsAt), else active while utilization.gpu is 0. */
const idle = (r) =>
  r.idleReason !== undefined ? active(r.idleReason) : r.util === undefined ? undefined : active(r.util === 0);
/** A board in MIG mode reads N/A for every utilization.* (csv/query-gpu-h100-mig…). */
const engine = (value) => (_r, g) => (g.mig ? undefined : value);

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
  "mig.mode.current": [undefined, (_r, g) => (g.mig ? "Enabled" : "Disabled")],
  "mig.mode.pending": [undefined, (_r, g) => (g.mig ? "Enabled" : "Disabled")],
  compute_mode: [undefined, () => "Default"],
  "temperature.gpu": [undefined, (r) => (r.util === undefined ? 35 : Math.round(32 + r.util * 0.4))],
  "utilization.gpu": ["%", (r) => r.util],
  "utilization.memory": ["%", (r) => (r.util === undefined ? undefined : Math.round(r.util * 0.6))],
  "utilization.encoder": ["%", (r, g) => engine(r.media ?? 0)(r, g)],
  "utilization.decoder": ["%", engine(0)],
  "utilization.jpeg": ["%", engine(0)],
  "utilization.ofa": ["%", engine(0)],
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
    for (const r of boardReadingsAt(t)) {
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
  for (const r of boardReadingsAt(t)) {
    if (r.error !== undefined) continue;
    const g = gpuOf(r);
    for (const p of r.processes ?? []) out += `${fields.map((f) => cell(f.unit, f.value(p, r, g, t))).join(", ")}\n`;
  }
  process.stdout.write(out);
  process.exit(0);
}
