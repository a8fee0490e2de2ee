/**
 * A fake `--host-root` for tests of agent/owners: HOSTROOT/proc/PID/{cgroup,status,comm,stat}
 * and HOSTROOT/etc/passwd in a temporary directory, written the way the kernel and a Linux
 * host write them, and the real `/proc/PID/cgroup` fixtures of test/fixtures/cgroups with what
 * each one names.
 */
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CgroupOwner, CgroupVersion } from "../../agent/owners/cgroup-path.js";

export const CGROUP_FIXTURE_DIR = new URL("../fixtures/cgroups/", import.meta.url);

export async function cgroupFixture(name: string): Promise<string> {
  return readFile(new URL(name, CGROUP_FIXTURE_DIR), "utf8");
}

/** Each fixture and what it names (test/fixtures/cgroups/PROVENANCE.md says where it came from). */
export const CGROUP_FIXTURES: ReadonlyArray<{ file: string; version: CgroupVersion; owner: CgroupOwner }> = [
  {
    file: "docker-v1-cgroupfs-hybrid.cgroup",
    version: "hybrid",
    owner: { runtime: "docker", containerId: "051e2ee0bce99116029a13df4a9e943137f19f957f38ac02d6bad96f9b700f76" },
  },
  {
    file: "docker-v1-systemd.cgroup",
    version: "v1",
    owner: { runtime: "docker", containerId: "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d" },
  },
  {
    file: "docker-v2-systemd.cgroup",
    version: "v2",
    owner: { runtime: "docker", containerId: "b1eba9dfaeba29d8b80532a574a03ea3cac29384327f339c26da13649e2120df" },
  },
  {
    file: "docker-v2-cgroupns.cgroup",
    version: "v2",
    owner: { runtime: "docker", containerId: "1f1d6e2d4940ddac13abd421a2617992bf89f0e0f9a902ed58278c5f843e9ae7" },
  },
  {
    file: "docker-in-docker-v1.cgroup",
    version: "v1",
    owner: { runtime: "docker", containerId: "ec08435e04266c5ba381fccbb829f626d11d8ddf5f8f547263c7a2d79ab4787a" },
  },
  {
    file: "k8s-containerd-systemd-v2-burstable.cgroup",
    version: "v2",
    owner: {
      runtime: "containerd",
      containerId: "b4d6d161c62525d726fa394b27df30e14f8ea5646313ada576b390de70cfc8cc",
      podUid: "f6f2d169-f2ae-4afa-95ed-06ff2ed6b288",
      qos: "burstable",
    },
  },
  {
    file: "k8s-containerd-systemd-v2-besteffort.cgroup",
    version: "v2",
    owner: {
      runtime: "containerd",
      containerId: "bacb920470900725e0aa7d914fee5eb0854315448b024b6b8420ad8429c607ba",
      podUid: "4c9f1974-5c46-44c2-b42f-3bbf0e98eef9",
      qos: "besteffort",
    },
  },
  {
    file: "k8s-containerd-systemd-v1-besteffort-bottlerocket.cgroup",
    version: "hybrid",
    owner: {
      runtime: "containerd",
      containerId: "f45298cd514d1930c4fe3afc4412e59547f7e3148fddd22ca33cefce046eb830",
      podUid: "dd1bf9d1-241d-47f5-8e25-12de83135812",
      qos: "besteffort",
    },
  },
  {
    file: "k8s-containerd-v1-colon-besteffort.cgroup",
    version: "v1",
    owner: {
      runtime: "containerd",
      containerId: "d3d8ccf5cca91931c6285c1d7472c413dd5a7700fddc0aa9f89a9ac7008b003e",
      podUid: "2105e389-7471-476e-a50f-6074cef29bbd",
      qos: "besteffort",
    },
  },
  {
    file: "k8s-cgroupfs-v1-besteffort.cgroup",
    version: "v1",
    owner: {
      containerId: "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376",
      podUid: "74c13223-5a00-11e9-b385-42010a80018d",
      qos: "besteffort",
    },
  },
  {
    file: "k8s-cgroupfs-v1-burstable.cgroup",
    version: "v1",
    owner: {
      containerId: "35b97177dada20362ab90d90ac63cd54e8a41cf87bea34f270631b6da17f4a93",
      podUid: "f6adb0af-0855-4bab-b25b-c853f18d0ce2",
      qos: "burstable",
    },
  },
  {
    file: "k8s-cgroupfs-v1-guaranteed.cgroup",
    version: "v1",
    owner: {
      containerId: "7fe41c8a2d1da09420117894f11dd91f6c3a44dfeb7d125dc594bd53468861df",
      podUid: "5eadac96-ab58-11ea-b82b-0242ac110009",
      qos: "guaranteed",
    },
  },
  {
    file: "k8s-docker-systemd-v1-guaranteed.cgroup",
    version: "v1",
    owner: {
      runtime: "docker",
      containerId: "b15a5bdedd2e7645c3be271364324321b908314e4c77857bbfd32a041148c07f",
      podUid: "22949dce-fd8b-11ea-8ede-98f2b32c645c",
      qos: "guaranteed",
    },
  },
  {
    file: "k8s-cgroupfs-v2-besteffort.cgroup",
    version: "v2",
    owner: {
      containerId: "f52a212505a606972cf8614c3cb856539e71b77ecae33436c5ac442232fbacf8",
      podUid: "05e102bf-8744-4942-a241-9b6f07983a53",
      qos: "besteffort",
    },
  },
  {
    file: "k8s-crio-cgroupfs-v2-besteffort.cgroup",
    version: "v2",
    owner: {
      runtime: "cri-o",
      containerId: "a4d6b686848a610472a2eed3ae20d4d64b6b4819feb9fdfc7fd7854deaf59ef3",
      podUid: "897277d4-5e6f-4999-a976-b8340e8d075e",
      qos: "besteffort",
    },
  },
  {
    file: "k8s-crio-systemd-v1-besteffort.cgroup",
    version: "v1",
    owner: {
      runtime: "cri-o",
      containerId: "d6d725b909f37c3e232aadfbafa950a58bfe7baa579ba8c47a12be88bb921607",
      podUid: "8ca306fa-3c03-47fa-97dd-19979c345572",
      qos: "besteffort",
    },
  },
  {
    file: "k8s-crio-systemd-v1-burstable-static-pod.cgroup",
    version: "v1",
    owner: {
      runtime: "cri-o",
      containerId: "7a1fd6fe8cdfbd44dc78c4cc85dad7031eaab4365801684cad0aabdeaf863f9e",
      podUid: "487a0dc6dccaeefbcfedba7a7ce1ca18",
      qos: "burstable",
    },
  },
  {
    file: "k8s-crio-systemd-v2-burstable.cgroup",
    version: "v2",
    owner: {
      runtime: "cri-o",
      containerId: "f33f47b0db740bb647cb3e7ac62d96c74966dbb99cbfaf4563bfd42d387e8b44",
      podUid: "042efd86-1f3b-4f2f-8736-f31c58e95bbc",
      qos: "burstable",
    },
  },
  {
    file: "k8s-docker-systemd-v2-cgroupns.cgroup",
    version: "v2",
    owner: {
      runtime: "docker",
      containerId: "2cc65c162ca1388b6b8d5ccfb701d22fc96675ccf8b2f1590c490c2c4039547f",
      podUid: "fd698699-eabf-4c23-92ef-cf0bbdb78261",
      qos: "besteffort",
    },
  },
  {
    file: "kind-containerd-v2-burstable.cgroup",
    version: "v2",
    owner: {
      runtime: "containerd",
      containerId: "2b180104511194aab36fd295d3e217439f3ddb5bc88277f37b4952abee85c40e",
      podUid: "3cae2e45-052c-4b11-80d3-4d7b2d2d3464",
      qos: "burstable",
    },
  },
  {
    file: "podman-v2-rootful.cgroup",
    version: "v2",
    owner: { runtime: "podman", containerId: "06dc5f321aad8726aa26559f16ec203bc099245bc44894b14a89fc02b022d1d5" },
  },
  {
    file: "podman-v2-rootless.cgroup",
    version: "v2",
    owner: { runtime: "podman", containerId: "3f05ee050f82c0145f1d88c94269c39dff0f07dbf8bba20aafd54b3a75dcaecc" },
  },
  { file: "slurm-v1.cgroup", version: "v1", owner: { job: "748468", step: "0", jobUid: 7319 } },
  { file: "slurm-v1-task.cgroup", version: "v1", owner: { job: "280678", step: "interactive", jobUid: 2101171 } },
  { file: "slurm-v2.cgroup", version: "v2", owner: { job: "1392969", step: "0" } },
  { file: "user-session-v1-hybrid.cgroup", version: "hybrid", owner: {} },
  { file: "user-session-v2.cgroup", version: "v2", owner: {} },
  { file: "host-init-v2.cgroup", version: "v2", owner: {} },
  { file: "host-root-v1.cgroup", version: "v1", owner: {} },
];

export interface FakeProcess {
  pid: number;
  /** `/proc/PID/cgroup`; omitted: not written. */
  cgroup?: string | Buffer | undefined;
  /** Real uid for the `Uid:` line of `/proc/PID/status`. */
  uid?: number | undefined;
  /** The whole `/proc/PID/status`, instead of one built from `uid`. */
  status?: string | Buffer | undefined;
  comm?: string | undefined;
  /** Field 22 of `/proc/PID/stat`. */
  startTime?: number | undefined;
  /** Write only `stat`, as a process caught between listing and reading would leave. */
  statOnly?: boolean | undefined;
}

/** A host's `/etc/passwd` as a Debian-like host has it. */
export const HOST_PASSWD = [
  "root:x:0:0:root:/root:/bin/bash",
  "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
  "# a comment",
  "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash",
  "bob:x:1001:1001::/home/bob:/bin/bash",
  "slurm:x:64030:64030::/nonexistent:/usr/sbin/nologin",
  "",
].join("\n");

export class FakeHostRoot {
  private constructor(readonly root: string) {}

  /**
   * A host root with `proc/2/stat` of the kernel's kthreadd (unless `kthreadd: false`, a
   * container's pid namespace; `proc: false` leaves no `proc` at all) and `etc/passwd`
   * (unless `passwd: null`).
   */
  static async create(
    opts: { kthreadd?: boolean; proc?: boolean; passwd?: string | null } = {},
  ): Promise<FakeHostRoot> {
    const host = new FakeHostRoot(await mkdtemp(join(tmpdir(), "trueidle-hostroot-")));
    if (opts.proc !== false) {
      await mkdir(join(host.root, "proc"), { recursive: true });
      if (opts.kthreadd !== false) await host.writeProc(2, "stat", statLine(2, "kthreadd", 0, 14));
      else await host.addProcess({ pid: 1, comm: "node", uid: 0, cgroup: "0::/\n", startTime: 2000 });
    }
    if (opts.passwd !== null) await host.setPasswd(opts.passwd ?? HOST_PASSWD);
    return host;
  }

  async addProcess(p: FakeProcess): Promise<void> {
    const comm = p.comm ?? "python3";
    await this.writeProc(p.pid, "stat", statLine(p.pid, comm, 1, p.startTime ?? 123456));
    if (p.statOnly) return;
    if (p.cgroup !== undefined) await this.writeProc(p.pid, "cgroup", p.cgroup);
    await this.writeProc(p.pid, "comm", `${comm}\n`);
    await this.writeProc(p.pid, "status", p.status ?? statusText(p.pid, comm, p.uid ?? 0));
  }

  async removeProcess(pid: number): Promise<void> {
    await rm(join(this.root, "proc", String(pid)), { recursive: true, force: true });
  }

  async writeProc(pid: number, file: string, content: string | Buffer): Promise<void> {
    await mkdir(join(this.root, "proc", String(pid)), { recursive: true });
    await writeFile(join(this.root, "proc", String(pid), file), content);
  }

  /** Writes `etc/passwd`; `mtime` (seconds) sets its modification time. */
  async setPasswd(text: string, mtime?: number): Promise<void> {
    await mkdir(join(this.root, "etc"), { recursive: true });
    const path = join(this.root, "etc", "passwd");
    await writeFile(path, text);
    if (mtime !== undefined) await utimes(path, mtime, mtime);
  }

  async cleanup(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }
}

/** A `/proc/PID/stat` line with 52 fields, as Linux 6.x writes it. */
export function statLine(pid: number, comm: string, ppid: number, startTime: number): string {
  const after = [
    "S",
    String(ppid),
    String(pid),
    String(pid),
    "0",
    "-1",
    "4194560",
    "1894",
    "0",
    "0",
    "0",
    "12",
    "3",
    "0",
    "0",
    "20",
    "0",
    "1",
    "0",
    String(startTime),
    "12734464",
    "2214",
    "18446744073709551615",
    "1",
    "1",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "17",
    "3",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
    "0",
  ];
  return `${pid} (${comm}) ${after.join(" ")}\n`;
}

function statusText(pid: number, comm: string, uid: number): string {
  return [
    `Name:\t${comm}`,
    "Umask:\t0022",
    "State:\tS (sleeping)",
    `Tgid:\t${pid}`,
    "Ngid:\t0",
    `Pid:\t${pid}`,
    "PPid:\t1",
    "TracerPid:\t0",
    `Uid:\t${uid}\t${uid}\t${uid}\t${uid}`,
    `Gid:\t${uid}\t${uid}\t${uid}\t${uid}`,
    "FDSize:\t256",
    "Groups:\t",
    "VmRSS:\t   10240 kB",
    "Threads:\t1",
    "",
  ].join("\n");
}
