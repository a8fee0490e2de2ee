import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Metadata } from "@grpc/grpc-js";
import type { Logger } from "../../common/log.js";
import { loadTokens, TokenSet } from "./tokens.js";
import { StreamAuthenticator } from "./stream-auth.js";

const dir = mkdtempSync(path.join(tmpdir(), "trueidle-tokens-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const A = "a".repeat(32);
const B = "0123456789abcdef0123456789abcdef";

function file(name: string, text: string, mode = 0o600): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
}

describe("loadTokens", () => {
  it("reads tokens and name:token lines, skipping blank lines and comments", () => {
    const f = file("ok", `# agents of rack A\nrack-a:${A}\n\n  ${B}  \n`);
    const t = loadTokens({ file: f, env: {} })!;
    expect(t.tokens.size).toBe(2);
    expect(t.from).toBe(`--agent-tokens-file ${f}`);
    expect(t.warning).toBeUndefined();
    expect(t.tokens.match(A)).toBe("rack-a");
    expect(t.tokens.match(B)).toBe("line-4");
    expect(t.tokens.match(`${A}x`)).toBeUndefined();
    expect(t.tokens.match("")).toBeUndefined();
  });

  it("reads TRUEIDLE_AGENT_TOKENS, comma-separated, and nothing when neither is set", () => {
    const t = loadTokens({ env: { TRUEIDLE_AGENT_TOKENS: `${A}, ci:${B}` } })!;
    expect(t.tokens.match(A)).toBe("env-1");
    expect(t.tokens.match(B)).toBe("ci");
    expect(t.from).toBe("TRUEIDLE_AGENT_TOKENS");
    expect(t.deprecation).toBeUndefined();
    expect(loadTokens({ env: {} })).toBeUndefined();
    expect(loadTokens({ env: { TRUEIDLE_AGENT_TOKENS: " " } })).toBeUndefined();
  });

  it("still reads the deprecated TRUEIDLE_TOKENS, saying so, and ignores it beside TRUEIDLE_AGENT_TOKENS", () => {
    const old = loadTokens({ env: { TRUEIDLE_TOKENS: `ci:${A}` } })!;
    expect(old.tokens.match(A)).toBe("ci");
    expect(old.from).toBe("TRUEIDLE_TOKENS");
    expect(old.deprecation).toBe(
      "TRUEIDLE_TOKENS is deprecated and will be removed; set TRUEIDLE_AGENT_TOKENS instead.",
    );
    const both = loadTokens({ env: { TRUEIDLE_TOKENS: `old:${A}`, TRUEIDLE_AGENT_TOKENS: `new:${B}` } })!;
    expect(both.tokens.match(B)).toBe("new");
    expect(both.tokens.match(A)).toBeUndefined();
    expect(both.deprecation).toMatch(/^TRUEIDLE_TOKENS is deprecated and ignored because TRUEIDLE_AGENT_TOKENS is set/);
    expect(() => loadTokens({ file: file("both-old", A), env: { TRUEIDLE_TOKENS: B } })).toThrow(
      /both in TRUEIDLE_TOKENS and in --agent-tokens-file/,
    );
  });

  it("warns when the file is readable by others", () => {
    expect(loadTokens({ file: file("open", A, 0o644), env: {} })!.warning).toMatch(
      /readable by every user; chmod 640 or 600/,
    );
  });

  it("reports every bad line at once, naming the file and line but never the token", () => {
    const f = file("bad", `short\n${A}\nbad name:${B}\nx:has space in it and is long\n`);
    let msg = "";
    try {
      loadTokens({ file: f, env: {} });
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toContain(`--agent-tokens-file ${f} line 1: a token must be at least 16 characters`);
    expect(msg).toContain("line 3: a token name must be");
    expect(msg).toContain("line 4: a token may hold only");
    expect(msg).not.toContain("short");
    expect(msg).not.toContain("has space");
  });

  it("refuses duplicates, an empty file, a missing file, and both sources at once", () => {
    expect(() => loadTokens({ file: file("dup", `${A}\nx:${A}\n`), env: {} })).toThrow(/is the same as an earlier one/);
    expect(() => loadTokens({ file: file("dupname", `x:${A}\nx:${B}\n`), env: {} })).toThrow(/name "x" is used twice/);
    expect(() => loadTokens({ file: file("empty", "# nothing\n"), env: {} })).toThrow(/holds no token/);
    expect(() => loadTokens({ file: path.join(dir, "nope"), env: {} })).toThrow(
      /--agent-tokens-file .*nope cannot be read: ENOENT/,
    );
    expect(() => loadTokens({ file: file("both", A), env: { TRUEIDLE_AGENT_TOKENS: B } })).toThrow(
      /both in TRUEIDLE_AGENT_TOKENS and in --agent-tokens-file/,
    );
  });
});

describe("StreamAuthenticator", () => {
  const lines: Array<{ level: string; msg: string; fields?: unknown }> = [];
  const logger: Logger = {
    debug: (msg, fields) => lines.push({ level: "debug", msg, fields }),
    info: (msg, fields) => lines.push({ level: "info", msg, fields }),
    warn: (msg, fields) => lines.push({ level: "warn", msg, fields }),
    error: (msg, fields) => lines.push({ level: "error", msg, fields }),
    child: () => logger,
  };
  const md = (value?: string): Metadata => {
    const m = new Metadata();
    if (value !== undefined) m.set("authorization", value);
    return m;
  };

  it("accepts a listed bearer token and refuses the rest, logging once a minute per address without the token", () => {
    let now = 0;
    const auth = new StreamAuthenticator({
      tokens: new TokenSet([{ name: "rack-a", token: A }]),
      logger,
      now: () => now,
    });
    expect(auth.check(md(`Bearer ${A}`), "10.0.0.7:5000")).toEqual({ ok: true, tokenName: "rack-a" });
    expect(auth.check(md(`bearer ${A}`), "10.0.0.7:5000").ok).toBe(true);
    expect(auth.check(md(), "10.0.0.7:5001")).toEqual({ ok: false, problem: "missing" });
    expect(auth.check(md(A), "10.0.0.7:5002")).toEqual({ ok: false, problem: "malformed" });
    expect(auth.check(md(`Bearer ${B}`), "10.0.0.7:5003")).toEqual({ ok: false, problem: "not_accepted" });
    expect(auth.check(md(`Bearer ${B}`), "10.0.0.8:5000").ok).toBe(false);
    let warns = lines.filter((l) => l.level === "warn");
    expect(warns.map((w) => w.msg)).toEqual([
      "Refused an agent stream from 10.0.0.7 with UNAUTHENTICATED: it sent no token.",
      "Refused an agent stream from 10.0.0.8 with UNAUTHENTICATED: its token is not one this collector accepts.",
    ]);
    now += 60_000;
    auth.check(md(`Bearer ${B}`), "10.0.0.7:6000");
    warns = lines.filter((l) => l.level === "warn");
    expect(warns[2]!.msg).toContain("2 earlier refusals from this address were not logged.");
    expect(JSON.stringify(lines)).not.toContain(A);
    expect(JSON.stringify(lines)).not.toContain(B);
  });
});
