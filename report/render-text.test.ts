import { describe, expect, it } from "vitest";
import { computeReport, emptySums } from "./capacity.js";
import { csvField, renderCsv, renderTable, reportJson } from "./render-text.js";
import { escapeHtml } from "./render-html.js";

const T0 = Date.UTC(2024, 4, 1);

function report(price?: number) {
  const s = { ...emptySums(), observed_s: 3600, held_idle_s: 3600, reported_idle_s: 3600 };
  return computeReport({
    range: { startMs: T0, endMs: T0 + 3_600_000 }, by: ["site", "model"], measurement: "gpu_hour", measurementReason: "gpu_hour: test",
    days: [{ dayMs: T0, key: ['a,"b"', ""], sums: s }], hours: [{ hourMs: T0, key: ['a,"b"', ""], realIdleS: 3600 }], gpus: [{ key: ['a,"b"', ""], uuid: "u" }], pricePerGpuHour: price,
  });
}

describe("report renderings", () => {
  it("CSV quotes per RFC 4180 and always has the same columns", () => {
    expect(csvField("plain")).toBe("plain");
    expect(csvField('a,"b"')).toBe('"a,""b"""');
    expect(csvField("two\nlines")).toBe('"two\nlines"');
    const lines = renderCsv(report()).split("\r\n");
    expect(lines[0]).toBe("scope,site,model,gpus,gpu_hours_observed,coverage_pct,reported_idle_pct,real_idle_pct,hidden_idle_pct," +
      "real_idle_gpu_hours,held_idle_gpu_hours,phantom_busy_gpu_hours,unused_capacity_pct,reclaimable_gpus,hours_with_data,idle_cost");
    expect(lines[1]).toBe('group,"a,""b""",,1,1,100,100,100,0,1,1,0,100,1,1,');
    expect(lines[2]).toBe("fleet,,,1,1,100,100,100,0,1,1,0,100,1,1,");
    expect(lines[3]).toBe("");
  });

  it("JSON keeps every key, idle_cost null without a price", () => {
    const j = reportJson(report()) as { groups: Array<Record<string, unknown>>; total: Record<string, unknown> };
    expect(j.total["idle_cost"]).toBeNull();
    expect(j.groups[0]!["key"]).toEqual({ site: 'a,"b"', model: "" });
    expect(j.groups[0]!["label"]).toBe('a,"b" / (none)');
    expect((reportJson(report(2)) as { total: Record<string, unknown> }).total["idle_cost"]).toBe(2);
  });

  it("the table shows a missing tag as (none) and the cost column only with a price", () => {
    expect(renderTable(report())).not.toContain("IDLE COST");
    const t = renderTable(report(2));
    expect(t).toMatch(/^SITE\s+MODEL\s+GPUS/m);
    expect(t).toMatch(/^a,"b"\s+\(none\)\s+1\s+1\.0\s+100\.0%/m);
    expect(t).toMatch(/^fleet total\s.*2\.00$/m);
  });

  it("escapes HTML", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  });
});
