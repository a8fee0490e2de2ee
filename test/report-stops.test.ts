/**
 * `trueidle report` when InfluxDB does not answer, and the checks it makes before asking:
 * the real binary against a socket that accepts connections and never answers, and against
 * a real InfluxDB (Debian influxd) behind a front that passes /ping and holds every query
 * without an answer. Every wait is bounded by the report's own timeouts or by Ctrl-C; the
 * tests time nothing themselves.
 */
import * as http from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startInfluxd, type PrivateInfluxd } from "./helpers/influxdb.js";
import { runTrueidle, startTrueidle } from "./helpers/trueidle-process.js";

const RANGE = ["--since", "2024-05-01T00:00:00Z", "--until", "2024-05-02T00:00:00Z"];

/** Accepts connections and never sends a byte. */
async function silentServer(): Promise<{ port: number; accepted: () => number; close: () => void }> {
  const sockets: Socket[] = [];
  const server: Server = createServer((s) => {
    sockets.push(s);
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as { port: number }).port,
    accepted: () => sockets.length,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** In front of a real InfluxDB: /ping passed through with InfluxDB's own answer, every /query held unanswered. */
async function holdingQueries(
  influxUrl: string,
): Promise<{ url: string; queries: () => number; hungUp: () => number; close: () => void }> {
  let queries = 0;
  let hungUp = 0;
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith("/ping")) {
      void fetch(`${influxUrl}/ping`).then(async (r) => {
        res.writeHead(r.status, Object.fromEntries(r.headers));
        res.end(Buffer.from(await r.arrayBuffer()));
      });
      return;
    }
    queries++;
    held.push(res);
    // The client going away before an answer: what InfluxDB sees as the query cancelled.
    res.on("close", () => {
      if (!res.writableEnded) hungUp++;
    });
    req.resume();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    queries: () => queries,
    hungUp: () => hungUp,
    close: () => {
      for (const r of held) r.destroy();
      server.closeAllConnections();
      server.close();
    },
  };
}

let influx: PrivateInfluxd;
let front: Awaited<ReturnType<typeof holdingQueries>>;
beforeAll(async () => {
  influx = await startInfluxd();
  front = await holdingQueries(influx.url);
});
afterAll(async () => {
  front?.close();
  await influx?.stop();
});

describe.concurrent("trueidle report when InfluxDB does not answer", () => {
  it("names a server that accepts connections and never answers, after a first /ping of 5 s, and the fix", {
    timeout: 60_000,
  }, async () => {
    const silent = await silentServer();
    try {
      const r = await runTrueidle(["report", "--influx-url", `http://127.0.0.1:${silent.port}/trueidle`, ...RANGE]);
      expect(r.code, r.output).toBe(1);
      expect(r.output).toContain(
        `trueidle report: http://127.0.0.1:${silent.port} did not answer /ping within 5 s, which InfluxDB answers at once; ` +
          "check that --influx-url names InfluxDB's HTTP API (port 8086 by default), that no firewall drops the traffic, and that influxd is not stuck",
      );
      expect(silent.accepted()).toBeGreaterThan(0);
    } finally {
      silent.close();
    }
  });

  it("gives up on a query after --timeout, naming --timeout", { timeout: 60_000 }, async () => {
    const r = await runTrueidle(["report", "--influx-url", `${front.url}/trueidle`, "--timeout", "2s", ...RANGE]);
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain(
      `trueidle report: InfluxDB at ${front.url} did not answer a query within 2 s; give a longer --timeout, or a shorter range (--since, --until)`,
    );
  });

  it("stops on Ctrl-C while a query waits, hanging up on the query at once", { timeout: 60_000 }, async () => {
    const before = front.queries();
    const hungUpBefore = front.hungUp();
    const p = startTrueidle(["report", "--influx-url", `${front.url}/trueidle`, "--timeout", "10m", ...RANGE]);
    try {
      for (let i = 0; i < 600 && front.queries() === before && p.child.exitCode === null; i++)
        await new Promise((r) => setTimeout(r, 50));
      expect(front.queries(), p.output()).toBeGreaterThan(before);
      p.child.kill("SIGINT");
      await p.exited;
      expect(p.child.signalCode ?? p.child.exitCode).toBe("SIGINT");
      // InfluxDB 1.x stops a query whose client hung up; the front sees the same hang-up.
      for (let i = 0; i < 200 && front.hungUp() === hungUpBefore; i++) await new Promise((r) => setTimeout(r, 25));
      expect(front.hungUp()).toBeGreaterThan(hungUpBefore);
    } finally {
      await p.stop("SIGKILL");
    }
  });
});

describe.concurrent("trueidle report checks its flags before any query", () => {
  it("refuses an --out in a folder that does not exist, or a folder, before connecting (exit 2)", {
    timeout: 60_000,
  }, async () => {
    const silent = await silentServer();
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-report-out-"));
    try {
      const url = ["--influx-url", `http://127.0.0.1:${silent.port}/trueidle`];
      const missing = await runTrueidle(["report", ...url, ...RANGE, "--out", "/missing/dir/r.csv", "--format", "csv"]);
      expect(missing.code, missing.output).toBe(2);
      expect(missing.output).toContain(
        "trueidle report: --out /missing/dir/r.csv: the folder /missing/dir does not exist; create it first or write elsewhere",
      );
      const notFolder = path.join(dir, "file");
      writeFileSync(notFolder, "");
      const underFile = await runTrueidle(["report", ...url, ...RANGE, "--out", path.join(notFolder, "r.csv")]);
      expect(underFile.code, underFile.output).toBe(2);
      expect(underFile.output).toContain(`--out ${path.join(notFolder, "r.csv")}: ${notFolder} is not a folder`);
      const folder = await runTrueidle(["report", ...url, ...RANGE, "--out", dir]);
      expect(folder.code, folder.output).toBe(2);
      expect(folder.output).toContain(`--out ${dir} is a folder; give a file name`);
      // Nothing reached the server: the checks come first.
      expect(silent.accepted()).toBe(0);
    } finally {
      silent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names --until before --since as such (exit 2)", { timeout: 60_000 }, async () => {
    const r = await runTrueidle(["report", "--since", "2024-05-02T00:00:00Z", "--until", "2024-05-01T00:00:00Z"]);
    expect(r.code, r.output).toBe(2);
    expect(r.output).toContain(
      "--until 2024-05-01T00:00:00Z (2024-05-01T00:00:00Z) is before --since 2024-05-02T00:00:00Z (2024-05-02T00:00:00Z)",
    );
    const ago = await runTrueidle(["report", "--since", "2h", "--until", "3h"]);
    expect(ago.code, ago.output).toBe(2);
    expect(ago.output).toMatch(
      /--until 3h \(\S+\) is before --since 2h \(\S+\); give the earlier time to --since and the later one to --until/,
    );
  });
});
