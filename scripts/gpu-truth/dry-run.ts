/**
 * Stand-ins for `run.sh --dry-run`, so the whole kit runs on a machine without a GPU: one
 * scenario mirrors ../shared/gpu-truth/loads.py's phases (their names, order and expected
 * states) on an H200, and drives the stub libnvidia-ml.so (for `--source nvml`), the fake
 * nvidia-smi (for `--source nvidia-smi`), a phases timeline like loads.py's and a truth CSV
 * like truth.py's, all following the same wall clock.
 *
 *   node --import tsx scripts/gpu-truth/dry-run.ts prepare --dir DIR --seconds S [--lead-ms MS]
 *       builds the stub, writes DIR/scenario.json (phases start at the first whole second
 *       LEAD ms from now), DIR/plan.json and DIR/dry-run.env (shell exports: NVML_LIB,
 *       NVIDIA_SMI, ORIGIN_MS and the stub's table and control file)
 *   node --import tsx scripts/gpu-truth/dry-run.ts loads --dir DIR
 *       prints each phase's line when it ends, as loads.py does, then exits
 *   node --import tsx scripts/gpu-truth/dry-run.ts truth --dir DIR [--interval-ms MS]
 *       prints truth.py's CSV every interval until stopped
 */
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { readingOf } from "../../agent/sim/evaluate.js";
import { loadScenario } from "../../agent/sim/scenario.js";
import { writeFakeNvidiaSmi } from "../../test/helpers/fake-nvidia-smi.js";
import { hasGpm, prepareNvmlStub } from "../../test/helpers/nvml-stub.js";
import { errorMessage } from "../../common/errors.js";

/**
 * loads.py's phases, in order, with what a GPU doing that load shows (an H200: idle at
 * 76 W, 700 W limit) and the state loads.py expects. SM activity is what GPM would read.
 */
const LOAD_PHASES: ReadonlyArray<{ phase: string; expect: string; gpu: Record<string, unknown> }> = [
  { phase: "free", expect: "free_idle", gpu: { util: 0, powerW: 76, memUsedMiB: 0, processes: 0, smActive: 0 } },
  {
    phase: "held",
    expect: "held_idle",
    gpu: { util: 0, powerW: 90, memUsedMiB: 19_600, processes: proc(19_600, 0), smActive: 0 },
  },
  {
    phase: "spin",
    expect: "busy_phantom",
    gpu: { util: 100, powerW: 110, memUsedMiB: 19_600, processes: proc(19_600, 100), smActive: 0.008 },
  },
  {
    phase: "matmul",
    expect: "active",
    gpu: { util: 100, powerW: 560, memUsedMiB: 20_100, processes: proc(20_100, 100), smActive: 0.93 },
  },
  {
    phase: "memcopy",
    expect: "active",
    gpu: { util: 100, powerW: 420, memUsedMiB: 27_800, processes: proc(27_800, 100), smActive: 0.55 },
  },
  {
    phase: "batch1",
    expect: "held_idle|busy_phantom|active",
    gpu: { util: 45, powerW: 140, memUsedMiB: 19_700, processes: proc(19_700, 45), smActive: 0.06 },
  },
  {
    phase: "emptied",
    expect: "held_idle",
    gpu: { util: 0, powerW: 85, memUsedMiB: 520, processes: proc(520, 0), smActive: 0 },
  },
];

function proc(usedMiB: number, smUtil: number): object[] {
  return [{ pid: 4242, name: "python3", usedMiB, smUtil }];
}

interface PlanPhase {
  phase: string;
  expect: string;
  start_ms: number;
  end_ms: number;
}

function scenarioOf(originMs: number, seconds: number): object {
  return {
    host: "gpu-truth-dry-run",
    driverVersion: "580.159.03",
    originMs,
    gpus: [
      // The last phase, nothing on the GPU for an hour, is what the GPU shows before the
      // first (phases repeat from originMs), so the agents start on a free GPU as on the
      // real machine, where nothing runs before loads.py.
      {
        model: "NVIDIA H200",
        gpm: true,
        phases: [
          ...LOAD_PHASES.map((p) => ({ for: seconds, ...p.gpu })),
          { for: "1h", state: "free_idle", smActive: 0 },
        ],
      },
      // A second GPU nobody uses: the comparison reads GPU 0 only.
      { model: "NVIDIA H200", gpm: false, phases: [{ for: "1h", state: "free_idle" }] },
    ],
  };
}

function prepare(dir: string, seconds: number, leadMs: number): void {
  const originMs = Math.ceil((Date.now() + leadMs) / 1000) * 1000;
  const scenarioPath = resolve(dir, "scenario.json");
  writeFileSync(scenarioPath, `${JSON.stringify(scenarioOf(originMs, seconds), null, 2)}\n`);
  const stub = prepareNvmlStub(dir, scenarioPath);
  const smi = writeFakeNvidiaSmi(dir, scenarioPath);
  const plan: PlanPhase[] = LOAD_PHASES.map((p, i) => ({
    phase: p.phase,
    expect: p.expect,
    start_ms: originMs + i * seconds * 1000,
    end_ms: originMs + (i + 1) * seconds * 1000,
  }));
  writeFileSync(resolve(dir, "plan.json"), `${JSON.stringify(plan, null, 2)}\n`);
  const env = { NVML_LIB: stub.libPath, NVIDIA_SMI: smi, ORIGIN_MS: String(originMs), ...stub.env };
  writeFileSync(
    resolve(dir, "dry-run.env"),
    Object.entries(env)
      .map(([k, v]) => `export ${k}=${shellQuote(v)}\n`)
      .join(""),
  );
}

async function loads(dir: string): Promise<void> {
  const plan = JSON.parse(readFileSync(resolve(dir, "plan.json"), "utf8")) as PlanPhase[];
  for (const p of plan) {
    await sleepUntil(p.end_ms);
    process.stdout.write(`${JSON.stringify(p)}\n`);
  }
}

async function truth(dir: string, intervalMs: number): Promise<void> {
  const scenario = loadScenario(resolve(dir, "scenario.json"));
  process.stdout.write("ts_ms,gpu,util,power_w,mem_used_mib,procs,sm_active_pct,sm_occupancy_pct,tensor_pct\n");
  let stop = false;
  for (const sig of ["SIGTERM", "SIGINT"] as const)
    process.on(sig, () => {
      stop = true;
    });
  while (!stop) {
    const now = Date.now();
    const tick = Math.floor(now / intervalMs) * intervalMs + intervalMs;
    await sleepUntil(tick);
    const rows = scenario.gpus.map((g) => {
      const r = readingOf(scenario, g, tick);
      const sm = hasGpm(g) && r.smActive !== undefined ? String(r.smActive * 100) : "";
      const cell = (x: number | undefined, digits = 0): string => (x === undefined ? "" : x.toFixed(digits));
      return [
        tick,
        g.index,
        cell(r.util),
        cell(r.powerW, 1),
        cell(r.memUsedBytes === undefined ? undefined : r.memUsedBytes / 2 ** 20),
        r.processes?.length ?? "",
        sm,
        "",
        "",
      ].join(",");
    });
    process.stdout.write(`${rows.join("\n")}\n`);
  }
}

function sleepUntil(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, Math.max(0, ms - Date.now())));
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function flag(args: string[], name: string, dflt?: string): string {
  const i = args.indexOf(name);
  const v = i >= 0 ? args[i + 1] : dflt;
  if (v === undefined) throw new Error(`dry-run.ts: ${name} is required`);
  return v;
}

async function main(): Promise<void> {
  const [cmd, ...args] = process.argv.slice(2);
  const dir = resolve(flag(args, "--dir"));
  switch (cmd) {
    case "prepare": {
      const seconds = Number(flag(args, "--seconds"));
      if (!(seconds > 0)) throw new Error("dry-run.ts: --seconds must be positive");
      prepare(dir, seconds, Number(flag(args, "--lead-ms", "4000")));
      return;
    }
    case "loads":
      return loads(dir);
    case "truth":
      return truth(dir, Number(flag(args, "--interval-ms", "1000")));
    default:
      throw new Error("usage: dry-run.ts prepare|loads|truth --dir DIR [...]");
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${errorMessage(err)}\n`);
  process.exit(1);
});
