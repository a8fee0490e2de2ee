/**
 * The fleet page served at the collector's `/`: one self-contained HTML document (inline
 * CSS and script, no external assets) that fetches `api/fleet` every few seconds and shows
 * real vs reported idle, GPUs per state, a hosts × GPUs grid coloured by state, the GPUs
 * held idle by owner, and the GPUs held idle longest with their owners. Works without
 * Grafana or Prometheus.
 *
 * Hostnames, labels, models and owners come from agents: the script writes them with
 * textContent and attributes only, never as HTML. Owners appear only with the fields the
 * JSON carries (`--owner-labels`); with none configured the page has no owner column.
 */
import { createHash } from "node:crypto";

export const FLEET_PAGE_REFRESH_MS = 5_000;

/** The page's only script; its hash is the only script the page's CSP allows. */
const FLEET_PAGE_SCRIPT = `"use strict";
const STATES = [["active","Active","A"],["free_idle","Free idle","F"],["held_idle","Held idle","H"],["busy_phantom","Busy phantom","P"],["unavailable","Unavailable","U"]];
const NAME = Object.fromEntries(STATES.map((s) => [s[0], s[1]]));
const LETTER = Object.fromEntries(STATES.map((s) => [s[0], s[2]]));
const $ = (id) => document.getElementById(id);
function el(tag, props, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}
function pct(r) { return r === null || r === undefined ? "n/a" : (r * 100).toFixed(1) + "%"; }
function dur(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
/** "ml-team/trainer-7 (container main, job 4242, user alice)": namespace/pod first, the other fields named. */
function ownerText(o) {
  const head = [o.namespace, o.pod].filter((v) => v !== undefined).join("/");
  const rest = [["container", o.container], ["job", o.job], ["user", o.user]].filter((f) => f[1] !== undefined).map((f) => f[0] + " " + f[1]);
  if (head === "") return rest.join(", ");
  return rest.length > 0 ? head + " (" + rest.join(", ") + ")" : head;
}
function ownersText(g) {
  const t = g.owners.map(ownerText);
  if (g.ownersLeftOut > 0) t.push("+" + g.ownersLeftOut + " more");
  return t.length > 0 ? t.join("; ") : "not known";
}
function ownersCell(g) {
  const td = el("td", { class: "owners" });
  if (g.owners.length === 0) td.append(el("span", { class: "empty" }, "not known"));
  for (const o of g.owners) td.append(el("div", { class: "owner" }, ownerText(o)));
  if (g.ownersLeftOut > 0) td.append(el("div", { class: "more" }, "+" + g.ownersLeftOut + " more"));
  return td;
}
function watts(w) { return w === null || w === undefined ? "n/a" : w.toFixed(0) + " W"; }
function gpuName(g) { return g.migProfile ? g.index + " MIG " + g.migProfile : String(g.index); }
function cellText(h, g) {
  return h.host + " GPU " + gpuName(g) + " (" + g.model + "): " + NAME[g.state] + (g.up ? "" : " (stale)") +
    "; real " + pct(g.real) + " via " + g.realSource + ", reported " + pct(g.reportedUtilization) +
    "; idle for " + dur(g.idleStreakS) + "; power " + watts(g.powerW) + " vs floor " + watts(g.powerFloorW) +
    "; " + g.processes + " processes" + (g.owners ? "; owners: " + ownersText(g) : "");
}
function render(d) {
  $("real-idle").textContent = pct(d.idle.realIdleRatio);
  $("reported-idle").textContent = pct(d.idle.reportedIdleRatio);
  $("hidden-idle").textContent = pct(d.idle.hiddenIdleRatio);
  $("gpu-count").textContent = String(d.gpus);
  $("up-count").textContent = String(d.up);
  $("host-count").textContent = String(d.hostCount);
  const states = $("states");
  states.replaceChildren(...STATES.map(([s, name]) => {
    const li = el("li", { "data-state": s, id: "count-" + s });
    li.append(el("span", { class: "sw s-" + s, "aria-hidden": "true" }), el("span", { class: "name" }, name), el("span", { class: "n" }, d.byState[s]));
    return li;
  }));
  const rows = d.hosts.map((h) => {
    const tr = el("tr", { "data-host": h.host });
    const labels = Object.entries(h.labels).map(([k, v]) => k + "=" + v).join(", ");
    tr.append(el("th", { scope: "row", title: labels ? h.host + " (" + labels + ")" : h.host }, h.host));
    for (const g of h.gpus) {
      const t = cellText(h, g);
      const mig = g.migProfile ? { "data-mig-profile": g.migProfile, "data-parent-uuid": g.parentUuid } : {};
      tr.append(el("td", { class: "cell s-" + g.state + (g.up ? "" : " stale") + (g.migProfile ? " mig" : ""), "data-gpu": g.index, "data-uuid": g.uuid, "data-state": g.state, ...mig, title: t, "aria-label": t }, LETTER[g.state]));
    }
    return tr;
  });
  $("grid").tBodies[0].replaceChildren(...rows);
  $("truncated").textContent = d.hostsTruncated ? "Showing the first " + d.hostsShown + " of " + d.hostCount + " hosts (by name)." : "";
  const showOwners = d.ownerLabels.length > 0;
  $("held-owner-col").hidden = !showOwners;
  $("by-owner").hidden = !showOwners;
  $("owner-fields").textContent = showOwners
    ? "Owner fields shown: " + d.ownerLabels.join(", ") + " (the collector's --owner-labels)."
    : "Owners are not shown: the collector exports no owner fields (--owner-labels none).";
  const held = d.longestHeldIdle.map((g) => {
    const tr = el("tr", { "data-uuid": g.uuid });
    tr.append(el("td", {}, g.host), el("td", {}, gpuName(g)), el("td", {}, g.model), el("td", {}, dur(g.idleStreakS)));
    if (showOwners) tr.append(ownersCell(g));
    return tr;
  });
  if (held.length === 0) { const tr = el("tr"); tr.append(el("td", { colspan: showOwners ? 5 : 4, class: "empty" }, "No GPU is held idle now.")); held.push(tr); }
  $("held").tBodies[0].replaceChildren(...held);
  const by = d.heldIdleByOwner;
  const owners = showOwners && by ? by.owners.map((o) => {
    const tr = el("tr", { class: "by-owner" });
    tr.append(el("td", {}, ownerText(o.owner)), el("td", { class: "n" }, o.gpus), el("td", {}, dur(o.longestIdleS)));
    return tr;
  }) : [];
  if (showOwners && by && by.withoutOwner > 0) {
    const tr = el("tr", { class: "no-owner" });
    tr.append(el("td", { class: "empty" }, "Owner not known"), el("td", { class: "n" }, by.withoutOwner), el("td", {}, ""));
    owners.push(tr);
  }
  if (owners.length === 0) { const tr = el("tr"); tr.append(el("td", { colspan: 3, class: "empty" }, "No GPU is held idle now.")); owners.push(tr); }
  $("held-owners").tBodies[0].replaceChildren(...owners);
  $("owners-truncated").textContent = showOwners && by && by.ownerCount > by.owners.length
    ? "Showing the " + by.owners.length + " owners with the most GPUs held idle, of " + by.ownerCount + "." : "";
  $("updated").textContent = "Last updated " + new Date(d.generatedAtMs).toLocaleTimeString();
  document.body.setAttribute("data-generated-at", String(d.generatedAtMs));
}
async function refresh() {
  try {
    const r = await fetch("api/fleet", { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("error").classList.remove("shown");
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = "Could not refresh from the collector (" + (e && e.message ? e.message : e) + "); showing the last data received.";
    $("error").classList.add("shown");
  }
}
refresh();
setInterval(refresh, ${FLEET_PAGE_REFRESH_MS});
`;

/** For `Content-Security-Policy: script-src 'sha256-…'`: inline event handlers stay blocked. */
export const FLEET_PAGE_SCRIPT_SHA256 = createHash("sha256").update(FLEET_PAGE_SCRIPT).digest("base64");

export const FLEET_PAGE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trueidle fleet</title>
<style>
:root{--unavailable:#8a8f98;--free_idle:#3b82c4;--active:#2e9e44;--busy_phantom:#c77700;--held_idle:#d2392b;--fg:#1d2330;--muted:#5b6473;--line:#dde1e7}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:#f6f7f9}
header{display:flex;align-items:baseline;gap:16px;padding:12px 20px;background:#fff;border-bottom:1px solid var(--line)}
header h1{font-size:18px;margin:0}
header .links{margin-left:auto;color:var(--muted)}
main{padding:16px 20px;display:grid;gap:16px}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px 16px}
h2{font-size:14px;margin:0 0 8px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.04em}
#error{display:none;background:#fde8e6;color:#8a1c12;border:1px solid #f0b4ad;border-radius:6px;padding:8px 12px}
#error.shown{display:block}
.figures{display:flex;gap:32px;flex-wrap:wrap}
.figure .v{font-size:40px;font-weight:700;line-height:1.1}
.figure .k{color:var(--muted)}
#hidden-idle{color:var(--held_idle)}
.note{color:var(--muted);font-size:12px;margin-top:6px}
#states{display:flex;gap:10px;flex-wrap:wrap;list-style:none;margin:0;padding:0}
#states li{display:flex;align-items:center;gap:8px;border:1px solid var(--line);border-radius:6px;padding:6px 10px}
#states .n{font-size:20px;font-weight:700}
.sw{display:inline-block;width:14px;height:14px;border-radius:3px}
.s-unavailable{background:var(--unavailable)}.s-free_idle{background:var(--free_idle)}.s-active{background:var(--active)}
.s-busy_phantom{background:var(--busy_phantom)}.s-held_idle{background:var(--held_idle)}
#grid{border-collapse:separate;border-spacing:3px}
#grid th{text-align:right;font-weight:500;padding-right:8px;white-space:nowrap;max-width:320px;overflow:hidden;text-overflow:ellipsis}
#grid td.cell{width:30px;height:24px;border-radius:3px;color:#fff;font-size:11px;font-weight:700;text-align:center}
#grid td.cell.mig{width:18px;font-size:9px;border-radius:1px}
#grid td.stale{outline:2px dashed #333;outline-offset:-3px}
table.list{border-collapse:collapse;width:100%}
table.list th,table.list td{text-align:left;vertical-align:top;padding:4px 8px;border-bottom:1px solid var(--line)}
table.list th{color:var(--muted);font-weight:600}
.empty{color:var(--muted)}
td.owners .more{color:var(--muted)}
table.list td.n{font-weight:700}
</style></head>
<body>
<header><h1>trueidle fleet</h1><span id="updated">Loading…</span>
<span class="links"><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/api/fleet">/api/fleet</a></span></header>
<main>
<div id="error" role="alert"></div>
<section aria-labelledby="h-idle"><h2 id="h-idle">Idle: real vs reported</h2>
<div class="figures">
<div class="figure"><div class="v" id="real-idle">–</div><div class="k">real idle</div></div>
<div class="figure"><div class="v" id="reported-idle">–</div><div class="k">reported idle (utilization.gpu)</div></div>
<div class="figure"><div class="v" id="hidden-idle">–</div><div class="k">hidden idle (real − reported)</div></div>
<div class="figure"><div class="v" id="gpu-count">–</div><div class="k">GPUs (<span id="up-count">–</span> up) on <span id="host-count">–</span> hosts</div></div>
</div>
<div class="note">Share of observed GPU time since the collector started. Real idle = free idle + held idle + busy phantom.</div>
</section>
<section aria-labelledby="h-states"><h2 id="h-states">GPUs per state now</h2><ul id="states"></ul></section>
<section aria-labelledby="h-grid"><h2 id="h-grid">Hosts × GPUs</h2>
<div id="truncated" class="note"></div>
<table id="grid" aria-describedby="h-grid"><tbody></tbody></table>
<div class="note">Letters: A active, F free idle, H held idle, P busy phantom, U unavailable; a dashed outline marks a stale GPU. Hover a cell for details.</div>
</section>
<section aria-labelledby="h-by-owner" id="by-owner" hidden><h2 id="h-by-owner">Held idle by owner</h2>
<div id="owners-truncated" class="note"></div>
<table class="list" id="held-owners"><thead><tr><th>Owner</th><th>GPUs held idle</th><th>Longest idle</th></tr></thead><tbody></tbody></table>
<div class="note">Every GPU held idle now, across the fleet. A GPU with two owners (a pod and the job in it) counts for each.</div>
</section>
<section aria-labelledby="h-held"><h2 id="h-held">Longest held idle</h2>
<table class="list" id="held"><thead><tr><th>Host</th><th>GPU</th><th>Model</th><th>Idle for</th><th id="held-owner-col" hidden>Owner</th></tr></thead><tbody></tbody></table>
<div id="owner-fields" class="note"></div>
</section>
</main>
<script>${FLEET_PAGE_SCRIPT}</script>
</body></html>
`;
