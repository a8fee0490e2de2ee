/** `trueidle demo`: the demo fleet, end to end, with a live summary. */
import { formatHelp, parseFlags, type CommandSpec } from "./args.js";
import { checkWindow, LOG_FLAGS, loggerFrom, THRESHOLD_FLAGS, thresholdsFrom } from "./common-flags.js";
import { DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT } from "../common/grpc-service.js";
import { runDemo } from "../demo/demo.js";

export const demoSpec: CommandSpec = {
  name: "demo",
  summary: "trueidle demo — a collector and three simulated 8-GPU hosts streaming over real gRPC, with a live fleet summary every window.",
  usage: "trueidle demo [flags]",
  flags: [
    { name: "duration", type: "duration", min: 1000, placeholder: "DURATION", help: "Stop after this long (default: run until Ctrl-C)." },
    { name: "grpc-listen", type: "string", default: `127.0.0.1:${DEFAULT_GRPC_PORT}`, placeholder: "HOST:PORT", help: "Collector gRPC address." },
    { name: "http-listen", type: "string", default: `127.0.0.1:${DEFAULT_HTTP_PORT}`, placeholder: "HOST:PORT", help: "Collector /metrics address." },
    { name: "interval", type: "duration", default: "1s", min: 100, max: 60_000, help: "Sampling interval." },
    { name: "window", type: "duration", default: "10s", min: 1000, max: 3_600_000, help: "Window length." },
    ...THRESHOLD_FLAGS,
    ...LOG_FLAGS.map((f) => (f.name === "log-level" ? { ...f, default: "warn" } : f)),
  ],
  notes: "While it runs, scrape http://127.0.0.1:9745/metrics (or point Prometheus at it).",
  examples: ["trueidle demo", "trueidle demo --duration 60s", "npm run demo -- --window 5s"],
};

export async function demoCommand(argv: string[]): Promise<number> {
  const v = parseFlags(demoSpec, argv);
  const intervalMs = v["interval"] as number;
  const windowMs = v["window"] as number;
  checkWindow(intervalMs, windowMs);
  const ac = new AbortController();
  const onSignal = (): void => {
    if (ac.signal.aborted) process.exit(130);
    ac.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  await runDemo({
    grpcListen: v["grpc-listen"] as string,
    httpListen: v["http-listen"] as string,
    intervalMs,
    windowMs,
    durationMs: v["duration"] as number | undefined,
    thresholds: thresholdsFrom(v),
    logger: loggerFrom(v, { component: "demo" }),
    out: (line) => void process.stdout.write(line + "\n"),
    signal: ac.signal,
  });
  return 0;
}

export const demoHelp = (): string => formatHelp(demoSpec);
