/**
 * What each NVML call costs on a real driver: CPU time per call, measured on an NVIDIA H200
 * (driver 580.159.04, CUDA 13.0, 16 cores, Firecracker VM) on 2026-12-04, each call timed
 * alone through nvidia-ml-py, 100–300 calls each, CPU column:
 * docs/gpu-truth/h200-580.159.04-2026-12-04/nvml-call-cost.txt.
 *
 * The stub libnvidia-ml.so burns this much CPU per call (its table's `cost` lines), so
 * benchmarks and tests of the NVML source pay what a real driver charges, without a GPU.
 *
 * Two caveats, both on the side of overstating: the figures include nvidia-ml-py's own
 * overhead (about 0.8 µs a call: its nvmlDeviceGetCount is 0.8 µs); and nvidia-ml-py calls
 * nvmlDeviceGetSamples and nvmlDeviceGetProcessUtilization twice per call (once to size the
 * buffer), so a single call of those two may cost about half.
 */

/** The figures as measured, by the name used in nvml-call-cost.txt. */
export const H200_MEASURED_US = {
  nvmlDeviceGetCount: 0.8,
  "nvmlDeviceGetMemoryInfo v2": 6.1,
  nvmlDeviceGetPowerUsage: 1.0,
  nvmlDeviceGetEnforcedPowerLimit: 0.9,
  "nvmlDeviceGetClockInfo SM": 1.3,
  nvmlDeviceGetCurrentClocksEventReasons: 1.0,
  nvmlDeviceGetEncoderUtilization: 1.3,
  nvmlDeviceGetDecoderUtilization: 1.3,
  nvmlDeviceGetUtilizationRates: 0.9,
  "nvmlDeviceGetSamples GPU_UTIL": 2534.6,
  "nvmlDeviceGetComputeRunningProcesses v3": 6.9,
  nvmlDeviceGetProcessUtilization: 2412.2,
  nvmlGpmSampleGet: 41.7,
  "nvmlGpmMetricsGet (4 metrics)": 9.9,
  nvmlDeviceGetUUID: 3.7,
  nvmlDeviceGetName: 3.2,
  "nvmlSystemGetProcessName (self)": 8.1,
} as const;

const m = H200_MEASURED_US;

/**
 * CPU µs per call of every function the stub exports, on the H200. Functions not measured
 * take the figure of the measured call most like them (said beside each); nvmlInit_v2 and
 * nvmlShutdown, once per start, are left at 0.
 */
export const H200_CALL_COST_US: Readonly<Record<string, number>> = {
  nvmlInit_v2: 0,
  nvmlShutdown: 0,
  nvmlSystemGetDriverVersion: m["nvmlDeviceGetUUID"], // not measured: a string, like the UUID
  nvmlSystemGetProcessName: m["nvmlSystemGetProcessName (self)"],
  nvmlDeviceGetCount_v2: m["nvmlDeviceGetCount"],
  nvmlDeviceGetHandleByIndex_v2: m["nvmlDeviceGetCount"], // not measured: a lookup, like the count
  nvmlDeviceGetIndex: m["nvmlDeviceGetCount"], // not measured: a lookup
  nvmlDeviceGetUUID: m["nvmlDeviceGetUUID"],
  nvmlDeviceGetName: m["nvmlDeviceGetName"],
  nvmlDeviceGetSerial: m["nvmlDeviceGetUUID"], // not measured: an identity string
  nvmlDeviceGetPciInfo_v3: m["nvmlDeviceGetUUID"], // not measured: identity
  nvmlDeviceGetEnforcedPowerLimit: m["nvmlDeviceGetEnforcedPowerLimit"],
  nvmlDeviceGetMemoryInfo_v2: m["nvmlDeviceGetMemoryInfo v2"],
  nvmlDeviceGetUtilizationRates: m["nvmlDeviceGetUtilizationRates"],
  nvmlDeviceGetSamples: m["nvmlDeviceGetSamples GPU_UTIL"],
  nvmlDeviceGetPowerUsage: m["nvmlDeviceGetPowerUsage"],
  nvmlDeviceGetClockInfo: m["nvmlDeviceGetClockInfo SM"],
  nvmlDeviceGetCurrentClocksEventReasons: m["nvmlDeviceGetCurrentClocksEventReasons"],
  nvmlDeviceGetCurrentClocksThrottleReasons: m["nvmlDeviceGetCurrentClocksEventReasons"], // the same call's older name
  nvmlDeviceGetEncoderUtilization: m["nvmlDeviceGetEncoderUtilization"],
  nvmlDeviceGetDecoderUtilization: m["nvmlDeviceGetDecoderUtilization"],
  nvmlDeviceGetComputeRunningProcesses_v3: m["nvmlDeviceGetComputeRunningProcesses v3"],
  nvmlDeviceGetProcessUtilization: m["nvmlDeviceGetProcessUtilization"],
  nvmlGpmQueryDeviceSupport: m["nvmlDeviceGetPowerUsage"], // not measured: a flag
  nvmlGpmSampleAlloc: m["nvmlDeviceGetCount"], // not measured: a host allocation
  nvmlGpmSampleFree: m["nvmlDeviceGetCount"], // not measured
  nvmlGpmSampleGet: m["nvmlGpmSampleGet"],
  nvmlGpmMetricsGet: m["nvmlGpmMetricsGet (4 metrics)"],
};

/** Where the figures come from, for people reading a benchmark. */
export const H200_CALL_COST_SOURCE =
  "NVIDIA H200, driver 580.159.04, 2026-12-04 (docs/gpu-truth/h200-580.159.04-2026-12-04/nvml-call-cost.txt)";
