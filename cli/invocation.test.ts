import { describe, expect, it } from "vitest";
import { shellWord, trueidleCommand, type InvocationContext } from "./invocation.js";

const CHECKOUT_BIN = "/home/ops/trueidle/bin/trueidle.js";

function ctx(extra: Partial<InvocationContext> & { onPath?: Record<string, string> }): InvocationContext {
  const onPath = extra.onPath ?? { node: "/usr/bin/node" };
  return {
    script: CHECKOUT_BIN,
    env: {},
    cwd: "/home/ops/trueidle",
    execPath: "/usr/bin/node",
    which: (name) => onPath[name],
    realpath: (p) => (p === "/usr/local/bin/trueidle" ? "/usr/local/lib/node_modules/trueidle/bin/trueidle.js" : p),
    ...extra,
  };
}

describe("the command that runs trueidle again", () => {
  it("is `trueidle` when the trueidle on PATH is this installation", () => {
    expect(
      trueidleCommand(
        ctx({
          script: "/usr/local/lib/node_modules/trueidle/bin/trueidle.js",
          onPath: { trueidle: "/usr/local/bin/trueidle", node: "/usr/bin/node" },
        }),
      ),
    ).toBe("trueidle");
  });

  it("is `npx trueidle` when npm started it: npx, or npm run in a checkout", () => {
    expect(trueidleCommand(ctx({ env: { npm_command: "exec", npm_package_name: "trueidle" } }))).toBe("npx trueidle");
    expect(trueidleCommand(ctx({ env: { npm_command: "run-script", npm_package_name: "trueidle" } }))).toBe(
      "npx trueidle",
    );
    // npm running a script of some other project: npx would fetch a package by that name.
    expect(trueidleCommand(ctx({ env: { npm_command: "run-script", npm_package_name: "other" } }))).toBe(
      "node bin/trueidle.js",
    );
  });

  it("is node with the script's path otherwise, relative to the user's folder when below it", () => {
    expect(trueidleCommand(ctx({}))).toBe("node bin/trueidle.js");
    expect(trueidleCommand(ctx({ cwd: "/home/ops" }))).toBe("node trueidle/bin/trueidle.js");
    expect(trueidleCommand(ctx({ cwd: "/tmp" }))).toBe(`node ${CHECKOUT_BIN}`);
    // Another trueidle on PATH is not this one.
    expect(trueidleCommand(ctx({ onPath: { trueidle: "/usr/local/bin/trueidle", node: "/usr/bin/node" } }))).toBe(
      "node bin/trueidle.js",
    );
  });

  it("names the runtime by path when the node on PATH is not the one running, and quotes paths for the shell", () => {
    expect(trueidleCommand(ctx({ execPath: "/opt/trueidle/node/bin/node", onPath: {} }))).toBe(
      "/opt/trueidle/node/bin/node bin/trueidle.js",
    );
    expect(trueidleCommand(ctx({ script: "/home/ops/my tools/bin/trueidle.js", cwd: "/" }))).toBe(
      "node 'home/ops/my tools/bin/trueidle.js'",
    );
    expect(shellWord("it's")).toBe(`'it'\\''s'`);
  });
});
