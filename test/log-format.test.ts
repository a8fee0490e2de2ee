/**
 * The log format each way `trueidle` can be run: on a terminal (a pseudo-terminal from
 * util-linux `script`, as a person at a shell runs it) the logs are text lines, through a
 * pipe (systemd, a container, a log shipper) JSON; `--log-format` and TRUEIDLE_LOG_FORMAT
 * force either. The command is `agent --once` with a kubelet socket that does not exist, which
 * logs one warning beside its table.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT, runTrueidle, TRUEIDLE_BIN } from "./helpers/trueidle-process.js";

const SCRIPT_BIN = "/usr/bin/script";
const MISSING_SOCKET = "/nonexistent/kubelet.sock";
const ONCE = [
  "agent",
  "--once",
  "--source",
  "sim",
  "--scenario",
  path.join(REPO_ROOT, "demo", "scenarios", "gpu-a01.json"),
  "--pod-resources-socket",
  MISSING_SOCKET,
];

/** The warning as a text line: time, level, message, fields. */
const TEXT_WARNING = new RegExp(
  String.raw`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARN  No kubelet pod-resources socket at ${MISSING_SOCKET}; .* component=pod-resources socket=${MISSING_SOCKET} reason=socket_missing error="ENOENT: [^"]*"$`,
  "m",
);

const quote = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`;

/** Runs trueidle on a pseudo-terminal: stdout and stderr both go to it, lines end in CR LF. */
function onTerminal(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; output: string }> {
  if (!existsSync(SCRIPT_BIN))
    throw new Error(`${SCRIPT_BIN} is missing; install util-linux (it gives these tests a terminal).`);
  return new Promise((resolve, reject) => {
    const command = [process.execPath, TRUEIDLE_BIN, ...args].map(quote).join(" ");
    const child = spawn(SCRIPT_BIN, ["-qec", command, "/dev/null"], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, output: output.replace(/\r\n/g, "\n") }));
  });
}

/** The JSON log lines of an output. */
const jsonLines = (output: string): Array<Record<string, unknown>> =>
  output
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe("log format", () => {
  it("is text on a terminal, the table and the warning each on lines of their own", async () => {
    const r = await onTerminal(ONCE);
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(TEXT_WARNING);
    expect(jsonLines(r.output)).toEqual([]);
    expect(r.output).toMatch(/^GPU +MODEL +REPORTED/m);
  });

  it("is JSON through a pipe", async () => {
    const r = await runTrueidle(ONCE);
    expect(r.code, r.output).toBe(0);
    expect(r.output).not.toMatch(TEXT_WARNING);
    expect(jsonLines(r.output)).toEqual([
      expect.objectContaining({
        level: "warn",
        component: "pod-resources",
        socket: MISSING_SOCKET,
        reason: "socket_missing",
      }),
    ]);
  });

  it("follows --log-format json on a terminal, and --log-format text or TRUEIDLE_LOG_FORMAT=text through a pipe", async () => {
    const json = await onTerminal([...ONCE, "--log-format", "json"]);
    expect(json.code, json.output).toBe(0);
    expect(jsonLines(json.output)).toEqual([expect.objectContaining({ level: "warn", reason: "socket_missing" })]);
    for (const r of [
      await runTrueidle([...ONCE, "--log-format", "text"]),
      await runTrueidle(ONCE, { TRUEIDLE_LOG_FORMAT: "text" }),
    ]) {
      expect(r.code, r.output).toBe(0);
      expect(r.output).toMatch(TEXT_WARNING);
      expect(jsonLines(r.output)).toEqual([]);
    }
  });
});
