import { describe, expect, it } from "vitest";
import { CGROUP_FIXTURES, cgroupFixture } from "../../test/helpers/host-root.js";
import { classifyCgroupPath, parseProcCgroup } from "./cgroup-path.js";

describe("real /proc/PID/cgroup files", () => {
  it.each(CGROUP_FIXTURES.map((f) => [f.file, f] as const))("%s", async (_name, f) => {
    const parsed = parseProcCgroup(await cgroupFixture(f.file));
    expect(parsed).toEqual({ ok: true, version: f.version, owner: f.owner });
  });

  it("covers every runtime, both drivers, every QoS class, Slurm v1 and v2", () => {
    const owners = CGROUP_FIXTURES.map((f) => ({ ...f.owner, version: f.version, file: f.file }));
    for (const runtime of ["docker", "containerd", "cri-o", "podman"])
      expect(owners.some((o) => o.runtime === runtime)).toBe(true);
    for (const qos of ["guaranteed", "burstable", "besteffort"]) expect(owners.some((o) => o.qos === qos)).toBe(true);
    expect(owners.some((o) => o.podUid && o.file.includes("cgroupfs"))).toBe(true);
    expect(owners.some((o) => o.podUid && o.file.includes("systemd"))).toBe(true);
    expect(owners.filter((o) => o.job).map((o) => o.version)).toEqual(expect.arrayContaining(["v1", "v2"]));
  });
});

describe("cgroup paths", () => {
  it("takes the deepest container when containers nest (kind on docker)", () => {
    expect(
      classifyCgroupPath(
        "/system.slice/docker-fd9d0ea06257a9780827cbc7fd92e3812a54fca26d63e191b73610d5d48b9cbd.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-podeab5a334_93fe_48a8_b139_9e8079c1f163.slice/cri-containerd-99f3a16ea25b7724cb56a4f0c0df1113ad9474fbf5545bead97fd5c7f61c13f4.scope",
      ),
    ).toEqual({
      runtime: "containerd",
      containerId: "99f3a16ea25b7724cb56a4f0c0df1113ad9474fbf5545bead97fd5c7f61c13f4",
      podUid: "eab5a334-93fe-48a8-b139-9e8079c1f163",
      qos: "besteffort",
    });
  });

  it("does not take daemons or container monitors for containers", () => {
    expect(classifyCgroupPath("/system.slice/docker.service")).toEqual({});
    expect(classifyCgroupPath("/system.slice/containerd.service")).toEqual({});
    expect(
      classifyCgroupPath(
        "/machine.slice/libpod-conmon-24fce7291bc6d7f8a5965a5920740b0df25dda9bb4e84ffb889d8ea2927acec5.scope",
      ),
    ).toEqual({});
    expect(
      classifyCgroupPath(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b7632a2_a56e_4278_987a_22de18008dbe.slice/crio-conmon-0bc5eac79e3ae7a0c2651f14722aa10fa333eb2325c2ca97da33aa284cda81b0.scope",
      ),
    ).toEqual({ podUid: "0b7632a2-a56e-4278-987a-22de18008dbe", qos: "burstable" });
  });

  it("reads Slurm's several-slurmd and extern step forms", () => {
    expect(classifyCgroupPath("/slurm_node07/uid_1000/job_42/step_extern/task_0")).toEqual({
      job: "42",
      step: "extern",
      jobUid: 1000,
    });
    expect(classifyCgroupPath("/system.slice/slurmstepd.scope/job_17/step_batch/user/task_0")).toEqual({
      job: "17",
      step: "batch",
    });
    expect(classifyCgroupPath("/system.slice/slurmstepd.scope/job_17")).toEqual({ job: "17" });
    // A job_ segment outside Slurm's tree is not a Slurm job.
    expect(classifyCgroupPath("/system.slice/condor.service/job_1234")).toEqual({});
  });

  it("refuses a pod segment that is not a uid", () => {
    expect(classifyCgroupPath("/kubepods/besteffort/podnotauid/abc")).toEqual({});
  });
});

describe("whole files", () => {
  it("is malformed when no line has the ID:CONTROLLERS:PATH form", () => {
    expect(parseProcCgroup("random garbage\n")).toEqual({ ok: false, reason: "malformed" });
    expect(parseProcCgroup("")).toEqual({ ok: false, reason: "malformed" });
    expect(parseProcCgroup("/job_hello/\n")).toEqual({ ok: false, reason: "malformed" });
  });

  it("ignores bad lines among good ones", () => {
    const parsed = parseProcCgroup("garbage\n0::/system.slice/slurmstepd.scope/job_9/step_0/user/task_0\n");
    expect(parsed).toEqual({ ok: true, version: "v2", owner: { job: "9", step: "0" } });
  });

  it("takes the line that names the most, whatever the order of lines", async () => {
    const lines = (await cgroupFixture("slurm-v1.cgroup")).trimEnd().split("\n");
    const scrambled = [...lines.slice(1, 7), lines[0], ...lines.slice(7)].join("\n");
    expect(parseProcCgroup(scrambled)).toEqual({
      ok: true,
      version: "v1",
      owner: { job: "748468", step: "0", jobUid: 7319 },
    });
  });
});
