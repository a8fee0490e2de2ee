import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readInfluxCredentials } from "./credentials.js";

describe("readInfluxCredentials", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "trueidle-creds-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads the environment", () => {
    expect(readInfluxCredentials({ env: { TRUEIDLE_INFLUX_USERNAME: "u", TRUEIDLE_INFLUX_PASSWORD: "p" } })).toEqual({
      username: "u",
      password: "p",
      from: "environment",
    });
    expect(readInfluxCredentials({ env: {} })).toBeUndefined();
    expect(
      readInfluxCredentials({ env: { TRUEIDLE_INFLUX_USERNAME: "", TRUEIDLE_INFLUX_PASSWORD: "" } }),
    ).toBeUndefined();
    expect(() => readInfluxCredentials({ env: { TRUEIDLE_INFLUX_PASSWORD: "p" } })).toThrow(/USERNAME is not/);
    // A user without a password is a user whose password is empty.
    expect(readInfluxCredentials({ env: { TRUEIDLE_INFLUX_USERNAME: "u" } })).toEqual({
      username: "u",
      password: "",
      from: "environment",
    });
  });

  it("reads the first line of a file, the password may hold colons and spaces, and warns when others can read it", () => {
    const file = path.join(dir, "creds");
    writeFileSync(file, "alice:pa:ss word\nignored\n");
    chmodSync(file, 0o600);
    expect(readInfluxCredentials({ file, env: {} })).toEqual({
      username: "alice",
      password: "pa:ss word",
      from: file,
      warning: undefined,
    });
    // Group-readable is how a Kubernetes Secret (fsGroup) or a root:trueidle 0640 file is shared.
    chmodSync(file, 0o640);
    expect(readInfluxCredentials({ file, env: {} })?.warning).toBeUndefined();
    chmodSync(file, 0o644);
    expect(readInfluxCredentials({ file, env: {} })?.warning).toMatch(
      new RegExp(`^${file} \\(--influx-credentials-file\\) is readable by every user`),
    );
    chmodSync(file, 0o660);
    expect(readInfluxCredentials({ file, env: {} })?.warning).toMatch(/writable by other users/);
  });

  it("refuses a bad file and a missing file, naming the file and never its content", () => {
    const bad = path.join(dir, "bad");
    writeFileSync(bad, "no colon here\n");
    expect(() => readInfluxCredentials({ file: bad, env: {} })).toThrow(
      `--influx-credentials-file ${bad}: the first line must be username:password`,
    );
    const noUser = path.join(dir, "no-user");
    writeFileSync(noUser, ":s3cret\n");
    expect(() => readInfluxCredentials({ file: noUser, env: {} })).toThrow(/first line must be username:password/);
    expect(() => readInfluxCredentials({ file: noUser, env: {} })).not.toThrow(/s3cret/);
    expect(() => readInfluxCredentials({ file: path.join(dir, "missing"), env: {} })).toThrow(
      /--influx-credentials-file .*missing cannot be read/,
    );
  });

  it("refuses credentials given twice, saying which to drop, whatever the file holds", () => {
    const file = path.join(dir, "twice");
    writeFileSync(file, "reader:pw\n");
    chmodSync(file, 0o600);
    for (const env of [
      { TRUEIDLE_INFLUX_USERNAME: "u" },
      { TRUEIDLE_INFLUX_PASSWORD: "p" },
      { TRUEIDLE_INFLUX_USERNAME: "env-user", TRUEIDLE_INFLUX_PASSWORD: "env-pass" },
    ]) {
      expect(() => readInfluxCredentials({ file, env })).toThrow(
        `InfluxDB credentials are given both in the environment (TRUEIDLE_INFLUX_USERNAME/PASSWORD) and in --influx-credentials-file ${file}; ` +
          "unset TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD, or drop --influx-credentials-file",
      );
    }
    // Empty variables are unset ones.
    expect(readInfluxCredentials({ file, env: { TRUEIDLE_INFLUX_USERNAME: "" } })?.from).toBe(file);
  });
});
