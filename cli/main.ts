/** The `trueidle` binary: one entry point, one subcommand per job. */
import { UsageError, wantsHelp } from "./args.js";
import { TrueidleError, errorMessage } from "../common/errors.js";
import { AGENT_VERSION } from "../agent/agent.js";

interface Command {
  summary: string;
  help: () => Promise<string>;
  run: (argv: string[]) => Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  agent: {
    summary: "Sample this host's GPUs and stream windows to a collector (or --once: print what it sees).",
    help: async () => (await import("./agent-command.js")).agentHelp(),
    run: async (a) => (await import("./agent-command.js")).agentCommand(a),
  },
  collector: {
    summary: "Receive windows from agents over gRPC, serve Prometheus metrics, write InfluxDB history.",
    help: async () => (await import("./collector-command.js")).collectorHelp(),
    run: async (a) => (await import("./collector-command.js")).collectorCommand(a),
  },
  demo: {
    summary: "Run a collector and three simulated 8-GPU hosts, with a live fleet summary.",
    help: async () => (await import("./demo-command.js")).demoHelp(),
    run: async (a) => (await import("./demo-command.js")).demoCommand(a),
  },
  report: {
    summary:
      "Capacity report from the InfluxDB history: real vs reported idle, reclaimable GPUs, per site, model or any label.",
    help: async () => (await import("./report-command.js")).reportHelp(),
    run: async (a) => (await import("./report-command.js")).reportCommand(a),
  },
};

export function topHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length)) + 4;
  return [
    "trueidle — how much GPU capacity is really idle, not how much the usual tools report as idle.",
    "",
    "Usage: trueidle <command> [flags]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`),
    "",
    "Run `trueidle <command> --help` for a command's flags.",
    "",
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const sub = name === "help" ? rest[0] : undefined;
    if (sub && COMMANDS[sub]) process.stdout.write(await COMMANDS[sub].help());
    else process.stdout.write(topHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "version") {
    process.stdout.write(`trueidle ${AGENT_VERSION}\n`);
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`trueidle: unknown command "${name}".\n\n${topHelp()}`);
    return 2;
  }
  if (wantsHelp(rest)) {
    process.stdout.write(await cmd.help());
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(
        `trueidle ${name}: ${err.message.split("\n").join(`\ntrueidle ${name}: `)}\nRun \`trueidle ${name} --help\` for the flags.\n`,
      );
      return 2;
    }
    if (err instanceof TrueidleError) {
      process.stderr.write(`trueidle ${name}: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(
      `trueidle ${name}: unexpected error: ${errorMessage(err)}\n${err instanceof Error && err.stack ? `${err.stack}\n` : ""}`,
    );
    return 1;
  }
}
