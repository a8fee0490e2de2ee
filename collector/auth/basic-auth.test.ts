import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BasicAuthUsers, loadBasicAuth } from "./basic-auth.js";

const dir = mkdtempSync(path.join(tmpdir(), "trueidle-basic-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string, mode = 0o600): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
}
const header = (user: string, pass: string): string => `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;

describe("HTTP basic auth users", () => {
  it("checks user:password and user:{SHA256}hex lines", () => {
    const hex = createHash("sha256").update("s3cret: with colon").digest("hex");
    const { users, warning } = loadBasicAuth(
      file("ok", `# scrapers\nprometheus:hunter2hunter2\n\ngrafana:{SHA256}${hex}\n`),
    );
    expect(users.size).toBe(2);
    expect(warning).toBeUndefined();
    expect(users.check(header("prometheus", "hunter2hunter2"))).toBe("prometheus");
    expect(users.check(header("grafana", "s3cret: with colon"))).toBe("grafana");
    expect(users.check(header("grafana", `{SHA256}${hex}`))).toBeUndefined();
    expect(users.check(header("prometheus", "wrong"))).toBeUndefined();
    expect(users.check(header("nobody", "hunter2hunter2"))).toBeUndefined();
    expect(users.check(undefined)).toBeUndefined();
    expect(users.check("Bearer abc")).toBeUndefined();
    expect(users.check("Basic !!!")).toBeUndefined();
    expect(users.check(`Basic ${Buffer.from("nocolon").toString("base64")}`)).toBeUndefined();
  });

  it("reports every bad line at once without quoting passwords, and warns on an open file", () => {
    let msg = "";
    try {
      loadBasicAuth(file("bad", "nopassword\nalice:{SHA256}abc\nbob:pw1\nbob:pw2\n"));
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/line 1: the form is user:password/);
    expect(msg).toMatch(/line 2: \{SHA256\} must be followed by 64 hex digits/);
    expect(msg).toMatch(/line 4: user "bob" is listed twice/);
    expect(msg).not.toContain("pw1");
    expect(() => loadBasicAuth(file("empty", "# none\n"))).toThrow(/lists no user/);
    expect(() => loadBasicAuth(path.join(dir, "nope"))).toThrow(/--http-basic-auth-file .*nope cannot be read/);
    expect(loadBasicAuth(file("open", "a:b", 0o644)).warning).toMatch(/readable by every user/);
    expect(BasicAuthUsers.fromPasswords({ u: "p" }).check(header("u", "p"))).toBe("u");
  });
});
