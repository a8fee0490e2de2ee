/**
 * The strangest names and labels the collector still accepts reach /metrics as exposition
 * text that promtool accepts, and the keys it reserves are the ones that would break it.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { HelloSchema } from "../gen/trueidle/v1/ingest_pb.js";
import { promtool } from "../test/helpers/prometheus.js";
import { FleetState } from "./fleet-state.js";
import { renderMetricsText } from "./metrics-render.js";
import { SelfMetrics } from "./self-metrics.js";
import { T0, makeWindow, phantomWindow } from "./testdata/windows.js";
import { DEFAULT_WINDOW_LIMITS, validateHello, validateWindow, type AgentHello } from "./validate.js";

/** Accepted text that exposition escaping must get right: quotes, backslashes, braces, every script. */
const ODD = [
  'a\\b"c}{e=",',
  "\\",
  '"',
  "\\n is not a newline",
  "東京 Köln ☃ 🚀 👩‍💻",
  "zero\u200bwidth\u200dand\u00a0nbsp\ufeffbom\ufffd",
  "combining e\u0301 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea",
  "#{}[]()<>|^~`$%&*!?;:/",
  "é".repeat(128),
];

function accepted(hostname: string, labels: Record<string, string>): AgentHello {
  const r = validateHello(
    create(HelloSchema, {
      agentVersion: "0.1.0 ☃",
      source: "sim",
      windowMs: 10_000,
      host: { hostname, machineId: "m\u00e9", labels },
    }),
  );
  if (!r.ok) throw new Error(r.message);
  return r.hello;
}

describe("/metrics with hostile but accepted names", () => {
  it("passes promtool check metrics", async () => {
    const fleet = new FleetState({ now: () => T0 });
    // Label keys as close to reserved ones as the rules allow.
    const keys = ["les", "quantiles", "times", "exported", "jobs", "_x", "instance_", "z".repeat(40)];
    for (const [i, value] of ODD.entries()) {
      const labels = Object.fromEntries(keys.map((k, j) => [k, ODD[(i + j) % ODD.length] as string]));
      const hello = accepted(`${value}-${i}`, labels);
      const windows = [
        makeWindow({ uuid: `GPU-${value.slice(0, 100)}`, index: 0, model: value, driverVersion: value.slice(0, 64) }),
        phantomWindow({
          uuid: `MIG-${value.slice(0, 100)}/1`,
          index: 1,
          model: `${value} MIG 1g.10gb`,
          driverVersion: "550.54.15",
        }),
      ];
      for (const w of windows) {
        expect(validateWindow(w, 0, DEFAULT_WINDOW_LIMITS, T0 + 10_000)).toBeUndefined();
        expect(fleet.applyWindow(hello, w)).toBe("applied");
      }
    }
    const text = renderMetricsText(fleet, new SelfMetrics());
    expect(text).toContain('les="\\\\"');
    expect(text).toContain("東京 Köln ☃ 🚀 👩‍💻");
    const r = await promtool(["check", "metrics"], text);
    expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: "" });
  });

  it.each(["le", "quantile"])("refuses the key %s, which would make promtool fail every GPU family", async (key) => {
    expect(
      validateHello(create(HelloSchema, { windowMs: 10_000, host: { hostname: "h", labels: { [key]: "0.5" } } })),
    ).toMatchObject({ ok: false });
    // Past validation, the key would break the exposition: what the reservation prevents.
    const fleet = new FleetState({ now: () => T0 });
    fleet.applyWindow({ hostname: "h", labels: { [key]: "0.5" }, windowMs: 10_000 }, makeWindow());
    const r = await promtool(["check", "metrics"], renderMetricsText(fleet, new SelfMetrics()));
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain(`should not have "${key}" label`);
  });
});
