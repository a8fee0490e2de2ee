/**
 * The agent process with `--source nvml` against the stub library when the driver hangs:
 * the agent keeps running, says which call hung, and still exits when told to, although a
 * thread is stuck inside the driver (Node would otherwise wait for that thread forever).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { prepareNvmlStub } from "./helpers/nvml-stub.js";
import { startTrueidle } from "./helpers/trueidle-process.js";
import { freePort } from "./helpers/ports.js";

const dir = mkdtempSync(path.join(tmpdir(), "trueidle-nvml-agent-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("agent --source nvml with a hung driver", () => {
  it("logs the hung call, stays up, and exits on SIGTERM without waiting for the stuck thread", async () => {
    const stub = prepareNvmlStub(dir, {
      gpus: [{ model: "NVIDIA H100 80GB HBM3", count: 2, phases: [{ for: "1h", state: "active" }] }],
    });
    const port = await freePort();
    const agent = startTrueidle(
      [
        "agent",
        "--plaintext",
        "--collector",
        "127.0.0.1:9",
        "--source",
        "nvml",
        "--nvml-lib",
        stub.libPath,
        "--log-level",
        "info",
        "--http-listen",
        `127.0.0.1:${port}`,
      ],
      stub.env,
    );
    const metric = async (): Promise<string> => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return /^trueidle_agent_driver_calls_hung (\d+)$/m.exec(text)?.[1] ?? "missing";
    };
    try {
      await agent.waitForOutput(/NVML source started/);
      await agent.waitForOutput(/Serving the agent's metrics/);
      expect(await metric()).toBe("0");
      // Every call now sleeps ten minutes: far past the 5 s call deadline and the test.
      stub.control.hang("all", 600_000);
      await agent.waitForOutput(/An NVML call did not return in time/, 30_000);
      expect(agent.child.exitCode).toBeNull();
      expect(await metric()).toBe("1");
      agent.child.kill("SIGTERM");
      const code = await Promise.race([
        agent.exited,
        new Promise<"still running">((r) => setTimeout(() => r("still running"), 60_000)),
      ]);
      expect(code).not.toBe("still running");
      expect(agent.child.signalCode).toBe("SIGKILL");
      expect(agent.output()).toMatch(/Exiting while NVML calls are still stuck in the driver/);
    } finally {
      stub.control.clear();
      await agent.stop("SIGKILL", 1_000);
    }
  });
});
