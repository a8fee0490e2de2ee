/** Resolves on the first SIGINT or SIGTERM; a second one exits at once. */
import type { Logger } from "../common/log.js";

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
