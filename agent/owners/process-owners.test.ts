import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import type { GpuOwner } from "../../common/types.js";
import { CGROUP_FIXTURES, FakeHostRoot, cgroupFixture, statLine } from "../../test/helpers/host-root.js";
import { ProcessOwners, type ProcessOwnersOptions } from "./process-owners.js";

const hosts: FakeHostRoot[] = [];
afterEach(async () => {
  await Promise.all(hosts.splice(0).map((h) => h.cleanup()));
});

async function host(opts?: Parameters<typeof FakeHostRoot.create>[0]): Promise<FakeHostRoot> {
  const h = await FakeHostRoot.create(opts);
  hosts.push(h);
  return h;
}

function owners(h: FakeHostRoot, extra: Partial<ProcessOwnersOptions> = {}) {
  const logger = recordingLogger();
  const po = new ProcessOwners({ hostRoot: h.root, logger, ...extra });
  const warns = () => logger.lines.filter((l) => l.level === "warn");
  return { po, logger, warns };
}

describe("owners of processes, end to end through a host root", () => {
  it("names the container, pod, job and user of every real cgroup fixture", async () => {
    const h = await host();
    let pid = 1000;
    const expected = new Map<number, GpuOwner>();
    for (const f of CGROUP_FIXTURES) {
      pid++;
      const uid = pid % 2 === 0 ? 1000 : 1001;
      await h.addProcess({ pid, uid, comm: "python3", cgroup: await cgroupFixture(f.file) });
      const { jobUid: _jobUid, qos: _qos, ...fields } = f.owner;
      expected.set(pid, { via: "process", pid, command: "python3", user: uid === 1000 ? "alice" : "bob", ...fields });
    }
    const { po, warns } = owners(h);
    const found = await po.ownersOf(expected.keys());
    expect(Object.fromEntries(found)).toEqual(Object.fromEntries(expected));
    expect(warns()).toEqual([]);
    const c = po.counters();
    expect(c).toMatchObject({
      lookups: CGROUP_FIXTURES.length,
      attributed: CGROUP_FIXTURES.length,
      vanished: 0,
      notVisible: 0,
      unreadable: {},
      badInput: {},
    });
  });

  it("answers a Kubernetes pod's GPU process with runtime, container, pod and user", async () => {
    const h = await host();
    await h.addProcess({
      pid: 4242,
      uid: 1000,
      comm: "python3",
      cgroup: await cgroupFixture("k8s-containerd-systemd-v2-burstable.cgroup"),
    });
    const { po } = owners(h);
    expect(await po.ownerOf(4242)).toEqual({
      via: "process",
      pid: 4242,
      command: "python3",
      user: "alice",
      runtime: "containerd",
      containerId: "b4d6d161c62525d726fa394b27df30e14f8ea5646313ada576b390de70cfc8cc",
      podUid: "f6f2d169-f2ae-4afa-95ed-06ff2ed6b288",
    });
  });

  it("answers a Slurm job's process with job, step and user, and a plain session with only user and command", async () => {
    const h = await host();
    await h.addProcess({ pid: 77, uid: 1001, comm: "gpu_burn", cgroup: await cgroupFixture("slurm-v2.cgroup") });
    await h.addProcess({ pid: 78, uid: 1000, comm: "ollama", cgroup: await cgroupFixture("user-session-v2.cgroup") });
    const { po } = owners(h);
    expect(await po.ownerOf(77)).toEqual({
      via: "process",
      pid: 77,
      command: "gpu_burn",
      user: "bob",
      job: "1392969",
      step: "0",
    });
    expect(await po.ownerOf(78)).toEqual({ via: "process", pid: 78, command: "ollama", user: "alice" });
  });
});

describe("bad and missing input", () => {
  it("gives undefined for a pid that is gone, and for one that vanishes between listing and reading", async () => {
    const h = await host();
    await h.addProcess({ pid: 500, statOnly: true });
    const { po, warns } = owners(h);
    expect(await po.ownerOf(499)).toBeUndefined();
    expect(await po.ownerOf(500)).toBeUndefined();
    expect(po.counters()).toMatchObject({ lookups: 2, vanished: 2, attributed: 0, unreadable: {}, badInput: {} });
    expect(warns()).toEqual([]);
  });

  it("ignores a huge cgroup file, counts it and says so once", async () => {
    const h = await host();
    const huge = `0::/${"x".repeat(70 * 1024)}\n`;
    await h.addProcess({ pid: 600, uid: 1000, cgroup: huge });
    await h.addProcess({ pid: 601, uid: 1000, cgroup: huge });
    const { po, warns } = owners(h);
    expect(await po.ownerOf(600)).toEqual({ via: "process", pid: 600, command: "python3", user: "alice" });
    expect(await po.ownerOf(601)).toEqual({ via: "process", pid: 601, command: "python3", user: "alice" });
    expect(po.counters().badInput).toEqual({ cgroup_too_large: 2 });
    expect(warns()).toHaveLength(1);
    expect(warns()[0]?.msg).toMatch(/cgroup is larger than the agent reads/);
  });

  it("ignores a binary cgroup file", async () => {
    const h = await host();
    await h.addProcess({ pid: 610, uid: 1000, cgroup: Buffer.from([0x30, 0x3a, 0x3a, 0x2f, 0x00, 0xff, 0xfe, 0x0a]) });
    const { po, warns } = owners(h);
    expect(await po.ownerOf(610)).toEqual({ via: "process", pid: 610, command: "python3", user: "alice" });
    expect(po.counters().badInput).toEqual({ cgroup_binary: 1 });
    expect(warns()).toHaveLength(1);
  });

  it("counts a malformed cgroup file and an unreadable one by reason", async () => {
    const h = await host();
    await h.addProcess({ pid: 620, uid: 1000, cgroup: "random garbage\n" });
    await h.addProcess({ pid: 621, uid: 1000 });
    await mkdir(join(h.root, "proc", "621", "cgroup"));
    const { po, warns } = owners(h);
    expect(await po.ownerOf(620)).toEqual({ via: "process", pid: 620, command: "python3", user: "alice" });
    expect(await po.ownerOf(621)).toEqual({ via: "process", pid: 621, command: "python3", user: "alice" });
    expect(po.counters()).toMatchObject({ badInput: { cgroup_malformed: 1 }, unreadable: { cgroup_eisdir: 1 } });
    expect(warns().map((w) => w.fields?.reason)).toEqual(["malformed", "eisdir"]);
  });

  it("gives a uid without a passwd entry as its number", async () => {
    const h = await host();
    await h.addProcess({ pid: 700, uid: 4242, cgroup: "0::/user.slice/user-4242.slice/session-9.scope\n" });
    const { po, warns } = owners(h);
    expect(await po.ownerOf(700)).toMatchObject({ pid: 700, user: "4242" });
    expect(po.counters().uidsWithoutName).toBe(1);
    expect(warns()).toEqual([]);
  });

  it("reads passwd again when it changes, and says once when the host has none", async () => {
    const h = await host({ passwd: null });
    await h.addProcess({ pid: 710, uid: 1000, cgroup: "0::/init.scope\n" });
    await h.addProcess({ pid: 711, uid: 1000, cgroup: "0::/init.scope\n", startTime: 1 });
    await h.addProcess({ pid: 712, uid: 5000, cgroup: "0::/init.scope\n" });
    const { po, warns } = owners(h);
    expect((await po.ownerOf(710))?.user).toBe("1000");
    expect(warns().map((w) => w.msg)).toEqual([expect.stringMatching(/passwd does not exist.*numeric uids/)]);

    await h.setPasswd("alice:x:1000:1000::/home/alice:/bin/bash\n", 1_700_000_000);
    expect((await po.ownerOf(711))?.user).toBe("alice");
    await h.setPasswd(
      "alice:x:1000:1000::/home/alice:/bin/bash\ncarol:x:5000:5000::/home/carol:/bin/bash\n",
      1_700_000_100,
    );
    expect((await po.ownerOf(712))?.user).toBe("carol");
    expect(po.counters().unreadable).toEqual({ passwd_missing: 1 });
  });

  it("replaces control and bidi characters in the command", async () => {
    const h = await host();
    await h.addProcess({ pid: 720, uid: 0, comm: "evil\u001b[31m\u202e", cgroup: "0::/init.scope\n" });
    const { po } = owners(h);
    expect((await po.ownerOf(720))?.command).toBe("evil?[31m?");
  });

  it("counts pids that are not positive integers", async () => {
    const h = await host();
    const { po } = owners(h);
    expect(await po.ownerOf(-1)).toBeUndefined();
    expect(await po.ownerOf(1.5)).toBeUndefined();
    expect(po.counters().badInput).toEqual({ pid_invalid: 2 });
  });

  it("answers nothing once the signal has fired, without counting a problem", async () => {
    const h = await host();
    await h.addProcess({ pid: 730, uid: 1000, cgroup: "0::/init.scope\n" });
    const { po } = owners(h);
    const ac = new AbortController();
    ac.abort();
    expect(await po.ownerOf(730, ac.signal)).toBeUndefined();
    expect(po.counters()).toMatchObject({ vanished: 0, notVisible: 0, unreadable: {}, badInput: {} });
  });
});

describe("cache", () => {
  it("reads a process once per start time, and a reused pid gets its new owner", async () => {
    const h = await host();
    await h.addProcess({
      pid: 800,
      uid: 1000,
      comm: "trainer",
      startTime: 1111,
      cgroup: await cgroupFixture("slurm-v1.cgroup"),
    });
    const { po } = owners(h);
    const first = await po.ownerOf(800);
    expect(first).toMatchObject({ command: "trainer", user: "alice", job: "748468" });

    // Same process: the cgroup file changing underneath does not matter, the cache answers.
    await h.writeProc(800, "cgroup", await cgroupFixture("slurm-v2.cgroup"));
    expect(await po.ownerOf(800)).toBe(first);
    expect(po.counters().cacheHits).toBe(1);

    // The pid is reused by another process: new start time, new owner.
    await h.removeProcess(800);
    await h.addProcess({
      pid: 800,
      uid: 1001,
      comm: "notebook",
      startTime: 2222,
      cgroup: await cgroupFixture("podman-v2-rootful.cgroup"),
    });
    expect(await po.ownerOf(800)).toEqual({
      via: "process",
      pid: 800,
      command: "notebook",
      user: "bob",
      runtime: "podman",
      containerId: "06dc5f321aad8726aa26559f16ec203bc099245bc44894b14a89fc02b022d1d5",
    });
    expect(po.counters()).toMatchObject({ cacheHits: 1, lookups: 3, attributed: 3 });
  });

  it("stays within its bound and drops pids gone", async () => {
    const h = await host();
    for (const pid of [901, 902, 903]) await h.addProcess({ pid, uid: 1000, cgroup: "0::/init.scope\n" });
    const { po } = owners(h, { maxEntries: 2 });
    await po.ownersOf([901, 902, 903]);
    expect(po.size).toBe(2);
    expect(po.counters().evicted).toBe(1);

    await h.removeProcess(903);
    expect(await po.ownerOf(903)).toBeUndefined();
    expect(po.size).toBe(1);
    po.retain([]);
    expect(po.size).toBe(0);
  });
});

describe("host PIDs", () => {
  it("sees the host's pids when pid 2 is kthreadd", async () => {
    const h = await host();
    expect(await owners(h).po.hostPids()).toEqual({ visible: true });
  });

  it("attributes nothing in a container's pid namespace, counts it and says once what to change", async () => {
    const h = await host({ kthreadd: false });
    // The container's own pid 7 has the number a host process has: it must not be named.
    await h.addProcess({ pid: 7, uid: 0, cgroup: await cgroupFixture("docker-v2-systemd.cgroup") });
    const { po, warns } = owners(h);
    expect(await po.hostPids()).toEqual({ visible: false, reason: "other_pid_namespace" });
    expect(await po.ownersOf([7, 4242])).toEqual(new Map());
    expect(await po.ownerOf(7)).toBeUndefined();
    expect(po.counters()).toMatchObject({ lookups: 3, notVisible: 3, attributed: 0, vanished: 0 });
    expect(warns()).toHaveLength(1);
    expect(warns()[0]?.msg).toMatch(/hostPID: true/);
    expect(warns()[0]?.msg).toMatch(/--host-root/);
    expect(warns()[0]?.msg).toMatch(/owners still come from the scheduler/);
  });

  it("tells a missing /proc apart", async () => {
    const h = await host({ proc: false });
    const { po, warns } = owners(h);
    expect(await po.hostPids()).toEqual({ visible: false, reason: "no_proc" });
    expect(await po.ownerOf(1)).toBeUndefined();
    expect(warns()[0]?.msg).toMatch(/does not exist/);
  });

  it("checks again after reprobeMs, so mounting the host's /proc later is noticed", async () => {
    const h = await host({ kthreadd: false });
    await h.addProcess({ pid: 300, uid: 1000, cgroup: "0::/init.scope\n" });
    let now = 0;
    const { po } = owners(h, { reprobeMs: 1000, now: () => now });
    expect(await po.ownerOf(300)).toBeUndefined();
    await h.writeProc(2, "stat", statLine(2, "kthreadd", 0, 14));
    now = 999;
    expect(await po.ownerOf(300)).toBeUndefined();
    now = 1000;
    expect(await po.ownerOf(300)).toMatchObject({ pid: 300, user: "alice" });
  });

  it("says once when none of the listed pids exists three batches in a row", async () => {
    const h = await host();
    await h.addProcess({ pid: 10, uid: 1000, cgroup: "0::/init.scope\n" });
    const { po, warns } = owners(h);
    await po.ownersOf([4001, 4002]);
    await po.ownersOf([4003]);
    await po.ownersOf([10, 4004]); // one found: the run starts again
    await po.ownersOf([4005]);
    await po.ownersOf([4006]);
    expect(warns()).toEqual([]);
    await po.ownersOf([4007]);
    await po.ownersOf([4008]);
    expect(warns()).toHaveLength(1);
    expect(warns()[0]?.msg).toMatch(/different pid namespaces/);
    expect(po.counters().vanished).toBe(8);
  });
});

describe("default host root", () => {
  it("is /", async () => {
    const po = new ProcessOwners({ logger: recordingLogger() });
    expect(po.hostRoot).toBe("/");
  });
});
