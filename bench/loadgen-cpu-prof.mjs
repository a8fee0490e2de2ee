/**
 * Preloaded into the collector by `npm run loadgen -- --cpu-prof DIR` (NODE_OPTIONS=--import;
 * Node refuses --cpu-prof itself in NODE_OPTIONS): samples the collector's CPU with V8's
 * profiler from start to exit and writes DIR/collector-PID.cpuprofile when the process
 * exits, in the format of `node --cpu-prof` (Chrome DevTools and bench/loadgen-profile.ts
 * read it).
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import * as path from "node:path";

const dir = process.env.LOADGEN_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 1000 });
  session.post("Profiler.start");
  // The main thread's session answers synchronously, so the profile is written before the exit.
  process.on("exit", () => {
    session.post("Profiler.stop", (err, result) => {
      if (!err) writeFileSync(path.join(dir, `collector-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
