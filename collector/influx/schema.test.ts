import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrueidleError } from "../../common/errors.js";
import { influxQuery, rows, startInfluxd, type PrivateInfluxd } from "../../test/helpers/influxdb.js";
import {
  continuousQueryStatement,
  CQ_NAME,
  CQ_OWNER_NAME,
  OWNER_ROLLUP,
  DAY_MS,
  ensureSchema,
  HOUR_MS,
  hourRollupSelect,
  parseGoDuration,
  rollupStatement,
  sameStatement,
  SECONDS_FIELDS,
} from "./schema.js";
import { InfluxQueryClient } from "../../common/influx/client.js";
import type { InfluxTarget } from "../../common/influx/target.js";

describe("schema statements", () => {
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
