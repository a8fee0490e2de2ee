import { existsSync, rmSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { historyHowTo, isHistory, openDemoHistory, type DemoHistoryOptions } from "./demo-history.js";
import { influxQuery, rows } from "../test/helpers/influxdb.js";

function opts(extra: Partial<DemoHistoryOptions>): { o: DemoHistoryOptions; lines: string[] } {
  const lines: string[] = [];
  return { lines, o: { noInflux: false, keepData: false, out: (l) => lines.push(l), logger: silentLogger, ...extra } };
}

describe("the demo's InfluxDB", () => {
  it("says how to get influxd when it is not installed, and runs without history", async () => {
    const { o, lines } = opts({ findInfluxd: () => undefined });
    const h = await openDemoHistory(o);
    expect(h).toEqual({ reason: "not_installed" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^History: off\. influxd \(InfluxDB 1\.x\) is not installed\. On Debian or Ubuntu: `sudo apt-get install influxdb`/);
    expect(lines[0]).toContain("--influx-url http://HOST:8086/trueidle");
  });

  it("is off with --no-influx", async () => {
    const { o, lines } = opts({ noInflux: true });
    expect(await openDemoHistory(o)).toEqual({ reason: "disabled" });
    expect(lines).toEqual(["History: off (--no-influx)."]);
  });

  it("refuses an --influx-url that is not a database URL", async () => {
    const { o } = opts({ influxUrl: "http://user:pw@127.0.0.1:8086/trueidle" });
    await expect(openDemoHistory(o)).rejects.toThrow(/must not hold credentials/);
  });

  it("starts a private influxd with the schema, prints where and how to use it, and removes its data on close", async () => {
    const { o, lines } = opts({});
    const h = await openDemoHistory(o);
    if (!isHistory(h)) throw new Error(`no history: ${lines.join("\n")}`);
    try {
      expect(h.influxUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/trueidle$/);
      expect(lines[0]).toBe(`History: private InfluxDB ${h.target.baseUrl}, database trueidle; data in ${h.dir}, removed when the demo ends (--keep-data keeps it).`);
      const rps = rows(await influxQuery(h.target.baseUrl, "SHOW RETENTION POLICIES ON trueidle")).map((r) => r["name"]);
      expect(rps).toEqual(expect.arrayContaining(["gpu_window", "gpu_hour"]));
      const howTo = historyHowTo(h, "1h");
      expect(howTo[1]).toBe(`  Report:    trueidle report --influx-url ${h.influxUrl} --since 1h --by site,model`);
      // The printed query runs as printed.
      const q = /--data-urlencode 'q=(.*)'$/.exec(howTo[0]!)![1]!;
      await influxQuery(h.target.baseUrl, q, "trueidle");
    } finally {
      await h.close();
      await h.close();
    }
    expect(existsSync(h.dir!)).toBe(false);
  });

  it("keeps the data with --keep-data and says where", async () => {
    const { o, lines } = opts({ keepData: true });
    const h = await openDemoHistory(o);
    if (!isHistory(h)) throw new Error(`no history: ${lines.join("\n")}`);
    try {
      await h.close();
      expect(existsSync(h.dir!)).toBe(true);
      expect(lines.at(-1)).toBe(`InfluxDB data kept in ${h.dir}; serve it again with: influxd -config ${h.dir}/influxdb.conf`);
    } finally {
      rmSync(h.dir!, { recursive: true, force: true });
    }
  });
});
