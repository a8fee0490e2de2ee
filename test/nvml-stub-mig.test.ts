/**
 * The stub libnvidia-ml.so's MIG boards, called through koffi as the NVML source calls
 * them: at any instant a board in MIG mode shows the instances migReadingsOf shows for the
 * same scenario, under the same MIG uuids (migUuid and the count of re-creations, computed
 * in C bit for bit), with NVML's MIG calls and their return codes, and GPM per GPU instance
 * that never pairs samples across a re-created instance.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import koffi from "koffi";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migReadingsOf, migUuid, readingOf } from "../agent/sim/evaluate.js";
import type { Scenario } from "../agent/sim/scenario.js";
import type { GpuReading } from "../common/types.js";
import { eventually } from "./helpers/eventually.js";
import { STUB_CALL_COST_US, hasGpm, prepareNvmlStub, type NvmlStub } from "./helpers/nvml-stub.js";

const SUCCESS = 0,
  INVALID_ARGUMENT = 2,
  NOT_SUPPORTED = 3,
  NOT_FOUND = 6,
  INSUFFICIENT_SIZE = 7,
  GPU_IS_LOST = 15;
const MEMORY_V2 = 40 | (2 << 24);
const NONE = 0xffffffff;
const H100 = "NVIDIA H100 80GB HBM3";

const SCENARIO = {
  host: "stub-mig",
  gpus: [
    // 0: a MIG board, several profiles and the ways an instance can be.
    {
      model: H100,
      phases: [{ for: "1m", powerW: 190 }],
      mig: [
        // slot 0: busy, two processes.
        { profile: "3g.40gb", gi: 2, phases: [{ for: "1h", state: "active" }] },
        // slot 1: held and idle, an explicit process.
        {
          profile: "2g.20gb",
          gi: 3,
          ci: 1,
          phases: [
            { for: "1h", state: "held_idle", processes: [{ pid: 4242, name: "python3 serve.py", usedMiB: 5000 }] },
          ],
        },
        // slot 2: free.
        { profile: "1g.10gb", gi: 9, phases: [{ for: "1h", state: "free_idle" }] },
        // slot 3: destroyed and re-created every 1.2 s.
        {
          profile: "1g.10gb",
          gi: 10,
          phases: [
            { for: "800ms", state: "held_idle", smActive: 0.4 },
            { for: "400ms", absent: true },
          ],
        },
        // slot 4: lost.
        {
          profile: "1g.10gb+me",
          gi: 13,
          ci: 2,
          phases: [{ for: "1h", error: "GPU is lost" }],
        },
        // slot 5: destroyed three times a cycle since the epoch; unknown memory for a while.
        {
          profile: "1g.20gb",
          gi: 11,
          phases: [
            { for: "1s", absent: true },
            { for: "1s", state: "held_idle", memUsedMiB: null },
            { for: "1s", absent: true },
            { for: "6s", state: "active", smActive: 0.25 },
            { for: "1s", absent: true },
          ],
        },
      ],
    },
    // 1: a whole GPU beside it.
    { model: H100, gpm: true, phases: [{ for: "1h", state: "busy_phantom" }] },
    // 2: a MIG board without GPM, its uuid not ASCII (the uuid's hash works on UTF-16 code units).
    {
      model: "NVIDIA A100-SXM4-80GB",
      uuid: "GPU-é0000000-0000-0000-0000-000000000000",
      gpm: false,
      phases: [{ for: "1h" }],
      mig: [{ profile: "7g.80gb", gi: 0, phases: [{ for: "1h", state: "active" }] }],
    },
  ],
};

function bind(libPath: string) {
  const lib = koffi.load(libPath);
  return {
    init: lib.func("int nvmlInit_v2()"),
    shutdown: lib.func("int nvmlShutdown()"),
    processName: lib.func("int nvmlSystemGetProcessName(uint32_t pid, void *buf, uint32_t len)"),
    handle: lib.func("int nvmlDeviceGetHandleByIndex_v2(uint32_t index, _Out_ void **dev)"),
    uuid: lib.func("int nvmlDeviceGetUUID(void *dev, void *buf, uint32_t len)"),
    name: lib.func("int nvmlDeviceGetName(void *dev, void *buf, uint32_t len)"),
    index: lib.func("int nvmlDeviceGetIndex(void *dev, _Out_ uint32_t *index)"),
    memory: lib.func("int nvmlDeviceGetMemoryInfo_v2(void *dev, void *memory)"),
    utilization: lib.func("int nvmlDeviceGetUtilizationRates(void *dev, void *util)"),
    samples: lib.func(
      "int nvmlDeviceGetSamples(void *dev, int type, uint64_t lastSeen, _Out_ int *valType, _Inout_ uint32_t *count, void *samples)",
    ),
    power: lib.func("int nvmlDeviceGetPowerUsage(void *dev, _Out_ uint32_t *mw)"),
    processes: lib.func("int nvmlDeviceGetComputeRunningProcesses_v3(void *dev, _Inout_ uint32_t *count, void *infos)"),
    migMode: lib.func("int nvmlDeviceGetMigMode(void *dev, _Out_ uint32_t *current, _Out_ uint32_t *pending)"),
    maxMig: lib.func("int nvmlDeviceGetMaxMigDeviceCount(void *dev, _Out_ uint32_t *count)"),
    migHandle: lib.func("int nvmlDeviceGetMigDeviceHandleByIndex(void *dev, uint32_t index, _Out_ void **mig)"),
    isMig: lib.func("int nvmlDeviceIsMigDeviceHandle(void *dev, _Out_ uint32_t *isMig)"),
    gi: lib.func("int nvmlDeviceGetGpuInstanceId(void *dev, _Out_ uint32_t *id)"),
    ci: lib.func("int nvmlDeviceGetComputeInstanceId(void *dev, _Out_ uint32_t *id)"),
    parent: lib.func("int nvmlDeviceGetDeviceHandleFromMigDeviceHandle(void *mig, _Out_ void **dev)"),
    gpmSupport: lib.func("int nvmlGpmQueryDeviceSupport(void *dev, void *support)"),
    gpmAlloc: lib.func("int nvmlGpmSampleAlloc(_Out_ void **sample)"),
    gpmFree: lib.func("int nvmlGpmSampleFree(void *sample)"),
    gpmGet: lib.func("int nvmlGpmSampleGet(void *dev, void *sample)"),
    gpmMigGet: lib.func("int nvmlGpmMigSampleGet(void *dev, uint32_t gi, void *sample)"),
    gpmMetrics: lib.func("int nvmlGpmMetricsGet(void *metricsGet)"),
    calls: lib.func("int64_t trueidle_stub_calls(const char *fn)"),
  };
}
type Nvml = ReturnType<typeof bind>;
type Fn = Nvml["init"];

const cString = (buf: Buffer): string => buf.toString("utf8", 0, buf.indexOf(0) < 0 ? buf.length : buf.indexOf(0));
function str(fn: Fn, dev: unknown, len = 96): [number, string] {
  const buf = Buffer.alloc(len);
  const rc = fn(dev, buf, len) as number;
  return [rc, cString(buf)];
}
function u32(fn: Fn, ...args: unknown[]): [number, number] {
  const out = [0];
  const rc = fn(...args, out) as number;
  return [rc, out[0]!];
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What an instance shows through its handle. */
interface Seen {
  slot: number;
  uuid: string;
  name: string;
  gi: number;
  ci: number;
  memRc: number;
  memTotal: number;
  memUsed: number;
  procRc: number;
  processes: Array<{ pid: number; used: number; gi: number; ci: number }>;
}

describe("stub libnvidia-ml.so: MIG", () => {
  let dir: string;
  let stub: NvmlStub;
  let nvml: Nvml;
  let s: Scenario;
  const boards: unknown[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "trueidle-nvml-mig-"));
    stub = prepareNvmlStub(dir, SCENARIO);
    Object.assign(process.env, stub.env);
    nvml = bind(stub.libPath);
    s = stub.scenario;
    expect(nvml.init()).toBe(SUCCESS);
    for (let i = 0; i < SCENARIO.gpus.length; i++) {
      const out: unknown[] = [null];
      expect(nvml.handle(i, out)).toBe(SUCCESS);
      boards.push(out[0]);
    }
  });
  afterAll(() => {
    nvml.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  const migHandle = (board: number, slot: number): [number, unknown] => {
    const out: unknown[] = [null];
    const rc = nvml.migHandle(boards[board], slot, out) as number;
    return [rc, out[0]];
  };

  /** Every instance of a board through its handle, by slot; undefined for a slot NOT_FOUND. */
  function enumerate(board: number): Array<Seen | undefined> {
    const [, max] = u32(nvml.maxMig, boards[board]);
    const out: Array<Seen | undefined> = [];
    for (let slot = 0; slot < max; slot++) {
      const [rc, h] = migHandle(board, slot);
      if (rc === NOT_FOUND) {
        out.push(undefined);
        continue;
      }
      expect(rc).toBe(SUCCESS);
      const mem = Buffer.alloc(40);
      mem.writeUInt32LE(MEMORY_V2, 0);
      const memRc = nvml.memory(h, mem) as number;
      const count = [16];
      const infos = Buffer.alloc(24 * 16);
      const procRc = nvml.processes(h, count, infos) as number;
      out.push({
        slot,
        uuid: str(nvml.uuid, h)[1],
        name: str(nvml.name, h)[1],
        gi: u32(nvml.gi, h)[1],
        ci: u32(nvml.ci, h)[1],
        memRc,
        memTotal: Number(mem.readBigUInt64LE(8)),
        memUsed: Number(mem.readBigUInt64LE(32)),
        procRc,
        processes:
          procRc === SUCCESS
            ? Array.from({ length: count[0]! }, (_, k) => ({
                pid: infos.readUInt32LE(24 * k),
                used: Number(infos.readBigUInt64LE(24 * k + 8)),
                gi: infos.readUInt32LE(24 * k + 16),
                ci: infos.readUInt32LE(24 * k + 20),
              }))
            : [],
      });
    }
    return out;
  }

  /**
   * What the stub should show of a board's instances at `t`, by slot: migReadingsOf of the
   * board with that one instance, so each reading is known to be that slot's.
   */
  function expected(board: number, t: number): string {
    const g = s.gpus[board]!;
    return JSON.stringify(
      g.mig!.flatMap((inst, slot) =>
        migReadingsOf(s, { ...g, mig: [inst] }, t).map((r) =>
          toSeen(slot, inst.gpuInstanceId, inst.computeInstanceId, r),
        ),
      ),
    );
  }

  function toSeen(slot: number, gi: number, ci: number, r: GpuReading) {
    const lost = r.error !== undefined;
    return {
      slot,
      uuid: r.uuid,
      name: `${r.model} MIG ${r.migProfile}`,
      gi,
      ci,
      memRc: lost ? GPU_IS_LOST : r.memUsedBytes === undefined ? NOT_SUPPORTED : SUCCESS,
      memTotal: lost || r.memUsedBytes === undefined ? undefined : r.memTotalBytes,
      memUsed: lost ? undefined : r.memUsedBytes,
      procRc: lost ? GPU_IS_LOST : SUCCESS,
      processes: lost ? [] : r.processes!.map((p) => ({ pid: p.pid, used: p.usedMemoryBytes ?? 2 ** 64 - 1, gi, ci })),
    };
  }

  function seenJson(seen: Array<Seen | undefined>): string {
    return JSON.stringify(
      seen.flatMap((x) => {
        if (!x) return [];
        const ok = x.memRc === SUCCESS;
        return [{ ...x, memTotal: ok ? x.memTotal : undefined, memUsed: ok ? x.memUsed : undefined }];
      }),
    );
  }

  it("tells MIG boards and their mode, and gives no utilization on them", () => {
    expect(s.gpus.map(hasGpm)).toEqual([true, true, false]);
    const mode = (i: number): [number, number, number] => {
      const cur = [9],
        pend = [9];
      return [nvml.migMode(boards[i], cur, pend) as number, cur[0]!, pend[0]!];
    };
    expect([0, 1, 2].map(mode)).toEqual([
      [SUCCESS, 1, 1],
      [SUCCESS, 0, 0],
      [SUCCESS, 1, 1],
    ]);
    expect([0, 1, 2].map((i) => u32(nvml.maxMig, boards[i]))).toEqual([
      [SUCCESS, 7],
      [SUCCESS, 0],
      [SUCCESS, 7],
    ]);
    expect(nvml.utilization(boards[0], Buffer.alloc(8))).toBe(NOT_SUPPORTED);
    expect(nvml.samples(boards[0], 1, 0, [0], [8], Buffer.alloc(16 * 8))).toBe(NOT_SUPPORTED);
    expect(nvml.utilization(boards[1], Buffer.alloc(8))).toBe(SUCCESS);
    // The board itself still reads its own power.
    expect(u32(nvml.power, boards[0])).toEqual([SUCCESS, 190_000]);
    // Slots: an empty one and one past the board's are not instances; a whole GPU has none.
    expect(migHandle(0, 6)[0]).toBe(NOT_FOUND);
    expect(migHandle(0, 7)[0]).toBe(INVALID_ARGUMENT);
    expect(migHandle(1, 0)[0]).toBe(NOT_SUPPORTED);
    expect(migHandle(2, 1)[0]).toBe(NOT_FOUND);
  });

  it("gives instance handles apart from board handles, each naming its board", () => {
    const [rc, h] = migHandle(0, 1);
    expect(rc).toBe(SUCCESS);
    expect(u32(nvml.isMig, h)).toEqual([SUCCESS, 1]);
    expect(u32(nvml.isMig, boards[0])).toEqual([SUCCESS, 0]);
    const parent: unknown[] = [null];
    expect(nvml.parent(h, parent)).toBe(SUCCESS);
    expect(koffi.address(parent[0])).toBe(koffi.address(boards[0]));
    expect(nvml.parent(boards[0], [null])).toBe(INVALID_ARGUMENT);
    expect(u32(nvml.gi, h)).toEqual([SUCCESS, 3]);
    expect(u32(nvml.ci, h)).toEqual([SUCCESS, 1]);
    expect(u32(nvml.gi, boards[0])[0]).toBe(NOT_SUPPORTED);
    // The same slot, the same handle; board-only calls are not for it.
    expect(koffi.address(migHandle(0, 1)[1])).toBe(koffi.address(h));
    expect(koffi.address(migHandle(0, 0)[1])).not.toBe(koffi.address(h));
    expect(u32(nvml.power, h)[0]).toBe(NOT_SUPPORTED);
    expect(u32(nvml.index, h)[0]).toBe(NOT_SUPPORTED);
    expect(nvml.utilization(h, Buffer.alloc(8))).toBe(NOT_SUPPORTED);
    expect(str(nvml.name, h)).toEqual([SUCCESS, `${H100} MIG 2g.20gb`]);
    // A lost instance still says who it is.
    const [, lost] = migHandle(0, 4);
    expect(str(nvml.name, lost)).toEqual([SUCCESS, `${H100} MIG 1g.10gb+me`]);
    expect(u32(nvml.gi, lost)).toEqual([SUCCESS, 13]);
    expect(str(nvml.uuid, lost)).toEqual([SUCCESS, migUuid(s.gpus[0]!.uuid, 13, 2, 0)]);
  });

  it("shows at each instant the instances migReadingsOf shows, uuids included, across re-creations", async () => {
    const uuidsBySlot = new Map<string, Set<string>>();
    const deadline = Date.now() + 15_000;
    let rounds = 0;
    let sawGone = false;
    // Until the re-created instance has been seen under three uuids, and gone in between.
    while (Date.now() < deadline && ((uuidsBySlot.get("0/3")?.size ?? 0) < 3 || !sawGone || rounds < 5)) {
      for (const board of [0, 2]) {
        const t0 = Date.now();
        const seen = enumerate(board);
        const t1 = Date.now();
        if (board === 0 && !seen[3]) sawGone = true;
        for (const x of seen) {
          if (x)
            uuidsBySlot.set(`${board}/${x.slot}`, (uuidsBySlot.get(`${board}/${x.slot}`) ?? new Set()).add(x.uuid));
        }
        // Every instant between the two reads is a candidate: one of them must match.
        const candidates = new Set<string>();
        for (let t = t0; t <= t1; t++) candidates.add(expected(board, t));
        expect([...candidates]).toContain(seenJson(seen));
      }
      rounds++;
      await sleep(170);
    }
    expect(sawGone).toBe(true);
    expect(uuidsBySlot.get("0/3")!.size).toBeGreaterThanOrEqual(3);
    // Instances never destroyed keep their uuid, of generation 0.
    const g = s.gpus[0]!;
    expect([...uuidsBySlot.get("0/0")!]).toEqual([migUuid(g.uuid, 2, 0, 0)]);
    expect([...uuidsBySlot.get("2/0")!]).toEqual([migUuid(s.gpus[2]!.uuid, 0, 0, 0)]);
    // Slot 5, destroyed three times in each 10 s cycle since the epoch: a generation in the
    // hundreds of millions, the same in C as in JavaScript.
    const { at, uuid } = await eventually(
      "slot 5 present",
      () => {
        const at = Date.now();
        const [rc, h] = migHandle(0, 5);
        const [urc, uuid] = rc === SUCCESS ? str(nvml.uuid, h) : [rc, ""];
        return urc === SUCCESS && Date.now() === at ? { at, uuid } : undefined;
      },
      10_000,
      10,
    );
    const offset = at % 10_000;
    const generation = Math.floor(at / 10_000) * 3 + (offset < 3_000 ? 1 : 2);
    expect(generation).toBeGreaterThan(1e8);
    expect(uuid).toBe(migUuid(g.uuid, 11, 0, generation));
  });

  it("lists every instance's processes on the board, with their instance ids, and names them", () => {
    const count = [0];
    expect(nvml.processes(boards[0], count, null)).toBe(INSUFFICIENT_SIZE);
    const n = count[0]!;
    const infos = Buffer.alloc(24 * n);
    expect(nvml.processes(boards[0], count, infos)).toBe(SUCCESS);
    const listed = Array.from({ length: count[0]! }, (_, k) => [
      infos.readUInt32LE(24 * k),
      infos.readUInt32LE(24 * k + 16),
      infos.readUInt32LE(24 * k + 20),
    ]);
    const g = s.gpus[0]!;
    const want = g.mig!.flatMap((inst) =>
      migReadingsOf(s, { ...g, mig: [inst] }, Date.now())
        .filter((r) => r.error === undefined)
        .flatMap((r) => r.processes!.map((p) => [p.pid, inst.gpuInstanceId, inst.computeInstanceId])),
    );
    // The re-created instance may come and go between the two reads: compare the others.
    const steady = (xs: number[][]) => xs.filter(([, gi]) => gi !== 10 && gi !== 11);
    expect(steady(listed)).toEqual(steady(want));
    expect(steady(listed).map(([pid]) => pid)).toEqual([13000, 13001, 4242 + 4000]);
    // A whole GPU's processes are in no instance.
    const whole = Buffer.alloc(24 * 4);
    expect(nvml.processes(boards[1], [4], whole)).toBe(SUCCESS);
    expect([whole.readUInt32LE(16), whole.readUInt32LE(20)]).toEqual([NONE, NONE]);
    expect(readingOf(s, s.gpus[1]!, Date.now()).processes!.map((p) => p.pid)).toEqual([whole.readUInt32LE(0)]);
    expect(str(nvml.processName, 8242, 64)).toEqual([SUCCESS, "python3 serve.py"]);
    expect(str(nvml.processName, 13001, 64)).toEqual([SUCCESS, "torchrun"]);
  });

  it("answers NOT_FOUND on the handle of a destroyed instance, and reads the new one on it once re-created", async () => {
    // The slot has a handle only while its instance exists (a third of each cycle it does not).
    const [, h] = await eventually(
      "a handle on slot 3",
      () => {
        const got = migHandle(0, 3);
        return got[0] === SUCCESS ? got : undefined;
      },
      5_000,
      10,
    );
    const mem = Buffer.alloc(40);
    const read = () => {
      mem.writeUInt32LE(MEMORY_V2, 0);
      return [nvml.memory(h, mem) as number, str(nvml.uuid, h)] as const;
    };
    const [, [, before]] = await eventually(
      "instance 3 present",
      () => (read()[0] === SUCCESS ? read() : undefined),
      5_000,
      10,
    );
    await eventually("instance 3 destroyed", () => (read()[0] === NOT_FOUND ? true : undefined), 5_000, 10);
    expect(str(nvml.uuid, h)[0]).toBe(NOT_FOUND);
    expect(nvml.processes(h, [4], Buffer.alloc(96))).toBe(NOT_FOUND);
    expect(u32(nvml.gi, h)[0]).toBe(NOT_FOUND);
    const [, [, after]] = await eventually(
      "instance 3 re-created",
      () => (read()[0] === SUCCESS ? read() : undefined),
      5_000,
      10,
    );
    expect(after).not.toBe(before);
    expect(after).toMatch(/^MIG-/);
    // Four waits of up to 5 s each on a 1.2 s cycle: more than vitest's default 5 s on a busy machine.
  }, 20_000);

  it("samples SM activity per GPU instance, and never pairs samples of two instances, of a board and an instance, or across a re-created one", async () => {
    const alloc = (): unknown => {
      const out: unknown[] = [null];
      expect(nvml.gpmAlloc(out)).toBe(SUCCESS);
      return out[0];
    };
    const metrics = (s1: unknown, s2: unknown): { rc: number; sm: number } => {
      const buf = Buffer.alloc(24 + 40);
      buf.writeUInt32LE(1, 0);
      buf.writeUInt32LE(1, 4);
      buf.writeBigUInt64LE(koffi.address(s1) as bigint, 8);
      buf.writeBigUInt64LE(koffi.address(s2) as bigint, 16);
      buf.writeUInt32LE(2, 24);
      const rc = nvml.gpmMetrics(buf) as number;
      return { rc, sm: buf.readDoubleLE(24 + 8) };
    };
    const support = Buffer.alloc(8);
    support.writeUInt32LE(1, 0);
    expect(nvml.gpmSupport(boards[0], support)).toBe(SUCCESS);
    expect(support.readUInt32LE(4)).toBe(1);
    const gis = [2, 3, 9];
    const first = gis.map(() => alloc());
    const second = gis.map(() => alloc());
    const board1 = alloc();
    const board2 = alloc();
    for (const [k, gi] of gis.entries()) expect(nvml.gpmMigGet(boards[0], gi, first[k])).toBe(SUCCESS);
    expect(nvml.gpmGet(boards[0], board1)).toBe(SUCCESS);
    await sleep(150);
    for (const [k, gi] of gis.entries()) expect(nvml.gpmMigGet(boards[0], gi, second[k])).toBe(SUCCESS);
    expect(nvml.gpmGet(boards[0], board2)).toBe(SUCCESS);
    // Each instance's own: the active preset's 0.72, held and free idle 0.
    const want = gis.map((gi) => {
      const r = migReadingsOf(s, s.gpus[0]!, Date.now()).find(
        (x) => x.uuid === migUuid(s.gpus[0]!.uuid, gi, gi === 3 ? 1 : 0, 0),
      );
      return r!.smActive! * 100;
    });
    expect(want).toEqual([72, 0, 0]);
    gis.forEach((_, k) => {
      const m = metrics(first[k], second[k]);
      expect(m.rc).toBe(SUCCESS);
      expect(m.sm).toBeCloseTo(want[k]!, 9);
    });
    expect(metrics(first[0], second[1]).rc).toBe(INVALID_ARGUMENT);
    expect(metrics(board1, second[0]).rc).toBe(INVALID_ARGUMENT);
    expect(metrics(board1, board2).rc).toBe(SUCCESS);
    // No such GPU instance, a lost one, a whole GPU, a board without GPM.
    const x = alloc();
    expect(nvml.gpmMigGet(boards[0], 5, x)).toBe(NOT_FOUND);
    expect(nvml.gpmMigGet(boards[0], 13, x)).toBe(GPU_IS_LOST);
    expect(nvml.gpmMigGet(boards[1], 0, x)).toBe(NOT_SUPPORTED);
    expect(nvml.gpmMigGet(boards[2], 0, x)).toBe(NOT_SUPPORTED);
    const [, h] = migHandle(0, 0);
    expect(nvml.gpmMigGet(h, 2, x)).toBe(NOT_SUPPORTED);

    // Across a re-creation of GPU instance 10: one sample before it is destroyed, one after it is back.
    const a = alloc();
    const b = alloc();
    const c = alloc();
    await eventually(
      "GPU instance 10 present",
      () => (nvml.gpmMigGet(boards[0], 10, a) === SUCCESS ? true : undefined),
      5_000,
      5,
    );
    await eventually(
      "GPU instance 10 destroyed",
      () => (nvml.gpmMigGet(boards[0], 10, b) === NOT_FOUND ? true : undefined),
      5_000,
      5,
    );
    await eventually(
      "GPU instance 10 re-created",
      () => (nvml.gpmMigGet(boards[0], 10, b) === SUCCESS ? true : undefined),
      5_000,
      5,
    );
    expect(metrics(a, b).rc).toBe(INVALID_ARGUMENT);
    // Within one instance: its own smActive.
    await sleep(150);
    expect(nvml.gpmMigGet(boards[0], 10, c)).toBe(SUCCESS);
    expect(metrics(b, c).rc).toBe(SUCCESS);
    expect(metrics(b, c).sm).toBeCloseTo(40, 9);
    for (const y of [...first, ...second, board1, board2, x, a, b, c]) expect(nvml.gpmFree(y)).toBe(SUCCESS);
  });

  it("has a cost for every function it exports, and counts the MIG calls", () => {
    const exported = Object.keys(STUB_CALL_COST_US);
    for (const fn of exported) expect(Number(nvml.calls(fn)), fn).toBeGreaterThanOrEqual(0);
    expect(exported).toHaveLength(36);
    expect(Number(nvml.calls("nvmlDeviceGetMigDeviceHandleByIndex"))).toBeGreaterThan(0);
    expect(Number(nvml.calls("nvmlGpmMigSampleGet"))).toBeGreaterThan(0);
  });
});
