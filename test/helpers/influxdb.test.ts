import { describe, expect, it } from "vitest";
import { influxQuery, rows, startInfluxd } from "./influxdb.js";

describe("the InfluxDB test server", () => {
  it("starts a private influxd that takes writes and answers queries", async () => {
    const influx = await startInfluxd();
    try {
      await influxQuery(influx.url, "CREATE DATABASE t");
      const w = await fetch(`${influx.url}/write?db=t&precision=ms`, {
        method: "POST",
        body: "m,host=a v=1i 1700000000000\nm,host=a v=2i 1700000001000\n",
      });
      expect(w.status).toBe(204);
      const r = rows(await influxQuery(influx.url, "SELECT sum(v) FROM m", "t"));
      expect(r[0]!["sum"]).toBe(3);
    } finally {
      await influx.stop();
    }
  });
});
