/**
 * Puts a fake `nvidia-smi` for a scenario into a folder: an executable `nvidia-smi` shell
 * wrapper that runs test/fake-nvidia-smi/fake-nvidia-smi.mjs with that scenario, so
 * anything that takes `--nvidia-smi PATH` (the source, the agent, the CLI) can run it.
 * The fake loads compiled code from dist/: `npm run build` (the test setup does it) first.
 */
import { chmodSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Absolute path of the fake's script. */
export const FAKE_NVIDIA_SMI_SCRIPT = fileURLToPath(new URL("../fake-nvidia-smi/fake-nvidia-smi.mjs", import.meta.url));

/**
 * Writes `scenario` (a scenario object, written as `scenario.json`; or the path of an
 * existing scenario file) and the wrapper into `dir`; returns the wrapper's path. The wrapper
 * runs the fake with `node` (an absolute path: the Node.js running the tests unless given),
 * so it needs no `node` on PATH.
 */
export function writeFakeNvidiaSmi(dir: string, scenario: object | string, node: string = process.execPath): string {
  let scenarioFile: string;
  if (typeof scenario === "string") {
    scenarioFile = resolve(scenario);
  } else {
    scenarioFile = resolve(dir, "scenario.json");
    writeFileSync(scenarioFile, `${JSON.stringify(scenario, null, 2)}\n`);
  }
  const wrapper = resolve(dir, "nvidia-smi");
  writeFileSync(
    wrapper,
    `#!/bin/sh\nexec ${shellQuote(node)} ${shellQuote(FAKE_NVIDIA_SMI_SCRIPT)} --scenario ${shellQuote(scenarioFile)} "$@"\n`,
  );
  chmodSync(wrapper, 0o755);
  return wrapper;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
