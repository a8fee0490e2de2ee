/**
 * The HTML report's charts, drawn by ECharts on the server as SVG strings
 * (`renderer: "svg", ssr: true` + `renderToSVGString()`), so the page needs no script and no
 * network. ECharts escapes every text it draws (legend names, axis labels), so group names
 * reach the SVG as text, never as markup.
 *
 * ECharts is loaded on first use: the table, CSV and JSON formats never pay for it.
 */
import { CHART_STATES, groupLabel, type ChartState, type DailySeries } from "./capacity.js";
import { iso } from "./time-range.js";

/** Group colours, in order; a group's real and reported lines share one. */
export const GROUP_COLORS = [
  "#3b6fd8",
  "#d9622b",
  "#2f9e6e",
  "#9b4dca",
  "#c7a21c",
  "#1b9aaa",
  "#d6336c",
  "#6b7a30",
  "#7a5230",
  "#4c4c9d",
];

export const STATE_COLORS: Record<ChartState, string> = {
  active: "#2f9e44",
  busy_phantom: "#e8590c",
  held_idle: "#f2b705",
  free_idle: "#74a9cf",
  unavailable: "#adb5bd",
};

interface EChartsLike {
  setOption(option: unknown): void;
  renderToSVGString(): string;
  dispose(): void;
}
interface EChartsModule {
  init(dom: null, theme: null, opts: { renderer: "svg"; ssr: true; width: number; height: number }): EChartsLike;
}

let echartsModule: Promise<EChartsModule> | undefined;

async function renderSvg(option: Record<string, unknown>, width: number, height: number): Promise<string> {
  echartsModule ??= import("echarts") as unknown as Promise<EChartsModule>;
  const echarts = await echartsModule;
  const chart = echarts.init(null, null, { renderer: "svg", ssr: true, width, height });
  try {
    chart.setOption({ animation: false, textStyle: { fontFamily: "sans-serif" }, ...option });
    return chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
}

function dayLabels(d: DailySeries): string[] {
  return d.days.map((ms) => iso(ms).slice(0, 10));
}

/**
 * Chart 1: per group, daily real idle % (solid) and reported idle % (dashed, same colour).
 * Both series of a group carry the group's name, so the legend has one entry per group.
 */
export async function idleChartSvg(d: DailySeries, width = 1100, height = 440): Promise<string> {
  const series = d.groups.flatMap((g, i) => {
    const color = GROUP_COLORS[i % GROUP_COLORS.length];
    const name = groupLabel(g.key);
    return [
      {
        name,
        type: "line",
        data: g.realIdlePct.map(round2),
        connectNulls: false,
        showSymbol: d.days.length <= 62,
        itemStyle: { color },
        lineStyle: { color, width: 2 },
      },
      {
        name,
        type: "line",
        data: g.reportedIdlePct.map(round2),
        connectNulls: false,
        showSymbol: false,
        itemStyle: { color },
        lineStyle: { color, width: 1.5, type: "dashed" },
      },
    ];
  });
  // A plain legend wraps onto as many rows as it needs; the plot starts below it. Row count
  // estimated from the label lengths (12 px sans-serif, about 6 px a character, plus the icon).
  let legendRows = 1;
  let x = 0;
  for (const g of d.groups) {
    const w = groupLabel(g.key).length * 6 + 40;
    if (x > 0 && x + w > width - 20) {
      legendRows++;
      x = 0;
    }
    x += w;
  }
  return renderSvg(
    {
      legend: { type: "plain", top: 0, left: 10, right: 10, data: d.groups.map((g) => groupLabel(g.key)) },
      grid: { left: 60, right: 30, top: 40 + 24 * legendRows, bottom: 40 },
      xAxis: { type: "category", data: dayLabels(d), boundaryGap: false },
      yAxis: { type: "value", min: 0, max: 100, name: "% of observed GPU time", axisLabel: { formatter: "{value}%" } },
      series,
    },
    width,
    height + 24 * Math.max(0, legendRows - 2),
  );
}

/** Chart 2: fleet-wide state breakdown per day, stacked, in GPU-hours (state seconds / 3600). */
export async function stateChartSvg(d: DailySeries, width = 1100, height = 400): Promise<string> {
  const series = CHART_STATES.map((st) => ({
    name: st,
    type: "bar",
    stack: "states",
    barCategoryGap: "15%",
    itemStyle: { color: STATE_COLORS[st] },
    data: d.fleetStateSeconds[st].map((s) => round2(s / 3600)),
  }));
  return renderSvg(
    {
      legend: { top: 0, data: [...CHART_STATES] },
      grid: { left: 70, right: 30, top: 50, bottom: 40 },
      xAxis: { type: "category", data: dayLabels(d) },
      yAxis: { type: "value", name: "GPU-hours per day" },
      series,
    },
    width,
    height,
  );
}

function round2(v: number | null): number | null {
  return v === null ? null : Math.round(v * 100) / 100;
}
