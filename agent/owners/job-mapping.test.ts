/**
 * The job mapping source on real files in a real directory, written the way Slurm prologs
 * and epilogs write them (jobstats: `echo $SLURM_JOB_ID $SLURM_JOB_UID > $DEST/$i`, and the
 * same into a file named by the GPU's uuid; the epilog removes both).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import { eventually } from "../../test/helpers/eventually.js";
import { JobMappingSource, type JobMappingOptions } from "./job-mapping.js";

const GPU0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555";
const GPU1 = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff";
const GPU2 = "GPU-13572468-1357-2468-1357-246813572468";
const MIG = "MIG-265a219d-a49f-578a-825d-222c72699c16";
const GPUS = new Map([
  [0, GPU0],
  [1, GPU1],
  [2, GPU2],
]);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(opts: Partial<JobMappingOptions> = {}) {
  const root = mkdtempSync(path.join(tmpdir(), "ti-jobmap-"));
  const dir = path.join(root, "gpustat");
  mkdirSync(dir);
  const logger = recordingLogger();
  const src = new JobMappingSource({ dir, gpuByIndex: () => GPUS, logger, ...opts });
  cleanups.push(async () => {
    await src.stop();
    rmSync(root, { recursive: true, force: true });
  });
  const write = (name: string, content: string | Uint8Array) => writeFileSync(path.join(dir, name), content);
  const jobs = (uuid: string) =>
    src
      .current()
      .get(uuid)
      ?.map((o) => `${o.job}:${o.user ?? "-"}`);
  return { root, dir, src, logger, write, jobs };
}

describe("JobMappingSource", () => {
  it("reads files named by index and by uuid, and merges both of one GPU", async () => {
    const { src, write, jobs } = setup({ userName: async (uid) => (uid === 262563 ? "alice" : undefined) });
    write("0", "45916256 262563\n");
    write(GPU0, "45916256 262563\n"); // jobstats writes both
    write("1", "job-a\njob-b\n"); // dcgm-exporter: one job id a line
    write(MIG, "777 1001\n");
    write("2", "");
    await src.scanNow();
    expect(src.ready()).toBe(true);
    expect(src.current().get(GPU0)).toEqual([{ via: "job_mapping", job: "45916256", user: "alice" }]);
    expect(jobs(GPU1)).toEqual(["job-a:-", "job-b:-"]);
    expect(jobs(MIG)).toEqual(["777:1001"]); // no name for the uid: the uid as text
    expect(src.current().has(GPU2)).toBe(false); // an empty file: no job
    expect(src.stats()).toMatchObject({ reads: 1, files: 3, rejected: {} });
  });

  it("follows the prolog and epilog as they run", async () => {
    const { dir, src, write, jobs } = setup({ pollMs: 50 });
    src.start();
    await eventually("a first scan", () => (src.ready() ? true : undefined), 10_000, 20);
    expect(src.current().size).toBe(0);
    // prolog of job 100 on GPUs 0 and 2
    write("0", "100 1000\n");
    write("2", "100 1000\n");
    await eventually("job 100", () => (jobs(GPU0) && jobs(GPU2) ? true : undefined), 10_000, 20);
    expect(jobs(GPU0)).toEqual(["100:1000"]);
    // job 101 shares GPU 2 (a shared partition): its prolog appends
    write("2", "100 1000\n101 1002\n");
    await eventually("job 101", () => (jobs(GPU2)?.length === 2 ? true : undefined), 10_000, 20);
    expect(jobs(GPU2)).toEqual(["100:1000", "101:1002"]);
    // epilog of job 100: removes GPU 0's file, rewrites GPU 2's
    unlinkSync(path.join(dir, "0"));
    write("2", "101 1002\n");
    await eventually(
      "job 100 gone",
      () => (!src.current().has(GPU0) && jobs(GPU2)?.length === 1 ? true : undefined),
      10_000,
      20,
    );
    expect(jobs(GPU2)).toEqual(["101:1002"]);
    // epilog of job 101 empties the file rather than removing it
    write("2", "");
    await eventually("no jobs", () => (src.current().size === 0 ? true : undefined), 10_000, 20);
  });

  it("ignores huge and binary files, counting and logging each once", async () => {
    const { src, write, jobs, logger } = setup({ maxFileBytes: 1024 });
    write("0", "1\n".repeat(5000));
    write("1", new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0, 0, 0, 1]));
    write("2", "42 1000\n");
    for (let i = 0; i < 3; i++) await src.scanNow();
    expect(src.current().has(GPU0)).toBe(false);
    expect(src.current().has(GPU1)).toBe(false);
    expect(jobs(GPU2)).toEqual(["42:1000"]);
    expect(src.stats().rejected).toEqual({ too_large: 1, binary: 1 });
    expect(logger.lines.filter((l) => l.level === "warn").map((l) => l.msg)).toEqual([
      expect.stringContaining("larger than the agent reads"),
      expect.stringContaining("not text"),
    ]);
    // Fixed by the scheduler: the file is read again and used.
    write("0", "43\n");
    await src.scanNow();
    expect(jobs(GPU0)).toEqual(["43:-"]);
  });

  it("a file one byte past the bound is refused", async () => {
    const { src, write } = setup({ maxFileBytes: 16 });
    write("0", "9".repeat(17));
    await src.scanNow();
    expect(src.current().size).toBe(0);
    expect(src.stats().rejected["too_large"]).toBe(1);
  });

  it("ignores names that are no GPU's, symlinks, FIFOs and directories, each counted once", async () => {
    const { root, dir, src, write, logger } = setup();
    write("README", "not a mapping");
    write(".0.swp", "x");
    write("0.tmp", "1");
    writeFileSync(path.join(root, "secret"), "s3cr3t 0\n");
    symlinkSync(path.join(root, "secret"), path.join(dir, "1"));
    execFileSync("mkfifo", [path.join(dir, "2")]);
    mkdirSync(path.join(dir, GPU0));
    write("7", "55\n"); // an index this host has no GPU for
    for (let i = 0; i < 3; i++) await src.scanNow();
    expect(src.current().size).toBe(0);
    expect(src.stats().rejected).toEqual({ not_gpu_name: 2, not_a_file: 3, index_unknown: 1 }); // .0.swp is hidden: skipped
    expect(logger.lines.filter((l) => l.level === "warn")).toHaveLength(3);
  });

  it("waits for the GPU list before resolving indexes", async () => {
    let gpus = new Map<number, string>();
    const { src, write, jobs } = setup({ gpuByIndex: () => gpus });
    write("0", "5\n");
    await src.scanNow();
    expect(src.current().size).toBe(0);
    expect(src.stats().rejected).toEqual({});
    gpus = GPUS;
    await src.scanNow();
    expect(jobs(GPU0)).toEqual(["5:-"]);
  });

  it("bounds the jobs of one GPU", async () => {
    const { src, write } = setup({ maxJobsPerGpu: 3 });
    write("0", Array.from({ length: 10 }, (_, i) => `${i}`).join("\n"));
    await src.scanNow();
    expect(
      src
        .current()
        .get(GPU0)
        ?.map((o) => o.job),
    ).toEqual(["0", "1", "2"]);
    expect(src.stats().ownersDropped).toBe(7);
  });

  it("a directory not made yet means no job; one that cannot be read keeps the last answer for its bound", async () => {
    let now = 1_000_000;
    const { dir, src, write, jobs, logger } = setup({ staleAfterMs: 60_000, now: () => now });
    rmSync(dir, { recursive: true });
    await src.scanNow();
    expect(src.ready()).toBe(true);
    expect(src.current().size).toBe(0);
    expect(logger.lines.map((l) => l.level)).toEqual(["info", "info"]);
    mkdirSync(dir);
    write("0", "9 0\n");
    await src.scanNow();
    expect(jobs(GPU0)).toEqual(["9:0"]);
    // The path turns into something no directory listing can read.
    rmSync(dir, { recursive: true });
    writeFileSync(dir, "not a directory");
    now += 30_000;
    await src.scanNow();
    expect(jobs(GPU0)).toEqual(["9:0"]);
    expect(src.stats().failures).toEqual({ unreadable_dir: 1 });
    now += 31_000;
    expect(src.ready()).toBe(false);
    expect(src.current().size).toBe(0);
    rmSync(dir);
    mkdirSync(dir);
    await src.scanNow();
    expect(src.ready()).toBe(true);
  });

  it("stop is safe before start and twice", async () => {
    const { src } = setup();
    await src.stop();
    await src.stop();
    src.start();
    expect(src.ready()).toBe(false);
  });
});
