import { describe, expect, it } from "vitest";
import { computeReport, emptySums } from "./capacity.js";
import { csvField, renderCsv, renderTable, reportJson, TABLE_WIDTH } from "./render-text.js";
import { escapeHtml, renderHtml } from "./render-html.js";

const T0 = Date.UTC(2024, 4, 1);

function report(price?: number) {
  const s = { ...emptySums(), observed_s: 3600, held_idle_s: 3600, reported_idle_s: 3600 };
  return computeReport({
    range: { startMs: T0, endMs: T0 + 3_600_000 },
    by: ["site", "model"],
    measurement: "gpu_hour",
    measurementReason: "gpu_hour: test",
    days: [{ dayMs: T0, key: ['a,"b"', ""], sums: s }],
    hours: [{ hourMs: T0, key: ['a,"b"', ""], realIdleS: 3600 }],
    gpus: [{ key: ['a,"b"', ""], uuid: "u" }],
    pricePerGpuHour: price,
  });
}

describe("report renderings", () => {
  it("mark the hour in progress partial in every format, and count its idle GPUs from the time observed so far", async () => {
    // Two whole hours and 30 min of the third; two GPUs. Whole hours: 1 and 2 GPUs really idle.
    // The hour in progress: 1,800 s observed per GPU so far, 2,700 s of it real idle, two GPUs:
    // 2,700 / 3,600 × 2 = 1.5 GPU-equivalents (not 2,700 / 3,600 = 0.75, which would read as capacity used).
    const s = { ...emptySums(), observed_s: 3600, free_idle_s: 3600, reported_idle_s: 3600 };
    const r = computeReport({
      range: { startMs: T0, endMs: T0 + 2.5 * 3_600_000 },
      by: ["model"],
      measurement: "fleet_hour",
      measurementReason: "fleet_hour: test",
      days: [{ dayMs: T0, key: ["H100"], sums: s }],
      hours: [
        { hourMs: T0, key: ["H100"], realIdleS: 3600 },
        { hourMs: T0 + 3_600_000, key: ["H100"], realIdleS: 7200 },
        { hourMs: T0 + 7_200_000, key: ["H100"], realIdleS: 2700, observedS: 3600, gpus: 2 },
      ],
      gpus: [
        { key: ["H100"], uuid: "a" },
        { key: ["H100"], uuid: "b" },
      ],
    });
    expect(r.partialFromMs).toBe(T0 + 7_200_000);
    expect(r.hours).toBe(2.5);
    expect(r.total.hoursWithData).toBe(3);
    // 5th percentile (nearest rank) of [1, 2, 1.5] is the smallest: 1; with 0.75 it would be 0.75.
    expect(r.total.reclaimableGpus).toBe(1);
    expect(renderTable(r)).toMatch(/to 2024-05-01T02:30:00Z \(2 hours \+ the hour in progress, PARTIAL\)/);
    expect(renderTable(r)).toMatch(/PARTIAL: the range ends with the hour in progress \(from 2024-05-01T02:00:00Z\)/);
    const csv = renderCsv(r).split("\r\n");
    expect(csv[0]).toMatch(/,partial$/);
    expect(csv[1]).toMatch(/,2024-05-01T02:00:00Z$/);
    expect(csv[2]).toMatch(/^fleet,.*,2024-05-01T02:00:00Z$/);
    expect((reportJson(r) as { range: unknown }).range).toEqual({
      start: "2024-05-01T00:00:00Z",
      end: "2024-05-01T02:30:00Z",
      hours: 2.5,
      partial_from: "2024-05-01T02:00:00Z",
    });
    const html = await renderHtml(r);
    expect(html).toContain("PARTIAL: the range ends with the hour in progress");
    expect(html).toContain("2 hours + the hour in progress, PARTIAL");
  });

  it("CSV quotes per RFC 4180 and always has the same columns", () => {
    expect(csvField("plain")).toBe("plain");
    expect(csvField('a,"b"')).toBe('"a,""b"""');
    expect(csvField("two\nlines")).toBe('"two\nlines"');
    const lines = renderCsv(report()).split("\r\n");
    expect(lines[0]).toBe(
      "scope,site,model,gpus,gpu_hours_observed,coverage_pct,reported_idle_pct,real_idle_pct,hidden_idle_pct," +
        "real_idle_gpu_hours,held_idle_gpu_hours,phantom_busy_gpu_hours,unused_capacity_pct,reclaimable_gpus,hours_with_data,idle_cost," +
        "owner_namespace,owner_pod,owner_job,owner_user,partial",
    );
    expect(lines[1]).toBe('group,"a,""b""",,1,1,100,100,100,0,1,1,0,100,1,1,,,,,,');
    expect(lines[2]).toBe("fleet,,,1,1,100,100,100,0,1,1,0,100,1,1,,,,,,");
    expect(lines[3]).toBe("");
  });

  it("lists who holds idle GPUs in every format, most idle first, the owner in its own columns", async () => {
    const held = (idleS: number, activeS: number) => ({
      ...emptySums(),
      observed_s: idleS + activeS,
      held_idle_s: idleS,
      active_s: activeS,
      reported_idle_s: idleS,
    });
    const r = computeReport({
      range: { startMs: T0, endMs: T0 + 3_600_000 },
      by: ["model"],
      measurement: "gpu_window",
      measurementReason: "gpu_window: test",
      days: [{ dayMs: T0, key: ["H100"], sums: held(3600, 3600) }],
      hours: [{ hourMs: T0, key: ["H100"], realIdleS: 3600 }],
      gpus: [
        { key: ["H100"], uuid: "u0" },
        { key: ["H100"], uuid: "u1" },
      ],
      holderTags: ["namespace", "pod", "user"],
      holders: [
        { key: ["", "", "alice"], uuid: "u1", sums: held(0, 3600) },
        { key: ["ml", "trainer,0", ""], uuid: "u0", sums: held(1800, 0) },
        { key: ["ml", "trainer,0", ""], uuid: "u0", sums: held(1800, 0) },
      ],
    });
    expect(r.holders.holders.map((h) => [h.key, h.gpus, h.realIdleGpuHours, h.realIdlePct])).toEqual([
      [{ namespace: "ml", pod: "trainer,0", user: "" }, 1, 1, 100],
      [{ namespace: "", pod: "", user: "alice" }, 1, 0, 0],
    ]);
    const table = renderTable(r);
    expect(table).toMatch(/^Who holds idle GPUs \(owners by idle GPU-hours held\):$/m);
    expect(table).toMatch(/^ml\/trainer,0\s+1\s+1\.0\s+1\.0\s+100\.0%\s+100\.0%$/m);
    expect(table).toMatch(/^user alice\s+1\s+1\.0\s+0\.0/m);
    const csv = renderCsv(r).split("\r\n");
    expect(csv[3]).toBe('holder,,1,1,,100,100,0,1,1,0,,,,,ml,"trainer,0",,,');
    expect(csv[4]).toBe("holder,,1,1,,0,0,0,0,0,0,,,,,,,,alice,");
    const j = reportJson(r) as { holders: { tags: string[]; owners: Array<Record<string, unknown>>; omitted: number } };
    expect(j.holders.tags).toEqual(["namespace", "pod", "user"]);
    expect(j.holders.owners[0]).toMatchObject({
      label: "ml/trainer,0",
      gpus: 1,
      real_idle_gpu_hours: 1,
      held_idle_gpu_hours: 1,
      real_idle_pct: 100,
    });
    const html = await renderHtml(r);
    expect(html).toContain("<h2>Who holds idle GPUs (owners by idle GPU-hours held)</h2>");
    expect(html).toContain("<td>ml/trainer,0</td>");
  });

  it("says where owners come from when none was recorded", async () => {
    const r = report();
    expect(renderTable(r)).toMatch(
      /Who holds idle GPUs: No owner was recorded in this range: agents learn owners from the kubelet/,
    );
    expect(await renderHtml(r)).toContain("No owner was recorded in this range");
    expect((reportJson(r) as { holders: unknown }).holders).toEqual({ tags: [], owners: [], omitted: 0 });
  });

  it("JSON keeps every key, idle_cost null without a price", () => {
    const j = reportJson(report()) as { groups: Array<Record<string, unknown>>; total: Record<string, unknown> };
    expect(j.total["idle_cost"]).toBeNull();
    expect(j.groups[0]!["key"]).toEqual({ site: 'a,"b"', model: "" });
    expect(j.groups[0]!["label"]).toBe('a,"b" / (none)');
    expect((reportJson(report(2)) as { total: Record<string, unknown> }).total["idle_cost"]).toBe(2);
  });

  it("the table shows a missing tag as (none) and the cost column only with a price", () => {
    expect(renderTable(report())).not.toMatch(/^SITE\s.*\sCOST$/m);
    const t = renderTable(report(2));
    expect(t).toMatch(/^SITE\s+MODEL\s+GPUS\s.*\sCOST$/m);
    expect(t).toMatch(/^a,"b"\s+\(none\)\s+1\s+1\.0\s+100\.0%/m);
    expect(t).toMatch(/^fleet total\s.*2\.00$/m);
  });

  it("fits 120 columns by site and model with long model names, a year of a large fleet and a price, two-word headers on two lines", () => {
    const HOURS = 8760;
    const T1 = T0 + HOURS * 3_600_000;
    const fleet = [
      ["eu-west", "NVIDIA H100 80GB HBM3", 512],
      ["eu-west", "NVIDIA L40S", 128],
      ["us-east", "NVIDIA A100-SXM4-80GB", 256],
      ["us-east", "NVIDIA H100 80GB HBM3", 128],
    ] as const;
    const sums = (gpus: number) => {
      const observed_s = gpus * HOURS * 3600;
      return {
        ...emptySums(),
        observed_s,
        held_idle_s: observed_s * 0.25,
        busy_phantom_s: observed_s * 0.1,
        free_idle_s: observed_s * 0.2,
        active_s: observed_s * 0.45,
        reported_idle_s: observed_s * 0.3,
        real_busy_s: observed_s * 0.4,
      };
    };
    const owner = (i: number) => [`research-${"x".repeat(40)}`, `trainer-${i}-${"y".repeat(50)}`, "", ""];
    const r = computeReport({
      range: { startMs: T0, endMs: T1 },
      by: ["site", "model"],
      measurement: "gpu_hour",
      measurementReason: "gpu_hour: the range is 48 hours or longer",
      days: fleet.map(([site, model, n]) => ({ dayMs: T0, key: [site, model], sums: sums(n) })),
      hours: fleet.map(([site, model, n]) => ({ hourMs: T0, key: [site, model], realIdleS: n * 3600 * 0.55 })),
      gpus: fleet.flatMap(([site, model, n]) =>
        Array.from({ length: n }, (_, i) => ({ key: [site, model], uuid: `${site}/${model}/${i}` })),
      ),
      holderTags: ["namespace", "pod", "job", "user"],
      holders: Array.from({ length: 12 }, (_, i) => ({ key: owner(i), uuid: `u${i}`, sums: sums(8) })),
      pricePerGpuHour: 2.1,
    });
    const lines = renderTable(r).split("\n");
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(TABLE_WIDTH);
    const at = lines.findIndex((l) => l.startsWith("SITE"));
    expect(lines[at - 1]).toMatch(/^\s+REPORTED\s+REAL\s+HIDDEN\s+RECLAIMABLE\s+IDLE$/);
    expect(lines[at]).toMatch(/^SITE\s+MODEL\s+GPUS\s+GPU-HOURS\s+COVERAGE\s+IDLE\s+IDLE\s+IDLE\s+GPUS\s+COST$/);
    // Each upper word is right-aligned with the word below it.
    for (const w of ["REPORTED", "REAL", "HIDDEN", "RECLAIMABLE"]) {
      const end = lines[at - 1]!.indexOf(w) + w.length;
      expect(lines[at]!.slice(0, end), w).toMatch(/(IDLE|GPUS)$/);
    }
    expect(lines[at + 1]).toMatch(
      /^eu-west\s+NVIDIA H100 80GB HBM3\s+512\s+4,485,120\.0\s+100\.0%\s+30\.0%\s+55\.0%\s+\+25\.0%\s+\S+\s+5,180,313\.60$/,
    );
    expect(lines.find((l) => l.startsWith("fleet total"))).toMatch(/\s1,024\s+8,970,240\.0\s.*\s10,360,627\.20$/);
    expect(lines).toContain("  read gpu_hour: the range is 48 hours or longer");
    expect(lines.join("\n")).toMatch(
      /^Not in this table: real-idle GPU-hours, held-idle GPU-hours, phantom-busy GPU-hours, unused\s+capacity, hours with data; --format csv, json or html has every column\.$/m,
    );
    expect(lines.filter((l) => l.startsWith("research-"))).toHaveLength(10);
  });

  it("escapes HTML", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  });
});
