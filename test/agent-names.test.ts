/**
 * The agent refuses, at start and naming the character, a host name or label value the
 * collector would refuse on every connect: control, bidi and line-separator characters.
 */
import { describe, expect, it } from "vitest";
import { runTrueidle } from "./helpers/trueidle-process.js";

describe("trueidle agent with a hostile name", () => {
  it.each([
    [
      ["--hostname", "gpu-a01\u202e10a"],
      '--hostname: "gpu-a01\\u202e10a" holds a bidi control character (U+202E); bidi control characters can make a name read differently from what it is',
    ],
    [["--hostname", "gpu-a01\u0085"], '--hostname: "gpu-a01\\u0085" holds control characters (U+0085)'],
    [["--label", "site=dc1\u2066x\u2069"], 'label "site" value holds a bidi control character (U+2066)'],
    [["--label", "site=dc1\u2028"], 'label "site" value holds a line or paragraph separator (U+2028)'],
    [["--label", "le=0.5"], 'label key "le" is reserved: Prometheus histograms'],
    [["--label", "time=now"], 'label key "time" is reserved: InfluxDB'],
  ])("refuses %j before it starts, exit 2", async (flags, message) => {
    const r = await runTrueidle([
      "agent",
      "--plaintext",
      "--source",
      "sim",
      "--scenario",
      "demo/scenarios/gpu-a01.json",
      ...flags,
    ]);
    expect(r.code).toBe(2);
    expect(r.output).toContain(message);
    // The refused character itself never reaches the terminal.
    expect(r.output).not.toMatch(/[\u0085\u202e\u2066\u2028]/);
  });
});
