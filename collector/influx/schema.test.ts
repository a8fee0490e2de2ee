import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrueidleError } from "../../common/errors.js";
import { influxQuery, rows, startInfluxd, type PrivateInfluxd } from "../../test/helpers/influxdb.js";
import {
  continuousQueryStatement,
  CQ_FLEET_NAME,
  CQ_NAME,
  CQ_OWNER_NAME,
  OWNER_ROLLUP,
  DAY_MS,
  ensureSchema,
  fleetKeys,
  fleetKeysOfQuery,
  fleetRollup,
  HOUR_MS,
  hourRollupSelect,
  parseGoDuration,
  rollup,
  rollupFleetRange,
  rollupStatement,
  sameStatement,
  SECONDS_FIELDS,
} from "./schema.js";
import { InfluxQueryClient } from "../../common/influx/client.js";
import type { InfluxTarget } from "../../common/influx/target.js";

describe("schema statements", () => {
  it("rolls GPU-hours up into fleet-hours by every tag but the per-GPU ones, with real idle and the GPUs seen", () => {
    const keys = fleetKeys(["host", "gpu", "uuid", "parent_uuid", "model", "site", "pool"]);
    expect(keys).toEqual(["mig_profile", "model", "pool", "site"]);
    expect(fleetKeys([])).toEqual(["mig_profile", "model"]);
    const select = hourRollupSelect("trueidle", undefined, fleetRollup(keys));
    for (const f of SECONDS_FIELDS) expect(select).toContain(`sum("${f}") AS "${f}"`);
    expect(select).toContain('sum("free_idle_s") + sum("held_idle_s") + sum("busy_phantom_s") AS "real_idle_s"');
    expect(select).toContain('count("observed_s") AS "gpus"');
    expect(select).toContain(
      'INTO "trueidle"."gpu_hour"."fleet_hour" FROM "trueidle"."gpu_hour"."gpu_hour" GROUP BY time(1h), "mig_profile", "model", "pool", "site"',
    );
    const cq = continuousQueryStatement("trueidle", fleetRollup(keys));
    expect(cq).toBe(
      `CREATE CONTINUOUS QUERY "${CQ_FLEET_NAME}" ON "trueidle" RESAMPLE EVERY 10m FOR 3h BEGIN ${select} END`,
    );
    // The keys read back from the query's text, quoted or as InfluxDB prints it.
    expect(fleetKeysOfQuery(cq)).toEqual(keys);
    expect(fleetKeysOfQuery(cq.replace(/"/g, ""))).toEqual(keys);
    expect(fleetKeysOfQuery(continuousQueryStatement("trueidle"))).toBeUndefined();
  });

  it("rolls every seconds field up as a sum, and the rest as DESIGN.md says", () => {
    const select = hourRollupSelect("trueidle");
    for (const f of SECONDS_FIELDS) expect(select).toContain(`sum("${f}") AS "${f}"`);
    expect(select).toContain('mean("power_w") AS "power_w"');
    expect(select).toContain('max("power_max_w") AS "power_max_w"');
    expect(select).toContain('max("mem_used_max_bytes") AS "mem_used_max_bytes"');
    expect(select).toContain('max("processes_max") AS "processes_max"');
    expect(select).toContain('count("observed_s") AS "windows"');
    expect(select).toContain(
      'INTO "trueidle"."gpu_hour"."gpu_hour" FROM "trueidle"."gpu_window"."gpu_window" GROUP BY time(1h), *',
    );
  });

  it("rolls owner windows up into owner-hours: the seconds summed, the windows counted, every tag kept", () => {
    const select = hourRollupSelect("trueidle", undefined, OWNER_ROLLUP);
    for (const f of SECONDS_FIELDS) expect(select).toContain(`sum("${f}") AS "${f}"`);
    expect(select).toContain('count("observed_s") AS "windows"');
    expect(select).not.toContain("power");
    expect(select).toContain(
      'INTO "trueidle"."gpu_hour"."gpu_owner_hour" FROM "trueidle"."gpu_window"."gpu_owner_window" GROUP BY time(1h), *',
    );
    const t0 = Date.UTC(2024, 2, 1, 10);
    expect(rollupStatement("trueidle", t0 + 1, t0 + 2, OWNER_ROLLUP)).toBe(
      hourRollupSelect("trueidle", { fromMs: t0, toMs: t0 + HOUR_MS }, OWNER_ROLLUP),
    );
    expect(continuousQueryStatement("trueidle", OWNER_ROLLUP)).toBe(
      `CREATE CONTINUOUS QUERY "cq_gpu_owner_hour" ON "trueidle" RESAMPLE EVERY 10m FOR 2h BEGIN ${hourRollupSelect("trueidle", undefined, OWNER_ROLLUP)} END`,
    );
  });

  it("uses the same SELECT in the continuous query and in an explicit roll-up, widened to whole hours", () => {
    const t0 = Date.UTC(2024, 2, 1, 10);
    const stmt = rollupStatement("trueidle", t0 + 5 * 60_000, t0 + 2 * HOUR_MS + 1);
    expect(stmt).toBe(hourRollupSelect("trueidle", { fromMs: t0, toMs: t0 + 3 * HOUR_MS }));
    expect(stmt.replace(/ WHERE time >= \d+ms AND time < \d+ms/, "")).toBe(hourRollupSelect("trueidle"));
    expect(continuousQueryStatement("trueidle")).toBe(
      `CREATE CONTINUOUS QUERY "cq_gpu_hour" ON "trueidle" RESAMPLE EVERY 10m FOR 2h BEGIN ${hourRollupSelect("trueidle")} END`,
    );
  });

  it("reads InfluxDB's Go durations", () => {
    expect(parseGoDuration("720h0m0s")).toBe(30 * DAY_MS);
    expect(parseGoDuration("1h30m0s")).toBe(90 * 60_000);
    expect(parseGoDuration("0s")).toBe(0);
    expect(() => parseGoDuration("forever")).toThrow(/cannot read/);
  });

  it("compares statements the way InfluxDB prints them back", () => {
    expect(sameStatement('SELECT sum("a") AS "a"  FROM "db"."rp"."m"', "select sum(a) AS a FROM db.rp.m")).toBe(true);
    expect(sameStatement("SELECT sum(a) FROM m", "SELECT max(a) FROM m")).toBe(false);
  });
});

describe("ensureSchema on a real InfluxDB", () => {
  let influx: PrivateInfluxd;
  let target: InfluxTarget;
  beforeAll(async () => {
    influx = await startInfluxd();
    target = { baseUrl: influx.url, database: "trueidle" };
  });
  afterAll(async () => {
    await influx?.stop();
  });

  it("creates the database, both retention policies and the continuous queries, and a second run changes nothing", async () => {
    const first = await ensureSchema(target);
    expect(first).toEqual([
      "created database trueidle",
      "created retention policy gpu_window (30d, default)",
      "created retention policy gpu_hour (730d)",
      "created continuous query cq_gpu_hour",
      "created continuous query cq_gpu_owner_hour",
      "created continuous query cq_fleet_hour (by mig_profile, model)",
    ]);
    expect(await ensureSchema(target)).toEqual([]);

    const rps = rows(await influxQuery(influx.url, 'SHOW RETENTION POLICIES ON "trueidle"'));
    expect(rps.find((r) => r["name"] === "gpu_window")).toMatchObject({ duration: "720h0m0s", default: true });
    expect(rps.find((r) => r["name"] === "gpu_hour")).toMatchObject({ duration: "17520h0m0s", default: false });

    // The continuous query InfluxDB holds is the roll-up SELECT, as InfluxDB prints it.
    const cqs = rows(await influxQuery(influx.url, "SHOW CONTINUOUS QUERIES"));
    const cq = cqs.find((r) => r["name"] === CQ_NAME);
    expect(cq).toBeDefined();
    const text = String(cq?.["query"]);
    expect(sameStatement(text, continuousQueryStatement("trueidle"))).toBe(true);
    const norm = (s: string): string => s.replace(/"/g, "").toLowerCase();
    expect(norm(text)).toContain(norm(`BEGIN ${hourRollupSelect("trueidle")} END`));
    const ownerCq = cqs.find((r) => r["name"] === CQ_OWNER_NAME);
    expect(sameStatement(String(ownerCq?.["query"]), continuousQueryStatement("trueidle", OWNER_ROLLUP))).toBe(true);
  });

  it("alters retention policies whose duration differs and replaces a continuous query whose text differs", async () => {
    const t: InfluxTarget = { ...target, database: "other" };
    await ensureSchema(t);
    await influxQuery(influx.url, `DROP CONTINUOUS QUERY "${CQ_NAME}" ON "other"`);
    await influxQuery(
      influx.url,
      `CREATE CONTINUOUS QUERY "${CQ_NAME}" ON "other" BEGIN SELECT count("observed_s") INTO "other"."gpu_hour"."x" FROM "other"."gpu_window"."gpu_window" GROUP BY time(1h) END`,
    );
    await influxQuery(influx.url, 'ALTER RETENTION POLICY "autogen" ON "other" DEFAULT');

    const changes = await ensureSchema(t, { rawRetentionMs: 7 * DAY_MS, hourRetentionMs: 365 * DAY_MS });
    expect(changes).toEqual([
      "altered retention policy gpu_window: duration 30d → 7d, made default",
      "altered retention policy gpu_hour: duration 730d → 365d",
      "replaced continuous query cq_gpu_hour, whose text differed",
    ]);
    expect(await ensureSchema(t, { rawRetentionMs: 7 * DAY_MS, hourRetentionMs: 365 * DAY_MS })).toEqual([]);
    const rps = rows(await influxQuery(influx.url, 'SHOW RETENTION POLICIES ON "other"'));
    expect(rps.find((r) => r["name"] === "gpu_window")).toMatchObject({ duration: "168h0m0s", default: true });
  });

  it("groups the fleet roll-up by the GPUs' tag keys: a new label key replaces its query and drops fleet_hour, so nothing counts twice", async () => {
    const t: InfluxTarget = { ...target, database: "keys" };
    expect(await ensureSchema(t)).toContain("created continuous query cq_fleet_hour (by mig_profile, model)");
    const hour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS - 5 * HOUR_MS;
    const write = async (lines: string[]): Promise<void> => {
      const res = await fetch(`${influx.url}/write?db=keys&rp=gpu_window&precision=ms`, {
        method: "POST",
        body: lines.join("\n"),
      });
      expect(res.status).toBe(204);
    };
    const win = (uuid: string, tags: string, s: number): string =>
      // Every seconds field, as the collector writes them (line-protocol.ts).
      `gpu_window,host=h,gpu=0,uuid=${uuid},model=H100${tags} observed_s=${s},free_idle_s=${s},held_idle_s=0,busy_phantom_s=0,active_s=0,unavailable_s=0,reported_idle_s=${s},reported_busy_s=0,real_busy_s=0 ${hour + 60_000}`;
    const fleetRows = async (): Promise<Array<Record<string, unknown>>> =>
      rows(await influxQuery(influx.url, 'SELECT * FROM "keys"."gpu_hour"."fleet_hour" GROUP BY *', "keys"));

    // GPUs with a site: the roll-up first makes the query group by it.
    await write([win("a", ",site=x", 600), win("b", ",site=y", 300)]);
    expect(await rollup(t, hour, hour + HOUR_MS)).toEqual({ gpuHours: 2, ownerHours: 0, fleetHours: 2 });
    expect(await ensureSchema(t)).toEqual([]);
    expect((await fleetRows()).map((r) => [r["site"], r["observed_s"], r["real_idle_s"], r["gpus"]])).toEqual([
      ["x", 600, 600, 1],
      ["y", 300, 300, 1],
    ]);

    // A pool appears: the query is replaced and fleet_hour dropped — else the hour would
    // hold both the (site) points and the (pool, site) points, and count twice.
    await write([win("c", ",site=x,pool=p", 100)]);
    expect(await ensureSchema(t)).toEqual([
      "replaced continuous query cq_fleet_hour, whose group keys changed from mig_profile, model, site to mig_profile, model, pool, site; dropped fleet_hour, to be rolled up again from gpu_hour",
    ]);
    expect(await fleetRows()).toEqual([]);
    const shown = (await influxQuery(influx.url, "SHOW CONTINUOUS QUERIES"))[0]?.series?.find((s) => s.name === "keys");
    const cq = shown?.values?.find((v) => v[0] === CQ_FLEET_NAME);
    expect(fleetKeysOfQuery(String(cq?.[1]))).toEqual(["mig_profile", "model", "pool", "site"]);
    expect((await rollup(t, hour, hour + HOUR_MS)).fleetHours).toBe(3);
    const fleet = await fleetRows();
    expect(fleet.reduce((s, r) => s + Number(r["observed_s"]), 0)).toBe(1000);
    expect(fleet.find((r) => r["pool"] === "p")).toMatchObject({ site: "x", observed_s: 100, gpus: 1 });

    // A roll-up still holding the old keys (another collector's, mid-way when the keys
    // changed) notices, clears its range and rolls it up again by the keys in force.
    const client = new InfluxQueryClient({ target: t });
    const stale = await rollupFleetRange(
      client,
      "keys",
      hour,
      hour + HOUR_MS,
      fleetRollup(["mig_profile", "model", "site"]),
    );
    expect(stale.rollup.groupBy).toEqual(["mig_profile", "model", "pool", "site"]);
    expect(stale.written).toBe(3);
    const after = await fleetRows();
    expect(after).toHaveLength(3);
    expect(after.reduce((sum, r) => sum + Number(r["observed_s"]), 0)).toBe(1000);
  });

  it("gives up on a statement when its signal aborts, even after the response began", async () => {
    // A server that starts an answer and never finishes it.
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"results":[');
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    try {
      const t: InfluxTarget = { baseUrl: `http://127.0.0.1:${port}`, database: "trueidle" };
      const err = await ensureSchema(t, {
        client: new InfluxQueryClient({ target: t, timeoutMs: 60_000 }),
        signal: AbortSignal.timeout(200),
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TrueidleError);
      expect((err as TrueidleError).message).toMatch(/abandoned/);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it("fails with an `unavailable` error when InfluxDB cannot be reached", async () => {
    const closed: InfluxTarget = { baseUrl: "http://127.0.0.1:9", database: "trueidle" };
    const err = await ensureSchema(closed, {
      client: new InfluxQueryClient({ target: closed, timeoutMs: 2_000 }),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrueidleError);
    expect((err as TrueidleError).code).toBe("unavailable");
  });
});
