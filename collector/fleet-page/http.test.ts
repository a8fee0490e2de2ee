import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../common/log.js";
import { BasicAuthUsers } from "../auth/basic-auth.js";
import { GpuState, OwnerSource } from "../../gen/trueidle/v1/ingest_pb.js";
import { FleetState } from "../fleet-state.js";
import { CollectorHttpServer } from "../http-server.js";
import { OwnerLedger, parseOwnerLabels } from "../owner-ledger.js";
import { SelfMetrics } from "../self-metrics.js";
import { makeWindow } from "../testdata/windows.js";
import type { FleetJson } from "./fleet-json.js";

let server: CollectorHttpServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function start(basicAuth?: BasicAuthUsers, ownerLabels?: string): Promise<{ base: string; self: SelfMetrics }> {
  const fleet = new FleetState();
  const node = { hostname: "node-1", labels: { site: "dc1" }, windowMs: 10_000 };
  fleet.applyWindow(node, makeWindow());
  // GPU 1 held idle by a pod and the job in it; GPU 2 free, its window naming a pod all the same.
  const pod = {
    via: OwnerSource.POD_RESOURCES,
    namespace: "ml-team",
    pod: "trainer-7",
    container: "main",
    observedS: 10,
    heldIdleS: 10,
  };
  const job = {
    via: OwnerSource.PROCESS,
    job: "4242",
    user: "alice",
    pid: 31337,
    command: "python3",
    observedS: 10,
    heldIdleS: 10,
  };
  fleet.applyWindow(
    node,
    makeWindow(
      { uuid: "GPU-1", index: 1, freeIdleS: 0, heldIdleS: 10, owners: [pod, job] },
      { state: GpuState.HELD_IDLE, processes: 1 },
    ),
  );
  fleet.applyWindow(node, makeWindow({ uuid: "GPU-2", index: 2, owners: [pod] }));
  const self = new SelfMetrics();
  const owners =
    ownerLabels === undefined
      ? undefined
      : new OwnerLedger(parseOwnerLabels(ownerLabels), { maxGroups: 100, expireAfterMs: 60_000 });
  // As the collector passes it: no ledger with --owner-labels none.
  server = new CollectorHttpServer({
    fleet,
    self,
    logger: createLogger({ write: () => {} }),
    basicAuth,
    owners: owners?.enabled ? owners : undefined,
  });
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
    expect(j).toMatchObject({
      gpus: 3,
      hostCount: 1,
      hosts: [
        {
          host: "node-1",
          labels: { site: "dc1" },
          gpus: [{ index: 0, state: "free_idle" }, { index: 1 }, { index: 2 }],
        },
      ],
    });
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
    expect(j.gpus).toBe(3);
  });

  it("shows on the page the owners /metrics exports, with the same fields, and none with --owner-labels none", async () => {
    for (const labels of ["namespace,pod,container,job,user", "pod,user", "none"]) {
      const { base } = await start(undefined, labels);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      const exported = metrics
        .split("\n")
        .filter((l) => l.startsWith("trueidle_gpu_owner_info{"))
        .map((l) => {
          const pairs = [...l.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!] as const);
          const uuid = pairs.find(([k]) => k === "uuid")![1];
          const owner = pairs.filter(([k, v]) => !["host", "gpu", "uuid"].includes(k) && v !== "");
          return JSON.stringify([uuid, Object.fromEntries(owner)]);
        });
      const j = (await (await fetch(`${base}/api/fleet`)).json()) as FleetJson;
      const shown = j.hosts.flatMap((h) =>
        h.gpus.flatMap((g) => (g.owners ?? []).map((o) => JSON.stringify([g.uuid, o]))),
      );
      expect(shown.sort(), labels).toEqual(exported.sort());
      expect(j.ownerLabels, labels).toEqual(labels === "none" ? [] : labels.split(","));
      if (labels === "none") expect(shown).toEqual([]);
      else expect(shown.length, labels).toBeGreaterThan(0);
      await server?.stop();
      server = undefined;
    }
  });
});
