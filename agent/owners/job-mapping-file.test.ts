import { describe, expect, it } from "vitest";
import { mappingFileName, parseMappingFile } from "./job-mapping-file.js";

const enc = (s: string) => new TextEncoder().encode(s);
const MAX = 64 * 1024;

describe("mappingFileName", () => {
  it.each([
    ["0", { index: 0 }],
    ["13", { index: 13 }],
    ["GPU-0a1b2c3d-0000-1111-2222-333344445555", { uuid: "GPU-0a1b2c3d-0000-1111-2222-333344445555" }],
    ["MIG-265a219d-a49f-578a-825d-222c72699c16", { uuid: "MIG-265a219d-a49f-578a-825d-222c72699c16" }],
  ])("%s names a GPU", (name, want) => {
    expect(mappingFileName(name)).toEqual(want);
  });

  it.each([
    "",
    ".0.tmp",
    "0.tmp",
    "README",
    "gpu0",
    "-1",
    "123456",
    "GPU-0a1b2c3d",
    "GPU-0a1b2c3d-0000-1111-2222-333344445555.bak",
  ])("%j names no GPU", (name) => {
    expect(mappingFileName(name)).toBeUndefined();
  });
});

describe("parseMappingFile", () => {
  it("reads jobstats' line: job id and uid", () => {
    // What PrincetonUniversity/jobstats' prolog writes: `echo $SLURM_JOB_ID $SLURM_JOB_UID`.
    expect(parseMappingFile(enc("45916256 262563\n"), MAX)).toEqual({
      jobs: [{ job: "45916256", uid: 262563 }],
      badLines: 0,
    });
  });

  it("reads dcgm-exporter's lines: one job id each", () => {
    expect(parseMappingFile(enc("job1\njob2\r\njob3"), MAX).jobs).toEqual([
      { job: "job1" },
      { job: "job2" },
      { job: "job3" },
    ]);
  });

  it("takes array, heterogeneous and PBS-style ids, user names, and skips blank and comment lines", () => {
    const text = "# written by the prolog\n\n  1234_7\talice\n1235+1 0\n99.pbs01.example.org  bob$\n";
    expect(parseMappingFile(enc(text), MAX).jobs).toEqual([
      { job: "1234_7", userName: "alice" },
      { job: "1235+1", uid: 0 },
      { job: "99.pbs01.example.org", userName: "bob$" },
    ]);
  });

  it("lists a job once; the line that names its user wins", () => {
    expect(parseMappingFile(enc("7\n7 1000\n7 2000\n"), MAX).jobs).toEqual([{ job: "7", uid: 1000 }]);
  });

  it("an empty file means no job", () => {
    expect(parseMappingFile(enc(""), MAX)).toEqual({ jobs: [], badLines: 0 });
    expect(parseMappingFile(enc("\n \n"), MAX)).toEqual({ jobs: [], badLines: 0 });
  });

  it("counts lines that name no usable job and keeps the rest", () => {
    const r = parseMappingFile(enc(`${"9".repeat(200)}\nok-1\n<script>\n`), MAX);
    expect(r.jobs).toEqual([{ job: "ok-1" }]);
    expect(r.badLines).toBe(2);
  });

  it("ignores a user that is neither a uid nor a plain name", () => {
    expect(parseMappingFile(enc("5 ../../etc\n6 99999999999\n"), MAX).jobs).toEqual([{ job: "5" }, { job: "6" }]);
  });

  it("refuses a file past the bound, and binary bytes", () => {
    expect(parseMappingFile(enc("1\n".repeat(10)), 8)).toEqual({ jobs: [], problem: "too_large", badLines: 0 });
    expect(parseMappingFile(new Uint8Array([0x31, 0x00, 0x32]), MAX).problem).toBe("binary");
    expect(parseMappingFile(new Uint8Array([0x31, 0xff, 0xfe, 0x0a]), MAX).problem).toBe("binary");
    expect(parseMappingFile(enc("12\u001b[31m\n"), MAX).problem).toBe("binary");
    expect(parseMappingFile(new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01]), MAX).problem).toBe("binary");
  });
});
