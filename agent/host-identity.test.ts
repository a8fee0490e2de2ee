import { describe, expect, it } from "vitest";
import { hostIdentity, hostIdentityProblem } from "./host-identity.js";

describe("hostIdentity", () => {
  it("reports a given host name and the labels", async () => {
    const id = await hostIdentity({ site: "dc1" }, "gpu-a01");
    expect(id).toMatchObject({ hostname: "gpu-a01", labels: { site: "dc1" } });
  });

  it("refuses at start a host name the collector would refuse on every connect, saying which character and the fix", async () => {
    await expect(hostIdentity({}, "gpu-a01\u202e10a")).rejects.toThrow(
      'The host name "gpu-a01\\u202e10a" holds a bidi control character (U+202E); bidi control characters can make a name read differently from what it is; give the name to report with --hostname NAME.',
    );
  });
});

describe("hostIdentityProblem", () => {
  it.each([
    [
      "gpu\na01",
      /^The host name "gpu\\u000aa01" holds control characters \(U\+000A\); give the name to report with --hostname NAME\.$/,
    ],
    ["gpu\u0085a01", /holds control characters \(U\+0085\)/],
    ["\u2066gpu-a01\u2069", /holds a bidi control character \(U\+2066\)/],
    ["gpu-a01\u2028", /holds a line or paragraph separator \(U\+2028\)/],
  ])("refuses the host name %j", (hostname, message) => {
    expect(hostIdentityProblem({ hostname, machineId: "0123abcd" })).toMatch(message);
  });

  it("refuses a machine id with such characters too", () => {
    expect(hostIdentityProblem({ hostname: "gpu-a01", machineId: "0123\u200fabcd" })).toBe(
      'The machine id "0123\\u200fabcd" holds a bidi control character (U+200F); bidi control characters can make a name read differently from what it is; check /etc/machine-id.',
    );
  });

  it("accepts real host names and machine ids", () => {
    expect(
      hostIdentityProblem({ hostname: "gpu-a01.dc1.example", machineId: "4f1c0e9d2b7a4c11a3c5e6f708192a3b" }),
    ).toBeUndefined();
    expect(hostIdentityProblem({ hostname: "東京-gpu-01", machineId: "" })).toBeUndefined();
  });
});
