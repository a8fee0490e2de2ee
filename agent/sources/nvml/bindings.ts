/**
 * NVML through koffi: the functions trueidle calls, declared from `nvml.h` as shipped with
 * CUDA 12.4 (driver 550, NVML API version 12). Layouts are the x86-64/aarch64 LP64 ones.
 *
 * Every pointer parameter is declared `void *` and given a Buffer whose layout this file
 * spells out (offsets below), and handles (`nvmlDevice_t`, `nvmlGpmSample_t`) travel as
 * 64-bit integers: a pointer passed by value goes in the same register as an integer on
 * both ABIs. That keeps a call at koffi's fast path (no struct marshalling, no allocation)
 * and makes each layout explicit where it can be checked against the header.
 *
 * Calls are synchronous and must only run on the NVML worker thread (nvml-worker.ts), never
 * on the agent's event loop: a hung driver blocks the calling thread.
 */
import koffi, { type LibraryHandle } from "koffi";
import { errorMessage } from "../../../common/errors.js";

export const NVML_SUCCESS = 0;
export const NVML_ERROR_UNINITIALIZED = 1;
export const NVML_ERROR_INVALID_ARGUMENT = 2;
export const NVML_ERROR_NOT_SUPPORTED = 3;
export const NVML_ERROR_NO_PERMISSION = 4;
export const NVML_ERROR_NOT_FOUND = 6;
export const NVML_ERROR_INSUFFICIENT_SIZE = 7;
export const NVML_ERROR_DRIVER_NOT_LOADED = 9;
export const NVML_ERROR_FUNCTION_NOT_FOUND = 13;
export const NVML_ERROR_GPU_IS_LOST = 15;
export const NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18;
export const NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25;

/** Codes that mean the library or driver as a whole is gone: re-initialise. */
export const DRIVER_LEVEL_ERRORS: ReadonlySet<number> = new Set([
  NVML_ERROR_UNINITIALIZED,
  NVML_ERROR_DRIVER_NOT_LOADED,
  NVML_ERROR_LIB_RM_VERSION_MISMATCH,
]);
/** Codes that mean "this reading does not exist here", not "this GPU is broken". */
export const ABSENT_VALUE_ERRORS: ReadonlySet<number> = new Set([
  NVML_ERROR_NOT_SUPPORTED,
  NVML_ERROR_NO_PERMISSION,
  NVML_ERROR_NOT_FOUND,
  NVML_ERROR_FUNCTION_NOT_FOUND,
]);

export const NVML_GPU_UTILIZATION_SAMPLES = 1;
/** nvmlDeviceGetMigMode's current mode of a board in MIG mode. */
export const NVML_DEVICE_MIG_ENABLE = 1;
export const NVML_CLOCK_SM = 1;
export const NVML_CLOCKS_EVENT_REASON_GPU_IDLE = 0x1;
/** usedGpuMemory when the driver cannot say (WDDM): all 64 bits set; read as two 32-bit halves. */
export const NVML_VALUE_NOT_AVAILABLE_HALF = 0xffffffff;

export const NVML_GPM_METRIC_SM_UTIL = 2;
export const NVML_GPM_METRIC_SM_OCCUPANCY = 3;
export const NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5;
export const NVML_GPM_METRIC_DRAM_BW_UTIL = 10;
/** The largest NVML_GPM_METRIC_MAX of any header so far; the array ends the struct. */
const NVML_GPM_METRIC_MAX = 333;

export const BUFFER_SIZE = {
  deviceName: 96, // NVML_DEVICE_NAME_V2_BUFFER_SIZE
  uuid: 96, // NVML_DEVICE_UUID_V2_BUFFER_SIZE
  serial: 30, // NVML_DEVICE_SERIAL_BUFFER_SIZE
  driverVersion: 80, // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE
  processName: 256,
} as const;

/** nvmlPciInfo_t (v3): char busIdLegacy[16]; uint domain, bus, device, pciDeviceId, pciSubSystemId; char busId[32]. */
export const PCI_INFO = { size: 68, busIdOffset: 36, busIdLength: 32 } as const;
/** nvmlMemory_v2_t: uint version; (pad); ull total, reserved, free, used. */
export const MEMORY_V2 = { size: 40, version: 40 | (2 << 24), total: 8, reserved: 16, free: 24, used: 32 } as const;
/** nvmlMemory_t (v1): ull total, free, used. */
export const MEMORY_V1 = { size: 24, total: 0, free: 8, used: 16 } as const;
/** nvmlSample_t: ull timeStamp; nvmlValue_t sampleValue (8-byte union). */
export const SAMPLE = { size: 16, value: 8 } as const;
/** nvmlProcessInfo_t as the _v3 call fills it: uint pid; (pad); ull usedGpuMemory; uint gpuInstanceId, computeInstanceId. */
export const PROCESS_INFO = { size: 24, pid: 0, usedGpuMemory: 8 } as const;
/** nvmlProcessUtilizationSample_t: uint pid; (pad); ull timeStamp; uint smUtil, memUtil, encUtil, decUtil. */
export const PROCESS_UTIL_SAMPLE = { size: 32, pid: 0, timeStamp: 8, smUtil: 16 } as const;
/** nvmlGpmSupport_t: uint version (1); uint isSupportedDevice. */
export const GPM_SUPPORT = { size: 8, version: 1, isSupported: 4 } as const;
/**
 * nvmlGpmMetricsGet_t: uint version (1); uint numMetrics; nvmlGpmSample_t sample1, sample2;
 * nvmlGpmMetric_t metrics[NVML_GPM_METRIC_MAX], each { uint metricId; nvmlReturn_t nvmlReturn;
 * double value; { char *shortName, *longName, *unit } metricInfo } (40 bytes).
 */
export const GPM_METRICS_GET = {
  version: 1,
  numMetrics: 4,
  sample1: 8,
  sample2: 16,
  metrics: 24,
  metricSize: 40,
  metricReturn: 4,
  metricValue: 8,
  size: 24 + 40 * NVML_GPM_METRIC_MAX,
} as const;

type Fn = (...args: unknown[]) => number;

/** The calls trueidle makes. Optional ones are undefined when the library lacks the symbol. */
export interface NvmlFunctions {
  nvmlInit_v2: Fn;
  nvmlShutdown: Fn;
  nvmlSystemGetDriverVersion: Fn;
  nvmlSystemGetProcessName?: Fn | undefined;
  nvmlDeviceGetCount_v2: Fn;
  nvmlDeviceGetHandleByIndex_v2: Fn;
  nvmlDeviceGetUUID: Fn;
  nvmlDeviceGetName: Fn;
  nvmlDeviceGetSerial?: Fn | undefined;
  nvmlDeviceGetPciInfo_v3?: Fn | undefined;
  nvmlDeviceGetMemoryInfo_v2?: Fn | undefined;
  nvmlDeviceGetMemoryInfo?: Fn | undefined;
  nvmlDeviceGetUtilizationRates: Fn;
  nvmlDeviceGetSamples?: Fn | undefined;
  nvmlDeviceGetPowerUsage: Fn;
  nvmlDeviceGetEnforcedPowerLimit?: Fn | undefined;
  nvmlDeviceGetClockInfo?: Fn | undefined;
  /** nvmlDeviceGetCurrentClocksEventReasons, or the older ...ThrottleReasons (same meaning). */
  clocksEventReasons?: Fn | undefined;
  nvmlDeviceGetEncoderUtilization?: Fn | undefined;
  nvmlDeviceGetDecoderUtilization?: Fn | undefined;
  nvmlDeviceGetComputeRunningProcesses_v3?: Fn | undefined;
  nvmlDeviceGetProcessUtilization?: Fn | undefined;
  nvmlGpmQueryDeviceSupport?: Fn | undefined;
  nvmlGpmSampleAlloc?: Fn | undefined;
  nvmlGpmSampleFree?: Fn | undefined;
  nvmlGpmSampleGet?: Fn | undefined;
  nvmlGpmMetricsGet?: Fn | undefined;
  /** MIG (driver 450 and newer; GPM per instance from driver 520). */
  nvmlDeviceGetMigMode?: Fn | undefined;
  nvmlDeviceGetMaxMigDeviceCount?: Fn | undefined;
  nvmlDeviceGetMigDeviceHandleByIndex?: Fn | undefined;
  nvmlDeviceGetGpuInstanceId?: Fn | undefined;
  nvmlDeviceGetComputeInstanceId?: Fn | undefined;
  nvmlGpmMigSampleGet?: Fn | undefined;
}

export interface NvmlLibrary {
  /** What was asked for: a path or the soname. */
  path: string;
  fn: NvmlFunctions;
  errorString(code: number): string;
}

const P = "void *";
const H = "uint64_t"; // a handle passed by value
// [name, parameters, required]; every function returns nvmlReturn_t (int)
const DECLARATIONS: ReadonlyArray<readonly [keyof NvmlFunctions | string, string[], boolean]> = [
  ["nvmlInit_v2", [], true],
  ["nvmlShutdown", [], true],
  ["nvmlSystemGetDriverVersion", [P, "uint32_t"], true],
  ["nvmlSystemGetProcessName", ["uint32_t", P, "uint32_t"], false],
  ["nvmlDeviceGetCount_v2", [P], true],
  ["nvmlDeviceGetHandleByIndex_v2", ["uint32_t", P], true],
  ["nvmlDeviceGetUUID", [H, P, "uint32_t"], true],
  ["nvmlDeviceGetName", [H, P, "uint32_t"], true],
  ["nvmlDeviceGetSerial", [H, P, "uint32_t"], false],
  ["nvmlDeviceGetPciInfo_v3", [H, P], false],
  ["nvmlDeviceGetMemoryInfo_v2", [H, P], false],
  ["nvmlDeviceGetMemoryInfo", [H, P], false],
  ["nvmlDeviceGetUtilizationRates", [H, P], true],
  ["nvmlDeviceGetSamples", [H, "int", "uint64_t", P, P, P], false],
  ["nvmlDeviceGetPowerUsage", [H, P], true],
  ["nvmlDeviceGetEnforcedPowerLimit", [H, P], false],
  ["nvmlDeviceGetClockInfo", [H, "int", P], false],
  ["nvmlDeviceGetCurrentClocksEventReasons", [H, P], false],
  ["nvmlDeviceGetCurrentClocksThrottleReasons", [H, P], false],
  ["nvmlDeviceGetEncoderUtilization", [H, P, P], false],
  ["nvmlDeviceGetDecoderUtilization", [H, P, P], false],
  ["nvmlDeviceGetComputeRunningProcesses_v3", [H, P, P], false],
  ["nvmlDeviceGetProcessUtilization", [H, P, P, "uint64_t"], false],
  ["nvmlGpmQueryDeviceSupport", [H, P], false],
  ["nvmlGpmSampleAlloc", [P], false],
  ["nvmlGpmSampleFree", [H], false],
  ["nvmlGpmSampleGet", [H, H], false],
  ["nvmlGpmMetricsGet", [P], false],
  ["nvmlDeviceGetMigMode", [H, P, P], false],
  ["nvmlDeviceGetMaxMigDeviceCount", [H, P], false],
  ["nvmlDeviceGetMigDeviceHandleByIndex", [H, "uint32_t", P], false],
  ["nvmlDeviceGetGpuInstanceId", [H, P], false],
  ["nvmlDeviceGetComputeInstanceId", [H, P], false],
  ["nvmlGpmMigSampleGet", [H, "uint32_t", H], false],
];

/**
 * Loads the library and declares its functions. Throws an Error naming the library and
 * the loader's reason when it cannot be loaded or lacks a required function.
 */
export function loadNvml(path: string): NvmlLibrary {
  let lib: LibraryHandle;
  try {
    lib = koffi.load(path);
  } catch (err) {
    throw new Error(`cannot load ${path}: ${firstLine(errorMessage(err))}`, { cause: err });
  }
  const fn: Record<string, Fn | undefined> = {};
  for (const [name, params, required] of DECLARATIONS) {
    try {
      fn[name] = lib.func(name, "int", params) as unknown as Fn;
    } catch (err) {
      if (required)
        throw new Error(`${path} has no ${name}: not an NVML library, or one older than driver 450`, { cause: err });
    }
  }
  if (!fn["nvmlDeviceGetMemoryInfo_v2"] && !fn["nvmlDeviceGetMemoryInfo"]) {
    throw new Error(`${path} has neither nvmlDeviceGetMemoryInfo_v2 nor nvmlDeviceGetMemoryInfo: not an NVML library`);
  }
  fn["clocksEventReasons"] =
    fn["nvmlDeviceGetCurrentClocksEventReasons"] ?? fn["nvmlDeviceGetCurrentClocksThrottleReasons"];
  const errorStringFn = lib.func("nvmlErrorString", "const char *", ["int"]) as unknown as (c: number) => string | null;
  return {
    path,
    fn: fn as unknown as NvmlFunctions,
    errorString: (code) => {
      const s = errorStringFn(code);
      return s ? s : `NVML error ${code}`;
    },
  };
}

/** A NUL-terminated string from a buffer the library filled. */
export function cString(buf: Buffer, offset = 0, length = buf.length - offset): string {
  const end = buf.indexOf(0, offset);
  return buf.toString("utf8", offset, end < 0 || end > offset + length ? offset + length : end);
}

function firstLine(s: string): string {
  return s.split("\n")[0]!.trim();
}
