#!/usr/bin/env python3
"""What the NVML calls the trueidle agent makes cost on this machine, and how deep the
driver's sample buffers are. Through ctypes, one call at a time: no binding that calls a
function twice to size its buffer, so each figure is one call.

    python3 nvml-probe.py [--lib libnvidia-ml.so.1] [--gpu 0] [--calls 200] [--out FILE]

Prints (and writes to --out) one line per call: CPU µs per call (this thread's CPU clock)
and wall µs; then the utilization sample buffer (nvmlDeviceGetSamples from timestamp 0:
how many samples, how far apart, how far back) and the per-process one
(nvmlDeviceGetProcessUtilization from 0), which the agent's cadence depends on.
"""
import argparse
import ctypes as C
import statistics
import sys
import time


class Sample(C.Structure):
    _fields_ = [("timeStamp", C.c_ulonglong), ("value", C.c_ulonglong)]


class ProcUtil(C.Structure):
    _fields_ = [("pid", C.c_uint), ("timeStamp", C.c_ulonglong), ("smUtil", C.c_uint), ("memUtil", C.c_uint),
                ("encUtil", C.c_uint), ("decUtil", C.c_uint)]


class ProcInfo(C.Structure):
    _fields_ = [("pid", C.c_uint), ("usedGpuMemory", C.c_ulonglong), ("gpuInstanceId", C.c_uint), ("computeInstanceId", C.c_uint)]


class Memory2(C.Structure):
    _fields_ = [("version", C.c_uint), ("total", C.c_ulonglong), ("reserved", C.c_ulonglong), ("free", C.c_ulonglong), ("used", C.c_ulonglong)]


class GpmMetric(C.Structure):
    _fields_ = [("metricId", C.c_uint), ("nvmlReturn", C.c_int), ("value", C.c_double), ("shortName", C.c_char_p), ("longName", C.c_char_p), ("unit", C.c_char_p)]


class GpmMetricsGet(C.Structure):
    _fields_ = [("version", C.c_uint), ("numMetrics", C.c_uint), ("sample1", C.c_void_p), ("sample2", C.c_void_p), ("metrics", GpmMetric * 333)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="libnvidia-ml.so.1")
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--out")
    a = ap.parse_args()
    nvml = C.CDLL(a.lib)
    nvml.nvmlErrorString.restype = C.c_char_p
    rc = nvml.nvmlInit_v2()
    if rc != 0:
        sys.exit(f"nvmlInit_v2: {nvml.nvmlErrorString(rc).decode()}")
    dev = C.c_void_p()
    rc = nvml.nvmlDeviceGetHandleByIndex_v2(C.c_uint(a.gpu), C.byref(dev))
    if rc != 0:
        sys.exit(f"nvmlDeviceGetHandleByIndex_v2({a.gpu}): {nvml.nvmlErrorString(rc).decode()}")
    u = C.c_uint()
    u2 = C.c_uint()
    ull = C.c_ulonglong()
    mem = Memory2(version=40 | (2 << 24))
    vt = C.c_int()
    samples = (Sample * 4096)()
    procs = (ProcInfo * 256)()
    putil = (ProcUtil * 1024)()
    name = C.create_string_buffer(256)
    gpm = [C.c_void_p(), C.c_void_p()]
    gpm_ok = hasattr(nvml, "nvmlGpmSampleAlloc") and all(nvml.nvmlGpmSampleAlloc(C.byref(s)) == 0 for s in gpm)
    get = GpmMetricsGet(version=1, numMetrics=1, sample1=gpm[0], sample2=gpm[1])
    get.metrics[0].metricId = 2  # NVML_GPM_METRIC_SM_UTIL
    now_us = lambda: int(time.time() * 1e6)

    def count_in(n, capacity):
        n.value = capacity
        return n

    calls = [
        ("nvmlDeviceGetMemoryInfo_v2", lambda: nvml.nvmlDeviceGetMemoryInfo_v2(dev, C.byref(mem))),
        ("nvmlDeviceGetUtilizationRates", lambda: nvml.nvmlDeviceGetUtilizationRates(dev, C.byref(ull))),
        ("nvmlDeviceGetPowerUsage", lambda: nvml.nvmlDeviceGetPowerUsage(dev, C.byref(u))),
        ("nvmlDeviceGetEnforcedPowerLimit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(dev, C.byref(u))),
        ("nvmlDeviceGetClockInfo (SM)", lambda: nvml.nvmlDeviceGetClockInfo(dev, 1, C.byref(u))),
        ("nvmlDeviceGetCurrentClocksEventReasons", lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(dev, C.byref(ull))),
        ("nvmlDeviceGetEncoderUtilization", lambda: nvml.nvmlDeviceGetEncoderUtilization(dev, C.byref(u), C.byref(u2))),
        ("nvmlDeviceGetDecoderUtilization", lambda: nvml.nvmlDeviceGetDecoderUtilization(dev, C.byref(u), C.byref(u2))),
        ("nvmlDeviceGetComputeRunningProcesses_v3", lambda: nvml.nvmlDeviceGetComputeRunningProcesses_v3(dev, C.byref(count_in(u, 256)), procs)),
        ("nvmlSystemGetProcessName (self)", lambda: nvml.nvmlSystemGetProcessName(C.c_uint(0), name, 256)),
        ("nvmlDeviceGetSamples (from 1 s ago)", lambda: nvml.nvmlDeviceGetSamples(dev, 1, C.c_ulonglong(now_us() - 1_000_000), C.byref(vt), C.byref(count_in(u, 4096)), samples)),
        ("nvmlDeviceGetSamples (from 0)", lambda: nvml.nvmlDeviceGetSamples(dev, 1, C.c_ulonglong(0), C.byref(vt), C.byref(count_in(u, 4096)), samples)),
        ("nvmlDeviceGetProcessUtilization (from 1 s ago)", lambda: nvml.nvmlDeviceGetProcessUtilization(dev, putil, C.byref(count_in(u, 1024)), C.c_ulonglong(now_us() - 1_000_000))),
    ]
    if gpm_ok:
        nvml.nvmlGpmSampleGet(dev, gpm[0])
        calls.append(("nvmlGpmSampleGet", lambda: nvml.nvmlGpmSampleGet(dev, gpm[1])))
        calls.append(("nvmlGpmMetricsGet (1 metric)", lambda: nvml.nvmlGpmMetricsGet(C.byref(get))))
    lines = []
    floor = []
    for _ in range(a.calls):
        t = time.thread_time_ns()
        nvml.nvmlDeviceGetCount_v2(C.byref(u))
        floor.append(time.thread_time_ns() - t)
    lines.append(f"{'nvmlDeviceGetCount_v2 (the ctypes floor)':50s} cpu {statistics.median(floor) / 1000:9.1f} us")
    for label, f in calls:
        cpu, wall, rcs = [], [], set()
        for _ in range(a.calls):
            w, t = time.perf_counter_ns(), time.thread_time_ns()
            rcs.add(f())
            cpu.append(time.thread_time_ns() - t)
            wall.append(time.perf_counter_ns() - w)
        note = "" if rcs <= {0} else "  returns " + ", ".join(nvml.nvmlErrorString(r).decode() for r in sorted(rcs))
        lines.append(f"{label:50s} cpu {statistics.mean(cpu) / 1000:9.1f} us   wall {statistics.mean(wall) / 1000:9.1f} us  ({a.calls} calls){note}")

    u.value = 4096
    rc = nvml.nvmlDeviceGetSamples(dev, 1, C.c_ulonglong(0), C.byref(vt), C.byref(u), samples)
    if rc == 0 and u.value > 1:
        ts = sorted(samples[i].timeStamp for i in range(u.value))
        gaps = sorted(b - a_ for a_, b in zip(ts, ts[1:]))
        lines.append(f"utilization sample buffer: {u.value} samples, one every {gaps[len(gaps) // 2] / 1000:.1f} ms, {(ts[-1] - ts[0]) / 1e6:.1f} s back")
    else:
        lines.append(f"utilization sample buffer: not readable ({nvml.nvmlErrorString(rc).decode()})")
    u.value = 1024
    rc = nvml.nvmlDeviceGetProcessUtilization(dev, putil, C.byref(u), C.c_ulonglong(0))
    if rc == 0 and u.value > 0:
        ts = sorted(putil[i].timeStamp for i in range(u.value))
        pids = {putil[i].pid for i in range(u.value)}
        lines.append(f"per-process utilization buffer: {u.value} samples of {len(pids)} process(es), {(ts[-1] - ts[0]) / 1e6:.1f} s back")
    else:
        lines.append(f"per-process utilization buffer: nothing to read ({nvml.nvmlErrorString(rc).decode()}; it holds samples only while processes run)")
    for s in gpm:
        if gpm_ok:
            nvml.nvmlGpmSampleFree(s)
    nvml.nvmlShutdown()
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
