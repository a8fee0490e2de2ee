/**
 * FleetBackfill against a real InfluxDB (Debian influxd): a database with days of
 * `gpu_hour` history and no `fleet_hour` (an upgrade) gets it rolled up, newest hours first,
 * to the first GPU-hour; after a restart it goes on from where `fleet_hour` reaches; a
 * label key new to the fleet replaces the query, drops `fleet_hour` and builds it again,
 * and nothing counts twice.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordingLogger, type Logger } from "../../common/log.js";
import type { InfluxTarget } from "../../common/influx/target.js";
import { influxQuery, rows, startInfluxd, type PrivateInfluxd } from "../../test/helpers/influxdb.js";
import { FleetBackfill } from "./fleet-backfill.js";
import { ensureSchema, HOUR_MS, SECONDS_FIELDS } from "./schema.js";

const DB = "backfill";
const DAYS = 5;
let influx: PrivateInfluxd;
let target: InfluxTarget;
const ready = { ready: async (): Promise<void> => {} };
// Whole days, ending two days ago: beyond the continuous query's reach.
const END = Math.floor(Date.now() / 86_400_000) * 86_400_000 - 2 * 86_400_000;
const START = END - DAYS * 86_400_000;

async function writeHours(lines: string[]): Promise<void> {
  const res = await fetch(`${influx.url}/write?db=${DB}&rp=gpu_hour&precision=ms`, {
    method: "POST",
    body: lines.join("\n"),
  });
  expect(res.status, await res.text()).toBe(204);
}

/** A GPU-hour point with every seconds field, as the hourly roll-up writes it. */
function gpuHour(uuid: string, tags: string, t: number, idle: number): string {
  const f = Object.fromEntries(SECONDS_FIELDS.map((k) => [k, 0])) as Record<string, number>;
  f["observed_s"] = 3600;
  f["free_idle_s"] = idle;
  f["active_s"] = 3600 - idle;
  const fields = Object.entries(f)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
  return `gpu_hour,host=h-${uuid},gpu=0,uuid=${uuid},model=H100${tags} ${fields},windows=60i ${t}`;
}

async function sums(measurement: string, by: string): Promise<Record<string, [number, number]>> {
  const r = rows(
    await influxQuery(
      influx.url,
      `SELECT sum("observed_s") AS "o", sum("free_idle_s") AS "f" FROM "${DB}"."gpu_hour"."${measurement}" GROUP BY "${by}"`,
      DB,
    ),
  );
  return Object.fromEntries(r.map((x) => [String(x[by] ?? ""), [Number(x["o"]), Number(x["f"])]]));
}

async function earliest(measurement: string): Promise<number | undefined> {
  const r = rows(await influxQuery(influx.url, `SELECT * FROM "${DB}"."gpu_hour"."${measurement}" LIMIT 1`, DB));
  return r[0]?.["time"] as number | undefined;
}

async function untilDone(b: FleetBackfill): Promise<void> {
  for (let i = 0; i < 200 && !b.status().done; i++) await b.nextCheck();
  expect(b.status().done).toBe(true);
}

/**
 * Runs a back-fill (checks every 50 ms, `chunkHours` a statement) until it is done, then
 * `then` (which may change the database and wait for more checks), and stops it.
 */
async function backfill(
  logger: Logger,
  chunkHours: number,
  then?: (b: FleetBackfill) => Promise<void>,
): Promise<FleetBackfill> {
  const b = new FleetBackfill({ target, logger, schema: ready, checkEveryMs: 50, chunkHours });
  b.start();
  try {
    await untilDone(b);
    await then?.(b);
  } finally {
    await b.stop();
  }
  return b;
}

beforeAll(async () => {
  influx = await startInfluxd();
  target = { baseUrl: influx.url, database: DB };
  await ensureSchema(target);
  const lines: string[] = [];
  for (let t = START; t < END; t += HOUR_MS) {
    lines.push(gpuHour("a", ",site=x", t, 1800));
    lines.push(gpuHour("b", ",site=y", t, 600));
    // A third GPU only in the last two days.
    if (t >= END - 2 * 86_400_000) lines.push(gpuHour("c", ",site=x", t, 3600));
  }
  await writeHours(lines);
});

afterAll(async () => {
  await influx?.stop();
});

describe("the fleet_hour back-fill", () => {
  it("rolls gpu_hour's history up into fleet_hour, newest hours first, to the first GPU-hour, and logs its progress", async () => {
    const log = recordingLogger();
    const b = await backfill(log, 24);
    // The query now groups by site too (the GPUs carry it), and the history was rolled up.
    expect(log.lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^The fleet roll-up changed: replaced continuous query cq_fleet_hour, whose group keys changed/,
        ),
        expect.stringMatching(/^Rolling fleet_hour up from gpu_hour, newest hours first: \d+ days to go back to /),
        expect.stringMatching(/^fleet_hour now reaches back to .*, as gpu_hour does/),
      ]),
    );
    expect(b.status()).toMatchObject({ done: true, reachesMs: START, goalMs: START });
    expect(await earliest("fleet_hour")).toBe(START);
    expect(await sums("fleet_hour", "site")).toEqual(await sums("gpu_hour", "site"));
    const gpus = rows(
      await influxQuery(
        influx.url,
        `SELECT "gpus", "real_idle_s" FROM "${DB}"."gpu_hour"."fleet_hour" WHERE "site" = 'x' AND time = ${END - HOUR_MS}ms`,
        DB,
      ),
    );
    expect(gpus).toEqual([{ time: END - HOUR_MS, gpus: 2, real_idle_s: 5400 }]);
  });

  it("goes on from where fleet_hour reaches after a restart", async () => {
    const mid = START + 2 * 86_400_000;
    await influxQuery(influx.url, `DELETE FROM "fleet_hour" WHERE time < ${mid}ms`, DB);
    expect(await earliest("fleet_hour")).toBe(mid);
    const b = await backfill(recordingLogger(), 24);
    // Two days back, a day a statement: nothing newer rolled up again.
    expect(b.status().statements).toBe(2);
    expect(await earliest("fleet_hour")).toBe(START);
    expect(await sums("fleet_hour", "site")).toEqual(await sums("gpu_hour", "site"));
  });

  it("builds fleet_hour again when a label key new to the fleet appears, and counts nothing twice", async () => {
    const log = recordingLogger();
    await backfill(log, 48, async (b) => {
      const before = b.status().statements;
      // A GPU with a pool: at the next check the query groups by pool, and fleet_hour is built again.
      await writeHours([gpuHour("d", ",site=x,pool=p", END - HOUR_MS, 0)]);
      for (
        let i = 0;
        i < 200 && !log.lines.some((l) => /group keys changed .* to mig_profile, model, pool, site/.test(l.msg));
        i++
      )
        await b.nextCheck();
      await untilDone(b);
      expect(b.status().statements).toBeGreaterThan(before);
    });
    expect(await earliest("fleet_hour")).toBe(START);
    expect(await sums("fleet_hour", "site")).toEqual(await sums("gpu_hour", "site"));
    expect(await sums("fleet_hour", "pool")).toEqual(await sums("gpu_hour", "pool"));
  });

  it("rolls fleet_hour up again when it was dropped elsewhere (another collector's change of keys)", async () => {
    const log = recordingLogger();
    await backfill(log, 48, async (b) => {
      const before = b.status().statements;
      await influxQuery(influx.url, 'DROP MEASUREMENT "fleet_hour"', DB);
      for (let i = 0; i < 200 && b.status().statements === before; i++) await b.nextCheck();
      await untilDone(b);
    });
    expect(log.lines.map((l) => l.msg)).toContainEqual(
      expect.stringMatching(
        /^fleet_hour is empty \(dropped elsewhere, after a change of the fleet's keys\): rolling it up again/,
      ),
    );
    expect(await earliest("fleet_hour")).toBe(START);
    expect(await sums("fleet_hour", "site")).toEqual(await sums("gpu_hour", "site"));
  });
});
