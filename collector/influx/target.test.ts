import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { authorizationHeader, describeTarget, parseInfluxUrl, readInfluxCredentials } from "./target.js";

describe("parseInfluxUrl", () => {
  it("takes the database from the path, trueidle when the path is empty", () => {
    expect(parseInfluxUrl("http://influx.example:8086/fleet")).toEqual({
      baseUrl: "http://influx.example:8086",
      database: "fleet",
    });
    expect(parseInfluxUrl("https://influx.example/")).toEqual({
      baseUrl: "https://influx.example",
      database: "trueidle",
    });
    expect(parseInfluxUrl("http://127.0.0.1:8086")).toEqual({ baseUrl: "http://127.0.0.1:8086", database: "trueidle" });
    expect(parseInfluxUrl("http://h:8086/gpu_history-2/")).toEqual({
      baseUrl: "http://h:8086",
      database: "gpu_history-2",
    });
  });

  it.each([
    ["influx:8086/trueidle", /must start with http:\/\/ or https:\/\//],
    ["ftp://h/trueidle", /must start with http:\/\/ or https:\/\//],
    ["not a url", /not a URL/],
    ["http://user:secret@h:8086/trueidle", /must not hold credentials; set TRUEIDLE_INFLUX_USERNAME/],
    ["http://h:8086/a/b", /single database name/],
    ["http://h:8086/trueidle?u=x", /query/],
    ["http://h:8086/bad%20name", /database name "bad name"/],
  ])("refuses %s clearly", (url, message) => {
    expect(() => parseInfluxUrl(url)).toThrow(message);
  });

  it("never shows credentials when it describes the target", () => {
    const t = { baseUrl: "http://h:8086", database: "trueidle", username: "u", password: "p4ss" };
    expect(describeTarget(t)).toBe('http://h:8086, database "trueidle" (with credentials)');
    expect(authorizationHeader(t)).toBe(`Basic ${Buffer.from("u:p4ss").toString("base64")}`);
    expect(authorizationHeader({ baseUrl: "http://h", database: "d" })).toBeUndefined();
  });
});

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
    expect(() => readInfluxCredentials({ env: { TRUEIDLE_INFLUX_PASSWORD: "p" } })).toThrow(/USERNAME is not/);
  });

  it("reads the first line of a file, the password may hold colons, and warns when others can read it", () => {
    const file = path.join(dir, "creds");
    writeFileSync(file, "alice:pa:ss:word\nignored\n");
    chmodSync(file, 0o600);
    expect(readInfluxCredentials({ file, env: {} })).toEqual({
      username: "alice",
      password: "pa:ss:word",
      from: file,
      warning: undefined,
    });
    // Group-readable is how a Kubernetes Secret (fsGroup) or a root:trueidle 0640 file is shared.
    chmodSync(file, 0o640);
    expect(readInfluxCredentials({ file, env: {} })?.warning).toBeUndefined();
    chmodSync(file, 0o644);
    expect(readInfluxCredentials({ file, env: {} })?.warning).toMatch(/readable by every user/);
    chmodSync(file, 0o660);
    expect(readInfluxCredentials({ file, env: {} })?.warning).toMatch(/writable by other users/);
  });

  it("refuses a bad file, a missing file and credentials given twice", () => {
    const bad = path.join(dir, "bad");
    writeFileSync(bad, "no colon here\n");
    expect(() => readInfluxCredentials({ file: bad, env: {} })).toThrow(/username:password/);
    expect(() => readInfluxCredentials({ file: path.join(dir, "missing"), env: {} })).toThrow(/cannot be read/);
    expect(() => readInfluxCredentials({ file: bad, env: { TRUEIDLE_INFLUX_USERNAME: "u" } })).toThrow(/both/);
  });
});
