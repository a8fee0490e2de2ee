/**
 * `--format html`: ONE self-contained file — inline CSS, the two ECharts SVG charts inline,
 * the table, the definitions. No script, no external reference, so it opens offline, in a
 * mail attachment or behind a strict Content-Security-Policy. Every value from InfluxDB
 * (group names) is HTML-escaped here; inside the SVG, ECharts escapes its own text.
 */
import { ownerLabel, type CapacityReport, type Figures } from "./capacity.js";
import { idleChartSvg, stateChartSvg } from "./charts.js";
import { columnsFor, formatHuman, holderColumnsFor } from "./columns.js";
import { describeReport, holdersHeading, HOLDERS_SHOWN, NO_HOLDERS, reportNotes, totalLabel } from "./render-text.js";

export function escapeHtml(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

const CSS = `
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px 20px; color: #212529; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
p.range { color: #495057; margin: 0 0 12px; }
figure { margin: 0; }
figcaption { color: #6c757d; font-size: 13px; }
div.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
th, td { padding: 4px 6px; border-bottom: 1px solid #dee2e6; }
th { text-align: left; background: #f1f3f5; }
td { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #495057; }
ul.notes { color: #495057; font-size: 13px; padding-left: 18px; }
`;

function tableHtml(r: CapacityReport): string {
  const cols = columnsFor(r.pricePerGpuHour !== null);
  const head = [
    ...r.by.map((t) => `<th>${escapeHtml(t)}</th>`),
    ...cols.map((c) => `<th class="n">${escapeHtml(c.header.toLowerCase())}</th>`),
  ].join("");
  const cells = (f: Figures): string =>
    cols.map((c) => `<td class="n">${escapeHtml(formatHuman(c.kind, c.value(f)))}</td>`).join("");
  const rows = r.groups.map(
    (g) =>
      `<tr>${r.by.map((t) => `<td>${escapeHtml(g.key[t] === "" ? "(none)" : (g.key[t] ?? ""))}</td>`).join("")}${cells(g)}</tr>`,
  );
  const total = `<tr class="total"><td colspan="${r.by.length}">${totalLabel(r)}</td>${cells(r.total)}</tr>`;
  return `<table>\n<thead><tr>${head}</tr></thead>\n<tbody>\n${rows.join("\n")}\n${total}\n</tbody>\n</table>`;
}

function holdersHtml(r: CapacityReport): string {
  if (r.holders.holders.length === 0) {
    return `<h2>Who holds idle GPUs</h2>\n<p>${escapeHtml(r.holders.tags.length === 0 ? NO_HOLDERS : "No owner held a GPU in this range.")}</p>`;
  }
  const shown = r.holders.holders.slice(0, HOLDERS_SHOWN.html);
  const cols = holderColumnsFor(r.pricePerGpuHour !== null);
  const head = `<th>owner</th>${cols.map((c) => `<th class="n">${escapeHtml(c.header.toLowerCase())}</th>`).join("")}`;
  const rows = shown.map(
    (h) =>
      `<tr><td>${escapeHtml(ownerLabel(h.key))}</td>${cols.map((c) => `<td class="n">${escapeHtml(formatHuman(c.kind, c.value(h)))}</td>`).join("")}</tr>`,
  );
  return `<h2>${escapeHtml(holdersHeading(r, shown.length))}</h2>\n<div class="table">\n<table>\n<thead><tr>${head}</tr></thead>\n<tbody>\n${rows.join("\n")}\n</tbody>\n</table>\n</div>`;
}

export async function renderHtml(r: CapacityReport): Promise<string> {
  const [idle, states] = await Promise.all([idleChartSvg(r.daily), stateChartSvg(r.daily)]);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trueidle capacity report</title>
<style>${CSS}</style>
</head>
<body>
<h1>trueidle capacity report</h1>
<p class="range">${escapeHtml(describeReport(r))}</p>
<h2>Real vs reported idle, per day</h2>
<figure>
${idle}
<figcaption>Per group, one colour: solid line = real idle % (free_idle + held_idle + busy_phantom); dashed line = reported idle % (utilization.gpu below the busy threshold).</figcaption>
</figure>
<h2>Where the fleet's GPU time went, per day</h2>
<figure>
${states}
<figcaption>Seconds per state summed over every GPU, shown as GPU-hours per day (UTC days; the first and last may be partial).</figcaption>
</figure>
<h2>By ${escapeHtml(r.by.join(", "))}</h2>
<div class="table">
${tableHtml(r)}
</div>
${holdersHtml(r)}
<ul class="notes">
${reportNotes(r)
  .map((n) => `<li>${escapeHtml(n)}</li>`)
  .join("\n")}
</ul>
</body>
</html>
`;
}
