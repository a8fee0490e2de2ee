import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  GpuState,
  HelloSchema,
  HolderSchema,
  OwnerSchema,
  OwnerSource,
  RealSource,
  type Hello,
  type Owner,
} from "../gen/trueidle/v1/ingest_pb.js";
import { T0, boardWindow, makeWindow, type LastInit, type WindowInit } from "./testdata/windows.js";
import { DEFAULT_WINDOW_LIMITS, validateHello, validateWindow, type RejectionReason } from "./validate.js";

const NOW = T0 + 10_000;

function hello(init: Partial<Hello> & { hostname?: string; labels?: Record<string, string> } = {}): Hello {
  return create(HelloSchema, {
    agentVersion: init.agentVersion ?? "0.1.0",
    source: init.source ?? "sim",
    windowMs: init.windowMs ?? 10_000,
    host: { hostname: init.hostname ?? "gpu-node-1", machineId: "abc", labels: init.labels ?? { site: "dc1" } },
  });
}

describe("validateHello", () => {
  it("accepts a normal hello and copies its facts", () => {
    const r = validateHello(hello());
    expect(r).toEqual({
      ok: true,
      hello: {
        agentVersion: "0.1.0",
        source: "sim",
        hostname: "gpu-node-1",
        machineId: "abc",
        labels: { site: "dc1" },
        windowMs: 10_000,
      },
    });
  });

  const bad: [string, Hello, RegExp][] = [
    ["no host", create(HelloSchema, { windowMs: 10_000 }), /^hello\.host is missing/],
    ["empty hostname", hello({ hostname: "" }), /^hello\.host\.hostname is empty/],
    ["hostname with a newline", hello({ hostname: "a\nb" }), /^hello\.host\.hostname holds control characters/],
    ["hostname too long", hello({ hostname: "h".repeat(256) }), /^hello\.host\.hostname is longer than 255/],
    [
      "label key with upper case",
      hello({ labels: { Site: "dc1" } }),
      /^hello\.host\.labels\["Site"\]: label key "Site" must match/,
    ],
    ["reserved label key", hello({ labels: { host: "x" } }), /^hello\.host\.labels\["host"\]: .*reserved/],
    ["label key with __", hello({ labels: { __x: "x" } }), /^hello\.host\.labels\["__x"\]/],
    [
      "empty label value",
      hello({ labels: { site: "" } }),
      /^hello\.host\.labels\["site"\]: label "site" has an empty value/,
    ],
    ["label value with a control character", hello({ labels: { site: "a\u0007" } }), /control characters/],
    [
      "too many labels",
      hello({ labels: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`l${i}`, "v"])) }),
      /^hello\.host\.labels holds 9 labels/,
    ],
    ["window_ms of 0", hello({ windowMs: 0 }), /^hello\.window_ms is 0; it must be between 1000 and 3600000/],
    ["window_ms of 2 hours", hello({ windowMs: 7_200_000 }), /^hello\.window_ms is 7200000/],
    ["agent_version too long", hello({ agentVersion: "v".repeat(65) }), /^hello\.agent_version is longer than 64/],
    [
      "machine_id too long",
      create(HelloSchema, { windowMs: 10_000, host: { hostname: "h", machineId: "m".repeat(129) } }),
      /^hello\.host\.machine_id is longer than 128/,
    ],
    ["source with a control character", hello({ source: "sim\r" }), /^hello\.source holds control characters/],
    [
      "label key with a dash",
      hello({ labels: { "rack-id": "r1" } }),
      /^hello\.host\.labels\["rack-id"\]: label key "rack-id" must match/,
    ],
    [
      "label value over 128 characters",
      hello({ labels: { site: "v".repeat(129) } }),
      /^hello\.host\.labels\["site"\]: label "site" value is longer than 128/,
    ],
  ];
  it.each(bad)("refuses %s, naming the field", (_name, h, message) => {
    const r = validateHello(h);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(message);
  });

  /** One character of each class common/text-safety.ts refuses, and how the message names it. */
  const UNSAFE: Array<[string, string, RegExp]> = [
    ["a C0 control", "\u0007", /holds control characters \(U\+0007\)$/],
    ["DEL", "\u007f", /holds control characters \(U\+007F\)$/],
    ["a C1 control", "\u0085", /holds control characters \(U\+0085\)$/],
    [
      "a right-to-left override",
      "\u202e",
      /holds a bidi control character \(U\+202E\); bidi control characters can make a name read differently from what it is$/,
    ],
    ["a left-to-right mark", "\u200e", /holds a bidi control character \(U\+200E\)/],
    ["an Arabic letter mark", "\u061c", /holds a bidi control character \(U\+061C\)/],
    ["a right-to-left isolate", "\u2067", /holds a bidi control character \(U\+2067\)/],
    ["a line separator", "\u2028", /holds a line or paragraph separator \(U\+2028\)/],
    ["a paragraph separator", "\u2029", /holds a line or paragraph separator \(U\+2029\)/],
  ];
  const withChar = (field: string, ch: string): Hello => {
    const h = hello();
    if (field === "hello.host.hostname") h.host!.hostname = `gpu-a01${ch}10a`;
    if (field === "hello.host.machine_id") h.host!.machineId = `abc${ch}`;
    if (field === "hello.agent_version") h.agentVersion = `0.1.0${ch}`;
    if (field === "hello.source") h.source = `sim${ch}`;
    if (field === 'hello.host.labels["site"]: label "site" value') h.host!.labels = { site: `dc1${ch}` };
    return h;
  };
  const fields = [
    "hello.host.hostname",
    "hello.host.machine_id",
    "hello.agent_version",
    "hello.source",
    'hello.host.labels["site"]: label "site" value',
  ];
  it.each(fields.flatMap((field) => UNSAFE.map(([name, ch, message]) => ({ field, name, ch, message }))))(
    "refuses $name in $field, naming the character",
    ({ field, ch, message }) => {
      const r = validateHello(withChar(field, ch));
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.message.startsWith(`${field} holds `)).toBe(true);
        expect(r.message).toMatch(message);
      }
    },
  );

  it.each([
    "host",
    "gpu",
    "uuid",
    "model",
    "driver",
    "state",
    "source",
    "reason",
    "namespace",
    "pod",
    "container",
    "job",
    "user",
    "held_by",
    "parent_uuid",
    "mig_profile",
    "instance",
    "le",
    "quantile",
    "alertname",
    "alertstate",
    "time",
    "_measurement",
    "_field",
    "_value",
  ])("refuses the reserved label key %s", (key) => {
    const r = validateHello(hello({ labels: { [key]: "x" } }));
    expect(r).toEqual({
      ok: false,
      message: expect.stringMatching(
        new RegExp(`^hello\\.host\\.labels\\["${key}"\\]: label key "${key}" is reserved: `),
      ),
    });
  });

  it("refuses label keys that Prometheus renames or reserves by prefix", () => {
    for (const key of ["exported_instance", "exported_site", "__name__"]) {
      const r = validateHello(hello({ labels: { [key]: "x" } }));
      expect(r.ok ? "" : r.message).toMatch(/may not start with (exported_|__)/);
    }
  });

  it("quotes a hostile label key with escapes in the message", () => {
    const r = validateHello(hello({ labels: { "a\u202eb\nc": "x" } }));
    expect(r.ok ? "" : r.message).toBe(
      'hello.host.labels["a\\u202eb\\u000ac"]: label key "a\\u202eb\\u000ac" must match ^[a-z_][a-z0-9_]{0,39}$ (lower-case letters, digits, _)',
    );
  });

  it("accepts names in any script, with quotes, symbols and joiners", () => {
    const r = validateHello(
      hello({
        hostname: "東京-gpu-01.例え.jp",
        labels: { site: 'a\\b"c}{e=",é✓ 🚀 👩‍💻', le_bucket: "x", exported: "y" },
      }),
    );
    expect(r.ok).toBe(true);
  });
});

describe("validateWindow", () => {
  it("accepts the reference window and windows at the edges of the limits", () => {
    expect(validateWindow(makeWindow(), 0, DEFAULT_WINDOW_LIMITS, NOW)).toBeUndefined();
    expect(
      validateWindow(makeWindow({ startMs: BigInt(NOW + 5 * 60_000) }), 0, DEFAULT_WINDOW_LIMITS, NOW),
    ).toBeUndefined();
    expect(
      validateWindow(makeWindow({ startMs: BigInt(NOW - 7 * 86_400_000) }), 0, DEFAULT_WINDOW_LIMITS, NOW),
    ).toBeUndefined();
    // 5% slack over the window length, and sums within 1% of observed.
    expect(
      validateWindow(
        makeWindow({ observedS: 10.5, freeIdleS: 10.5, reportedIdleS: 10.5 }),
        0,
        DEFAULT_WINDOW_LIMITS,
        NOW,
      ),
    ).toBeUndefined();
    expect(validateWindow(makeWindow({ freeIdleS: 9.95 }), 0, DEFAULT_WINDOW_LIMITS, NOW)).toBeUndefined();
    // Missing optional signals are fine.
    expect(
      validateWindow(
        makeWindow(
          { powerMeanW: undefined, powerMaxW: undefined, powerFloorW: undefined, memUsedMaxBytes: undefined },
          { utilPercent: undefined, powerW: undefined, memUsedBytes: undefined },
        ),
        0,
        DEFAULT_WINDOW_LIMITS,
        NOW,
      ),
    ).toBeUndefined();
  });

  it("accepts a MIG instance: its MIG uuid, its board's uuid and a profile as NVIDIA names them", () => {
    for (const migProfile of ["1g.10gb", "3g.40gb", "1g.10gb+me", "1c.3g.40gb", "7g.80gb"])
      expect(
        validateWindow(
          makeWindow({ uuid: "MIG-8b5a9a5e-0000-0000-0000-000000000001", parentUuid: "GPU-1", migProfile }),
          0,
          DEFAULT_WINDOW_LIMITS,
          NOW,
        ),
      ).toBeUndefined();
  });

  const cases: [string, WindowInit, LastInit, RejectionReason, string][] = [
    ["empty uuid", { uuid: "" }, {}, "bad_uuid", "uuid"],
    ["MIG profile without the board's uuid", { migProfile: "1g.10gb" }, {}, "inconsistent", "parent_uuid"],
    [
      "MIG instance whose board is itself",
      { parentUuid: "GPU-1", uuid: "GPU-1", migProfile: "1g.10gb" },
      {},
      "bad_uuid",
      "parent_uuid",
    ],
    ["MIG board uuid with a newline", { parentUuid: "GPU-1\n", migProfile: "1g.10gb" }, {}, "bad_uuid", "parent_uuid"],
    ["MIG instance without a profile", { parentUuid: "GPU-9" }, {}, "bad_string", "mig_profile"],
    ["MIG profile with a space", { parentUuid: "GPU-9", migProfile: "3g 40gb" }, {}, "bad_string", "mig_profile"],
    [
      "MIG profile over 48 characters",
      { parentUuid: "GPU-9", migProfile: "g".repeat(49) },
      {},
      "bad_string",
      "mig_profile",
    ],
    ["uuid over 128 characters", { uuid: "G".repeat(129) }, {}, "bad_uuid", "uuid"],
    ["uuid with a newline", { uuid: "GPU-1\n" }, {}, "bad_uuid", "uuid"],
    ["model over 256 characters", { model: "m".repeat(257) }, {}, "bad_string", "model"],
    ["driver with a control character", { driverVersion: "550\u0000" }, {}, "bad_string", "driver_version"],
    ["uuid with a C1 control", { uuid: "GPU-1\u0085" }, {}, "bad_uuid", "uuid"],
    ["uuid with a right-to-left override", { uuid: "GPU-\u202e1111" }, {}, "bad_uuid", "uuid"],
    ["uuid with a line separator", { uuid: "GPU-1\u2028" }, {}, "bad_uuid", "uuid"],
    ["model with a bidi isolate", { model: "NVIDIA \u2066H100\u2069" }, {}, "bad_string", "model"],
    ["model with a right-to-left mark", { model: "NVIDIA H100\u200f" }, {}, "bad_string", "model"],
    ["model with a C1 control", { model: "NVIDIA\u009bH100" }, {}, "bad_string", "model"],
    ["driver with an Arabic letter mark", { driverVersion: "550\u061c.54" }, {}, "bad_string", "driver_version"],
    ["driver with a paragraph separator", { driverVersion: "550\u2029" }, {}, "bad_string", "driver_version"],
    ["driver with DEL", { driverVersion: "550\u007f" }, {}, "bad_string", "driver_version"],
    ["huge GPU index", { index: 70_000 }, {}, "bad_number", "index"],
    ["duration of 999 ms", { durationMs: 999 }, {}, "bad_duration", "duration_ms"],
    ["duration over an hour", { durationMs: 3_600_001 }, {}, "bad_duration", "duration_ms"],
    ["start too far ahead", { startMs: BigInt(NOW + 5 * 60_000 + 1) }, {}, "in_future", "start_ms"],
    ["start older than 7 days", { startMs: BigInt(NOW - 7 * 86_400_000 - 1) }, {}, "too_old", "start_ms"],
    ["negative start", { startMs: -1n }, {}, "too_old", "start_ms"],
    ["NaN observed", { observedS: Number.NaN }, {}, "bad_number", "observed_s"],
    ["observed beyond the window", { observedS: 10.6, freeIdleS: 10.6 }, {}, "exceeds_duration", "observed_s"],
    ["negative state seconds", { freeIdleS: -1, heldIdleS: 11 }, {}, "bad_number", "free_idle_s"],
    ["infinite active seconds", { activeS: Number.POSITIVE_INFINITY }, {}, "bad_number", "active_s"],
    ["state beyond the window", { observedS: 10, freeIdleS: 0, heldIdleS: 11 }, {}, "exceeds_duration", "held_idle_s"],
    ["states not summing to observed", { freeIdleS: 5 }, {}, "inconsistent", "observed_s"],
    [
      "reported idle above observed",
      { observedS: 5, freeIdleS: 5, reportedIdleS: 6 },
      {},
      "inconsistent",
      "reported_idle_s",
    ],
    ["negative real busy", { realBusyS: -0.1 }, {}, "bad_number", "real_busy_s"],
    ["NaN power", { powerMeanW: Number.NaN }, {}, "bad_number", "power_mean_w"],
    ["negative power limit", { powerLimitW: -5 }, {}, "bad_number", "power_limit_w"],
    ["memory beyond 2^53", { memUsedMaxBytes: 2n ** 60n }, {}, "bad_number", "mem_used_max_bytes"],
    [
      "too many holders",
      { topHolders: Array.from({ length: 65 }, (_, i) => create(HolderSchema, { pid: i, name: "p" })) },
      {},
      "too_large",
      "top_holders",
    ],
    [
      "holder name too long",
      { topHolders: [create(HolderSchema, { pid: 1, name: "p".repeat(257) })] },
      {},
      "bad_string",
      "top_holders[0].name",
    ],
    ["unspecified state", {}, { state: GpuState.UNSPECIFIED }, "bad_enum", "last.state"],
    ["unknown state", {}, { state: 42 as GpuState }, "bad_enum", "last.state"],
    ["unspecified real source", {}, { realSource: RealSource.UNSPECIFIED }, "bad_enum", "last.real_source"],
    ["real above 1", {}, { real: 1.5 }, "bad_number", "last.real"],
    ["util above 100", {}, { utilPercent: 101 }, "bad_number", "last.util_percent"],
    ["NaN last power", {}, { powerW: Number.NaN }, "bad_number", "last.power_w"],
    ["negative idle streak", {}, { idleStreakS: -1 }, "bad_number", "last.idle_streak_s"],
    ["error text too long", {}, { error: "e".repeat(1025) }, "bad_string", "last.error"],
    // Absurd numbers: beyond any GPU (MAX_POWER_W, MAX_MEMORY_BYTES, MAX_PROCESSES, MAX_PID, MAX_IDLE_STREAK_S).
    ["mean power beyond 5 kW", { powerMeanW: 5_001 }, {}, "bad_number", "power_mean_w"],
    ["max power beyond 5 kW", { powerMaxW: 1e9 }, {}, "bad_number", "power_max_w"],
    ["infinite power floor", { powerFloorW: Number.POSITIVE_INFINITY }, {}, "bad_number", "power_floor_w"],
    ["power limit beyond 5 kW", { powerLimitW: 70_000 }, {}, "bad_number", "power_limit_w"],
    ["memory used beyond 16 TiB", { memUsedMaxBytes: 16n * 2n ** 40n + 1n }, {}, "bad_number", "mem_used_max_bytes"],
    ["memory total beyond 16 TiB", { memTotalBytes: 2n ** 63n }, {}, "bad_number", "mem_total_bytes"],
    ["absurd process count", { processesMax: 4_000_000_000 }, {}, "bad_number", "processes_max"],
    [
      "holder pid beyond PID_MAX_LIMIT",
      { topHolders: [create(HolderSchema, { pid: 4_194_305, name: "p" })] },
      {},
      "bad_number",
      "top_holders[0].pid",
    ],
    [
      "holder memory beyond 16 TiB",
      { topHolders: [create(HolderSchema, { pid: 1, name: "p", usedMemoryBytes: 2n ** 50n })] },
      {},
      "bad_number",
      "top_holders[0].used_memory_bytes",
    ],
    [
      "holder SM share above 1",
      {
        topHolders: [
          create(HolderSchema, { pid: 1, name: "p", smUtilRatio: 0.2 }),
          create(HolderSchema, { pid: 2, name: "q", smUtilRatio: 1.01 }),
        ],
      },
      {},
      "bad_number",
      "top_holders[1].sm_util_ratio",
    ],
    [
      "negative holder SM share",
      { topHolders: [create(HolderSchema, { pid: 1, name: "p", smUtilRatio: -0.01 })] },
      {},
      "bad_number",
      "top_holders[0].sm_util_ratio",
    ],
    [
      "NaN holder SM share",
      { topHolders: [create(HolderSchema, { pid: 1, name: "p", smUtilRatio: Number.NaN })] },
      {},
      "bad_number",
      "top_holders[0].sm_util_ratio",
    ],
    [
      "infinite holder SM share",
      { topHolders: [create(HolderSchema, { pid: 1, name: "p", smUtilRatio: Number.POSITIVE_INFINITY })] },
      {},
      "bad_number",
      "top_holders[0].sm_util_ratio",
    ],
    ["last reading before its window", {}, { timeMs: BigInt(T0 - 1) }, "inconsistent", "last.time_ms"],
    [
      "last reading after its window",
      { durationMs: 10_000 },
      { timeMs: BigInt(T0 + 10_000) },
      "inconsistent",
      "last.time_ms",
    ],
    ["last power beyond 5 kW", {}, { powerW: 9_999 }, "bad_number", "last.power_w"],
    ["last memory beyond 16 TiB", {}, { memUsedBytes: 2n ** 60n }, "bad_number", "last.mem_used_bytes"],
    [
      "more last processes than the window's max",
      { processesMax: 1 },
      { processes: 2 },
      "inconsistent",
      "last.processes",
    ],
    ["idle streak over ten years", {}, { idleStreakS: 400_000_000 }, "bad_number", "last.idle_streak_s"],
  ];
  it.each(cases)("refuses %s", (_name, init, last, reason, field) => {
    expect(validateWindow(makeWindow(init, last), 3, DEFAULT_WINDOW_LIMITS, NOW)).toEqual({
      index: 3,
      reason,
      field: `windows[3].${field}`,
    });
  });

  it("refuses a window without its last reading", () => {
    const w = makeWindow();
    w.last = undefined;
    expect(validateWindow(w, 0, DEFAULT_WINDOW_LIMITS, NOW)).toEqual({
      index: 0,
      reason: "missing_field",
      field: "windows[0].last",
    });
  });

  it("accepts numbers at the edges of the absurd-number bounds", () => {
    const edge = makeWindow(
      {
        powerMeanW: 5_000,
        powerMaxW: 5_000,
        powerFloorW: 0,
        powerLimitW: 5_000,
        memUsedMaxBytes: 16n * 2n ** 40n,
        memTotalBytes: 16n * 2n ** 40n,
        processesMax: 65_536,
        topHolders: [
          create(HolderSchema, {
            pid: 4_194_304,
            name: "p".repeat(256),
            usedMemoryBytes: 16n * 2n ** 40n,
            smUtilRatio: 1,
          }),
          create(HolderSchema, { pid: 1, name: "idle", smUtilRatio: 0 }),
        ],
      },
      {
        timeMs: BigInt(T0 + 9_999),
        powerW: 5_000,
        memUsedBytes: 16n * 2n ** 40n,
        processes: 65_536,
        idleStreakS: 10 * 365 * 86_400,
      },
    );
    expect(validateWindow(edge, 0, DEFAULT_WINDOW_LIMITS, NOW)).toBeUndefined();
    expect(validateWindow(makeWindow({}, { timeMs: BigInt(T0) }), 0, DEFAULT_WINDOW_LIMITS, NOW)).toBeUndefined();
  });

  it("uses the configured age and future limits", () => {
    const limits = { ...DEFAULT_WINDOW_LIMITS, maxAgeMs: 60_000, maxFutureMs: 0 };
    expect(validateWindow(makeWindow({ startMs: BigInt(NOW - 60_001) }), 0, limits, NOW)?.reason).toBe("too_old");
    expect(validateWindow(makeWindow({ startMs: BigInt(NOW + 1) }), 0, limits, NOW)?.reason).toBe("in_future");
    expect(validateWindow(makeWindow({ startMs: BigInt(NOW) }), 0, limits, NOW)).toBeUndefined();
  });
});

describe("validateWindow: held-by seconds and owners", () => {
  const NOW = T0 + 10_000;
  const check = (init: WindowInit, last: LastInit = {}): string | undefined => {
    const r = validateWindow(makeWindow(init, last), 0, DEFAULT_WINDOW_LIMITS, NOW);
    return r && `${r.reason} ${r.field}`;
  };
  const owner = (over: MessageInitShape<typeof OwnerSchema> = {}): Owner =>
    create(OwnerSchema, {
      via: OwnerSource.POD_RESOURCES,
      namespace: "ml",
      pod: "trainer-0",
      container: "main",
      observedS: 10,
      heldIdleS: 10,
      ...over,
    });
  const held = { freeIdleS: 0, heldIdleS: 10, heldByAllocationS: 10 };

  it("accepts a window held by an allocation, with its owner", () => {
    expect(check({ ...held, owners: [owner()] }, { state: GpuState.HELD_IDLE, heldBy: 4 })).toBeUndefined();
  });

  it("refuses held-by seconds beyond the window, owners beyond the cap, and owners no scheduler would send", () => {
    expect(check({ ...held, heldByAllocationS: 10.4 })).toBe("inconsistent windows[0].held_by_allocation_s");
    expect(check({ ...held, heldByAllocationS: 11 })).toBe("exceeds_duration windows[0].held_by_allocation_s");
    expect(check({ ...held, heldByProcessS: Number.NaN })).toBe("bad_number windows[0].held_by_process_s");
    expect(check({ ...held, owners: Array.from({ length: 9 }, () => owner()) })).toBe("too_large windows[0].owners");
    expect(check({ ...held, owners: [owner({ via: OwnerSource.UNSPECIFIED })] })).toBe(
      "bad_enum windows[0].owners[0].via",
    );
    expect(check({ ...held, owners: [owner({ pod: "p".repeat(257) })] })).toBe("bad_string windows[0].owners[0].pod");
    expect(check({ ...held, owners: [owner({ user: "root\u202e" })] })).toBe("bad_string windows[0].owners[0].user");
    expect(check({ ...held, owners: [owner({ heldIdleS: 4 })] })).toBe("inconsistent windows[0].owners[0].observed_s");
    expect(check({ ...held, owners: [owner({ observedS: 20, heldIdleS: 20 })] })).toBe(
      "exceeds_duration windows[0].owners[0].observed_s",
    );
    expect(check({ ...held, owners: [owner({ pid: 5_000_000 })] })).toBe("bad_number windows[0].owners[0].pid");
    expect(check(held, { heldBy: 8 })).toBe("bad_number windows[0].last.held_by");
  });
});

describe("validateWindow: the row of a board in MIG mode", () => {
  const check = (init: WindowInit = {}, last: LastInit = {}): string | undefined => {
    const r = validateWindow(boardWindow(init, last), 2, DEFAULT_WINDOW_LIMITS, NOW);
    return r && `${r.reason} ${r.field}`;
  };

  it("accepts a board's row: its seconds sampled and unreadable, its power, limit and memory total", () => {
    expect(check()).toBeUndefined();
    // Unreadable for part of the window, or all of it, with the error of its last reading.
    expect(check({ unavailableS: 4 })).toBeUndefined();
    expect(check({ unavailableS: 10 }, { state: GpuState.UNAVAILABLE, powerW: undefined, error: "GPU is lost" })).toBe(
      undefined,
    );
    // Sampled for part of the window only; power and memory not reported.
    expect(
      check({
        observedS: 6,
        unavailableS: 6,
        powerMeanW: undefined,
        powerMaxW: undefined,
        powerFloorW: undefined,
        powerLimitW: undefined,
        memTotalBytes: undefined,
      }),
    ).toBeUndefined();
  });

  const cases: [string, WindowInit, string][] = [
    ["with its board's uuid, as a MIG instance", { parentUuid: "GPU-1" }, "inconsistent windows[2].mig_board"],
    ["with a MIG profile", { migProfile: "1g.10gb" }, "inconsistent windows[2].mig_board"],
    [
      "with both, as a MIG instance has",
      { uuid: "MIG-1", parentUuid: "GPU-1", migProfile: "1g.10gb" },
      "inconsistent windows[2].mig_board",
    ],
    ["with free idle seconds", { freeIdleS: 10 }, "inconsistent windows[2].free_idle_s"],
    ["with held idle seconds", { heldIdleS: 0.5 }, "inconsistent windows[2].held_idle_s"],
    ["with busy phantom seconds", { busyPhantomS: 1 }, "inconsistent windows[2].busy_phantom_s"],
    ["with active seconds", { activeS: 10 }, "inconsistent windows[2].active_s"],
    ["with reported idle seconds", { reportedIdleS: 10 }, "inconsistent windows[2].reported_idle_s"],
    ["with reported busy seconds", { reportedBusyS: 2 }, "inconsistent windows[2].reported_busy_s"],
    ["with real busy seconds", { realBusyS: 0.001 }, "inconsistent windows[2].real_busy_s"],
    ["held by a process", { heldByProcessS: 10 }, "inconsistent windows[2].held_by_process_s"],
    ["held by memory", { heldByMemoryS: 10 }, "inconsistent windows[2].held_by_memory_s"],
    ["held by an allocation", { heldByAllocationS: 10 }, "inconsistent windows[2].held_by_allocation_s"],
    ["with processes", { processesMax: 1 }, "inconsistent windows[2].processes_max"],
    [
      "with holders",
      { topHolders: [create(HolderSchema, { pid: 1, name: "python" })] },
      "inconsistent windows[2].top_holders",
    ],
    [
      "with owners",
      { owners: [create(OwnerSchema, { via: OwnerSource.POD_RESOURCES, pod: "p", observedS: 10, freeIdleS: 10 })] },
      "inconsistent windows[2].owners",
    ],
    // The usual checks still apply.
    [
      "with more seconds unreadable than sampled",
      { observedS: 5, unavailableS: 6 },
      "inconsistent windows[2].unavailable_s",
    ],
    [
      "with unreadable seconds beyond the window",
      { observedS: 10, unavailableS: 11 },
      "exceeds_duration windows[2].unavailable_s",
    ],
    ["with negative unreadable seconds", { unavailableS: -1 }, "bad_number windows[2].unavailable_s"],
    ["with NaN observed seconds", { observedS: Number.NaN }, "bad_number windows[2].observed_s"],
    ["sampled beyond its window", { observedS: 11 }, "exceeds_duration windows[2].observed_s"],
    ["with NaN free idle seconds", { freeIdleS: Number.NaN }, "bad_number windows[2].free_idle_s"],
    ["with infinite real busy seconds", { realBusyS: Number.POSITIVE_INFINITY }, "bad_number windows[2].real_busy_s"],
    ["with a negative held-by time", { heldByMemoryS: -1 }, "bad_number windows[2].held_by_memory_s"],
    ["with NaN power", { powerMeanW: Number.NaN }, "bad_number windows[2].power_mean_w"],
    ["with a power limit beyond 5 kW", { powerLimitW: 5_001 }, "bad_number windows[2].power_limit_w"],
    ["with memory beyond 16 TiB", { memTotalBytes: 2n ** 60n }, "bad_number windows[2].mem_total_bytes"],
    ["of a duration under a second", { durationMs: 999 }, "bad_duration windows[2].duration_ms"],
    ["without a uuid", { uuid: "" }, "bad_uuid windows[2].uuid"],
    ["with a newline in its uuid", { uuid: "GPU-1\n" }, "bad_uuid windows[2].uuid"],
    ["with a bidi control in its model", { model: "NVIDIA \u202eA100" }, "bad_string windows[2].model"],
    ["starting too far ahead", { startMs: BigInt(NOW + 5 * 60_000 + 1) }, "in_future windows[2].start_ms"],
  ];
  it.each(cases)("refuses a board's row %s, naming the field", (_name, init, problem) => {
    expect(check(init)).toBe(problem);
  });

  it("checks its last reading as a GPU's", () => {
    expect(check({}, { processes: 1 })).toBe("inconsistent windows[2].last.processes");
    expect(check({}, { error: "e".repeat(1025) })).toBe("bad_string windows[2].last.error");
    expect(check({}, { timeMs: BigInt(T0 + 10_000) })).toBe("inconsistent windows[2].last.time_ms");
  });

  it("keeps the rule that a GPU's state seconds add up to its observed seconds", () => {
    // The same seconds without the flag are a GPU's, which must be in a state all along.
    const r = validateWindow(boardWindow({ migBoard: false }), 0, DEFAULT_WINDOW_LIMITS, NOW);
    expect(r && `${r.reason} ${r.field}`).toBe("inconsistent windows[0].observed_s");
  });
});
