import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../common/log.js";
import { historyHowTo, isHistory, startDemoHistory, type DemoHistoryOptions } from "./demo-history.js";
import { eventually } from "../test/helpers/eventually.js";
import { influxQuery, rows } from "../test/helpers/influxdb.js";

const HOUR = 3_600_000;

function opts(extra: Partial<DemoHistoryOptions>): { o: DemoHistoryOptions; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    o: {
      noInflux: false,
      keepData: false,
      out: (l) => lines.push(l),
      logger: silentLogger,
      trueidle: "npx trueidle",
      ...extra,
    },
  };
}

describe("the demo's InfluxDB", () => {
  it("says how to get influxd when it is not installed, and runs without history", async () => {
    const { o, lines } = opts({ findInfluxd: () => undefined });
    const h = await startDemoHistory(o);
    expect(h).toEqual({ reason: "not_installed" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^History: off\. influxd \(InfluxDB 1\.x\) is not installed\. On Debian or Ubuntu: `sudo apt-get install influxdb`/,
    );
    expect(lines[0]).toContain("--influx-url http://HOST:8086/trueidle");
  });

  it("is off with --no-influx", async () => {
    const { o, lines } = opts({ noInflux: true });
    expect(await startDemoHistory(o)).toEqual({ reason: "disabled" });
    expect(lines).toEqual(["History: off (--no-influx)."]);
  });

  it("refuses an --influx-url that is not a database URL", async () => {
    const { o } = opts({ influxUrl: "http://user:pw@127.0.0.1:8086/trueidle" });
    await expect(startDemoHistory(o)).rejects.toThrow(/must not hold credentials/);
  });

  it("starts a private influxd with the schema, prints where and how to use it, and removes its data at stop (safe twice)", async () => {
    const { o, lines } = opts({});
    const h = await startDemoHistory(o);
    if (!isHistory(h)) throw new Error(`no history: ${lines.join("\n")}`);
    try {
      expect(h.influxUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/trueidle$/);
      expect(lines[0]).toBe(
        `History: private InfluxDB ${h.target.baseUrl}, database trueidle; data in ${h.dir}, removed when the demo ends (--keep-data keeps it).`,
      );
      const rps = rows(await influxQuery(h.target.baseUrl, "SHOW RETENTION POLICIES ON trueidle")).map(
        (r) => r["name"],
      );
      expect(rps).toEqual(expect.arrayContaining(["gpu_window", "gpu_hour"]));
      const range = { startMs: Date.UTC(2024, 4, 1, 10), endMs: Date.UTC(2024, 4, 1, 11) };
      const howTo = historyHowTo(h, "npx trueidle", range, "gpu_window");
      expect(howTo[1]).toBe(
        `  Report:    npx trueidle report --influx-url ${h.influxUrl} --since 2024-05-01T10:00:00Z --until 2024-05-01T11:00:00Z --by site,model`,
      );
      // The printed queries run as printed.
      for (const m of ["gpu_window", "gpu_hour"] as const) {
        const q = /--data-urlencode "q=(.*)"$/.exec(historyHowTo(h, "trueidle", range, m)[0]!)![1]!;
        expect(q).toContain(
          m === "gpu_hour" ? "FROM gpu_hour.gpu_hour WHERE time >= '2024-05-01T10:00:00Z'" : "FROM gpu_window WHERE",
        );
        await influxQuery(h.target.baseUrl, q, "trueidle");
      }
    } finally {
      await Promise.all([h.stop(), h.stop()]);
      await h.stop();
    }
    expect(existsSync(h.dir!)).toBe(false);
  });

  it("keeps the data with --keep-data and prints an influxd command that serves it, and a report command for it", {
    timeout: 60_000,
  }, async () => {
    const { o, lines } = opts({ keepData: true });
    const h = await startDemoHistory(o);
    if (!isHistory(h)) throw new Error(`no history: ${lines.join("\n")}`);
    let influxd: ReturnType<typeof spawn> | undefined;
    try {
      const write = await fetch(`${h.target.baseUrl}/write?db=trueidle`, {
        method: "POST",
        body: "gpu_window,site=kept observed_s=10",
      });
      expect(write.status).toBe(204);
      const hour = Math.floor(Date.now() / HOUR) * HOUR;
      await h.stop({ startMs: hour, endMs: hour + HOUR });
      expect(existsSync(h.dir!)).toBe(true);
      const printed = lines.slice(1).join("\n");
      const m =
        /^InfluxDB data kept in (\S+)\. Serve it again \(on (http:\/\/127\.0\.0\.1:\d+)\) with:\n {2}(\S+ -config \S+)\nand, while it runs, report on it with:\n {2}(.*)$/.exec(
          printed,
        );
      expect(m, printed).not.toBeNull();
      const [, dir, url, command, report] = m!;
      expect(dir).toBe(h.dir);
      expect(report).toBe(
        `npx trueidle report --influx-url ${url}/trueidle --since ${iso(hour)} --until ${iso(hour + HOUR)} --by site,model`,
      );
      // The printed command, run as printed, serves the kept data.
      const [bin, ...args] = command!.split(" ");
      influxd = spawn(bin!, args, { stdio: "ignore" });
      const kept = await eventually(
        "the kept data served again",
        async () => {
          const r = rows(await influxQuery(url!, "SELECT observed_s FROM gpu_window WHERE site = 'kept'", "trueidle"));
          return r.length > 0 ? r : undefined;
        },
        30_000,
      );
      expect(kept[0]!["observed_s"]).toBe(10);
    } finally {
      influxd?.kill("SIGTERM");
      if (influxd && influxd.exitCode === null) await new Promise((r) => influxd!.once("exit", r));
      rmSync(h.dir!, { recursive: true, force: true });
    }
  });
});

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}
