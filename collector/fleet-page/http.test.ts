import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../common/log.js";
import { BasicAuthUsers } from "../auth/basic-auth.js";
import { FleetState } from "../fleet-state.js";
import { CollectorHttpServer } from "../http-server.js";
import { SelfMetrics } from "../self-metrics.js";
import { makeWindow } from "../testdata/windows.js";
import type { FleetJson } from "./fleet-json.js";

let server: CollectorHttpServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function start(basicAuth?: BasicAuthUsers): Promise<{ base: string; self: SelfMetrics }> {
  const fleet = new FleetState();
  fleet.applyWindow({ hostname: "node-1", labels: { site: "dc1" }, windowMs: 10_000 }, makeWindow());
  const self = new SelfMetrics();
  server = new CollectorHttpServer({ fleet, self, logger: createLogger({ write: () => {} }), basicAuth });
  const port = await server.listen({ host: "127.0.0.1", port: 0 });
  return { base: `http://127.0.0.1:${port}`, self };
}

describe("collector HTTP: fleet page and /api/fleet", () => {
  it("serves the page with a CSP that allows exactly its own script, and the fleet as JSON", async () => {
    const { base } = await start();
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    const html = await page.text();
    const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]!);
    expect(scripts).toHaveLength(1);
    const hash = createHash("sha256").update(scripts[0]!).digest("base64");
    expect(page.headers.get("content-security-policy")).toContain(`script-src 'sha256-${hash}'`);
    expect(page.headers.get("content-security-policy")).toContain("connect-src 'self'");
    const api = await fetch(`${base}/api/fleet`);
    expect(api.status).toBe(200);
    expect(api.headers.get("content-type")).toBe("application/json");
    const j = (await api.json()) as FleetJson;
    expect(j).toMatchObject({ gpus: 1, hostCount: 1, hosts: [{ host: "node-1", labels: { site: "dc1" }, gpus: [{ index: 0, state: "free_idle" }] }] });
    const head = await fetch(`${base}/api/fleet`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
  });

  it("asks for basic-auth credentials on the page and /api/fleet like on /metrics", async () => {
    const { base, self } = await start(BasicAuthUsers.fromPasswords({ viewer: "s3cret" }));
    for (const p of ["/", "/api/fleet"]) {
      const res = await fetch(`${base}${p}`);
      expect(res.status, p).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/^Basic /);
      expect(await res.text()).not.toContain("node-1");
    }
    expect(self.httpAuthFailures).toBe(2);
    const auth = { authorization: `Basic ${Buffer.from("viewer:s3cret").toString("base64")}` };
    expect((await fetch(`${base}/`, { headers: auth })).status).toBe(200);
    const j = (await (await fetch(`${base}/api/fleet`, { headers: auth })).json()) as FleetJson;
    expect(j.gpus).toBe(1);
  });
});
