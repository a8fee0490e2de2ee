/**
 * The collector's fleet page in a real browser: `trueidle demo` (collector + three simulated
 * 8-GPU hosts over gRPC, no InfluxDB) plus one more simulated agent whose hostname is an
 * HTML payload, all subprocesses; headless Chromium loads `/`, runs its script, and the
 * DOM it renders is checked against the collector's /api/fleet and /metrics.
 *
 * Needs Debian's `chromium` (/usr/bin/chromium, or CHROMIUM=path) and `npm run build`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import { freePort } from "./helpers/ports.js";
import { startTrueidle, type TrueidleProcess } from "./helpers/trueidle-process.js";
import type { FleetJson } from "../collector/fleet-page/fleet-json.js";
import { FLEET_PAGE_HTML } from "../collector/fleet-page/page-html.js";

const execFileP = promisify(execFile);
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">&amp;';
const WINDOW = "5s";
/** The demo's three hosts and the hostile one, 8 GPUs each. */
const HOSTS = 4;
const GPUS = 32;

function decode(s: string): string {
  return s.replace(/&(lt|gt|quot|#39|nbsp|amp);/g, (_, e: string) => ({ lt: "<", gt: ">", quot: '"', "#39": "'", nbsp: "\u00a0", amp: "&" })[e]!);
}

async function dumpDom(url: string): Promise<string> {
  const { stdout } = await execFileP(CHROMIUM, [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
    "--virtual-time-budget=5000", "--dump-dom", url,
  ], { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

interface Cell { gpu: number; uuid: string; state: string; title: string; text: string }

/** The grid's rows as the browser rendered them. */
function gridOf(dom: string): Map<string, Cell[]> {
  const tbody = /<table id="grid"[^>]*><tbody>([\s\S]*?)<\/tbody>/.exec(dom);
  expect(tbody, "the grid table").not.toBeNull();
  const rows = new Map<string, Cell[]>();
  for (const row of tbody![1]!.matchAll(/<tr data-host="([^"]*)"><th [^>]*>([^<]*)<\/th>([\s\S]*?)<\/tr>/g)) {
    const host = decode(row[1]!);
    expect(decode(row[2]!), "the row heading is the hostname as text").toBe(host);
    const cells = [...row[3]!.matchAll(/<td class="cell s-(\w+)[^"]*" data-gpu="(\d+)" data-uuid="([^"]*)" data-state="(\w+)" title="([^"]*)" aria-label="([^"]*)">([^<]*)<\/td>/g)].map((m) => {
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
    for (const l of m[1]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels.set(l[1]!, l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c)));
    out.set(`${labels.get("uuid")}@${labels.get("host")}`, labels.get("state")!);
  }
  return out;
}

const pct = (r: number | null): string => (r === null ? "n/a" : (r * 100).toFixed(1) + "%");

describe("fleet page at the collector's /", () => {
  let demo: TrueidleProcess;
  let agent: TrueidleProcess;
  let base: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: the fleet page test needs Chromium (Debian: apt-get install chromium).`);
    const grpcPort = await freePort();
    const httpPort = await freePort();
    base = `http://127.0.0.1:${httpPort}`;
    demo = startTrueidle(["demo", "--no-influx", "--grpc-listen", `127.0.0.1:${grpcPort}`, "--http-listen", `127.0.0.1:${httpPort}`, "--window", WINDOW]);
    agent = startTrueidle(["agent", "--plaintext", "--source", "sim", "--scenario", "demo/scenarios/gpu-c01.json", "--collector", `127.0.0.1:${grpcPort}`,
      "--hostname", HOSTILE, "--label", "site=</script><b>x</b>", "--window", WINDOW, "--log-level", "warn"]);
    // Wait (bounded) for every GPU's first window.
    for (let i = 0; ; i++) {
      const j = await fetch(`${base}/api/fleet`).then((r) => r.json() as Promise<FleetJson>).catch(() => undefined);
      if (j && j.gpus === GPUS && j.up === GPUS) break;
      if (i > 120) throw new Error(`the fleet did not reach ${GPUS} GPUs up; last /api/fleet: ${JSON.stringify(j)?.slice(0, 500)}\n${demo.output().slice(-2000)}\n${agent.output().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await demo?.stop();
  });

  it("shows the collector's fleet: hosts × GPUs by state, idle figures, counts, longest held idle; hostnames as text", async () => {
    // The fleet changes every window; take a snapshot the page must agree with: the JSON
    // and /metrics before the browser loads and the JSON after match (no window in between).
    let before: FleetJson | undefined, after: FleetJson | undefined, metrics = "", dom = "";
    const stable = (a: FleetJson, b: FleetJson): boolean => a.idle.observedS === b.idle.observedS && JSON.stringify(a.hosts.map((h) => h.gpus.map((g) => g.state))) === JSON.stringify(b.hosts.map((h) => h.gpus.map((g) => g.state)));
    for (let attempt = 0; attempt < 10; attempt++) {
      before = await (await fetch(`${base}/api/fleet`)).json() as FleetJson;
      metrics = await (await fetch(`${base}/metrics`)).text();
      dom = await dumpDom(`${base}/`);
      after = await (await fetch(`${base}/api/fleet`)).json() as FleetJson;
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
    expect(decode(/<tr data-host="[^"]*"><th scope="row" title="([^"]*)">/.exec(dom.slice(dom.indexOf('<table id="grid"')))![1]!)).toBe(`${HOSTILE} (site=</script><b>x</b>)`);

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
        expect(cell.text).toBe({ active: "A", free_idle: "F", held_idle: "H", busy_phantom: "P", unavailable: "U" }[g.state]);
        cells++;
      }
    }
    expect(cells).toBe(GPUS);
    // The demo scenarios hold GPUs in every state but unavailable at once.
    for (const s of ["active", "free_idle", "held_idle", "busy_phantom"]) expect(fleet.byState[s as keyof FleetJson["byState"]], s).toBeGreaterThan(0);

    expect(textOf(dom, "real-idle")).toBe(pct(fleet.idle.realIdleRatio));
    expect(textOf(dom, "reported-idle")).toBe(pct(fleet.idle.reportedIdleRatio));
    expect(textOf(dom, "hidden-idle")).toBe(pct(fleet.idle.hiddenIdleRatio));
    expect(fleet.idle.realIdleRatio!).toBeGreaterThan(fleet.idle.reportedIdleRatio!);
    expect(textOf(dom, "gpu-count")).toBe(String(GPUS));
    expect(textOf(dom, "host-count")).toBe(String(HOSTS));
    for (const [s, n] of Object.entries(fleet.byState)) {
      expect(new RegExp(`<li data-state="${s}" id="count-${s}">.*?<span class="n">${n}</span></li>`).test(dom), `count of ${s} is ${n}`).toBe(true);
    }

    const held = /<table class="list" id="held">[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(dom)![1]!;
    const heldRows = [...held.matchAll(/<tr data-uuid="([^"]*)"><td>([^<]*)<\/td><td>(\d+)<\/td>/g)].map((m) => [decode(m[2]!), Number(m[3]), decode(m[1]!)]);
    expect(heldRows).toEqual(fleet.longestHeldIdle.map((g) => [g.host, g.index, g.uuid]));
    expect(heldRows.length).toBeGreaterThan(0);
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
      expect(dom).toMatch(/<div id="error" role="alert" class="shown">Could not refresh from the collector \(HTTP 503\)/);
      expect(textOf(dom, "updated")).toBe("Loading…");
    } finally {
      await new Promise((resolve) => stub.close(resolve));
    }
  });
});
