import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { InfluxQueryClient, parseInfluxUrl, quoteIdent, readInfluxCredentials } from "./influx-connection.js";

/** A real HTTP server on loopback answering /query with `handler`; returns its base URL. */
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
    await new Promise<void>((r) => server.close(() => r()));
  }
}

describe("--influx-url", () => {
  it("takes the database from the path, trueidle by default", () => {
    expect(parseInfluxUrl("http://influx:8086/fleet")).toEqual({ baseUrl: "http://influx:8086", database: "fleet" });
    expect(parseInfluxUrl("https://influx.example")).toEqual({
      baseUrl: "https://influx.example",
      database: "trueidle",
    });
    expect(parseInfluxUrl("http://[::1]:8086/")).toEqual({ baseUrl: "http://[::1]:8086", database: "trueidle" });
  });

  it("refuses credentials in the URL and anything that is not http(s)://HOST/DB", () => {
    expect(() => parseInfluxUrl("http://admin:secret@influx:8086/trueidle")).toThrow(
      /must not hold credentials; set TRUEIDLE_INFLUX_USERNAME/,
    );
    expect(() => parseInfluxUrl("influx:8086")).toThrow(/must start with http:\/\/ or https:\/\//);
    expect(() => parseInfluxUrl("http://influx:8086/a/b")).toThrow(/must be a single database name/);
    expect(() => parseInfluxUrl("not a url")).toThrow(/is not a URL/);
  });

  it("never echoes a password, even one that makes the URL unparseable", () => {
    for (const url of [
      "http://admin:S3cret/Pass@influx:8086/db",
      "http://admin:S3cret/Pass@influx:8086/a/b?x",
      "admin:S3cret/Pass@influx",
    ]) {
      let message = "";
      try {
        parseInfluxUrl(url);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/must not hold credentials/);
      expect(message).not.toMatch(/S3cret|Pass|admin/);
    }
  });
});

describe("InfluxDB credentials", () => {
  it("come from the file first, then the environment, else none", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "trueidle-cred-"));
    try {
      const file = path.join(dir, "cred");
      writeFileSync(file, "reader:pa:ss word\nignored\n");
      const env = { TRUEIDLE_INFLUX_USERNAME: "env-user", TRUEIDLE_INFLUX_PASSWORD: "env-pass" };
      expect(readInfluxCredentials(file, env)).toEqual({ username: "reader", password: "pa:ss word" });
      expect(readInfluxCredentials(undefined, env)).toEqual({ username: "env-user", password: "env-pass" });
      expect(readInfluxCredentials(undefined, {})).toBeUndefined();
      expect(() => readInfluxCredentials(undefined, { TRUEIDLE_INFLUX_USERNAME: "u" })).toThrow(/set both/);
      writeFileSync(file, "no-colon\n");
      expect(() => readInfluxCredentials(file, {})).toThrow(/first line must be username:password/);
      expect(() => readInfluxCredentials(path.join(dir, "missing"), {})).toThrow(
        /cannot read --influx-credentials-file/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("quoteIdent", () => {
  it("quotes InfluxQL identifiers so no tag key can end the quote", () => {
    expect(quoteIdent("site")).toBe('"site"');
    expect(quoteIdent('a"b\\c')).toBe('"a\\"b\\\\c"');
  });
});

describe("InfluxQueryClient", () => {
  it("sends Basic credentials, asks for chunked answers and joins a series continued across chunks", async () => {
    let seen: { auth?: string | undefined; params?: URLSearchParams } = {};
    await withServer(
      (req, body, res) => {
        seen = { auth: req.headers.authorization, params: new URLSearchParams(body) };
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
          target: { baseUrl: url, database: "trueidle" },
          credentials: { username: "u", password: "p:w" },
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
    expect(seen.auth).toBe(`Basic ${Buffer.from("u:p:w").toString("base64")}`);
    expect(seen.params?.get("chunked")).toBe("true");
    expect(seen.params?.get("q")).toBe("SELECT 1;\nSELECT 2");
  });

  it("names the fix for refused credentials, a missing database and a server that is not InfluxDB", async () => {
    const answers: Array<[number, string]> = [
      [401, JSON.stringify({ error: "authorization failed" })],
      [200, JSON.stringify({ results: [{ statement_id: 0, error: "database not found: fleet" }] })],
      [502, "<html>Bad Gateway</html>"],
    ];
    await withServer(
      (_req, _body, res) => {
        const [status, body] = answers.shift()!;
        res.writeHead(status);
        res.end(body);
      },
      async (url) => {
        const c = new InfluxQueryClient({ target: { baseUrl: url, database: "fleet" } });
        await expect(c.query(["SELECT 1"])).rejects.toThrow(
          /refused the credentials \(HTTP 401\); set TRUEIDLE_INFLUX_USERNAME/,
        );
        await expect(c.query(["SELECT 1"])).rejects.toThrow(
          /database "fleet" does not exist on InfluxDB at .*; the collector creates it/,
        );
        await expect(c.query(["SELECT 1"])).rejects.toThrow(
          /answered HTTP 502 with something that is not InfluxDB JSON: <html>Bad Gateway/,
        );
      },
    );
  });
});
