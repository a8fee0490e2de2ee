import { describe, expect, it } from "vitest";
import { TrueidleError } from "../../common/errors.js";
import { makeWindow, phantomWindow, T0 } from "../testdata/windows.js";
import { escapeMeasurement, escapeTag, HostLineEncoder, tagValueProblem, windowToLine } from "./line-protocol.js";

describe("windowToLine", () => {
  it("writes tags sorted by key, every field, integers with i, and the window start in ms", () => {
    const line = windowToLine("gpu-node-1", { site: "dc1", pool: "training" }, phantomWindow());
    expect(line).toBe(
      "gpu_window,gpu=0,host=gpu-node-1,model=NVIDIA\\ H100\\ 80GB\\ HBM3,pool=training,site=dc1,uuid=GPU-11111111-2222-3333-4444-555555555555 " +
        "observed_s=10,free_idle_s=0,held_idle_s=0,busy_phantom_s=10,active_s=0,unavailable_s=0," +
        "reported_idle_s=0,reported_busy_s=10,real_busy_s=0.2,power_w=70,power_max_w=72," +
        `mem_used_max_bytes=1073741824i,processes_max=1i ${T0}`,
    );
  });

  it("omits fields the agent did not have instead of writing 0", () => {
    const line = windowToLine("h", {}, makeWindow({ powerMeanW: undefined, powerMaxW: undefined, memUsedMaxBytes: undefined }));
    expect(line).not.toMatch(/power_w|power_max_w|mem_used_max_bytes/);
    expect(line).toMatch(/,processes_max=0i \d+$/);
  });

  it("keeps floats exact in JavaScript's shortest round-trip form", () => {
    const line = windowToLine("h", {}, makeWindow({ realBusyS: 1e-7, reportedBusyS: 0.1 + 0.2 }));
    expect(line).toContain("real_busy_s=1e-7");
    expect(line).toContain(`reported_busy_s=${0.1 + 0.2}`);
  });

  it("omits an empty model tag (InfluxDB reads a missing tag as empty)", () => {
    expect(windowToLine("h", {}, makeWindow({ model: "" }))).not.toContain("model=");
  });

  it("is the same line every time for the same window (a replay is the same point)", () => {
    const enc = new HostLineEncoder("h", { site: "a b" });
    const w = phantomWindow();
    expect(enc.line(w)).toBe(enc.line(w));
    expect(enc.line(w)).toBe(windowToLine("h", { site: "a b" }, w));
  });

  it("escapes comma, equals and space in tag values and leaves quotes, backslashes and non-ASCII alone", () => {
    const line = windowToLine("h", { site: 'a,b=c d"e\\f ü 🚀' }, makeWindow());
    expect(line).toContain('site=a\\,b\\=c\\ d"e\\f\\ ü\\ 🚀,');
  });

  it("refuses values line protocol cannot carry exactly", () => {
    expect(() => windowToLine("h", { site: "a\nb" }, makeWindow())).toThrow(TrueidleError);
    expect(() => windowToLine("h", { site: "ends\\" }, makeWindow())).toThrow(/backslash/);
    expect(() => windowToLine("h\\", {}, makeWindow())).toThrow(/tag host/);
    expect(() => windowToLine("h", { host: "x" }, makeWindow())).toThrow(/replace/);
    expect(() => windowToLine("h", {}, makeWindow({ observedS: Number.NaN }))).toThrow(/observed_s/);
  });

  it("names the window field that cannot be a tag", () => {
    expect(HostLineEncoder.windowProblem(makeWindow({ model: "odd\\" }))).toBe("model");
    expect(HostLineEncoder.windowProblem(makeWindow({ uuid: "GPU-1\\" }))).toBe("uuid");
    expect(HostLineEncoder.windowProblem(makeWindow())).toBeUndefined();
  });
});

describe("escaping helpers", () => {
  it("escapes tags and measurements as InfluxDB 1.x parses them", () => {
    expect(escapeTag("a b,c=d")).toBe("a\\ b\\,c\\=d");
    expect(escapeTag("plain")).toBe("plain");
    expect(escapeMeasurement("m m,x=y")).toBe("m\\ m\\,x=y");
  });

  it("says why a tag value cannot be stored", () => {
    expect(tagValueProblem("")).toMatch(/empty/);
    expect(tagValueProblem("a\rb")).toMatch(/control/);
    expect(tagValueProblem("a\\")).toMatch(/backslash/);
    expect(tagValueProblem("a\\b")).toBeUndefined();
  });
});
