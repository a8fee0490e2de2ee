/** Process-level shutdown: signals, and ending a process that a stuck driver call would hold. */
import type { Logger } from "../common/log.js";
import type { GpuSource } from "../agent/sources/source.js";

/**
 * Call after the source has stopped. A thread stuck inside the driver cannot be interrupted,
 * and Node waits for every thread at exit: end the process instead of hanging in shutdown.
 */
export function endIfDriverHung(source: GpuSource, logger: Logger): void {
  const hung = source.hungCalls?.() ?? 0;
  if (hung === 0) return;
  logger.error("Exiting while NVML calls are still stuck in the driver; the process ends without waiting for them.", {
    hungCalls: hung,
  });
  process.kill(process.pid, "SIGKILL");
}

/** Resolves on the first SIGINT or SIGTERM; a second one exits at once. */
export function waitForSignal(logger: Logger): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let seen = false;
    const on = (sig: NodeJS.Signals): void => {
      if (seen) {
        logger.warn("Second signal; exiting now without a clean shutdown.", { signal: sig });
        process.exit(130);
      }
      seen = true;
      logger.info("Shutting down.", { signal: sig });
      resolve(sig);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}
