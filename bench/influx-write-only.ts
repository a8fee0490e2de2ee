/**
 * Section (c) of `npm run bench` alone, with more rounds: the collector's InfluxDB write
 * path against a bare POST of the same lines, when that ratio needs a closer look than the
 * full run's five rounds give (`node --import tsx bench/influx-write-only.ts [--rounds N]`).
 */
import { runInfluxWriteBench } from "./influx-write.js";
import { WindowTemplates } from "./fleet-windows.js";

const at = process.argv.indexOf("--rounds");
const rounds = at > 0 ? Number(process.argv[at + 1]) : 11;
if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds needs a whole number of rounds, at least 1");
const r = await runInfluxWriteBench(new WindowTemplates(), {
  hosts: 625,
  timesPerSlice: 2,
  slicesPerRound: 4,
  warmup: 1,
  rounds,
});
if (r.skipped) {
  console.log(`(c) skipped: ${r.reason}`);
} else {
  const f = (s: { median: number; min: number; max: number }, d = 0): string =>
    `${s.median.toFixed(d)} [${s.min.toFixed(d)}–${s.max.toFixed(d)}]`;
  console.log(`(c) InfluxDB ${r.influxdVersion}, ${rounds} rounds of ${r.pointsPerRound} points`);
  console.log(`  InfluxWriter points/s     ${f(r.writerPointsPerS)}`);
  console.log(`  bare POST points/s        ${f(r.barePostPointsPerS)}`);
  console.log(`  node-influx points/s      ${f(r.nodeInfluxPointsPerS)}`);
  console.log(
    `  writer ÷ bare (per slice) ${f(r.ratio, 2)}  target ≥ 0.8: ${r.ratio.median >= 0.8 ? "met" : "NOT met"}`,
  );
}
