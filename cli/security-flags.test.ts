import { describe, expect, it } from "vitest";
import { parseFlags, type CommandSpec } from "./args.js";
import { AGENT_TRANSPORT_FLAGS, agentTransportFrom, COLLECTOR_SECURITY_FLAGS, collectorSecurityFrom } from "./security-flags.js";
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

const agent = (argv: string[], env: NodeJS.ProcessEnv = {}) => agentTransportFrom(parseFlags(agentSpec, argv, env), env);
const collector = (argv: string[], env: NodeJS.ProcessEnv = {}) => collectorSecurityFrom(parseFlags(collectorSpec, argv, env), env);

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
    const s = collector(["--plaintext"], { TRUEIDLE_TOKENS: `ci:${TOKEN}` });
    expect(s.value.grpcTls).toBeUndefined();
    expect(s.value.tokens?.match(TOKEN)).toBe("ci");
    const { logger, lines } = capture();
    s.announce(logger);
    expect(lines[0]).toMatch(/^warn gRPC runs unencrypted/);
    expect(lines[1]).toMatch(/^warn Agent tokens travel in clear/);
    expect(lines[2]).toBe("info Agents must present one of 1 accepted token(s) from TRUEIDLE_TOKENS.");
    expect(() => collector(["--plaintext"], { TRUEIDLE_TOKENS: "tooshort" })).toThrow(/TRUEIDLE_TOKENS item 1: a token must be at least 16/);
  });
});
