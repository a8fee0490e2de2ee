/**
 * The collector's fleet page in a real browser: `trueidle demo` (collector + three simulated
 * 8-GPU hosts over gRPC, no InfluxDB) plus one more simulated agent whose hostname is an
 * HTML payload, all subprocesses; headless Chromium loads `/`, runs its script, and the
 * DOM it renders is checked against the collector's /api/fleet and /metrics.
 *
 * That agent learns owners as on a real node: a kubelet pod-resources server (in this
 * process, on a unix socket) allocates its GPU 3 to pod ml-team/trainer-7 and its GPU 4 to
 * a pod whose name is an HTML payload, and a batch job mapping directory gives GPU 3 to job
 * 4242 of alice. Both GPUs stay held idle in its scenario.
 *
 * Needs Debian's `chromium` (/usr/bin/chromium, or CHROMIUM=path) and `npm run build`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { freePort } from "./helpers/ports.js";
import { gpuPod, PodResourcesServer } from "./helpers/pod-resources-server.js";
import { startTrueidle, type TrueidleProcess } from "./helpers/trueidle-process.js";
import { buildFleetJson, type FleetJson, type FleetJsonOwner } from "../collector/fleet-page/fleet-json.js";
import { FLEET_PAGE_HTML } from "../collector/fleet-page/page-html.js";
import { FleetState } from "../collector/fleet-state.js";
import { OwnerLedger, parseOwnerLabels } from "../collector/owner-ledger.js";
import { makeWindow } from "../collector/testdata/windows.js";
import { GpuState, OwnerSource } from "../gen/trueidle/v1/ingest_pb.js";

const execFileP = promisify(execFile);
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">&amp;';
/** A pod name no Kubernetes would allow, as a kubelet (or anything on its socket) could send it. */
const HOSTILE_POD = '<img src=x onerror="document.body.dataset.pwned=2">&amp;';
/** The hostile host's GPUs with owners: held idle all along in demo/scenarios/gpu-c01.json. */
const OWNED_GPU = 3;
const HOSTILE_POD_GPU = 4;
const WINDOW = "5s";
/** The demo's three hosts and the hostile one, 8 GPUs each. */
const HOSTS = 4;
const GPUS = 32;

function decode(s: string): string {
  return s.replace(
    /&(lt|gt|quot|#39|nbsp|amp);/g,
    (_, e: string) => ({ lt: "<", gt: ">", quot: '"', "#39": "'", nbsp: "\u00a0", amp: "&" })[e]!,
  );
}

async function dumpDom(url: string): Promise<string> {
  const { stdout } = await execFileP(
    CHROMIUM,
    [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--no-first-run",
      "--virtual-time-budget=5000",
      "--dump-dom",
      url,
    ],
    { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
  );
  return stdout;
}

interface Cell {
  gpu: number;
  uuid: string;
  state: string;
  title: string;
  text: string;
}

/** The grid's rows as the browser rendered them. */
function gridOf(dom: string): Map<string, Cell[]> {
  const tbody = /<table id="grid"[^>]*><tbody>([\s\S]*?)<\/tbody>/.exec(dom);
  expect(tbody, "the grid table").not.toBeNull();
  const rows = new Map<string, Cell[]>();
  for (const row of tbody![1]!.matchAll(/<tr data-host="([^"]*)"><th [^>]*>([^<]*)<\/th>([\s\S]*?)<\/tr>/g)) {
    const host = decode(row[1]!);
    expect(decode(row[2]!), "the row heading is the hostname as text").toBe(host);
    const cells = [
      ...row[3]!.matchAll(
        /<td class="cell s-(\w+)[^"]*" data-gpu="(\d+)" data-uuid="([^"]*)" data-state="(\w+)" title="([^"]*)" aria-label="([^"]*)">([^<]*)<\/td>/g,
      ),
    ].map((m) => {
      expect(m[1], "cell colour class and state agree").toBe(m[4]);
      expect(m[5], "tooltip and aria-label agree").toBe(m[6]);
      return { gpu: Number(m[2]), uuid: decode(m[3]!), state: m[4]!, title: decode(m[5]!), text: m[7]! };
    });
    rows.set(host, cells);
  }
  return rows;
}

function textOf(dom: string, id: string): string {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(dom);
  expect(m, `element #${id}`).not.toBeNull();
  return decode(m![1]!);
}

/** uuid@host → state from `trueidle_gpu_state{...} 1`. */
function metricStates(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^trueidle_gpu_state\{(.*)\} 1$/gm)) {
    const labels = new Map<string, string>();
    for (const l of m[1]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels.set(
        l[1]!,
        l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c)),
      );
    out.set(`${labels.get("uuid")}@${labels.get("host")}`, labels.get("state")!);
  }
  return out;
}

const pct = (r: number | null): string => (r === null ? "n/a" : `${(r * 100).toFixed(1)}%`);

/** How the page writes an owner: namespace/pod first, the other fields named. */
function ownerText(o: FleetJsonOwner): string {
  const head = [o.namespace, o.pod].filter((v) => v !== undefined).join("/");
  const rest = (
    [
      ["container", o.container],
      ["job", o.job],
      ["user", o.user],
    ] as const
  )
    .filter((f) => f[1] !== undefined)
    .map((f) => `${f[0]} ${f[1]}`);
  if (head === "") return rest.join(", ");
  return rest.length > 0 ? `${head} (${rest.join(", ")})` : head;
}

interface HeldRow {
  uuid: string;
  host: string;
  gpu: number;
  owners: string[] | undefined;
}

/** The longest-held-idle table as rendered; `owners` is each line of the Owner cell, undefined without one. */
function heldRowsOf(dom: string): HeldRow[] {
  const body = /<table class="list" id="held">[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(dom);
  expect(body, "the held idle table").not.toBeNull();
  return [
    ...body![1]!.matchAll(
      /<tr data-uuid="([^"]*)"><td>([^<]*)<\/td><td>(\d+)<\/td><td>[^<]*<\/td><td>[^<]*<\/td>(?:<td class="owners">((?:<(?:div|span) class="\w+">[^<]*<\/(?:div|span)>)*)<\/td>)?<\/tr>/g,
    ),
  ].map((m) => ({
    uuid: decode(m[1]!),
    host: decode(m[2]!),
    gpu: Number(m[3]),
    owners:
      m[4] === undefined
        ? undefined
        : [...m[4].matchAll(/<(?:div|span) class="\w+">([^<]*)</g)].map((o) => decode(o[1]!)),
  }));
}

/** The held-idle-by-owner table as rendered: [owner, GPUs, longest idle] per row. */
function byOwnerRowsOf(dom: string): string[][] {
  const body = /<table class="list" id="held-owners">[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(dom);
  expect(body, "the held idle by owner table").not.toBeNull();
  return [...body![1]!.matchAll(/<tr[^>]*>([\s\S]*?)<\/tr>/g)].map((r) =>
    [...r[1]!.matchAll(/<td[^>]*>([^<]*)<\/td>/g)].map((c) => decode(c[1]!)),
  );
}

/** A page server whose /api/fleet answers `json`. */
async function withStubPage<T>(json: () => unknown, fn: (url: string) => Promise<T>): Promise<T> {
  const stub = createServer((req, res) => {
    if (req.url === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(FLEET_PAGE_HTML);
    else if (req.url === "/api/fleet")
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(json()));
    else res.writeHead(503).end();
  });
  await new Promise<void>((resolve) => stub.listen(0, "127.0.0.1", resolve));
  try {
    return await fn(`http://127.0.0.1:${(stub.address() as AddressInfo).port}/`);
  } finally {
    await new Promise((resolve) => stub.close(resolve));
  }
}

describe("fleet page at the collector's /", () => {
  let demo: TrueidleProcess;
  let agent: TrueidleProcess;
  let kubelet: PodResourcesServer;
  let jobDir: string;
  let base: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(`${CHROMIUM} is missing: the fleet page test needs Chromium (Debian: apt-get install chromium).`);
    kubelet = await PodResourcesServer.start({
      pods: [
        gpuPod("ml-team", "trainer-7", "main", [String(OWNED_GPU)]),
        gpuPod("ml-team", HOSTILE_POD, "main", [String(HOSTILE_POD_GPU)]),
      ],
    });
    jobDir = mkdtempSync(path.join(tmpdir(), "trueidle-jobs-"));
    // A Slurm prolog's line: job id and user, in the file named by the GPU's index.
    writeFileSync(path.join(jobDir, String(OWNED_GPU)), "4242 alice\n");
    const grpcPort = await freePort();
    const httpPort = await freePort();
    base = `http://127.0.0.1:${httpPort}`;
    demo = startTrueidle([
      "demo",
      "--no-influx",
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--window",
      WINDOW,
    ]);
    agent = startTrueidle([
      "agent",
      "--plaintext",
      "--source",
      "sim",
      "--scenario",
      "demo/scenarios/gpu-c01.json",
      "--collector",
      `127.0.0.1:${grpcPort}`,
      "--hostname",
      HOSTILE,
      "--label",
      "site=</script><b>x</b>",
      "--window",
      WINDOW,
      "--log-level",
      "warn",
      "--pod-resources-socket",
      kubelet.socketPath,
      "--job-mapping-dir",
      jobDir,
    ]);
    // Wait (bounded) for every GPU's first window, and the owners of the hostile host's GPUs
    // (the agent asks the kubelet every 10 s; GPUs named by index resolve once it has read them).
    const owned = (j: FleetJson, gpu: number): number =>
      j.hosts.find((h) => h.host === HOSTILE)?.gpus.find((g) => g.index === gpu)?.owners?.length ?? 0;
    for (let i = 0; ; i++) {
      const j = await fetch(`${base}/api/fleet`)
        .then((r) => r.json() as Promise<FleetJson>)
        .catch(() => undefined);
      if (j && j.gpus === GPUS && j.up === GPUS && owned(j, OWNED_GPU) === 2 && owned(j, HOSTILE_POD_GPU) === 1) break;
      if (i > 120)
        throw new Error(
          `the fleet did not reach ${GPUS} GPUs up; last /api/fleet: ${JSON.stringify(j)?.slice(0, 500)}\n${demo.output().slice(-2000)}\n${agent.output().slice(-2000)}`,
        );
      await new Promise((r) => setTimeout(r, 500));
    }
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await demo?.stop();
    await kubelet?.stop();
    if (jobDir) rmSync(jobDir, { recursive: true, force: true });
  });

  it("shows the collector's fleet: hosts × GPUs by state, idle figures, counts, longest held idle; hostnames as text", async () => {
    // The fleet changes every window; take a snapshot the page must agree with: the JSON
    // and /metrics before the browser loads and the JSON after match (no window in between).
    let before: FleetJson | undefined,
      after: FleetJson | undefined,
      metrics = "",
      dom = "";
    const stable = (a: FleetJson, b: FleetJson): boolean =>
      a.idle.observedS === b.idle.observedS &&
      JSON.stringify(a.hosts.map((h) => h.gpus.map((g) => g.state))) ===
        JSON.stringify(b.hosts.map((h) => h.gpus.map((g) => g.state)));
    for (let attempt = 0; attempt < 10; attempt++) {
      before = (await (await fetch(`${base}/api/fleet`)).json()) as FleetJson;
      metrics = await (await fetch(`${base}/metrics`)).text();
      dom = await dumpDom(`${base}/`);
      after = (await (await fetch(`${base}/api/fleet`)).json()) as FleetJson;
      if (stable(before, after)) break;
      before = undefined;
    }
    expect(before, "a snapshot with no window arriving while the browser loaded the page").toBeDefined();
    const fleet = before!;

    // The script ran, its fetch succeeded, and no agent string became markup.
    expect(dom).toMatch(/<body data-generated-at="\d+">/);
    expect(textOf(dom, "error")).toBe("");
    expect(textOf(dom, "updated")).toMatch(/^Last updated /);
    const markup = dom.replace(/="[^"]*"/g, '=""');
    expect(markup, "agent strings never become elements").not.toMatch(/<img|<b>|data-pwned/i);
    expect(
      decode(
        /<tr data-host="[^"]*"><th scope="row" title="([^"]*)">/.exec(dom.slice(dom.indexOf('<table id="grid"')))![1]!,
      ),
    ).toBe(`${HOSTILE} (site=</script><b>x</b>)`);

    const grid = gridOf(dom);
    expect(grid.size).toBe(HOSTS);
    expect([...grid.keys()]).toEqual(fleet.hosts.map((h) => h.host));
    expect(grid.has(HOSTILE), "the hostile hostname is a row, shown as text").toBe(true);
    const states = metricStates(metrics);
    expect(states.size).toBe(GPUS);
    let cells = 0;
    for (const h of fleet.hosts) {
      const row = grid.get(h.host)!;
      expect(row.map((c) => c.gpu)).toEqual(h.gpus.map((g) => g.index));
      for (const [i, g] of h.gpus.entries()) {
        const cell = row[i]!;
        expect(cell.uuid).toBe(g.uuid);
        expect(cell.state, `${h.host} GPU ${g.index} on the page vs /api/fleet`).toBe(g.state);
        expect(cell.state, `${h.host} GPU ${g.index} on the page vs /metrics`).toBe(states.get(`${g.uuid}@${h.host}`));
        expect(cell.title.startsWith(`${h.host} GPU ${g.index} (${g.model}): `)).toBe(true);
        expect(cell.text).toBe(
          { active: "A", free_idle: "F", held_idle: "H", busy_phantom: "P", unavailable: "U" }[g.state],
        );
        cells++;
      }
    }
    expect(cells).toBe(GPUS);
    // The demo scenarios hold GPUs in every state but unavailable at once.
    for (const s of ["active", "free_idle", "held_idle", "busy_phantom"])
      expect(fleet.byState[s as keyof FleetJson["byState"]], s).toBeGreaterThan(0);

    expect(textOf(dom, "real-idle")).toBe(pct(fleet.idle.realIdleRatio));
    expect(textOf(dom, "reported-idle")).toBe(pct(fleet.idle.reportedIdleRatio));
    expect(textOf(dom, "hidden-idle")).toBe(pct(fleet.idle.hiddenIdleRatio));
    expect(fleet.idle.realIdleRatio!).toBeGreaterThan(fleet.idle.reportedIdleRatio!);
    expect(textOf(dom, "gpu-count")).toBe(String(GPUS));
    expect(textOf(dom, "host-count")).toBe(String(HOSTS));
    for (const [s, n] of Object.entries(fleet.byState)) {
      expect(
        new RegExp(`<li data-state="${s}" id="count-${s}">.*?<span class="n">${n}</span></li>`).test(dom),
        `count of ${s} is ${n}`,
      ).toBe(true);
    }

    const heldRows = heldRowsOf(dom);
    expect(heldRows.map((r) => [r.host, r.gpu, r.uuid])).toEqual(
      fleet.longestHeldIdle.map((g) => [g.host, g.index, g.uuid]),
    );
    expect(heldRows.length).toBeGreaterThan(0);
  }, 120_000);

  it("shows who holds each GPU held idle, owner text as text, and the GPUs held idle by owner", async () => {
    let fleet: FleetJson | undefined,
      dom = "";
    // A snapshot the page must agree with: no window arrived while the browser loaded it.
    for (let attempt = 0; attempt < 10 && fleet === undefined; attempt++) {
      const before = (await (await fetch(`${base}/api/fleet`)).json()) as FleetJson;
      dom = await dumpDom(`${base}/`);
      const after = (await (await fetch(`${base}/api/fleet`)).json()) as FleetJson;
      if (JSON.stringify({ ...before, generatedAtMs: 0 }) === JSON.stringify({ ...after, generatedAtMs: 0 }))
        fleet = before;
    }
    expect(fleet, "a snapshot with no window arriving while the browser loaded the page").toBeDefined();
    const j = fleet!;
    expect(j.ownerLabels).toEqual(["namespace", "pod", "container", "job", "user"]);
    expect(dom).toMatch(/<body data-generated-at="\d+">/);
    expect(dom.replace(/="[^"]*"/g, '=""'), "owner text never becomes elements").not.toMatch(/<img|data-pwned/i);
    expect(dom, "the Owner column is shown").toMatch(/<th id="held-owner-col">Owner<\/th>/);
    expect(textOf(dom, "owner-fields")).toBe(
      "Owner fields shown: namespace, pod, container, job, user (the collector's --owner-labels).",
    );

    // Every row's Owner cell is its GPU's owners from /api/fleet.
    const rows = heldRowsOf(dom);
    expect(rows.map((r) => r.uuid)).toEqual(j.longestHeldIdle.map((g) => g.uuid));
    for (const [i, g] of j.longestHeldIdle.entries()) {
      const want = g.owners!.length === 0 ? ["not known"] : g.owners!.map(ownerText);
      expect(rows[i]!.owners, `owners of ${g.host} GPU ${g.index}`).toEqual(want);
    }
    // The hostile host's two owned GPUs are held idle from its start, longer than any GPU of
    // the demo that goes idle only after a busy phase, so they are among the longest.
    const row = (gpu: number): HeldRow | undefined => rows.find((r) => r.host === HOSTILE && r.gpu === gpu);
    expect(row(OWNED_GPU)?.owners, `the owners of GPU ${OWNED_GPU} of the hostile host`).toEqual([
      "ml-team/trainer-7 (container main)",
      "job 4242, user alice",
    ]);
    expect(row(HOSTILE_POD_GPU)?.owners, "the hostile pod name, as text").toEqual([
      `ml-team/${HOSTILE_POD} (container main)`,
    ]);
    // The demo's own agents know no owners.
    expect(rows.filter((r) => r.host !== HOSTILE).every((r) => r.owners?.[0] === "not known")).toBe(true);

    // Held idle by owner, across the fleet: the two pods and the job have one GPU each, the demo's GPUs none.
    const by = byOwnerRowsOf(dom);
    const owners = j.heldIdleByOwner!;
    expect(by.map((r) => r.slice(0, 2))).toEqual([
      ...owners.owners.map((o) => [ownerText(o.owner), String(o.gpus)]),
      ...(owners.withoutOwner > 0 ? [["Owner not known", String(owners.withoutOwner)]] : []),
    ]);
    expect(by.map((r) => r[0])).toEqual(
      expect.arrayContaining([
        "ml-team/trainer-7 (container main)",
        "job 4242, user alice",
        `ml-team/${HOSTILE_POD} (container main)`,
      ]),
    );
    expect(owners.withoutOwner).toBe(j.byState.held_idle - 2);
    expect(dom).not.toMatch(/<section aria-labelledby="h-by-owner" id="by-owner" hidden/);

    // The grid's tooltip names the owners too.
    const cell = gridOf(dom)
      .get(HOSTILE)!
      .find((c) => c.gpu === HOSTILE_POD_GPU)!;
    expect(cell.title.endsWith(`; owners: ml-team/${HOSTILE_POD} (container main)`)).toBe(true);
  }, 120_000);

  it("shows no owner column with --owner-labels none, and marks owners left out or not known", async () => {
    const fleet = new FleetState();
    const node = { hostname: "node-1", labels: {}, windowMs: 10_000 };
    const pods = Array.from({ length: 6 }, (_, i) => ({
      via: OwnerSource.POD_RESOURCES,
      namespace: "ml-team",
      pod: `worker-${i}`,
      observedS: 10,
      heldIdleS: 10,
    }));
    fleet.applyWindow(
      node,
      makeWindow(
        { uuid: "GPU-0", index: 0, freeIdleS: 0, heldIdleS: 10, owners: pods },
        { state: GpuState.HELD_IDLE, idleStreakS: 600 },
      ),
    );
    fleet.applyWindow(
      node,
      makeWindow(
        { uuid: "GPU-1", index: 1, freeIdleS: 0, heldIdleS: 10 },
        { state: GpuState.HELD_IDLE, idleStreakS: 60 },
      ),
    );
    const ledger = (labels: string): OwnerLedger =>
      new OwnerLedger(parseOwnerLabels(labels), { maxGroups: 100, expireAfterMs: 60_000 });

    const none = await withStubPage(() => buildFleetJson(fleet, { owners: ledger("none") }), dumpDom);
    expect(heldRowsOf(none).map((r) => [r.uuid, r.owners])).toEqual([
      ["GPU-0", undefined],
      ["GPU-1", undefined],
    ]);
    expect(none).toMatch(/<th id="held-owner-col" hidden="">Owner<\/th>/);
    expect(none).toMatch(/<section aria-labelledby="h-by-owner" id="by-owner" hidden="">/);
    expect(textOf(none, "owner-fields")).toBe(
      "Owners are not shown: the collector exports no owner fields (--owner-labels none).",
    );
    expect(none).not.toContain("worker-");

    const some = await withStubPage(() => buildFleetJson(fleet, { owners: ledger("namespace,pod") }), dumpDom);
    expect(heldRowsOf(some).map((r) => [r.uuid, r.owners])).toEqual([
      ["GPU-0", ["ml-team/worker-0", "ml-team/worker-1", "ml-team/worker-2", "ml-team/worker-3", "+2 more"]],
      ["GPU-1", ["not known"]],
    ]);
    expect(byOwnerRowsOf(some).map((r) => r.slice(0, 2))).toEqual([
      ...Array.from({ length: 6 }, (_, i) => [`ml-team/worker-${i}`, "1"]),
      ["Owner not known", "1"],
    ]);
  }, 120_000);

  it("serves the page self-contained under a strict content security policy", async () => {
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = await res.text();
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
    expect(html).not.toContain("innerHTML");
    const api = await fetch(`${base}/api/fleet`);
    expect(api.headers.get("content-type")).toBe("application/json");
  });

  it("shows an error banner when /api/fleet fails", async () => {
    const stub = createServer((req, res) => {
      if (req.url === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(FLEET_PAGE_HTML);
      else res.writeHead(503).end();
    });
    await new Promise<void>((resolve) => stub.listen(0, "127.0.0.1", resolve));
    try {
      const dom = await dumpDom(`http://127.0.0.1:${(stub.address() as AddressInfo).port}/`);
      expect(dom).toMatch(
        /<div id="error" role="alert" class="shown">Could not refresh from the collector \(HTTP 503\)/,
      );
      expect(textOf(dom, "updated")).toBe("Loading…");
    } finally {
      await new Promise((resolve) => stub.close(resolve));
    }
  });
});
