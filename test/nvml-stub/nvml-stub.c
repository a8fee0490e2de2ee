/*
 * A stub libnvidia-ml.so.1 for trueidle's tests: the NVML source runs against it on
 * machines without a GPU, driven by the same scenario files as the simulator and the fake
 * nvidia-smi.
 *
 * Symbols, struct layouts and return codes follow nvml.h of CUDA 12.4 (driver 550, NVML
 * API v12). Only the functions trueidle's NVML source calls are exported, and the two MIG
 * calls that tell an instance's handle from a board's (nvmlDeviceIsMigDeviceHandle,
 * nvmlDeviceGetDeviceHandleFromMigDeviceHandle).
 *
 * Environment:
 *   TRUEIDLE_NVML_STUB_TABLE    the scenario as a flat table, written by
 *                               test/helpers/nvml-stub.ts (writeNvmlStubTable); read when
 *                               nvmlInit_v2 takes the library from uninitialised to initialised.
 *   TRUEIDLE_NVML_STUB_CONTROL  optional control file for faults, one directive a line:
 *                                 driver unloaded         every call answers DRIVER_NOT_LOADED;
 *                                                         once the line is gone the driver
 *                                                         counts as reloaded and calls answer
 *                                                         UNINITIALIZED until the client shuts
 *                                                         down and initialises again
 *                                 hang <index|all> <ms>   calls on that GPU (all: every call)
 *                                                         sleep that long before answering
 *                                 count <path>            a line is appended to <path> for
 *                                                         every nvmlInit_v2 that succeeds
 *                               Looked at no more than every 50 ms, re-read when it changed.
 *
 * Cost model: `cost <function> <µs>` lines in the table make each call of that function
 * burn that much CPU time on the calling thread before it answers (a spin on the thread's
 * CPU clock), so a process that loads the stub pays what a real driver charges it;
 * test/helpers/nvml-call-cost.ts holds the figures, measured on a real GPU. Without cost
 * lines calls cost what the stub's own work costs.
 *
 * Call counts: trueidle_stub_calls("nvmlDeviceGetSamples") says how many times a function
 * was called since the library was loaded (all threads of the process), so a test can check
 * the cadence of a client's calls.
 *
 * Readings follow the wall clock: at Date.now() === t every GPU shows what readingOf(scenario,
 * gpu, t) in agent/sim/evaluate.ts gives, the per-second noise included (hash01 below is
 * the same function bit for bit). The table holds each phase's values before the noise.
 *
 * MIG: a board whose table has `mig_mode 1` is in MIG mode, split into the instances of its
 * `mig` lines, each in a slot (0..6) of its own with its phases. At Date.now() === t the
 * board's instances are those migReadingsOf(scenario, board, t) gives, each under the same
 * `MIG-…` uuid (mig_uuid below is migUuid, and the count of re-creations migPhaseAt's, bit
 * for bit). nvmlDeviceGetMigDeviceHandleByIndex(board, slot) gives an instance's handle, one
 * per board and slot, distinct from board handles: NOT_FOUND while the slot is empty or its
 * instance destroyed (slots are sparse), and calls on the handle of a destroyed instance
 * answer NOT_FOUND too. On an instance's handle: its UUID, its name ("<board> MIG
 * <profile>", as NVML names them), memory, compute processes (with their GPU and compute
 * instance ids), those ids and its board's handle; board-only calls answer NOT_SUPPORTED.
 * On a board in MIG mode utilization is NOT_SUPPORTED, and its process list is every
 * instance's. nvmlGpmMigSampleGet(board, gi, sample) samples a GPU instance's SM activity;
 * the metrics of two samples are refused (INVALID_ARGUMENT) unless both are of the same
 * instance, so a sample never pairs across a re-created instance.
 *
 * Thread safety: koffi's async calls come from several threads at once. All state is
 * behind one mutex, which is never held while a call sleeps for a `hang` directive.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- nvml.h (CUDA 12.4) --------------------------------------------------------------- */

typedef int nvmlReturn_t;
enum {
  NVML_SUCCESS = 0,
  NVML_ERROR_UNINITIALIZED = 1,
  NVML_ERROR_INVALID_ARGUMENT = 2,
  NVML_ERROR_NOT_SUPPORTED = 3,
  NVML_ERROR_NO_PERMISSION = 4,
  NVML_ERROR_ALREADY_INITIALIZED = 5,
  NVML_ERROR_NOT_FOUND = 6,
  NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_INSUFFICIENT_POWER = 8,
  NVML_ERROR_DRIVER_NOT_LOADED = 9,
  NVML_ERROR_TIMEOUT = 10,
  NVML_ERROR_IRQ_ISSUE = 11,
  NVML_ERROR_LIBRARY_NOT_FOUND = 12,
  NVML_ERROR_FUNCTION_NOT_FOUND = 13,
  NVML_ERROR_CORRUPTED_INFOROM = 14,
  NVML_ERROR_GPU_IS_LOST = 15,
  NVML_ERROR_RESET_REQUIRED = 16,
  NVML_ERROR_OPERATING_SYSTEM = 17,
  NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
  NVML_ERROR_IN_USE = 19,
  NVML_ERROR_MEMORY = 20,
  NVML_ERROR_NO_DATA = 21,
  NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
  NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
  NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
  NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
  NVML_ERROR_DEPRECATED = 26,
  NVML_ERROR_NOT_READY = 27,
  NVML_ERROR_GPU_NOT_FOUND = 28,
  NVML_ERROR_INVALID_STATE = 29,
  NVML_ERROR_UNKNOWN = 999,
};

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlGpmSample_st *nvmlGpmSample_t;

typedef struct {
  char busIdLegacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pciDeviceId;
  unsigned int pciSubSystemId;
  char busId[32];
} nvmlPciInfo_t;

typedef struct {
  unsigned int version;
  unsigned long long total;
  unsigned long long reserved;
  unsigned long long free;
  unsigned long long used;
} nvmlMemory_v2_t;
#define NVML_STRUCT_VERSION(size, ver) ((unsigned int)((size) | ((ver) << 24U)))
#define nvmlMemory_v2 NVML_STRUCT_VERSION(sizeof(nvmlMemory_v2_t), 2)

typedef struct {
  unsigned int gpu;
  unsigned int memory;
} nvmlUtilization_t;

typedef union {
  double dVal;
  int siVal;
  unsigned int uiVal;
  unsigned long ulVal;
  unsigned long long ullVal;
  signed long long sllVal;
  unsigned short usVal;
} nvmlValue_t;
enum { NVML_VALUE_TYPE_UNSIGNED_INT = 1 };
enum { NVML_GPU_UTILIZATION_SAMPLES = 1 };

typedef struct {
  unsigned long long timeStamp;
  nvmlValue_t sampleValue;
} nvmlSample_t;

typedef struct {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
} nvmlProcessInfo_t;
#define NVML_VALUE_NOT_AVAILABLE (~0ULL)
/* gpuInstanceId and computeInstanceId of a process on a GPU not in MIG mode. */
#define NVML_INSTANCE_NONE 0xFFFFFFFFu

enum { NVML_DEVICE_MIG_DISABLE = 0, NVML_DEVICE_MIG_ENABLE = 1 };

typedef struct {
  unsigned int pid;
  unsigned long long timeStamp;
  unsigned int smUtil;
  unsigned int memUtil;
  unsigned int encUtil;
  unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

enum { NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2, NVML_CLOCK_VIDEO = 3 };
#define nvmlClocksEventReasonGpuIdle 0x0000000000000001ULL

typedef struct {
  unsigned int version;
  unsigned int isSupportedDevice;
} nvmlGpmSupport_t;
#define NVML_GPM_SUPPORT_VERSION 1

typedef struct {
  unsigned int metricId;
  nvmlReturn_t nvmlReturn;
  double value;
  struct {
    char *shortName;
    char *longName;
    char *unit;
  } metricInfo;
} nvmlGpmMetric_t;

/* The caller's array has NVML_GPM_METRIC_MAX entries (98 in 12.4, more in later headers);
 * only the first numMetrics are touched. */
typedef struct {
  unsigned int version;
  unsigned int numMetrics;
  nvmlGpmSample_t sample1;
  nvmlGpmSample_t sample2;
  nvmlGpmMetric_t metrics[];
} nvmlGpmMetricsGet_t;
#define NVML_GPM_METRICS_GET_VERSION 1
#define GPM_METRICS_LIMIT 333
enum {
  NVML_GPM_METRIC_SM_UTIL = 2,
  NVML_GPM_METRIC_SM_OCCUPANCY = 3,
  NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5,
  NVML_GPM_METRIC_DRAM_BW_UTIL = 10,
};

_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t");
_Static_assert(sizeof(nvmlSample_t) == 16, "nvmlSample_t");
_Static_assert(sizeof(nvmlProcessInfo_t) == 24, "nvmlProcessInfo_t");
_Static_assert(sizeof(nvmlProcessUtilizationSample_t) == 32, "nvmlProcessUtilizationSample_t");
_Static_assert(sizeof(nvmlGpmMetric_t) == 40, "nvmlGpmMetric_t");
_Static_assert(offsetof(nvmlGpmMetricsGet_t, metrics) == 24, "nvmlGpmMetricsGet_t");

#define EXPORT __attribute__((visibility("default")))

/* ---- the table -------------------------------------------------------------------------- */

#define MAX_GPUS 1024
#define MiB (1024.0 * 1024.0)
/* The driver's utilization sample period. */
#define SAMPLE_PERIOD_US 166667ULL
/* Samples the driver keeps per GPU. */
#define SAMPLE_RING 120
#define CONTROL_CHECK_MS 50.0
#define GPM_MIN_INTERVAL_US 100000LL
/* MIG devices a board in MIG mode can hold (nvmlDeviceGetMaxMigDeviceCount on A100, H100, H200). */
#define MAX_MIG 7
/* "MIG-" and a uuid's 36 characters. */
#define MIG_UUID_LENGTH 40

/* Every exported function but nvmlErrorString: the unit of the cost model and of the call counts. */
#define STUB_FUNCTIONS(X) \
  X(nvmlInit_v2) \
  X(nvmlShutdown) \
  X(nvmlSystemGetDriverVersion) \
  X(nvmlSystemGetProcessName) \
  X(nvmlDeviceGetCount_v2) \
  X(nvmlDeviceGetHandleByIndex_v2) \
  X(nvmlDeviceGetIndex) \
  X(nvmlDeviceGetUUID) \
  X(nvmlDeviceGetName) \
  X(nvmlDeviceGetSerial) \
  X(nvmlDeviceGetPciInfo_v3) \
  X(nvmlDeviceGetEnforcedPowerLimit) \
  X(nvmlDeviceGetMemoryInfo_v2) \
  X(nvmlDeviceGetUtilizationRates) \
  X(nvmlDeviceGetSamples) \
  X(nvmlDeviceGetPowerUsage) \
  X(nvmlDeviceGetClockInfo) \
  X(nvmlDeviceGetCurrentClocksEventReasons) \
  X(nvmlDeviceGetCurrentClocksThrottleReasons) \
  X(nvmlDeviceGetEncoderUtilization) \
  X(nvmlDeviceGetDecoderUtilization) \
  X(nvmlDeviceGetComputeRunningProcesses_v3) \
  X(nvmlDeviceGetProcessUtilization) \
  X(nvmlGpmQueryDeviceSupport) \
  X(nvmlGpmSampleAlloc) \
  X(nvmlGpmSampleFree) \
  X(nvmlGpmSampleGet) \
  X(nvmlGpmMetricsGet) \
  X(nvmlDeviceGetMigMode) \
  X(nvmlDeviceGetMaxMigDeviceCount) \
  X(nvmlDeviceGetMigDeviceHandleByIndex) \
  X(nvmlDeviceIsMigDeviceHandle) \
  X(nvmlDeviceGetGpuInstanceId) \
  X(nvmlDeviceGetComputeInstanceId) \
  X(nvmlDeviceGetDeviceHandleFromMigDeviceHandle) \
  X(nvmlGpmMigSampleGet)

enum stub_fn {
#define STUB_FN_ID(n) FN_##n,
  STUB_FUNCTIONS(STUB_FN_ID)
#undef STUB_FN_ID
  FN_COUNT
};

static const char *const FN_NAMES[FN_COUNT] = {
#define STUB_FN_NAME(n) #n,
  STUB_FUNCTIONS(STUB_FN_NAME)
#undef STUB_FN_NAME
};

enum { SM_UNKNOWN, SM_FIXED, SM_FOLLOWS_UTIL };

struct proc {
  unsigned pid;
  int has_used;
  unsigned long long used_bytes;
  int sm_kind;
  double sm_util;
  char *name;
};

struct phase {
  double ms;
  /* A MIG instance's phase only: the instance does not exist. */
  int absent;
  nvmlReturn_t error; /* NVML_SUCCESS: the GPU answers in this phase */
  int has_util, has_power, has_mem, has_media;
  double util, power_w, mem_used_mib, media, noise;
  /* SM activity (0–1) GPM reports in this phase. */
  double gpm_sm;
  struct proc *procs;
  unsigned nprocs;
};

/* A MIG instance of a board (a `mig` line and its `mphase` lines). */
struct mig {
  unsigned slot, gi, ci;
  char *profile;
  char *name; /* "<board name> MIG <profile>" */
  double mem_total_mib, cycle_ms;
  unsigned absent_per_cycle;
  struct phase *phases;
  unsigned nphases;
};

struct gpu {
  char *uuid;
  uint16_t *uuid_utf16; /* the UUID as JavaScript sees it, for hash01 and mig_uuid */
  size_t uuid_len;
  char *name, *bus_id, *serial;
  unsigned pci_device_id;
  unsigned pci_domain, pci_bus, pci_device;
  double mem_total_mib, power_limit_w, cycle_ms;
  int gpm;
  struct phase *phases;
  unsigned nphases;
  int mig_mode;
  struct mig *migs;
  unsigned nmigs;
};

struct table {
  char *driver;
  double origin_ms;
  struct gpu *gpus;
  unsigned ngpus;
  unsigned cost_us[FN_COUNT];
};

struct nvmlDevice_st {
  unsigned index;
};

#define SAMPLE_MAGIC 0x67706d73u
struct nvmlGpmSample_st {
  unsigned magic;
  int taken;
  unsigned gpu;
  long long time_us;
  /* A MIG sample (nvmlGpmMigSampleGet): the GPU instance id, and the instance's generation
   * (re-creations so far), so that two samples pair only within one instance. */
  int mig;
  unsigned gi;
  long long generation;
};

/* ---- state (all behind mu) -------------------------------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct table tbl;
static struct nvmlDevice_st handles[MAX_GPUS];
/* MIG device handles: board * MAX_MIG + slot. */
static struct nvmlDevice_st mig_handles[MAX_GPUS * MAX_MIG];
static unsigned init_refs;
/* The driver's generation moves on at every reload; a client initialised in an older one
 * must shut down and initialise again. */
static unsigned driver_gen, client_gen;
/* CPU µs each function burns (from the table's cost lines), and calls so far. */
static unsigned cost_us[FN_COUNT];
static unsigned long long calls[FN_COUNT];

static struct {
  char *path; /* the control file last looked at */
  int checked;
  double last_check_ms;
  int exists;
  ino_t ino;
  struct timespec mtime;
  off_t size;
  int driver_unloaded;
  unsigned hang_all_ms;
  unsigned hang_ms[MAX_GPUS];
  char *count_path;
} ctl;

/* ---- small helpers ---------------------------------------------------------------------- */

static void say(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "trueidle nvml stub: %s\n", line);
}

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Date.now() at the instant of `us`. */
static double ms_of_us(long long us) {
  return (double)(us >= 0 ? us / 1000 : -((-us + 999) / 1000));
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static long long thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static volatile unsigned spin_sink;

/* Iterations of spin() that take 1 µs of CPU: measured once, so that a cheap call burns its
 * microsecond without the clock reads (system calls, a microsecond each on a VM) that would
 * otherwise cost more than the call it stands for. */
static double spins_per_us;

static void spin(unsigned long n) {
  unsigned x = spin_sink;
  for (unsigned long i = 0; i < n; i++) x = x * 1664525u + 1013904223u;
  spin_sink = x;
}

static void calibrate_spin(void) {
  unsigned long n = 1000;
  for (;;) {
    long long t0 = thread_cpu_ns();
    spin(n);
    long long dt = thread_cpu_ns() - t0;
    if (dt >= 2000000 || n > (1UL << 40)) {
      spins_per_us = dt > 0 ? (double)n * 1000.0 / (double)dt : 1.0;
      return;
    }
    n *= 4;
  }
}

/* Spends `us` microseconds of the calling thread's CPU time, as a driver call doing real
 * work would: spins counted in calibrated iterations for short costs, against the thread's
 * CPU clock for long ones. */
static void burn_us(unsigned us) {
  if (us <= 200) {
    spin((unsigned long)(spins_per_us * us));
    return;
  }
  long long end = thread_cpu_ns() + (long long)us * 1000LL;
  do spin((unsigned long)(spins_per_us * 50)); while (thread_cpu_ns() < end);
}

/* JavaScript's Math.round: halves round towards +Infinity. */
static double js_round(double x) {
  double r = floor(x);
  return x - r >= 0.5 ? r + 1.0 : r;
}

/* JavaScript's ToUint32 of an integral double. */
static uint32_t js_uint32(double x) {
  return (uint32_t)(uint64_t)(int64_t)x;
}

/* hash01 of agent/sim/evaluate.ts, bit for bit. */
static double hash01(const struct gpu *g, double time_ms) {
  uint32_t h = 2166136261u ^ js_uint32(floor(time_ms / 1000));
  for (size_t i = 0; i < g->uuid_len; i++) h = (h ^ g->uuid_utf16[i]) * 16777619u;
  h ^= h >> 13;
  h *= 0x5bd1e995u;
  h ^= h >> 15;
  return (double)h / 4294967296.0;
}

static unsigned to_unsigned(double v) {
  if (!(v > 0)) return 0;
  if (v >= 4294967295.0) return 4294967295u;
  return (unsigned)js_round(v);
}

static unsigned long long to_ull(double v) {
  if (!(v > 0)) return 0;
  return (unsigned long long)js_round(v);
}

static nvmlReturn_t copy_string(char *buf, unsigned len, const char *s) {
  if (buf == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  size_t n = strlen(s);
  if (n + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
  memcpy(buf, s, n + 1);
  return NVML_SUCCESS;
}

/* ---- what a GPU shows at an instant (readingOf) ----------------------------------------- */

struct reading {
  nvmlReturn_t error;
  const struct phase *ph;
  int has_util, has_power, has_mem, has_media;
  double util, power_w, mem_used_mib, media;
};

static const struct phase *phase_at(const struct gpu *g, double time_ms) {
  double t = fmod(time_ms - tbl.origin_ms, g->cycle_ms);
  if (t < 0) t += g->cycle_ms;
  for (unsigned i = 0; i < g->nphases; i++) {
    if (t < g->phases[i].ms) return &g->phases[i];
    t -= g->phases[i].ms;
  }
  return &g->phases[g->nphases - 1];
}

static void reading_at(const struct gpu *g, double time_ms, struct reading *r) {
  const struct phase *p = phase_at(g, time_ms);
  memset(r, 0, sizeof *r);
  r->ph = p;
  r->error = p->error;
  if (p->error != NVML_SUCCESS) return;
  double noise = p->noise;
  double jitter = noise > 0 ? (hash01(g, time_ms) - 0.5) * 2 * noise : 0;
  r->has_util = p->has_util;
  r->util = p->util;
  if (r->has_util && noise > 0 && r->util > 0 && r->util < 100) {
    r->util = fmin(100, fmax(0, js_round(r->util * (1 + jitter))));
  }
  r->has_power = p->has_power;
  if (r->has_power) {
    double w = p->power_w;
    if (noise > 0) w = fmax(0, w * (1 + jitter / 4));
    r->power_w = js_round(w * 100) / 100;
  }
  r->has_mem = p->has_mem;
  r->mem_used_mib = p->mem_used_mib;
  r->has_media = p->has_media;
  r->media = p->media;
}

/* A process's SM utilization in a reading; 0 when unknown (see proc_has_sm). */
static int proc_sm(const struct proc *pr, const struct reading *r, double *out) {
  switch (pr->sm_kind) {
    case SM_FIXED: *out = pr->sm_util; return 1;
    case SM_FOLLOWS_UTIL:
      if (!r->has_util) return 0;
      *out = r->util;
      return 1;
    default: return 0;
  }
}

/* ---- MIG instances (migReadingsOf) -------------------------------------------------------- */

/* migPhaseAt of agent/sim/evaluate.ts, bit for bit: the instance's phase at `time_ms`, and how
 * many absent phases ended before it since origin_ms (the instance's generation). */
static const struct phase *mig_phase_at(const struct mig *m, double time_ms, long long *generation) {
  double since = time_ms - tbl.origin_ms;
  double cycles = floor(since / m->cycle_ms);
  double t = since - cycles * m->cycle_ms;
  double destroyed = cycles * (double)m->absent_per_cycle;
  for (unsigned i = 0; i < m->nphases; i++) {
    const struct phase *p = &m->phases[i];
    if (t < p->ms) {
      *generation = (long long)destroyed;
      return p;
    }
    if (p->absent) destroyed++;
    t -= p->ms;
  }
  *generation = (long long)destroyed;
  return &m->phases[m->nphases - 1];
}

static void fnv_step(uint32_t *h1, uint32_t *h2, unsigned c) {
  *h1 = (*h1 ^ c) * 16777619u;
  *h2 = (*h2 ^ c) * 2246822519u;
}

/* migUuid of agent/sim/evaluate.ts, bit for bit: the instance's "MIG-…" uuid in `generation`. */
static void mig_uuid(const struct gpu *g, const struct mig *m, long long generation, char out[MIG_UUID_LENGTH + 1]) {
  uint32_t h1 = 0x9e3779b9u, h2 = 0x85ebca6bu;
  for (size_t i = 0; i < g->uuid_len; i++) fnv_step(&h1, &h2, g->uuid_utf16[i]);
  char tail[64];
  snprintf(tail, sizeof tail, "/%u/%u/%lld", m->gi, m->ci, generation);
  for (const char *c = tail; *c != '\0'; c++) fnv_step(&h1, &h2, (unsigned char)*c);
  char hex[33];
  snprintf(hex, sizeof hex, "%08x%08x%08x%08x", h1, h2, h1, h2);
  snprintf(out, MIG_UUID_LENGTH + 1, "MIG-%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

static const struct mig *mig_in_slot(const struct gpu *g, unsigned slot) {
  for (unsigned i = 0; i < g->nmigs; i++) {
    if (g->migs[i].slot == slot) return &g->migs[i];
  }
  return NULL;
}

/* ---- reading the table ------------------------------------------------------------------ */

static void free_table(struct table *t) {
  for (unsigned i = 0; i < t->ngpus; i++) {
    struct gpu *g = &t->gpus[i];
    for (unsigned j = 0; j < g->nphases; j++) {
      for (unsigned k = 0; k < g->phases[j].nprocs; k++) free(g->phases[j].procs[k].name);
      free(g->phases[j].procs);
    }
    free(g->phases);
    for (unsigned j = 0; j < g->nmigs; j++) {
      struct mig *m = &g->migs[j];
      for (unsigned k = 0; k < m->nphases; k++) {
        for (unsigned q = 0; q < m->phases[k].nprocs; q++) free(m->phases[k].procs[q].name);
        free(m->phases[k].procs);
      }
      free(m->phases);
      free(m->profile);
      free(m->name);
    }
    free(g->migs);
    free(g->uuid);
    free(g->uuid_utf16);
    free(g->name);
    free(g->bus_id);
    free(g->serial);
  }
  free(t->gpus);
  free(t->driver);
  memset(t, 0, sizeof *t);
}

static int parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end != '\0' || errno != 0 || !isfinite(v)) return 0;
  *out = v;
  return 1;
}

/* "-" is a missing value. */
static int parse_optional(const char *s, int *has, double *out) {
  if (strcmp(s, "-") == 0) {
    *has = 0;
    *out = 0;
    return 1;
  }
  *has = 1;
  return parse_double(s, out);
}

static int grow(void **arr, unsigned n, size_t size) {
  void *p = realloc(*arr, (n + 1) * size);
  if (p == NULL) return 0;
  *arr = p;
  memset((char *)p + n * size, 0, size);
  return 1;
}

/* Splits `rest` into key=value fields; a field whose key is in `tail` takes the rest of the
 * line. Calls fn for each; returns the first error message or NULL. */
typedef const char *(*field_fn)(void *obj, const char *key, const char *value);
static const char *parse_fields(char *rest, const char *tail, field_fn fn, void *obj) {
  char *s = rest;
  while (*s != '\0') {
    while (*s == ' ') s++;
    if (*s == '\0') break;
    char *eq = strchr(s, '=');
    if (eq == NULL) return "a field is not key=value";
    *eq = '\0';
    const char *key = s;
    char *value = eq + 1;
    if (strcmp(key, tail) == 0) {
      s = value + strlen(value);
    } else {
      char *sp = strchr(value, ' ');
      if (sp != NULL) {
        *sp = '\0';
        s = sp + 1;
      } else {
        s = value + strlen(value);
      }
    }
    const char *err = fn(obj, key, value);
    if (err != NULL) return err;
  }
  return NULL;
}

static const char *phase_field(void *obj, const char *key, const char *value) {
  struct phase *p = obj;
  int ok = 1;
  if (strcmp(key, "ms") == 0) ok = parse_double(value, &p->ms) && p->ms > 0;
  else if (strcmp(key, "util") == 0) ok = parse_optional(value, &p->has_util, &p->util);
  else if (strcmp(key, "power_w") == 0) ok = parse_optional(value, &p->has_power, &p->power_w);
  else if (strcmp(key, "mem_used_mib") == 0) ok = parse_optional(value, &p->has_mem, &p->mem_used_mib);
  else if (strcmp(key, "media") == 0) ok = parse_optional(value, &p->has_media, &p->media);
  else if (strcmp(key, "noise") == 0) ok = parse_double(value, &p->noise);
  else if (strcmp(key, "gpm_sm") == 0) ok = parse_double(value, &p->gpm_sm);
  else if (strcmp(key, "absent") == 0) {
    double v;
    ok = parse_double(value, &v) && (v == 0 || v == 1);
    p->absent = v == 1;
  }
  else if (strcmp(key, "error") == 0) {
    double code;
    ok = parse_double(value, &code) && code > 0;
    p->error = (nvmlReturn_t)code;
  } else if (strcmp(key, "text") == 0) {
    /* The scenario's message, for people reading the table. */
  } else return "unknown phase field";
  return ok ? NULL : "bad phase value";
}

static const char *proc_field(void *obj, const char *key, const char *value) {
  struct proc *pr = obj;
  int ok = 1;
  double v;
  if (strcmp(key, "pid") == 0) {
    ok = parse_double(value, &v) && v >= 0 && v <= 4294967295.0;
    pr->pid = (unsigned)v;
  } else if (strcmp(key, "used_bytes") == 0) {
    ok = parse_optional(value, &pr->has_used, &v) && v >= 0;
    pr->used_bytes = to_ull(v);
  } else if (strcmp(key, "sm_util") == 0) {
    if (strcmp(value, "util") == 0) pr->sm_kind = SM_FOLLOWS_UTIL;
    else {
      int has;
      ok = parse_optional(value, &has, &pr->sm_util);
      pr->sm_kind = has ? SM_FIXED : SM_UNKNOWN;
    }
  } else if (strcmp(key, "name") == 0) {
    free(pr->name);
    pr->name = strdup(value);
    ok = pr->name != NULL;
  } else return "unknown process field";
  return ok ? NULL : "bad process value";
}

static const char *parse_utf16(struct gpu *g, char *value) {
  free(g->uuid_utf16);
  g->uuid_utf16 = NULL;
  g->uuid_len = 0;
  size_t cap = strlen(value) / 2 + 1;
  g->uuid_utf16 = calloc(cap, sizeof(uint16_t));
  if (g->uuid_utf16 == NULL) return "out of memory";
  char *save = NULL;
  for (char *tok = strtok_r(value, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
    double v;
    if (!parse_double(tok, &v) || v < 0 || v > 65535 || g->uuid_len >= cap) return "bad uuid_utf16";
    g->uuid_utf16[g->uuid_len++] = (uint16_t)v;
  }
  return NULL;
}

/* An unsigned integer field of a `mig` line. */
static int parse_uint(const char *value, unsigned max, unsigned *out) {
  double v;
  if (!parse_double(value, &v) || v < 0 || v > max || v != floor(v)) return 0;
  *out = (unsigned)v;
  return 1;
}

static const char *mig_field(void *obj, const char *key, const char *value) {
  struct mig *m = obj;
  int ok = 1;
  if (strcmp(key, "slot") == 0) ok = parse_uint(value, MAX_MIG - 1, &m->slot);
  else if (strcmp(key, "gi") == 0) ok = parse_uint(value, 1000, &m->gi);
  else if (strcmp(key, "ci") == 0) ok = parse_uint(value, 1000, &m->ci);
  else if (strcmp(key, "mem_total_mib") == 0) ok = parse_double(value, &m->mem_total_mib) && m->mem_total_mib > 0;
  else if (strcmp(key, "cycle_ms") == 0) ok = parse_double(value, &m->cycle_ms) && m->cycle_ms > 0;
  else if (strcmp(key, "profile") == 0) {
    free(m->profile);
    m->profile = strdup(value);
    ok = m->profile != NULL && *value != '\0';
  } else return "unknown mig field";
  return ok ? NULL : "bad mig value";
}

static const char *parse_gpu_line(struct gpu *g, const char *key, char *value) {
  double v;
  if (strcmp(key, "mig_mode") == 0) {
    if (!parse_double(value, &v) || (v != 0 && v != 1)) return "bad mig_mode";
    g->mig_mode = v == 1;
    return NULL;
  }
  if (strcmp(key, "mig") == 0) {
    if (g->nmigs >= MAX_MIG) return "more than 7 MIG instances";
    if (!grow((void **)&g->migs, g->nmigs, sizeof *g->migs)) return "out of memory";
    struct mig *m = &g->migs[g->nmigs++];
    m->slot = MAX_MIG;
    const char *err = parse_fields(value, "profile", mig_field, m);
    if (err == NULL && (m->slot >= MAX_MIG || m->profile == NULL || !(m->cycle_ms > 0) || !(m->mem_total_mib > 0)))
      err = "a mig line lacks one of slot, gi, profile, mem_total_mib, cycle_ms";
    for (unsigned i = 0; err == NULL && i + 1 < g->nmigs; i++) {
      if (g->migs[i].slot == m->slot) err = "two MIG instances in one slot";
    }
    return err;
  }
  if (strcmp(key, "mphase") == 0) {
    if (g->nmigs == 0) return "mphase before any mig line";
    struct mig *m = &g->migs[g->nmigs - 1];
    if (!grow((void **)&m->phases, m->nphases, sizeof *m->phases)) return "out of memory";
    struct phase *p = &m->phases[m->nphases++];
    const char *err = parse_fields(value, "text", phase_field, p);
    if (err == NULL && !(p->ms > 0)) err = "mphase without ms";
    if (err == NULL && p->absent) m->absent_per_cycle++;
    return err;
  }
  if (strcmp(key, "mproc") == 0) {
    if (g->nmigs == 0 || g->migs[g->nmigs - 1].nphases == 0) return "mproc before any mphase";
    struct mig *m = &g->migs[g->nmigs - 1];
    struct phase *p = &m->phases[m->nphases - 1];
    if (!grow((void **)&p->procs, p->nprocs, sizeof *p->procs)) return "out of memory";
    struct proc *pr = &p->procs[p->nprocs++];
    const char *err = parse_fields(value, "name", proc_field, pr);
    if (err == NULL && pr->name == NULL) err = "mproc without name";
    return err;
  }
  if (strcmp(key, "uuid") == 0) return (g->uuid = strdup(value)) ? NULL : "out of memory";
  if (strcmp(key, "uuid_utf16") == 0) return parse_utf16(g, value);
  if (strcmp(key, "name") == 0) return (g->name = strdup(value)) ? NULL : "out of memory";
  if (strcmp(key, "serial") == 0) return (g->serial = strdup(value)) ? NULL : "out of memory";
  if (strcmp(key, "bus_id") == 0) {
    if (sscanf(value, "%x:%x:%x.", &g->pci_domain, &g->pci_bus, &g->pci_device) != 3) return "bad bus_id";
    return (g->bus_id = strdup(value)) ? NULL : "out of memory";
  }
  if (strcmp(key, "pci_device_id") == 0) {
    char *end;
    unsigned long id = strtoul(value, &end, 16);
    if (*end != '\0' || end == value) return "bad pci_device_id";
    g->pci_device_id = (unsigned)id;
    return NULL;
  }
  if (strcmp(key, "mem_total_mib") == 0) return parse_double(value, &g->mem_total_mib) && g->mem_total_mib > 0 ? NULL : "bad mem_total_mib";
  if (strcmp(key, "power_limit_w") == 0) return parse_double(value, &g->power_limit_w) && g->power_limit_w >= 0 ? NULL : "bad power_limit_w";
  if (strcmp(key, "cycle_ms") == 0) return parse_double(value, &g->cycle_ms) && g->cycle_ms > 0 ? NULL : "bad cycle_ms";
  if (strcmp(key, "gpm") == 0) {
    if (!parse_double(value, &v)) return "bad gpm";
    g->gpm = v != 0;
    return NULL;
  }
  if (strcmp(key, "phase") == 0) {
    if (!grow((void **)&g->phases, g->nphases, sizeof *g->phases)) return "out of memory";
    struct phase *p = &g->phases[g->nphases++];
    const char *err = parse_fields(value, "text", phase_field, p);
    if (err == NULL && !(p->ms > 0)) err = "phase without ms";
    return err;
  }
  if (strcmp(key, "proc") == 0) {
    if (g->nphases == 0) return "proc before any phase";
    struct phase *p = &g->phases[g->nphases - 1];
    if (!grow((void **)&p->procs, p->nprocs, sizeof *p->procs)) return "out of memory";
    struct proc *pr = &p->procs[p->nprocs++];
    const char *err = parse_fields(value, "name", proc_field, pr);
    if (err == NULL && pr->name == NULL) err = "proc without name";
    return err;
  }
  return "unknown key";
}

/* "cost <function> <µs>": what each call of the function burns. */
static const char *parse_cost(struct table *t, char *value) {
  char *sp = strchr(value, ' ');
  double us;
  if (sp == NULL) return "cost needs a function and microseconds";
  *sp = '\0';
  if (!parse_double(sp + 1, &us) || us < 0 || us > 1e6) return "bad cost microseconds";
  for (unsigned i = 0; i < FN_COUNT; i++) {
    if (strcmp(FN_NAMES[i], value) == 0) {
      t->cost_us[i] = (unsigned)js_round(us);
      return NULL;
    }
  }
  return "cost of a function the stub does not export";
}

/* Reads the table into *t; on failure prints one line naming the problem. */
static int load_table(struct table *t) {
  const char *path = getenv("TRUEIDLE_NVML_STUB_TABLE");
  if (path == NULL || *path == '\0') {
    say("TRUEIDLE_NVML_STUB_TABLE is not set; it names the table written by test/helpers/nvml-stub.ts");
    return 0;
  }
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    say("cannot read table file %s: %s", path, strerror(errno));
    return 0;
  }
  memset(t, 0, sizeof *t);
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned lineno = 0;
  const char *err = NULL;
  struct gpu *g = NULL;
  while (err == NULL && (n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (lineno == 1) {
      if (strcmp(line, "trueidle-nvml-stub-table 1") != 0) err = "not a trueidle nvml stub table (version 1)";
      continue;
    }
    if (n == 0 || line[0] == '#') continue;
    char *sp = strchr(line, ' ');
    char *value = sp ? sp + 1 : line + n;
    if (sp) *sp = '\0';
    const char *key = line;
    if (strcmp(key, "driver") == 0) {
      free(t->driver);
      t->driver = strdup(value);
    } else if (strcmp(key, "origin_ms") == 0) {
      if (!parse_double(value, &t->origin_ms)) err = "bad origin_ms";
    } else if (strcmp(key, "cost") == 0) {
      err = parse_cost(t, value);
    } else if (strcmp(key, "gpu") == 0) {
      if (t->ngpus >= MAX_GPUS) err = "too many GPUs";
      else if (!grow((void **)&t->gpus, t->ngpus, sizeof *t->gpus)) err = "out of memory";
      else g = &t->gpus[t->ngpus++];
    } else if (g == NULL) {
      err = "a GPU field before the first gpu line";
    } else {
      err = parse_gpu_line(g, key, value);
    }
  }
  free(line);
  if (err == NULL && ferror(f)) err = strerror(errno);
  fclose(f);
  if (err == NULL && t->driver == NULL) {
    err = "no driver line";
    lineno = 0;
  }
  for (unsigned i = 0; err == NULL && i < t->ngpus; i++) {
    struct gpu *x = &t->gpus[i];
    if (!x->uuid || !x->uuid_utf16 || !x->name || !x->bus_id || !x->serial || x->nphases == 0 || !(x->cycle_ms > 0) || !(x->mem_total_mib > 0)) {
      err = "a GPU lacks one of uuid, uuid_utf16, name, bus_id, serial, mem_total_mib, cycle_ms, phase";
      lineno = 0;
    }
    for (unsigned j = 0; err == NULL && j < x->nmigs; j++) {
      struct mig *m = &x->migs[j];
      size_t n = strlen(x->name) + strlen(m->profile) + 6;
      if (m->nphases == 0) err = "a MIG instance without mphase lines";
      else if ((m->name = malloc(n)) == NULL) err = "out of memory";
      else snprintf(m->name, n, "%s MIG %s", x->name, m->profile);
      lineno = 0;
    }
    if (err == NULL && x->nmigs > 0 && !x->mig_mode) {
      err = "MIG instances on a GPU without mig_mode 1";
      lineno = 0;
    }
  }
  if (err != NULL) {
    if (lineno > 0) say("table file %s line %u: %s", path, lineno, err);
    else say("table file %s: %s", path, err);
    free_table(t);
    return 0;
  }
  return 1;
}

/* ---- the control file -------------------------------------------------------------------- */

static void parse_control(const char *path, FILE *f) {
  int unloaded = 0;
  unsigned hang_all = 0;
  free(ctl.count_path);
  ctl.count_path = NULL;
  memset(ctl.hang_ms, 0, sizeof ctl.hang_ms);
  if (f != NULL) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
      lineno++;
      while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = '\0';
      if (n == 0 || line[0] == '#') continue;
      char which[32];
      unsigned ms;
      int used = 0;
      if (strcmp(line, "driver unloaded") == 0) {
        unloaded = 1;
      } else if (sscanf(line, "hang %31s %u%n", which, &ms, &used) == 2 && line[used] == '\0') {
        if (strcmp(which, "all") == 0) {
          hang_all = ms;
        } else {
          char *end;
          unsigned long idx = strtoul(which, &end, 10);
          if (*end == '\0' && idx < MAX_GPUS) ctl.hang_ms[idx] = ms;
          else say("control file %s line %u: no GPU \"%s\"", path, lineno, which);
        }
      } else if (strncmp(line, "count ", 6) == 0) {
        ctl.count_path = strdup(line + 6);
      } else {
        say("control file %s line %u not understood: %s", path, lineno, line);
      }
    }
    free(line);
  }
  if (ctl.driver_unloaded && !unloaded) driver_gen++;
  ctl.driver_unloaded = unloaded;
  ctl.hang_all_ms = hang_all;
}

/* Takes in the control file if it changed; caller holds mu. */
static void refresh_control(void) {
  const char *path = getenv("TRUEIDLE_NVML_STUB_CONTROL");
  if (path == NULL || *path == '\0') {
    if (ctl.path != NULL) {
      free(ctl.path);
      ctl.path = NULL;
      parse_control("", NULL);
    }
    return;
  }
  double now = mono_ms();
  if (ctl.path == NULL || strcmp(ctl.path, path) != 0) {
    free(ctl.path);
    ctl.path = strdup(path);
    ctl.checked = 0;
  }
  if (ctl.checked && now - ctl.last_check_ms < CONTROL_CHECK_MS) return;
  ctl.last_check_ms = now;
  struct stat st;
  int exists = stat(path, &st) == 0;
  if (ctl.checked && exists == ctl.exists &&
      (!exists || (st.st_ino == ctl.ino && st.st_size == ctl.size && st.st_mtim.tv_sec == ctl.mtime.tv_sec &&
                   st.st_mtim.tv_nsec == ctl.mtime.tv_nsec))) {
    return;
  }
  ctl.checked = 1;
  ctl.exists = exists;
  if (exists) {
    ctl.ino = st.st_ino;
    ctl.size = st.st_size;
    ctl.mtime = st.st_mtim;
  }
  FILE *f = exists ? fopen(path, "r") : NULL;
  parse_control(path, f);
  if (f != NULL) fclose(f);
}

/* ---- entering a call --------------------------------------------------------------------- */

/*
 * Every call: look at the control file, sleep for a `hang` directive (without the lock),
 * then hold the lock and answer DRIVER_NOT_LOADED / UNINITIALIZED where due. On
 * NVML_SUCCESS the caller holds mu and must release it.
 *   fn: the function called, for its cost and count.
 *   gpu_hint: the GPU whose hang applies, or -1.
 *   need_init: 0 for nvmlInit_v2 and nvmlShutdown, which judge initialisation themselves.
 */
static nvmlReturn_t enter(enum stub_fn fn, long gpu_hint, int need_init) {
  pthread_mutex_lock(&mu);
  calls[fn]++;
  unsigned cost = cost_us[fn];
  refresh_control();
  if (ctl.driver_unloaded) {
    pthread_mutex_unlock(&mu);
    return NVML_ERROR_DRIVER_NOT_LOADED;
  }
  unsigned hang = ctl.hang_all_ms;
  if (gpu_hint >= 0 && gpu_hint < MAX_GPUS && ctl.hang_ms[gpu_hint] > hang) hang = ctl.hang_ms[gpu_hint];
  pthread_mutex_unlock(&mu);
  if (cost > 0) burn_us(cost);
  if (hang > 0) sleep_ms(hang);
  pthread_mutex_lock(&mu);
  refresh_control();
  if (ctl.driver_unloaded) {
    pthread_mutex_unlock(&mu);
    return NVML_ERROR_DRIVER_NOT_LOADED;
  }
  if (need_init && (init_refs == 0 || client_gen != driver_gen)) {
    pthread_mutex_unlock(&mu);
    return NVML_ERROR_UNINITIALIZED;
  }
  return NVML_SUCCESS;
}

static nvmlReturn_t done(nvmlReturn_t r) {
  pthread_mutex_unlock(&mu);
  return r;
}

static long handle_slot(nvmlDevice_t dev) {
  uintptr_t p = (uintptr_t)dev, base = (uintptr_t)handles;
  if (p < base || p >= base + sizeof handles || (p - base) % sizeof handles[0] != 0) return -1;
  return (long)((p - base) / sizeof handles[0]);
}

/* A MIG device handle's place in mig_handles (board * MAX_MIG + slot), or -1. */
static long mig_handle_index(nvmlDevice_t dev) {
  uintptr_t p = (uintptr_t)dev, base = (uintptr_t)mig_handles;
  if (p < base || p >= base + sizeof mig_handles || (p - base) % sizeof mig_handles[0] != 0) return -1;
  return (long)((p - base) / sizeof mig_handles[0]);
}

/* A device call: on NVML_SUCCESS holds mu and fills *g and *r (the GPU's reading now). A
 * GPU in an error phase answers that error unless `static_ok`. A MIG device handle answers
 * NOT_SUPPORTED: the calls that take one say so (enter_mig). */
static nvmlReturn_t enter_device(enum stub_fn fn, nvmlDevice_t dev, int static_ok, const struct gpu **g, struct reading *r, long long *t_us) {
  long slot = handle_slot(dev);
  long mig = slot < 0 ? mig_handle_index(dev) : -1;
  nvmlReturn_t rc = enter(fn, mig >= 0 ? mig / MAX_MIG : slot, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (mig >= 0) return done((unsigned long)(mig / MAX_MIG) < tbl.ngpus ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT);
  if (slot < 0 || (unsigned long)slot >= tbl.ngpus) return done(NVML_ERROR_INVALID_ARGUMENT);
  *g = &tbl.gpus[slot];
  long long us = now_us();
  if (t_us) *t_us = us;
  reading_at(*g, ms_of_us(us), r);
  if (!static_ok && r->error != NVML_SUCCESS) return done(r->error);
  return NVML_SUCCESS;
}

/* What a MIG instance shows at an instant. */
struct mig_now {
  const struct gpu *g;
  const struct mig *m;
  unsigned board;
  const struct phase *ph;
  long long generation;
};

/* A call on a MIG device handle: on NVML_SUCCESS holds mu and fills *out. NOT_FOUND while
 * the handle's instance does not exist (an empty slot, a destroyed instance); an instance
 * in an error phase answers that error unless `static_ok` (its identity stays readable). */
static nvmlReturn_t enter_mig(enum stub_fn fn, nvmlDevice_t dev, int static_ok, struct mig_now *out) {
  long idx = mig_handle_index(dev);
  nvmlReturn_t rc = enter(fn, idx >= 0 ? idx / MAX_MIG : -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (idx < 0 || (unsigned long)(idx / MAX_MIG) >= tbl.ngpus) return done(NVML_ERROR_INVALID_ARGUMENT);
  out->board = (unsigned)(idx / MAX_MIG);
  out->g = &tbl.gpus[out->board];
  out->m = out->g->mig_mode ? mig_in_slot(out->g, (unsigned)(idx % MAX_MIG)) : NULL;
  if (out->m == NULL) return done(NVML_ERROR_NOT_FOUND);
  out->ph = mig_phase_at(out->m, ms_of_us(now_us()), &out->generation);
  if (out->ph->absent) return done(NVML_ERROR_NOT_FOUND);
  if (!static_ok && out->ph->error != NVML_SUCCESS) return done(out->ph->error);
  return NVML_SUCCESS;
}

/* ---- exported: library --------------------------------------------------------------------- */

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
  switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt request issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires reset";
    case NVML_ERROR_OPERATING_SYSTEM: return "GPU access blocked by the operating system";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "Driver/library version mismatch";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: return "ECC is not supported on vGPU";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient resources";
    case NVML_ERROR_FREQ_NOT_SUPPORTED: return "Frequency not supported";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Deprecated";
    case NVML_ERROR_NOT_READY: return "Not ready";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    case NVML_ERROR_INVALID_STATE: return "Invalid state";
    default: return "Unknown Error";
  }
}

/* Not NVML: how many times `function` was called since the library was loaded; -1 for a
 * function the stub does not export. For tests of a client's call cadence. */
EXPORT long long trueidle_stub_calls(const char *function) {
  if (function == NULL) return -1;
  for (unsigned i = 0; i < FN_COUNT; i++) {
    if (strcmp(FN_NAMES[i], function) == 0) {
      pthread_mutex_lock(&mu);
      long long n = (long long)calls[i];
      pthread_mutex_unlock(&mu);
      return n;
    }
  }
  return -1;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) {
  nvmlReturn_t rc = enter(FN_nvmlInit_v2, -1, 0);
  if (rc != NVML_SUCCESS) return rc;
  if (init_refs == 0) {
    struct table fresh;
    if (!load_table(&fresh)) return done(NVML_ERROR_UNKNOWN);
    free_table(&tbl);
    tbl = fresh;
    memcpy(cost_us, tbl.cost_us, sizeof cost_us);
    if (spins_per_us == 0) calibrate_spin();
    for (unsigned i = 0; i < MAX_GPUS; i++) handles[i].index = i;
    client_gen = driver_gen;
  }
  /* An init in a stale generation counts but leaves the client stale: after a driver
   * reload only nvmlShutdown ends the old state, as a client must shut down and init. */
  init_refs++;
  if (ctl.count_path != NULL) {
    FILE *f = fopen(ctl.count_path, "a");
    if (f != NULL) {
      fputs("init\n", f);
      fclose(f);
    }
  }
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
  nvmlReturn_t rc = enter(FN_nvmlShutdown, -1, 0);
  if (rc != NVML_SUCCESS) return rc;
  if (init_refs == 0) return done(NVML_ERROR_UNINITIALIZED);
  /* After a driver reload the library's state went with the old driver: one shutdown ends it. */
  if (client_gen != driver_gen) init_refs = 0;
  else init_refs--;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
  nvmlReturn_t rc = enter(FN_nvmlSystemGetDriverVersion, -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  return done(copy_string(version, length, tbl.driver));
}

EXPORT nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length) {
  nvmlReturn_t rc = enter(FN_nvmlSystemGetProcessName, -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (name == NULL || length == 0) return done(NVML_ERROR_INVALID_ARGUMENT);
  double t = ms_of_us(now_us());
  for (unsigned i = 0; i < tbl.ngpus; i++) {
    const struct gpu *g = &tbl.gpus[i];
    struct reading r;
    reading_at(g, t, &r);
    if (r.error == NVML_SUCCESS) {
      for (unsigned k = 0; k < r.ph->nprocs; k++) {
        if (r.ph->procs[k].pid == pid) return done(copy_string(name, length, r.ph->procs[k].name));
      }
    }
    for (unsigned j = 0; j < g->nmigs; j++) {
      long long generation;
      const struct phase *ph = mig_phase_at(&g->migs[j], t, &generation);
      if (ph->absent || ph->error != NVML_SUCCESS) continue;
      for (unsigned k = 0; k < ph->nprocs; k++) {
        if (ph->procs[k].pid == pid) return done(copy_string(name, length, ph->procs[k].name));
      }
    }
  }
  return done(NVML_ERROR_NOT_FOUND);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
  nvmlReturn_t rc = enter(FN_nvmlDeviceGetCount_v2, -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (deviceCount == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  *deviceCount = tbl.ngpus;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
  nvmlReturn_t rc = enter(FN_nvmlDeviceGetHandleByIndex_v2, index < MAX_GPUS ? (long)index : -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (device == NULL || index >= tbl.ngpus) return done(NVML_ERROR_INVALID_ARGUMENT);
  *device = &handles[index];
  return done(NVML_SUCCESS);
}

/* ---- exported: static device facts ------------------------------------------------------------ */

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetIndex, device, 1, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (index == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  *index = (unsigned)(g - tbl.gpus);
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
  if (mig_handle_index(device) >= 0) {
    struct mig_now mn;
    nvmlReturn_t rc = enter_mig(FN_nvmlDeviceGetUUID, device, 1, &mn);
    if (rc != NVML_SUCCESS) return rc;
    char u[MIG_UUID_LENGTH + 1];
    mig_uuid(mn.g, mn.m, mn.generation, u);
    return done(copy_string(uuid, length, u));
  }
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetUUID, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  return done(copy_string(uuid, length, g->uuid));
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
  if (mig_handle_index(device) >= 0) {
    struct mig_now mn;
    nvmlReturn_t rc = enter_mig(FN_nvmlDeviceGetName, device, 1, &mn);
    if (rc != NVML_SUCCESS) return rc;
    return done(copy_string(name, length, mn.m->name));
  }
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetName, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  return done(copy_string(name, length, g->name));
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetSerial, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  return done(copy_string(serial, length, g->serial));
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetPciInfo_v3, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (pci == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  memset(pci, 0, sizeof *pci);
  snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", g->pci_domain & 0xffffu, g->pci_bus & 0xffu,
           g->pci_device & 0xffu);
  pci->domain = g->pci_domain;
  pci->bus = g->pci_bus;
  pci->device = g->pci_device;
  pci->pciDeviceId = g->pci_device_id;
  /* An NVIDIA board's subsystem; nothing reads it. */
  pci->pciSubSystemId = 0x16C110DEu;
  snprintf(pci->busId, sizeof pci->busId, "%s", g->bus_id);
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetEnforcedPowerLimit, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (limit == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  *limit = to_unsigned(g->power_limit_w * 1000);
  return done(NVML_SUCCESS);
}

/* ---- exported: readings ------------------------------------------------------------------ */

/* The driver keeps some memory for itself: 512 MiB, less on a small board or instance. */
static void fill_memory(nvmlMemory_v2_t *memory, double total_mib, double used_mib) {
  unsigned long long total = to_ull(total_mib * MiB);
  unsigned long long reserved = total / 8 < 512ULL * 1024 * 1024 ? total / 8 : 512ULL * 1024 * 1024;
  unsigned long long used = to_ull(used_mib * MiB);
  memory->total = total;
  memory->reserved = reserved;
  memory->used = used;
  memory->free = total > reserved + used ? total - reserved - used : 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
  if (mig_handle_index(device) >= 0) {
    struct mig_now mn;
    nvmlReturn_t rc = enter_mig(FN_nvmlDeviceGetMemoryInfo_v2, device, 0, &mn);
    if (rc != NVML_SUCCESS) return rc;
    if (memory == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != nvmlMemory_v2) return done(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (!mn.ph->has_mem) return done(NVML_ERROR_NOT_SUPPORTED);
    fill_memory(memory, mn.m->mem_total_mib, mn.ph->mem_used_mib);
    return done(NVML_SUCCESS);
  }
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetMemoryInfo_v2, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (memory == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (memory->version != nvmlMemory_v2) return done(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
  if (!r.has_mem) return done(NVML_ERROR_NOT_SUPPORTED);
  fill_memory(memory, g->mem_total_mib, r.mem_used_mib);
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetUtilizationRates, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (utilization == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  /* In MIG mode no utilization, of the board or of an instance. */
  if (!r.has_util || g->mig_mode) return done(NVML_ERROR_NOT_SUPPORTED);
  utilization->gpu = to_unsigned(r.util);
  /* What the fake nvidia-smi prints for utilization.memory. */
  utilization->memory = to_unsigned(r.util * 0.6);
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetSamples(nvmlDevice_t device, int type, unsigned long long lastSeenTimeStamp,
                                         int *sampleValType, unsigned int *sampleCount, nvmlSample_t *samples) {
  const struct gpu *g;
  struct reading r;
  long long us;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetSamples, device, 0, &g, &r, &us);
  if (rc != NVML_SUCCESS) return rc;
  if (sampleValType == NULL || sampleCount == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (type != NVML_GPU_UTILIZATION_SAMPLES || !r.has_util || g->mig_mode) return done(NVML_ERROR_NOT_SUPPORTED);
  /* Samples are taken at every multiple of the period since the epoch; the driver keeps the
   * last SAMPLE_RING of them. */
  unsigned long long last = (unsigned long long)us / SAMPLE_PERIOD_US;
  unsigned long long first = last >= SAMPLE_RING - 1 ? last - (SAMPLE_RING - 1) : 0;
  unsigned long long after_seen = lastSeenTimeStamp / SAMPLE_PERIOD_US + 1;
  if (after_seen > first) first = after_seen;
  nvmlSample_t found[SAMPLE_RING];
  unsigned n = 0;
  for (unsigned long long k = first; k <= last && n < SAMPLE_RING; k++) {
    unsigned long long ts = k * SAMPLE_PERIOD_US;
    struct reading at;
    reading_at(g, ms_of_us((long long)ts), &at);
    if (at.error != NVML_SUCCESS || !at.has_util) continue;
    found[n].timeStamp = ts;
    found[n].sampleValue.ullVal = 0;
    found[n].sampleValue.uiVal = to_unsigned(at.util);
    n++;
  }
  *sampleValType = NVML_VALUE_TYPE_UNSIGNED_INT;
  if (n == 0) return done(NVML_ERROR_NOT_FOUND);
  if (samples == NULL) {
    *sampleCount = n;
    return done(NVML_SUCCESS);
  }
  if (*sampleCount == 0) return done(NVML_ERROR_INVALID_ARGUMENT);
  /* The oldest first, so a short buffer loses nothing the next call cannot fetch. */
  unsigned m = *sampleCount < n ? *sampleCount : n;
  memcpy(samples, found, m * sizeof *samples);
  *sampleCount = m;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetPowerUsage, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (power == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (!r.has_power) return done(NVML_ERROR_NOT_SUPPORTED);
  *power = to_unsigned(r.power_w * 1000);
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetClockInfo, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (clock == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  int busy = r.has_util && r.util > 0;
  switch (type) {
    case NVML_CLOCK_GRAPHICS:
    case NVML_CLOCK_SM: *clock = busy ? 1980 : 345; break;
    case NVML_CLOCK_MEM: *clock = 2619; break;
    case NVML_CLOCK_VIDEO: *clock = busy ? 1755 : 765; break;
    default: return done(NVML_ERROR_INVALID_ARGUMENT);
  }
  return done(NVML_SUCCESS);
}

/* gpu_idle exactly when the fake nvidia-smi prints "Active" for clocks_event_reasons.gpu_idle. */
static nvmlReturn_t clocks_reasons(enum stub_fn fn, nvmlDevice_t device, unsigned long long *reasons) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(fn, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (reasons == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (!r.has_util) return done(NVML_ERROR_NOT_SUPPORTED);
  *reasons = r.util == 0 ? nvmlClocksEventReasonGpuIdle : 0;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
  return clocks_reasons(FN_nvmlDeviceGetCurrentClocksEventReasons, device, reasons);
}

/* The name before driver 535; same meaning. */
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons) {
  return clocks_reasons(FN_nvmlDeviceGetCurrentClocksThrottleReasons, device, reasons);
}

static nvmlReturn_t media_util(enum stub_fn fn, nvmlDevice_t device, int decoder, unsigned int *utilization, unsigned int *samplingPeriodUs) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(fn, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (utilization == NULL || samplingPeriodUs == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (!r.has_media) return done(NVML_ERROR_NOT_SUPPORTED);
  /* The reading's `media` is the busiest engine: the decoder's here. */
  *utilization = decoder ? to_unsigned(r.media) : 0;
  *samplingPeriodUs = (unsigned)SAMPLE_PERIOD_US;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t device, unsigned int *utilization, unsigned int *samplingPeriodUs) {
  return media_util(FN_nvmlDeviceGetEncoderUtilization, device, 0, utilization, samplingPeriodUs);
}

EXPORT nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t device, unsigned int *utilization, unsigned int *samplingPeriodUs) {
  return media_util(FN_nvmlDeviceGetDecoderUtilization, device, 1, utilization, samplingPeriodUs);
}

/* ---- exported: processes ------------------------------------------------------------------ */

/* One instance's processes, or a board's (mig NULL), into infos[at...]; returns how many. */
static unsigned put_processes(const struct phase *ph, const struct mig *m, nvmlProcessInfo_t *infos, unsigned at) {
  for (unsigned k = 0; k < ph->nprocs; k++) {
    const struct proc *pr = &ph->procs[k];
    nvmlProcessInfo_t *info = &infos[at + k];
    memset(info, 0, sizeof *info);
    info->pid = pr->pid;
    info->usedGpuMemory = pr->has_used ? pr->used_bytes : NVML_VALUE_NOT_AVAILABLE;
    info->gpuInstanceId = m ? m->gi : NVML_INSTANCE_NONE;
    info->computeInstanceId = m ? m->ci : NVML_INSTANCE_NONE;
  }
  return ph->nprocs;
}

/* NVML's size protocol over a list of `n` processes: INSUFFICIENT_SIZE with the count needed,
 * or SUCCESS with *infoCount = n for the caller to fill them in. */
static nvmlReturn_t size_processes(unsigned n, unsigned int *infoCount, nvmlProcessInfo_t *infos) {
  if (n == 0) {
    *infoCount = 0;
    return NVML_SUCCESS;
  }
  if (infos == NULL || *infoCount < n) {
    *infoCount = n;
    return NVML_ERROR_INSUFFICIENT_SIZE;
  }
  *infoCount = n;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_t *infos) {
  if (mig_handle_index(device) >= 0) {
    struct mig_now mn;
    nvmlReturn_t rc = enter_mig(FN_nvmlDeviceGetComputeRunningProcesses_v3, device, 0, &mn);
    if (rc != NVML_SUCCESS) return rc;
    if (infoCount == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
    rc = size_processes(mn.ph->nprocs, infoCount, infos);
    if (rc == NVML_SUCCESS && mn.ph->nprocs > 0) put_processes(mn.ph, mn.m, infos, 0);
    return done(rc);
  }
  const struct gpu *g;
  struct reading r;
  long long us;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetComputeRunningProcesses_v3, device, 0, &g, &r, &us);
  if (rc != NVML_SUCCESS) return rc;
  if (infoCount == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (!g->mig_mode) {
    rc = size_processes(r.ph->nprocs, infoCount, infos);
    if (rc == NVML_SUCCESS && r.ph->nprocs > 0) put_processes(r.ph, NULL, infos, 0);
    return done(rc);
  }
  /* A board in MIG mode: every instance's processes, each with its instance's ids. */
  const struct phase *phs[MAX_MIG];
  unsigned n = 0;
  for (unsigned j = 0; j < g->nmigs; j++) {
    long long generation;
    phs[j] = mig_phase_at(&g->migs[j], ms_of_us(us), &generation);
    if (phs[j]->absent || phs[j]->error != NVML_SUCCESS) phs[j] = NULL;
    else n += phs[j]->nprocs;
  }
  rc = size_processes(n, infoCount, infos);
  if (rc == NVML_SUCCESS && n > 0) {
    unsigned at = 0;
    for (unsigned j = 0; j < g->nmigs; j++) {
      if (phs[j] != NULL) at += put_processes(phs[j], &g->migs[j], infos, at);
    }
  }
  return done(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *utilization,
                                                    unsigned int *processSamplesCount, unsigned long long lastSeenTimeStamp) {
  const struct gpu *g;
  struct reading r;
  long long us;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetProcessUtilization, device, 0, &g, &r, &us);
  if (rc != NVML_SUCCESS) return rc;
  if (processSamplesCount == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (g->mig_mode) return done(NVML_ERROR_NOT_SUPPORTED);
  /* Every process with a known SM utilization has one sample, taken now. */
  unsigned n = 0;
  double sm;
  if ((unsigned long long)us > lastSeenTimeStamp) {
    for (unsigned k = 0; k < r.ph->nprocs; k++) n += (unsigned)proc_sm(&r.ph->procs[k], &r, &sm);
  }
  if (n == 0) return done(NVML_ERROR_NOT_FOUND);
  if (utilization == NULL || *processSamplesCount < n) {
    *processSamplesCount = n;
    return done(NVML_ERROR_INSUFFICIENT_SIZE);
  }
  unsigned i = 0;
  for (unsigned k = 0; k < r.ph->nprocs; k++) {
    const struct proc *pr = &r.ph->procs[k];
    if (!proc_sm(pr, &r, &sm)) continue;
    memset(&utilization[i], 0, sizeof utilization[i]);
    utilization[i].pid = pr->pid;
    utilization[i].timeStamp = (unsigned long long)us;
    utilization[i].smUtil = to_unsigned(sm);
    i++;
  }
  *processSamplesCount = n;
  return done(NVML_SUCCESS);
}

/* ---- exported: GPM ---------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t device, nvmlGpmSupport_t *gpmSupport) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlGpmQueryDeviceSupport, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (gpmSupport == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (gpmSupport->version != NVML_GPM_SUPPORT_VERSION) return done(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
  gpmSupport->isSupportedDevice = g->gpm ? 1 : 0;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *gpmSample) {
  nvmlReturn_t rc = enter(FN_nvmlGpmSampleAlloc, -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (gpmSample == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  struct nvmlGpmSample_st *s = calloc(1, sizeof *s);
  if (s == NULL) return done(NVML_ERROR_MEMORY);
  s->magic = SAMPLE_MAGIC;
  *gpmSample = s;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t gpmSample) {
  nvmlReturn_t rc = enter(FN_nvmlGpmSampleFree, -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (gpmSample == NULL || gpmSample->magic != SAMPLE_MAGIC) return done(NVML_ERROR_INVALID_ARGUMENT);
  gpmSample->magic = 0;
  free(gpmSample);
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t device, nvmlGpmSample_t gpmSample) {
  const struct gpu *g;
  struct reading r;
  long long us;
  nvmlReturn_t rc = enter_device(FN_nvmlGpmSampleGet, device, 0, &g, &r, &us);
  if (rc != NVML_SUCCESS) return rc;
  if (gpmSample == NULL || gpmSample->magic != SAMPLE_MAGIC) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (!g->gpm) return done(NVML_ERROR_NOT_SUPPORTED);
  gpmSample->gpu = (unsigned)(g - tbl.gpus);
  gpmSample->time_us = us;
  gpmSample->taken = 1;
  gpmSample->mig = 0;
  return done(NVML_SUCCESS);
}

/* The first instance with GPU instance id `gi` present at `time_ms`, with its phase and generation. */
static const struct mig *mig_of_gi(const struct gpu *g, unsigned gi, double time_ms, const struct phase **ph, long long *generation) {
  for (unsigned j = 0; j < g->nmigs; j++) {
    if (g->migs[j].gi != gi) continue;
    *ph = mig_phase_at(&g->migs[j], time_ms, generation);
    if (!(*ph)->absent) return &g->migs[j];
  }
  return NULL;
}

EXPORT nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t device, unsigned int gpuInstanceId, nvmlGpmSample_t gpmSample) {
  const struct gpu *g;
  struct reading r;
  long long us;
  /* The board's own phases say nothing of its instances. */
  nvmlReturn_t rc = enter_device(FN_nvmlGpmMigSampleGet, device, 1, &g, &r, &us);
  if (rc != NVML_SUCCESS) return rc;
  if (gpmSample == NULL || gpmSample->magic != SAMPLE_MAGIC) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (!g->mig_mode || !g->gpm) return done(NVML_ERROR_NOT_SUPPORTED);
  const struct phase *ph;
  long long generation;
  if (mig_of_gi(g, gpuInstanceId, ms_of_us(us), &ph, &generation) == NULL) return done(NVML_ERROR_NOT_FOUND);
  if (ph->error != NVML_SUCCESS) return done(ph->error);
  gpmSample->gpu = (unsigned)(g - tbl.gpus);
  gpmSample->time_us = us;
  gpmSample->taken = 1;
  gpmSample->mig = 1;
  gpmSample->gi = gpuInstanceId;
  gpmSample->generation = generation;
  return done(NVML_SUCCESS);
}

/* SM activity (0–1) GPM sees at `time_ms`: the board's, or the GPU instance's (`mig`; the
 * mean of its compute instances present then). */
static double sm_at(const struct gpu *g, int mig, unsigned gi, double time_ms) {
  if (!mig) {
    const struct phase *p = phase_at(g, time_ms);
    return p->error == NVML_SUCCESS ? p->gpm_sm : 0;
  }
  double sum = 0;
  unsigned n = 0;
  for (unsigned j = 0; j < g->nmigs; j++) {
    if (g->migs[j].gi != gi) continue;
    long long generation;
    const struct phase *p = mig_phase_at(&g->migs[j], time_ms, &generation);
    if (p->absent) continue;
    sum += p->error == NVML_SUCCESS ? p->gpm_sm : 0;
    n++;
  }
  return n > 0 ? sum / n : 0;
}

/* Mean SM activity (0–1) of a GPU or GPU instance over [t1, t2], integrated in steps of about 100 ms. */
static double mean_sm(const struct gpu *g, int mig, unsigned gi, long long t1, long long t2) {
  long long span = t2 - t1;
  long long steps = (span + 99999) / 100000;
  if (steps < 1) steps = 1;
  double sum = 0;
  for (long long k = 0; k < steps; k++) {
    long long t = t1 + (long long)(((double)k + 0.5) * (double)span / (double)steps);
    sum += sm_at(g, mig, gi, ms_of_us(t));
  }
  return sum / (double)steps;
}

EXPORT nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *metricsGet) {
  long hint = -1;
  pthread_mutex_lock(&mu);
  if (metricsGet != NULL && metricsGet->sample1 != NULL && metricsGet->sample1->magic == SAMPLE_MAGIC) {
    hint = (long)metricsGet->sample1->gpu;
  }
  pthread_mutex_unlock(&mu);
  nvmlReturn_t rc = enter(FN_nvmlGpmMetricsGet, hint, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (metricsGet == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (metricsGet->version != NVML_GPM_METRICS_GET_VERSION) return done(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
  if (metricsGet->numMetrics > GPM_METRICS_LIMIT) return done(NVML_ERROR_INVALID_ARGUMENT);
  const struct nvmlGpmSample_st *s1 = metricsGet->sample1, *s2 = metricsGet->sample2;
  if (s1 == NULL || s2 == NULL || s1->magic != SAMPLE_MAGIC || s2->magic != SAMPLE_MAGIC || !s1->taken || !s2->taken) {
    return done(NVML_ERROR_INVALID_ARGUMENT);
  }
  /* Two samples of one GPU, the second at least the documented 100 ms after the first. */
  if (s1->gpu != s2->gpu || s1->gpu >= tbl.ngpus) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (s2->time_us - s1->time_us < GPM_MIN_INTERVAL_US) return done(NVML_ERROR_INVALID_ARGUMENT);
  /* Of one GPU instance, and of one instance of it: never across a re-created one. */
  if (s1->mig != s2->mig || (s1->mig && (s1->gi != s2->gi || s1->generation != s2->generation)))
    return done(NVML_ERROR_INVALID_ARGUMENT);
  double sm_util = 100 * mean_sm(&tbl.gpus[s1->gpu], s1->mig, s1->gi, s1->time_us, s2->time_us);
  for (unsigned i = 0; i < metricsGet->numMetrics; i++) {
    nvmlGpmMetric_t *m = &metricsGet->metrics[i];
    m->nvmlReturn = NVML_SUCCESS;
    m->value = 0;
    m->metricInfo.shortName = m->metricInfo.longName = m->metricInfo.unit = NULL;
    switch (m->metricId) {
      case NVML_GPM_METRIC_SM_UTIL: m->value = sm_util; break;
      case NVML_GPM_METRIC_SM_OCCUPANCY: m->value = sm_util * 0.5; break;
      case NVML_GPM_METRIC_ANY_TENSOR_UTIL: m->value = sm_util * 0.6; break;
      case NVML_GPM_METRIC_DRAM_BW_UTIL: m->value = sm_util * 0.4; break;
      default: m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED; break;
    }
    if (m->nvmlReturn == NVML_SUCCESS) m->metricInfo.unit = (char *)"%";
  }
  return done(NVML_SUCCESS);
}

/* ---- exported: MIG ---------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetMigMode, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (currentMode == NULL || pendingMode == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  *currentMode = *pendingMode = g->mig_mode ? NVML_DEVICE_MIG_ENABLE : NVML_DEVICE_MIG_DISABLE;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
  const struct gpu *g;
  struct reading r;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetMaxMigDeviceCount, device, 0, &g, &r, NULL);
  if (rc != NVML_SUCCESS) return rc;
  if (count == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  /* Zero where MIG is off. */
  *count = g->mig_mode ? MAX_MIG : 0;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, nvmlDevice_t *migDevice) {
  const struct gpu *g;
  struct reading r;
  long long us;
  nvmlReturn_t rc = enter_device(FN_nvmlDeviceGetMigDeviceHandleByIndex, device, 0, &g, &r, &us);
  if (rc != NVML_SUCCESS) return rc;
  if (migDevice == NULL || index >= MAX_MIG) return done(NVML_ERROR_INVALID_ARGUMENT);
  if (!g->mig_mode) return done(NVML_ERROR_NOT_SUPPORTED);
  const struct mig *m = mig_in_slot(g, index);
  long long generation;
  if (m == NULL || mig_phase_at(m, ms_of_us(us), &generation)->absent) return done(NVML_ERROR_NOT_FOUND);
  *migDevice = &mig_handles[(size_t)(g - tbl.gpus) * MAX_MIG + index];
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
  long mig = mig_handle_index(device);
  nvmlReturn_t rc = enter(FN_nvmlDeviceIsMigDeviceHandle, mig >= 0 ? mig / MAX_MIG : handle_slot(device), 1);
  if (rc != NVML_SUCCESS) return rc;
  if (isMigDevice == NULL || (mig < 0 && handle_slot(device) < 0)) return done(NVML_ERROR_INVALID_ARGUMENT);
  *isMigDevice = mig >= 0;
  return done(NVML_SUCCESS);
}

static nvmlReturn_t instance_id(enum stub_fn fn, nvmlDevice_t device, int compute, unsigned int *id) {
  if (mig_handle_index(device) < 0) {
    /* A board: not a MIG device. */
    const struct gpu *g;
    struct reading r;
    nvmlReturn_t rc = enter_device(fn, device, 1, &g, &r, NULL);
    return rc != NVML_SUCCESS ? rc : done(NVML_ERROR_NOT_SUPPORTED);
  }
  struct mig_now mn;
  nvmlReturn_t rc = enter_mig(fn, device, 1, &mn);
  if (rc != NVML_SUCCESS) return rc;
  if (id == NULL) return done(NVML_ERROR_INVALID_ARGUMENT);
  *id = compute ? mn.m->ci : mn.m->gi;
  return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
  return instance_id(FN_nvmlDeviceGetGpuInstanceId, device, 0, id);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
  return instance_id(FN_nvmlDeviceGetComputeInstanceId, device, 1, id);
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device) {
  long mig = mig_handle_index(migDevice);
  nvmlReturn_t rc = enter(FN_nvmlDeviceGetDeviceHandleFromMigDeviceHandle, mig >= 0 ? mig / MAX_MIG : -1, 1);
  if (rc != NVML_SUCCESS) return rc;
  if (mig < 0 || device == NULL || (unsigned long)(mig / MAX_MIG) >= tbl.ngpus) return done(NVML_ERROR_INVALID_ARGUMENT);
  *device = &handles[mig / MAX_MIG];
  return done(NVML_SUCCESS);
}
