/**
 * The stub libnvidia-ml.so (test/nvml-stub/nvml-stub.c) for tests: builds it with the
 * machine's gcc, writes the table that drives it from a scenario, and drives its control
 * file (driver unloaded and reloaded, a GPU's calls hanging).
 *
 * The table holds each phase's values as agent/sim/evaluate.ts resolves them
 * (phaseValues), before the per-second noise, which the stub adds itself with the same
 * function; so at any instant the stub shows what readingOf shows for the same scenario,
 * and on a MIG board the instances migReadingsOf shows, uuids included.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { phaseValues } from "../../agent/sim/evaluate.js";
import {
  loadScenario,
  parseScenario,
  type PhasePreset,
  type Scenario,
  type ScenarioGpu,
  type ScenarioMigInstance,
} from "../../agent/sim/scenario.js";
import { H200_CALL_COST_US, H200_MEASURED_US } from "./nvml-call-cost.js";

export const NVML_STUB_SOURCE = fileURLToPath(new URL("../nvml-stub/nvml-stub.c", import.meta.url));
const GCC_ARGS = [
  "-std=c11",
  "-O2",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-shared",
  "-fPIC",
  "-Wl,-soname,libnvidia-ml.so.1",
];

/** The NVML return codes the stub gives a GPU in an error phase. */
export const NVML_ERROR_NOT_SUPPORTED = 3;
export const NVML_ERROR_GPU_IS_LOST = 15;
export const NVML_ERROR_RESET_REQUIRED = 16;
export const NVML_ERROR_UNKNOWN = 999;

/**
 * SM activity (0–1) GPM shows for a preset when the phase does not set `smActive`, on a
 * GPU and on a MIG instance alike (MIG_SM_OF_PRESET in agent/sim/evaluate.ts has the same).
 */
const GPM_SM_OF_PRESET: Partial<Record<PhasePreset, number>> = { active: 0.72, busy_phantom: 0.01, free_busy: 0.005 };

/** PCI device ids (device << 16 | vendor) by model, as the real boards report them. */
const PCI_DEVICE_IDS: ReadonlyArray<readonly [string, number]> = [
  ["h200", 0x233510de],
  ["h100", 0x233010de],
  ["a100", 0x20b510de],
  ["l40s", 0x26b910de],
  ["t4", 0x1eb810de],
];

/**
 * Compiles the stub once per source version into
 * `<tmpdir>/trueidle-nvml-stub-<hash>/libnvidia-ml.so.1` and returns that path. Safe when
 * several test processes build at once: each compiles to its own name and renames.
 */
export function buildNvmlStub(): string {
  const source = readFileSync(NVML_STUB_SOURCE);
  const hash = createHash("sha256").update(source).update(GCC_ARGS.join(" ")).digest("hex").slice(0, 16);
  const dir = join(tmpdir(), `trueidle-nvml-stub-${hash}`);
  const lib = join(dir, "libnvidia-ml.so.1");
  if (existsSync(lib)) return lib;
  mkdirSync(dir, { recursive: true });
  const partial = join(dir, `.libnvidia-ml.so.1.${process.pid}.${randomBytes(4).toString("hex")}`);
  try {
    execFileSync("gcc", [...GCC_ARGS, "-o", partial, NVML_STUB_SOURCE, "-lm", "-lpthread"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    rmSync(partial, { force: true });
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      throw new Error("gcc not found: apt-get install gcc", { cause: err });
    const { status, stderr } = err as { status?: number | null; stderr?: Buffer };
    const output = stderr?.toString() ?? "";
    const hint = /stdio\.h: No such file/.test(output) ? " (no C headers: apt-get install libc6-dev)" : "";
    throw new Error(`gcc could not build ${NVML_STUB_SOURCE} (exit ${status ?? "?"})${hint}:\n${output}`, {
      cause: err,
    });
  }
  renameSync(partial, lib);
  return lib;
}

/** The NVML return code a GPU in a phase with this error message answers with. */
export function nvmlErrorOf(message: string): number {
  if (/lost/i.test(message)) return NVML_ERROR_GPU_IS_LOST;
  if (/not supported/i.test(message)) return NVML_ERROR_NOT_SUPPORTED;
  if (/reset/i.test(message)) return NVML_ERROR_RESET_REQUIRED;
  return NVML_ERROR_UNKNOWN;
}

/**
 * Whether the stub offers GPM on a GPU: `gpm` in the scenario, else any phase setting
 * smActive; on a MIG board unless `gpm` is false, as the simulator shows SM activity per
 * instance (agent/sim/scenario.ts).
 */
export function hasGpm(g: ScenarioGpu): boolean {
  if (g.mig) return g.gpm !== false;
  return g.gpm ?? g.phases.some((p) => typeof p.smActive === "number");
}

/**
 * What the MIG calls cost, in CPU µs per call: none is measured yet (the H200 of
 * nvml-call-cost.ts is not in MIG mode), so each takes the figure of the measured call most
 * like it, said beside each.
 */
export const MIG_CALL_COST_US: Readonly<Record<string, number>> = {
  nvmlDeviceGetMigMode: H200_MEASURED_US.nvmlDeviceGetPowerUsage, // a flag
  nvmlDeviceGetMaxMigDeviceCount: H200_MEASURED_US.nvmlDeviceGetCount, // a count
  // A lookup that may ask the driver which instances exist: costed like an identity string,
  // on the side of overstating.
  nvmlDeviceGetMigDeviceHandleByIndex: H200_MEASURED_US.nvmlDeviceGetUUID,
  nvmlDeviceIsMigDeviceHandle: H200_MEASURED_US.nvmlDeviceGetCount, // a flag of the handle
  nvmlDeviceGetGpuInstanceId: H200_MEASURED_US.nvmlDeviceGetCount, // an id of the handle
  nvmlDeviceGetComputeInstanceId: H200_MEASURED_US.nvmlDeviceGetCount, // an id of the handle
  nvmlDeviceGetDeviceHandleFromMigDeviceHandle: H200_MEASURED_US.nvmlDeviceGetCount, // a lookup
  nvmlGpmMigSampleGet: H200_MEASURED_US.nvmlGpmSampleGet, // the board's GPM sample, per instance
};

/** Every call the stub exports with what it costs: the H200's figures and the MIG estimates. */
export const STUB_CALL_COST_US: Readonly<Record<string, number>> = { ...H200_CALL_COST_US, ...MIG_CALL_COST_US };

export interface NvmlStubTableOptions {
  /**
   * CPU µs each call burns, by function name; default: what the calls cost on a real H200
   * (test/helpers/nvml-call-cost.ts) and the MIG calls' estimates (STUB_CALL_COST_US). `{}`:
   * only the stub's own work.
   */
  callCostUs?: Readonly<Record<string, number>> | undefined;
}

/**
 * Writes the stub's table for `scenario` (a parsed Scenario, a scenario object as in a
 * file, or the path of a scenario file) to `outPath`; returns the parsed scenario.
 */
export function writeNvmlStubTable(
  scenario: Scenario | object | string,
  outPath: string,
  opts: NvmlStubTableOptions = {},
): Scenario {
  const s = toScenario(scenario);
  const lines = [
    "trueidle-nvml-stub-table 1",
    "# Written by test/helpers/nvml-stub.ts; read by test/nvml-stub/nvml-stub.c.",
    `driver ${oneLine(s.driverVersion)}`,
    `origin_ms ${num(s.originMs)}`,
  ];
  for (const [fn, us] of Object.entries(opts.callCostUs ?? STUB_CALL_COST_US)) {
    if (us > 0) lines.push(`cost ${fn} ${num(us)}`);
  }
  for (const g of s.gpus) {
    const model = g.model.toLowerCase();
    const pciId = PCI_DEVICE_IDS.find(([needle]) => model.includes(needle))?.[1] ?? 0x233010de;
    lines.push(
      "gpu",
      `uuid ${oneLine(g.uuid)}`,
      // hash01 works on UTF-16 code units, as JavaScript strings are.
      `uuid_utf16 ${Array.from({ length: g.uuid.length }, (_, i) => g.uuid.charCodeAt(i)).join(" ")}`,
      `name ${oneLine(g.model)}`,
      `bus_id ${oneLine(g.busId)}`,
      // The serial the fake nvidia-smi prints.
      `serial ${1320000000000 + g.index * 7919}`,
      `pci_device_id ${pciId.toString(16)}`,
      `mem_total_mib ${num(g.memTotalMiB)}`,
      `power_limit_w ${num(g.powerLimitW)}`,
      `cycle_ms ${num(g.cycleMs)}`,
      `gpm ${hasGpm(g) ? 1 : 0}`,
    );
    for (const p of g.phases) {
      const v = phaseValues(g, p);
      if (v.error !== undefined) {
        lines.push(`phase ms=${num(p.durationMs)} error=${nvmlErrorOf(v.error)} text=${oneLine(v.error)}`);
        continue;
      }
      const gpmSm = v.smActive ?? (p.state === undefined ? undefined : GPM_SM_OF_PRESET[p.state]) ?? 0;
      lines.push(
        `phase ms=${num(p.durationMs)} util=${opt(v.util)} power_w=${opt(v.powerW)} mem_used_mib=${opt(v.memUsedMiB)}` +
          ` media=${opt(v.media)} noise=${num(v.noise)} gpm_sm=${num(gpmSm)}`,
      );
      for (const x of v.processes) {
        const sm = x.smUtil === "util" ? "util" : opt(x.smUtil);
        lines.push(`proc pid=${x.pid} used_bytes=${opt(x.usedMemoryBytes)} sm_util=${sm} name=${oneLine(x.name)}`);
      }
    }
    if (g.mig) lines.push(...migLines(g, g.mig));
  }
  writeFileSync(outPath, `${lines.join("\n")}\n`);
  return s;
}

/**
 * A MIG board's instances, each in the slot of its place in the list, with its phases as
 * migReadingsOf (agent/sim/evaluate.ts) resolves them: phaseValues of the board with the
 * instance's memory, the instance's SM activity, its processes' pids moved by its GPU
 * instance id. The stub works out each instance's uuid and generation itself.
 */
function migLines(g: ScenarioGpu, instances: readonly ScenarioMigInstance[]): string[] {
  const lines = ["mig_mode 1"];
  for (const [slot, inst] of instances.entries()) {
    const { gpuInstanceId: gi, computeInstanceId: ci } = inst;
    // The stub writes the ids into the uuid's seed as integers.
    if (!Number.isInteger(gi) || !Number.isInteger(ci))
      throw new Error(`MIG instance ${slot} of GPU ${g.index}: gi and ci must be integers for the NVML stub`);
    lines.push(
      `mig slot=${slot} gi=${gi} ci=${ci} mem_total_mib=${num(inst.memTotalMiB)} cycle_ms=${num(inst.cycleMs)}` +
        ` profile=${oneLine(inst.profile)}`,
    );
    const spec: ScenarioGpu = { ...g, memTotalMiB: inst.memTotalMiB, mig: undefined };
    for (const p of inst.phases) {
      if (p.absent) {
        lines.push(`mphase ms=${num(p.durationMs)} absent=1`);
        continue;
      }
      const v = phaseValues(spec, p);
      if (v.error !== undefined) {
        lines.push(`mphase ms=${num(p.durationMs)} error=${nvmlErrorOf(v.error)} text=${oneLine(v.error)}`);
        continue;
      }
      const gpmSm = v.smActive ?? (p.state === undefined ? undefined : GPM_SM_OF_PRESET[p.state]) ?? 0;
      lines.push(`mphase ms=${num(p.durationMs)} mem_used_mib=${opt(v.memUsedMiB)} gpm_sm=${num(gpmSm)}`);
      for (const x of v.processes) {
        const pid = x.pid + (gi + 1) * 1000;
        lines.push(`mproc pid=${pid} used_bytes=${opt(x.usedMemoryBytes)} sm_util=- name=${oneLine(x.name)}`);
      }
    }
  }
  return lines;
}

export interface NvmlStubControl {
  /** Every call, nvmlInit_v2 too, answers NVML_ERROR_DRIVER_NOT_LOADED. */
  unloadDriver(): void;
  /** The driver is back; calls answer UNINITIALIZED until nvmlShutdown and nvmlInit_v2. */
  reloadDriver(): void;
  /** Calls on GPU `index` (or every call) sleep `ms` before answering; 0 ends it. */
  hang(index: number | "all", ms: number): void;
  /** No faults. */
  clear(): void;
  /** How many times nvmlInit_v2 succeeded. */
  initCount(): number;
}

export interface NvmlStub {
  libPath: string;
  /** The scenario the table was written from, for readingOf. */
  scenario: Scenario;
  /** TRUEIDLE_NVML_STUB_TABLE and TRUEIDLE_NVML_STUB_CONTROL for the process that loads it. */
  env: Record<string, string>;
  control: NvmlStubControl;
}

/**
 * Builds the stub and writes its table and an empty control file into `dir`. Each control
 * change returns once the stub is sure to see it on its next call (it looks at the file
 * at most every 50 ms).
 */
export function prepareNvmlStub(
  dir: string,
  scenario: Scenario | object | string,
  opts: NvmlStubTableOptions = {},
): NvmlStub {
  const libPath = buildNvmlStub();
  const tablePath = resolve(dir, "nvml-stub-table.txt");
  const controlPath = resolve(dir, "nvml-stub-control.txt");
  const countPath = resolve(dir, "nvml-stub-inits.log");
  const parsed = writeNvmlStubTable(scenario, tablePath, opts);
  let unloaded = false;
  const hangs = new Map<string, number>();
  const write = (settle: boolean): void => {
    const lines = [`count ${countPath}`];
    if (unloaded) lines.push("driver unloaded");
    for (const [which, ms] of hangs) lines.push(`hang ${which} ${ms}`);
    // Renamed into place, so the stub never reads half a file.
    const partial = `${controlPath}.${process.pid}.partial`;
    writeFileSync(partial, `${lines.join("\n")}\n`);
    renameSync(partial, controlPath);
    if (settle) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60);
  };
  write(false);
  const control: NvmlStubControl = {
    unloadDriver: () => {
      unloaded = true;
      write(true);
    },
    reloadDriver: () => {
      unloaded = false;
      write(true);
    },
    hang: (index, ms) => {
      if (ms > 0) hangs.set(String(index), Math.round(ms));
      else hangs.delete(String(index));
      write(true);
    },
    clear: () => {
      unloaded = false;
      hangs.clear();
      write(true);
    },
    initCount: () =>
      existsSync(countPath)
        ? readFileSync(countPath, "utf8")
            .split("\n")
            .filter((l) => l !== "").length
        : 0,
  };
  return {
    libPath,
    scenario: parsed,
    env: { TRUEIDLE_NVML_STUB_TABLE: tablePath, TRUEIDLE_NVML_STUB_CONTROL: controlPath },
    control,
  };
}

function toScenario(scenario: Scenario | object | string): Scenario {
  if (typeof scenario === "string") return loadScenario(scenario);
  const gpus = (scenario as { gpus?: unknown }).gpus;
  const parsed =
    Array.isArray(gpus) &&
    gpus.length > 0 &&
    gpus.every(
      (g) =>
        typeof g === "object" &&
        g !== null &&
        typeof (g as ScenarioGpu).cycleMs === "number" &&
        typeof (g as ScenarioGpu).uuid === "string",
    );
  return parsed ? (scenario as Scenario) : parseScenario(scenario);
}

/** Numbers as JavaScript prints them: strtod reads back the same double. */
function num(v: number): string {
  return String(v);
}
function opt(v: number | undefined): string {
  return v === undefined ? "-" : num(v);
}
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ");
}
