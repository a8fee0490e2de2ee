import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { deprecationsOf, formatHelp, parseFlags, type CommandSpec } from "./args.js";
import {
  AGENT_TRANSPORT_FLAGS,
  agentTransportFrom,
  COLLECTOR_SECURITY_FLAGS,
  collectorSecurityFrom,
} from "./security-flags.js";
import type { Logger } from "../common/log.js";

const agentSpec: CommandSpec = { name: "agent", summary: "", usage: "", flags: AGENT_TRANSPORT_FLAGS };
const collectorSpec: CommandSpec = { name: "collector", summary: "", usage: "", flags: COLLECTOR_SECURITY_FLAGS };
const TOKEN = "abcdefabcdefabcdefabcdefabcdefab";

function capture(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger: Logger = {
    debug: (m) => lines.push(`debug ${m}`),
    info: (m) => lines.push(`info ${m}`),
    warn: (m) => lines.push(`warn ${m}`),
    error: (m) => lines.push(`error ${m}`),
    child: () => logger,
  };
  return { logger, lines };
}

const agent = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  agentTransportFrom(parseFlags(agentSpec, argv, env), env);
const collector = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  collectorSecurityFrom(parseFlags(collectorSpec, argv, env), env);

describe("transport flags", () => {
  it("takes --plaintext from the environment too, and warns about it and a token in clear once announced", () => {
    const t = agent([], { TRUEIDLE_PLAINTEXT: "true", TRUEIDLE_TOKEN: TOKEN });
    expect(t.value.security).toBe("plaintext");
    expect(t.value.callMetadata?.get("authorization")).toEqual([`Bearer ${TOKEN}`]);
    const { logger, lines } = capture();
    t.announce(logger);
    expect(lines).toEqual([
      "warn gRPC runs unencrypted (--plaintext): windows travel in clear; use this only on a trusted network.",
      "warn The agent token travels in clear over plaintext gRPC: anyone on the path can read and reuse it. Use TLS (--tls or --tls-ca).",
    ]);
    expect(lines.join("\n")).not.toContain(TOKEN);
  });

  it("treats --tls-server-name alone as TLS with the system's CAs, and --tls=false as not given", () => {
    expect(agent(["--tls-server-name", "collector.example"]).value.security).toBe("TLS");
    expect(() => agent(["--tls=false"])).toThrow(/gRPC needs an explicit choice/);
    expect(agent(["--tls=false", "--plaintext"]).value.security).toBe("plaintext");
  });

  it("reports every conflict at once", () => {
    expect(() => agent(["--plaintext", "--tls", "--tls-key", "k"])).toThrow(
      /--plaintext cannot be combined with --tls, --tls-key; choose TLS or plaintext\n--tls-cert and --tls-key go together/,
    );
    expect(() => collector(["--tls-client-ca", "ca.crt", "--http-tls-key", "k"])).toThrow(
      /^--http-tls-cert and --http-tls-key go together: give both or neither\n--tls-client-ca needs --tls-cert and --tls-key$/,
    );
    expect(() => collector(["--http-basic-auth-file", "users"])).toThrow(
      /^gRPC needs an explicit choice: give --tls-cert and --tls-key \(see README 'Security'\), or --plaintext to run unencrypted on a trusted network$/,
    );
  });

  it("builds the collector's options from flags and the environment", () => {
    const s = collector(["--plaintext"], { TRUEIDLE_AGENT_TOKENS: `ci:${TOKEN}` });
    expect(s.value.grpcTls).toBeUndefined();
    expect(s.value.tokens?.match(TOKEN)).toBe("ci");
    const { logger, lines } = capture();
    s.announce(logger);
    expect(lines[0]).toMatch(/^warn gRPC runs unencrypted/);
    expect(lines[1]).toMatch(/^warn Agent tokens travel in clear/);
    expect(lines[2]).toBe("info Agents must present one of 1 accepted token(s) from TRUEIDLE_AGENT_TOKENS.");
    expect(() => collector(["--plaintext"], { TRUEIDLE_AGENT_TOKENS: "tooshort" })).toThrow(
      /TRUEIDLE_AGENT_TOKENS item 1: a token must be at least 16/,
    );
  });
});

describe("the collector's --agent-tokens-file, formerly --tokens-file", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "trueidle-tokens-flag-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const tokens = path.join(dir, "tokens");
  writeFileSync(tokens, `rack-a:${TOKEN}\n`);
  chmodSync(tokens, 0o600);

  it("takes the old flag and variable names, with one warning each naming the new one", () => {
    const quiet = parseFlags(collectorSpec, ["--plaintext", "--agent-tokens-file", tokens], {});
    expect(deprecationsOf(quiet)).toEqual([]);
    expect(collectorSecurityFrom(quiet, {}).value.tokens?.match(TOKEN)).toBe("rack-a");

    const old = parseFlags(collectorSpec, ["--plaintext", `--tokens-file=${tokens}`], {});
    expect(old["agent-tokens-file"]).toBe(tokens);
    expect(deprecationsOf(old)).toEqual([
      "--tokens-file is deprecated and will be removed; use --agent-tokens-file instead.",
    ]);
    expect(collectorSecurityFrom(old, {}).value.tokens?.match(TOKEN)).toBe("rack-a");

    const fromEnv = parseFlags(collectorSpec, ["--plaintext"], { TRUEIDLE_TOKENS_FILE: tokens });
    expect(fromEnv["agent-tokens-file"]).toBe(tokens);
    expect(deprecationsOf(fromEnv)).toEqual([
      "TRUEIDLE_TOKENS_FILE is deprecated and will be removed; set TRUEIDLE_AGENT_TOKENS_FILE instead.",
    ]);

    const both = parseFlags(collectorSpec, ["--plaintext"], {
      TRUEIDLE_TOKENS_FILE: "/old",
      TRUEIDLE_AGENT_TOKENS_FILE: tokens,
    });
    expect(both["agent-tokens-file"]).toBe(tokens);
    expect(deprecationsOf(both)).toEqual([
      "TRUEIDLE_TOKENS_FILE is deprecated and ignored because TRUEIDLE_AGENT_TOKENS_FILE is set; remove TRUEIDLE_TOKENS_FILE.",
    ]);
  });

  it("refuses the old and the new flag together, and names the old one in --help", () => {
    expect(() => parseFlags(collectorSpec, ["--tokens-file", tokens, "--agent-tokens-file", tokens], {})).toThrow(
      /^--tokens-file is the old name of --agent-tokens-file; give --agent-tokens-file once$/,
    );
    expect(() => parseFlags(collectorSpec, ["--tokens-file", ""], {})).toThrow(
      /^--tokens-file: needs a non-empty value$/,
    );
    expect(formatHelp(collectorSpec)).toMatch(/--agent-tokens-file FILE[\s\S]*Formerly --tokens-file \(deprecated\)\./);
  });

  it("logs the deprecated TRUEIDLE_TOKENS once, at announce", () => {
    const s = collector(["--plaintext"], { TRUEIDLE_TOKENS: `ci:${TOKEN}` });
    const { logger, lines } = capture();
    s.announce(logger);
    expect(lines.filter((l) => l.includes("TRUEIDLE_TOKENS"))).toEqual([
      "warn TRUEIDLE_TOKENS is deprecated and will be removed; set TRUEIDLE_AGENT_TOKENS instead.",
      "info Agents must present one of 1 accepted token(s) from TRUEIDLE_TOKENS.",
    ]);
  });
});

describe("--web.config.file beside the HTTP flags", () => {
  it("is refused with any flag it replaces, naming the key to use instead", () => {
    expect(() =>
      collector([
        "--plaintext",
        "--web.config.file",
        "web.yml",
        "--http-tls-cert",
        "c",
        "--http-tls-key",
        "k",
        "--http-basic-auth-file",
        "u",
      ]),
    ).toThrow(
      "--http-tls-cert and --web.config.file both configure the HTTP side; set tls_server_config.cert_file in the web configuration file and drop --http-tls-cert\n" +
        "--http-tls-key and --web.config.file both configure the HTTP side; set tls_server_config.key_file in the web configuration file and drop --http-tls-key\n" +
        "--http-basic-auth-file and --web.config.file both configure the HTTP side; set basic_auth_users (bcrypt hashes) in the web configuration file and drop --http-basic-auth-file",
    );
  });

  it("is read from TRUEIDLE_WEB_CONFIG_FILE", () => {
    expect(
      parseFlags(collectorSpec, [], { TRUEIDLE_WEB_CONFIG_FILE: "/etc/trueidle/web.yml" })["web.config.file"],
    ).toBe("/etc/trueidle/web.yml");
  });
});
