/**
 * Owners as an operator meets them through the real binary: `trueidle agent --once` reading
 * the fake nvidia-smi names who holds each GPU — a pod from a kubelet pod-resources server
 * on a real unix socket (by uuid and by index), a Slurm job from a mapping directory, a
 * process from a host root's /proc — and says plainly where nothing is known; the running
 * agent's /metrics counts what the owner sources could not use (a kubelet answering
 * garbage, a binary mapping file, no host PIDs), each logged once.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { eventually } from "./helpers/eventually.js";
import { NVIDIA_SMI_SOURCE } from "./helpers/gpu-sources.js";
import { FakeHostRoot } from "./helpers/host-root.js";
import { gpuPod, PodResourcesServer } from "./helpers/pod-resources-server.js";
import { freePort } from "./helpers/ports.js";
import { runTrueidle, startTrueidle } from "./helpers/trueidle-process.js";

const H100 = "NVIDIA H100 80GB HBM3";
const uuid = (i: number): string => `GPU-0000000${i}-aaaa-bbbb-cccc-dddddddddddd`;
const LONG_POD = "inference-server-with-a-very-long-deployment-name-7f9c5d-x2x9z";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function hostRoot(opts: Parameters<typeof FakeHostRoot.create>[0] = {}): Promise<FakeHostRoot> {
  const host = await FakeHostRoot.create(opts);
  cleanups.push(() => host.cleanup());
  return host;
}

async function kubelet(opts: Parameters<typeof PodResourcesServer.start>[0]): Promise<PodResourcesServer> {
  const server = await PodResourcesServer.start(opts);
  cleanups.push(() => server.stop());
  return server;
}

/** One GPU per phase, H100s with known uuids. */
function scenario(phases: object[]): object {
  return {
    host: "owners",
    driverVersion: "550.90.07",
    gpus: phases.map((p, i) => ({ model: H100, uuid: uuid(i), phases: [{ for: "1h", ...p }] })),
  };
}

/** The table: its header and the rows (GPU index first). */
function table(output: string): { header: string; rows: string[] } {
  const lines = output.split("\n");
  const at = lines.findIndex((l) => l.startsWith("GPU  MODEL"));
  expect(at, output).toBeGreaterThanOrEqual(0);
  return { header: lines[at]!, rows: lines.slice(at + 1).filter((l) => /^\d+ {2,}\S/.test(l)) };
}

/** The HELD BY cell of a row (the text after the PROCS column). */
function heldBy(header: string, row: string): string {
  return row.slice(header.indexOf("HELD BY")).trim();
}

describe("trueidle agent --once: who holds each GPU", () => {
  it("names the pod, the job and the process holding each GPU, cuts long names within 120 columns, and lists them in full below", async () => {
    const server = await kubelet({
      pods: [
        gpuPod("ml", "trainer-7", "main", [uuid(0)]),
        // By index, as k8s-device-plugin's --device-id-strategy=index writes it.
        gpuPod("serving", LONG_POD, "worker", ["1"]),
      ],
    });
    const jobs = await tempDir("trueidle-jobs-");
    await writeFile(path.join(jobs, "2"), "4242 1000\n");
    const host = await hostRoot();
    await host.addProcess({
      pid: 31337,
      uid: 1001,
      comm: "python3",
      cgroup: "0::/system.slice/slurmstepd.scope/job_88/step_0/user/task_0\n",
    });
    const dir = await tempDir("trueidle-once-owners-");
    const src = NVIDIA_SMI_SOURCE.prepare(
      dir,
      scenario([
        { state: "held_idle", processes: [], memUsedMiB: 0 },
        { state: "held_idle", processes: [{ pid: 31338, name: "tritonserver", usedMiB: 30_000 }] },
        { state: "free_idle" },
        { state: "held_idle", processes: [{ pid: 31337, name: "python3", usedMiB: 20_000 }] },
        { state: "free_idle" },
      ]),
    );

    const r = await runTrueidle([
      "agent",
      "--once",
      ...src.flags,
      "--pod-resources-socket",
      server.socketPath,
      "--job-mapping-dir",
      jobs,
      "--host-root",
      host.root,
    ]);
    expect(r.code, r.output).toBe(0);
    const { header, rows } = table(r.output);
    expect(header).toMatch(/^GPU +MODEL +REPORTED +SM +REAL \(SOURCE\) +STATE +POWER\/FLOOR +MEMORY +PROCS +HELD BY$/);
    expect(rows).toHaveLength(5);
    for (const l of [header, ...rows]) expect(l.length, l).toBeLessThanOrEqual(120);
    expect(rows.map((row) => heldBy(header, row))).toEqual([
      "pod ml/trainer-7",
      expect.stringMatching(/^pod serving\/inference\S*… \+1$/),
      "job 4242 (alice)",
      "bob: python3 (pid 31337)",
      "—",
    ]);
    // Allocated and empty is held idle: the allocation holds GPUs 0 and 2, nothing else does.
    expect(rows.map((row) => / (held_idle|free_idle|active|busy_phantom|unavailable) /.exec(row)?.[1])).toEqual([
      "held_idle",
      "held_idle",
      "held_idle",
      "held_idle",
      "free_idle",
    ]);
    const lines = r.output.split("\n");
    expect(lines).toContain("GPU 0 allocated to: pod ml/trainer-7, container main");
    expect(lines).toContain(`GPU 1 allocated to: pod serving/${LONG_POD}, container worker`);
    expect(lines).toContain("GPU 2 allocated to: job 4242, user alice");
    // The process the host's /proc does not list is shown as the driver names it.
    expect(lines).toContain("GPU 1 holders: tritonserver (pid 31338) 29.3 GiB");
    expect(lines).toContain("GPU 3 holders: python3 (pid 31337, user bob, job 88.0) 19.5 GiB");
    expect(lines).toContain(
      `Owners (pods): the kubelet's pod-resources API at ${server.socketPath} answered; 2 GPU(s) allocated to pods.`,
    );
    expect(lines).toContain(`Owners (jobs): the job mapping directory ${jobs}; 1 GPU(s) allocated to jobs.`);
    expect(lines).toContain(`Owners (processes): from ${host.root}/proc; 1 of 2 GPU process(es) attributed.`);
    // A device id by index resolved: nothing was refused as naming no GPU.
    expect(r.output).not.toMatch(/cannot match to a GPU/);
  });

  it("says plainly when no owner is known: no kubelet, no job mapping, a process the host does not list, memory held by nobody visible", async () => {
    const host = await hostRoot();
    const dir = await tempDir("trueidle-once-none-");
    const src = NVIDIA_SMI_SOURCE.prepare(
      dir,
      scenario([
        { state: "held_idle", processes: [{ pid: 4242, name: "python3", usedMiB: 20_000 }] },
        { state: "held_idle", processes: [], memUsedMiB: 20_000 },
        { state: "free_idle" },
      ]),
    );
    const socket = path.join(dir, "no-kubelet.sock");
    const r = await runTrueidle([
      "agent",
      "--once",
      ...src.flags,
      "--pod-resources-socket",
      socket,
      "--host-root",
      host.root,
    ]);
    expect(r.code, r.output).toBe(0);
    const { header, rows } = table(r.output);
    expect(rows.map((row) => heldBy(header, row))).toEqual(["python3 (pid 4242)", "—", "—"]);
    expect(rows[1]).toMatch(/ held_idle /);
    const lines = r.output.split("\n");
    expect(lines.filter((l) => l.includes("allocated to:"))).toEqual([]);
    expect(lines).toContain(`Owners (pods): no kubelet pod-resources socket at ${socket}.`);
    expect(lines).toContain("Owners (jobs): off (no --job-mapping-dir).");
    expect(lines).toContain(`Owners (processes): from ${host.root}/proc; 0 of 1 GPU process(es) attributed.`);
  });

  it("does not wait on a kubelet that never answers, and says so", async () => {
    const server = await kubelet({ mode: "hang", pods: [gpuPod("ml", "trainer-7", "main", [uuid(0)])] });
    const dir = await tempDir("trueidle-once-hang-");
    const src = NVIDIA_SMI_SOURCE.prepare(dir, scenario([{ state: "free_idle" }]));
    const host = await hostRoot();
    const r = await runTrueidle([
      "agent",
      "--once",
      ...src.flags,
      "--pod-resources-socket",
      server.socketPath,
      "--host-root",
      host.root,
    ]);
    expect(r.code, r.output).toBe(0);
    const { header, rows } = table(r.output);
    expect(rows.map((row) => heldBy(header, row))).toEqual(["—"]);
    // The wait (2 s) and the call's deadline (2 s) end together; either may say so first.
    expect(r.output).toMatch(
      new RegExp(
        `^Owners \\(pods\\): the kubelet's pod-resources API at ${server.socketPath.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} ` +
          "(did not answer within 2 s|gave no answer \\(deadline\\))\\.$",
        "m",
      ),
    );
  });
});

describe("the agent's /metrics: owner sources", () => {
  it("counts a kubelet answering garbage, refused mapping files and hidden host PIDs, and logs each once", async () => {
    const server = await kubelet({ mode: "garbage_message" });
    const jobs = await tempDir("trueidle-jobs-bad-");
    await writeFile(path.join(jobs, "0"), Buffer.from([0x34, 0x32, 0x00, 0x01, 0xff, 0x0a]));
    await writeFile(path.join(jobs, "notes.txt"), "not a GPU\n");
    await writeFile(path.join(jobs, uuid(1)), "77 1000\n");
    // A container's own pid namespace: pid 2 is not the kernel's kthreadd.
    const host = await hostRoot({ kthreadd: false });
    const dir = await tempDir("trueidle-agent-owners-");
    const src = NVIDIA_SMI_SOURCE.prepare(
      dir,
      scenario([
        { state: "free_idle" },
        { state: "free_idle" },
        { state: "held_idle", processes: [{ pid: 4242, name: "python3", usedMiB: 20_000 }] },
      ]),
    );
    const port = await freePort();
    const agent = startTrueidle([
      "agent",
      "--plaintext",
      "--collector",
      "127.0.0.1:9",
      ...src.flags,
      "--log-level",
      "info",
      "--pod-resources-socket",
      server.socketPath,
      "--job-mapping-dir",
      jobs,
      "--host-root",
      host.root,
      "--http-listen",
      `127.0.0.1:${port}`,
    ]);
    cleanups.push(() => agent.stop("SIGKILL", 1_000));
    await agent.waitForOutput(/Serving the agent's metrics/);
    const sample = (text: string, series: string): number | undefined => {
      const line = text.split("\n").find((l) => l.startsWith(`${series} `));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    const text = await eventually(
      "the owner counters",
      async () => {
        const t = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const retried =
          (sample(t, 'trueidle_agent_owner_read_failures_total{source="pod_resources",reason="bad_answer"}') ?? 0) >= 3;
        const scanned = (sample(t, 'trueidle_agent_owner_reads_total{source="job_mapping"}') ?? 0) >= 1;
        const looked = (sample(t, 'trueidle_agent_owner_process_lookups_total{result="not_visible"}') ?? 0) >= 1;
        const allocated = sample(t, "trueidle_agent_owner_allocated_gpus") === 1;
        return retried && scanned && looked && allocated ? t : undefined;
      },
      60_000,
      200,
    );
    expect(sample(text, 'trueidle_agent_owner_rejected_total{source="job_mapping",reason="binary"}')).toBe(1);
    expect(sample(text, 'trueidle_agent_owner_rejected_total{source="job_mapping",reason="not_gpu_name"}')).toBe(1);
    expect(sample(text, 'trueidle_agent_owner_source_ready{source="pod_resources"}')).toBe(0);
    expect(sample(text, 'trueidle_agent_owner_source_ready{source="job_mapping"}')).toBe(1);
    expect(sample(text, 'trueidle_agent_owner_reads_total{source="pod_resources"}')).toBe(0);
    expect(sample(text, 'trueidle_agent_owner_process_lookups_total{result="attributed"}')).toBe(0);
    expect(sample(text, "trueidle_agent_owner_host_pids_visible")).toBe(0);
    // Each kind of trouble is logged once however often it happens.
    const out = agent.output();
    const count = (re: RegExp): number => out.split("\n").filter((l) => re.test(l)).length;
    expect(count(/The kubelet's pod-resources API gave no answer: the kubelet's answer could not be decoded/)).toBe(1);
    expect(count(/Ignoring part of the job mapping directory: a mapping file is not text/)).toBe(1);
    expect(
      count(/Ignoring part of the job mapping directory: a file's name is neither a GPU index nor a GPU uuid/),
    ).toBe(1);
    expect(count(/does not show the host's processes/)).toBe(1);
  });
});
