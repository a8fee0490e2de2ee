/**
 * The Slurm prolog and epilog of deploy/slurm/ run as Slurm runs them (bash, the job's
 * environment), against an nvidia-smi that answers uuid queries; the agent's job mapping
 * reader then sees the job on exactly the job's GPUs, and nothing once the epilog ran.
 */
import { execFile } from "node:child_process";
import { chmod, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { recordingLogger } from "../../common/log.js";
import { JobMappingSource } from "../../agent/owners/job-mapping.js";

const run = promisify(execFile);
const SCRIPTS = new URL("../../deploy/slurm/", import.meta.url).pathname;
const UUIDS = [
  "GPU-aaaaaaaa-0000-0000-0000-000000000000",
  "GPU-bbbbbbbb-0000-0000-0000-000000000001",
  "GPU-cccccccc-0000-0000-0000-000000000002",
];

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe("deploy/slurm prolog and epilog", () => {
  it("write the job on its GPUs' uuid files for --job-mapping-dir, and remove them after the job", async () => {
    const dir = await mkdtemp(join(tmpdir(), "trueidle-slurm-"));
    dirs.push(dir);
    const bin = join(dir, "bin");
    const mapping = join(dir, "jobs");
    await run("mkdir", ["-p", bin]);
    // nvidia-smi --query-gpu=uuid --format=csv,noheader -i N
    await writeFile(
      join(bin, "nvidia-smi"),
      `#!/bin/bash\nuuids=(${UUIDS.join(" ")})\nfor a in "$@"; do last="$a"; done\necho "\${uuids[$last]}"\n`,
    );
    await chmod(join(bin, "nvidia-smi"), 0o755);
    const env = {
      ...process.env,
      PATH: `${bin}:${process.env["PATH"] ?? ""}`,
      TRUEIDLE_JOB_MAPPING_DIR: mapping,
      SLURM_JOB_ID: "4242",
      SLURM_JOB_UID: "1001",
      SLURM_JOB_GPUS: "0,2",
    };
    await run("bash", [join(SCRIPTS, "prolog.sh")], { env });
    expect((await readdir(mapping)).sort()).toEqual([UUIDS[0], UUIDS[2]]);

    const source = new JobMappingSource({
      dir: mapping,
      gpuByIndex: () => new Map(UUIDS.map((u, i) => [i, u])),
      logger: recordingLogger(),
    });
    await source.scanNow();
    expect(Object.fromEntries([...source.current()].map(([u, o]) => [u, o]))).toEqual({
      [UUIDS[0]!]: [{ via: "job_mapping", job: "4242", user: "1001" }],
      [UUIDS[2]!]: [{ via: "job_mapping", job: "4242", user: "1001" }],
    });
    await run("bash", [join(SCRIPTS, "epilog.sh")], { env });
    expect(await readdir(mapping)).toEqual([]);
    await source.scanNow();
    expect(source.current().size).toBe(0);
    await source.stop();
  });
});
