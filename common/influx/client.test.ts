import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { TrueidleError } from "../errors.js";
import { InfluxQueryClient } from "./client.js";

interface Seen {
  method: string | undefined;
  url: string | undefined;
  auth: string | undefined;
  contentType: string | undefined;
  params: URLSearchParams;
}

/** A real HTTP server on loopback answering with `handler`; returns its base URL. */
async function withServer(
  handler: (req: IncomingMessage, body: string, res: ServerResponse) => void,
  fn: (url: string) => Promise<void>,
): Promise<void> {
  const server = createServer((req, res) => {
    let body = "";
    req
      .setEncoding("utf8")
      .on("data", (d: string) => (body += d))
      .on("end", () => handler(req, body, res));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    await fn(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

function seenOf(req: IncomingMessage, body: string): Seen {
  return {
    method: req.method,
    url: req.url,
    auth: req.headers.authorization,
    contentType: req.headers["content-type"],
    params: new URLSearchParams(body),
  };
}

/** The error `p` rejects with (it must reject). */
async function failure(p: Promise<unknown>): Promise<TrueidleError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TrueidleError);
  return err as TrueidleError;
}

describe("InfluxQueryClient", () => {
  it("sends Basic credentials, asks for chunked answers and joins a series continued across chunks", async () => {
    let seen: Seen | undefined;
    await withServer(
      (req, body, res) => {
        seen = seenOf(req, body);
        res.writeHead(200, { "content-type": "application/json" });
        const s = (values: unknown[][]) => ({ name: "gpu_hour", tags: { site: "a" }, columns: ["time", "v"], values });
        res.end(
          `${[
            JSON.stringify({ results: [{ statement_id: 0, series: [s([[1, 2]])], partial: true }] }),
            JSON.stringify({ results: [{ statement_id: 0, series: [s([[3, 4]])] }] }),
            JSON.stringify({
              results: [{ statement_id: 1, series: [{ name: "m", columns: ["time", "n"], values: [[0, 9]] }] }],
            }),
          ].join("\n")}\n`,
        );
      },
      async (url) => {
        const c = new InfluxQueryClient({
          target: { baseUrl: url, database: "trueidle", username: "u", password: "p:w" },
        });
        const [a, b] = await c.query(["SELECT 1", "SELECT 2"]);
        expect(a!.series).toHaveLength(1);
        expect(a!.series[0]!.values).toEqual([
          [1, 2],
          [3, 4],
        ]);
        expect(b!.series[0]!.values).toEqual([[0, 9]]);
      },
    );
    expect(seen?.auth).toBe(`Basic ${Buffer.from("u:p:w").toString("base64")}`);
    expect(seen?.params.get("chunked")).toBe("true");
    expect(seen?.params.get("q")).toBe("SELECT 1;\nSELECT 2");
  });

  it("POSTs every statement as a form, with the database and epoch=ms, as the roll-ups always sent them", async () => {
    const seen: Seen[] = [];
    await withServer(
      (req, body, res) => {
        seen.push(seenOf(req, body));
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          `${JSON.stringify({
            results: [
              {
                statement_id: 0,
                series: [{ name: "result", columns: ["time", "written"], values: [[0, 24]] }],
              },
            ],
          })}\n`,
        );
      },
      async (url) => {
        const c = new InfluxQueryClient({ target: { baseUrl: url, database: "fleet" } });
        const into = 'SELECT sum("a") AS "a" INTO "fleet"."gpu_hour"."gpu_hour" FROM "fleet"."gpu_window"."gpu_window"';
        const [r] = await c.query([into]);
        expect(r!.series[0]!.values).toEqual([[0, 24]]);
        await c.query(['CREATE DATABASE "fleet"']);
      },
    );
    expect(seen).toHaveLength(2);
    for (const s of seen) {
      expect(s.method).toBe("POST");
      expect(s.url).toBe("/query");
      expect(s.contentType).toBe("application/x-www-form-urlencoded");
      expect(s.params.get("db")).toBe("fleet");
      expect(s.params.get("epoch")).toBe("ms");
      // No credentials, no header: an InfluxDB without auth needs none.
      expect(s.auth).toBeUndefined();
    }
    expect(seen[1]!.params.get("q")).toBe('CREATE DATABASE "fleet"');
  });

  it("keeps a series that comes without values (SHOW CONTINUOUS QUERIES on a database that has none)", async () => {
    await withServer(
      (_req, _body, res) => {
        res.writeHead(200);
        res.end(
          `${JSON.stringify({
            results: [
              {
                statement_id: 0,
                series: [
                  { name: "_internal", columns: ["name", "query"] },
                  { name: "trueidle", columns: ["name", "query"], values: [["cq", "CREATE …"]] },
                ],
              },
            ],
          })}\n`,
        );
      },
      async (url) => {
        const [r] = await new InfluxQueryClient({ target: { baseUrl: url, database: "trueidle" } }).query([
          "SHOW CONTINUOUS QUERIES",
        ]);
        expect(r!.series.map((s) => [s.name, s.values.length])).toEqual([
          ["_internal", 0],
          ["trueidle", 1],
        ]);
      },
    );
  });

  it("names the fix for refused credentials, a missing database and a server that is not InfluxDB", async () => {
    const answers: Array<[number, string]> = [
      [401, JSON.stringify({ error: "authorization failed" })],
      [200, JSON.stringify({ results: [{ statement_id: 0, error: "database not found: fleet" }] })],
      [502, "<html>Bad Gateway</html>"],
      [200, JSON.stringify({ results: [{ statement_id: 0, error: "retention policy not found: gpu_hour" }] })],
      [404, "404 page not found\n"],
    ];
    await withServer(
      (_req, _body, res) => {
        const [status, body] = answers.shift()!;
        res.writeHead(status);
        res.end(body);
      },
      async (url) => {
        const c = new InfluxQueryClient({ target: { baseUrl: url, database: "fleet" } });
        const refused = await failure(c.query(["SELECT 1"]));
        expect(refused.message).toMatch(/refused the credentials \(HTTP 401\); set TRUEIDLE_INFLUX_USERNAME/);
        expect(refused.code).toBe("bad_config");
        const missing = await failure(c.query(["SELECT 1"]));
        expect(missing.message).toMatch(/database "fleet" does not exist on InfluxDB at .*; the collector creates it/);
        expect(missing.code).toBe("not_found");
        await expect(c.query(["SELECT 1"])).rejects.toThrow(
          /answered HTTP 502 with something that is not InfluxDB JSON: <html>Bad Gateway/,
        );
        const noPolicy = await failure(c.query(["SELECT 1"]));
        expect(noPolicy.message).toMatch(
          /lacks trueidle's retention policies \(retention policy not found: gpu_hour\); start the collector/,
        );
        await expect(c.query(["SELECT 1"])).rejects.toThrow(
          /answered HTTP 404 with something that is not InfluxDB JSON/,
        );
      },
    );
  });

  it("takes an error InfluxDB reports inside a 200 answer for an error, naming the statement", async () => {
    await withServer(
      (_req, _body, res) => {
        res.writeHead(200);
        res.end(
          `${[
            JSON.stringify({ results: [{ statement_id: 0, series: [{ name: "m", columns: ["n"], values: [[1]] }] }] }),
            JSON.stringify({
              results: [{ statement_id: 1, error: "retention policy duration must be at least 1h0m0s" }],
            }),
          ].join("\n")}\n`,
        );
      },
      async (url) => {
        const c = new InfluxQueryClient({ target: { baseUrl: url, database: "trueidle" } });
        const err = await failure(
          c.query(["SHOW DATABASES", 'CREATE RETENTION POLICY "gpu_window" ON "trueidle" DURATION 1m REPLICATION 1']),
        );
        expect(err.code).toBe("bad_input");
        expect(err.message).toBe(
          `InfluxDB at ${url} refused a statement (retention policy duration must be at least 1h0m0s): ` +
            'CREATE RETENTION POLICY "gpu_window" ON "trueidle" DURATION 1m REPLICATION 1',
        );
      },
    );
  });

  it("tells refused rights (403) from refused credentials, and a failing server from a refused statement", async () => {
    const answers: Array<[number, string]> = [
      [
        403,
        JSON.stringify({
          error:
            "error authorizing query: reader not authorized to execute statement 'CREATE DATABASE \"x\"', requires admin privilege",
        }),
      ],
      [500, JSON.stringify({ error: "engine is closed" })],
      [400, JSON.stringify({ error: "error parsing query: found EOF, expected FROM at line 1, char 9" })],
    ];
    await withServer(
      (_req, _body, res) => {
        const [status, body] = answers.shift()!;
        res.writeHead(status, { "content-type": "application/json" });
        res.end(body);
      },
      async (url) => {
        const c = new InfluxQueryClient({ target: { baseUrl: url, database: "x", username: "reader", password: "p" } });
        const rights = await failure(c.query(['CREATE DATABASE "x"']));
        expect(rights.code).toBe("bad_config");
        expect(rights.message).toMatch(
          /refused a statement for want of rights \(error authorizing query: .*requires admin/,
        );
        expect(rights.message).toMatch(/grant the user the privilege InfluxDB names/);
        const failed = await failure(c.query(["SHOW DATABASES"]));
        expect(failed.code).toBe("unavailable");
        expect(failed.message).toBe(`InfluxDB at ${url} failed (HTTP 500: engine is closed): SHOW DATABASES`);
        const parse = await failure(c.query(["SELECT x"]));
        expect(parse.code).toBe("bad_input");
        expect(parse.message).toMatch(/refused a statement \(error parsing query: .*\): SELECT x$/);
      },
    );
  });

  it("gives up after its timeout, naming the fix its caller gave", async () => {
    await withServer(
      () => {
        // Never answers.
      },
      async (url) => {
        const c = new InfluxQueryClient({
          target: { baseUrl: url, database: "trueidle" },
          timeoutMs: 200,
          timeoutFix: "give a longer --timeout",
        });
        const err = await failure(c.query(["SELECT 1"]));
        expect(err.code).toBe("unavailable");
        expect(err.message).toBe(`InfluxDB at ${url} did not answer a query within 0.2 s; give a longer --timeout`);
      },
    );
  });

  it("gives up on a statement when the caller's signal aborts, even after the response began", async () => {
    await withServer(
      (_req, _body, res) => {
        // Starts an answer and never finishes it.
        res.writeHead(200, { "content-type": "application/json" });
        res.write('{"results":[');
      },
      async (url) => {
        const c = new InfluxQueryClient({ target: { baseUrl: url, database: "trueidle" }, timeoutMs: 60_000 });
        const err = await failure(c.query(["SHOW DATABASES"], AbortSignal.timeout(200)));
        expect(err.code).toBe("aborted");
        expect(err.message).toMatch(/abandoned/);
      },
    );
  });

  it("names an address nothing listens on", async () => {
    // A port just freed (not 9, which fetch refuses as a "bad port" before connecting).
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const c = new InfluxQueryClient({ target: { baseUrl: `http://127.0.0.1:${port}`, database: "trueidle" } });
    const err = await failure(c.query(["SHOW DATABASES"]));
    expect(err.code).toBe("unavailable");
    expect(err.message).toBe(
      `cannot reach InfluxDB at http://127.0.0.1:${port} (ECONNREFUSED); check --influx-url and that influxd is running`,
    );
    await expect(c.ping()).rejects.toThrow(err.message);
  });

  it("pings: 204 passes, another server's answer names --influx-url, refused credentials name the fix", async () => {
    const statuses = [204, 404, 401];
    await withServer(
      (_req, _body, res) => {
        res.writeHead(statuses.shift()!);
        res.end();
      },
      async (url) => {
        const c = new InfluxQueryClient({ target: { baseUrl: url, database: "trueidle" } });
        await c.ping();
        await expect(c.ping()).rejects.toThrow(
          `${url} answered /ping with HTTP 404, where InfluxDB answers 204; check that --influx-url names InfluxDB's HTTP API`,
        );
        await expect(c.ping()).rejects.toThrow(/refused the credentials \(HTTP 401\); set TRUEIDLE_INFLUX_USERNAME/);
      },
    );
  });
});
