import { describe, expect, it } from "vitest";
import { RESERVED_LABEL_KEYS, labelKeyProblem, labelValueProblem, parseLabels } from "./labels.js";

/** Names trueidle, Prometheus, Alertmanager, Grafana and InfluxDB give a meaning to. */
const RESERVED = [
  // trueidle's series
  "host",
  "gpu",
  "uuid",
  "model",
  "driver",
  "state",
  "source",
  "reason",
  // trueidle's owner and MIG labels (DESIGN.md)
  "namespace",
  "pod",
  "container",
  "job",
  "user",
  "held_by",
  "parent_uuid",
  "mig_profile",
  // Prometheus, Alertmanager
  "instance",
  "le",
  "quantile",
  "alertname",
  "alertstate",
  // InfluxDB
  "time",
  "_measurement",
  "_field",
  "_value",
  "_time",
  "_start",
  "_stop",
];

describe("labelKeyProblem", () => {
  it.each(RESERVED)("refuses %s, saying who uses it", (key) => {
    expect(RESERVED_LABEL_KEYS.has(key)).toBe(true);
    expect(labelKeyProblem(key)).toMatch(new RegExp(`^label key "${key}" is reserved: \\S`));
  });

  it.each([
    ["le", /Prometheus histograms/],
    ["quantile", /Prometheus summaries/],
    ["time", /InfluxQL cannot query a tag named time/],
    ["job", /scrape job/],
    ["parent_uuid", /MIG/],
    ["pod", /owner/],
  ])("says why %s is reserved", (key, why) => {
    expect(labelKeyProblem(key)).toMatch(why);
  });

  it.each(["__name__", "__x", "exported_job", "exported_site", "exported_"])(
    "refuses the reserved prefix of %s",
    (key) => {
      expect(labelKeyProblem(key)).toMatch(new RegExp(`^label key "${key}" may not start with (__|exported_) \\(`));
    },
  );

  it.each([
    "site",
    "pool",
    "cluster",
    "les",
    "le_",
    "times",
    "time_zone",
    "jobs",
    "exported",
    "export_x",
    "_x",
    "user_group",
    "a".repeat(40),
  ])("accepts %s", (key) => {
    expect(labelKeyProblem(key)).toBeUndefined();
  });

  it("quotes a bad key so that it cannot break the message", () => {
    expect(labelKeyProblem("Bad Key")).toBe(
      'label key "Bad Key" must match ^[a-z_][a-z0-9_]{0,39}$ (lower-case letters, digits, _)',
    );
    expect(labelKeyProblem("a\nb\u202e")).toMatch(/^label key "a\\u000ab\\u202e" must match/);
  });
});

describe("labelValueProblem", () => {
  it.each([
    ["a newline", "dc1\nx=1", /^label "site" value holds control characters \(U\+000A\)$/],
    ["an escape sequence", "dc1\u001b[31m", /^label "site" value holds control characters \(U\+001B\)$/],
    ["DEL", "dc1\u007f", /\(U\+007F\)/],
    ["a C1 control (NEL)", "dc1\u0085", /^label "site" value holds control characters \(U\+0085\)$/],
    ["a C1 control (CSI)", "dc1\u009b31m", /\(U\+009B\)/],
    [
      "right-to-left override",
      "dc1\u202e2cd",
      /^label "site" value holds a bidi control character \(U\+202E\); bidi control characters can make a name read differently/,
    ],
    ["a right-to-left mark", "dc1\u200f", /bidi control character \(U\+200F\)/],
    ["an Arabic letter mark", "dc1\u061c", /bidi control character \(U\+061C\)/],
    ["a first-strong isolate", "dc1\u2068x\u2069", /bidi control character \(U\+2068\)/],
    ["a line separator", "dc1\u2028x", /^label "site" value holds a line or paragraph separator \(U\+2028\)/],
    ["a paragraph separator", "dc1\u2029", /\(U\+2029\)/],
  ])("refuses a value with %s", (_name, value, message) => {
    expect(labelValueProblem("site", value)).toMatch(message);
  });

  it("accepts any other text up to 128 characters", () => {
    expect(labelValueProblem("site", 'a\\b"c}{e=",é✓ 東京 🚀 \u200d\u00a0')).toBeUndefined();
    expect(labelValueProblem("site", "v".repeat(128))).toBeUndefined();
  });
});

describe("parseLabels", () => {
  it("lists every bad label at once, refused characters written as escapes", () => {
    expect(() => parseLabels(["le=0.5", "site=dc1\u202e", "pool=train", "exported_job=x", "a\u2028b"])).toThrow(
      'bad --label: label key "le" is reserved: Prometheus histograms hold bucket bounds in it; promtool check metrics refuses it elsewhere; ' +
        'label "site" value holds a bidi control character (U+202E); bidi control characters can make a name read differently from what it is; ' +
        'label key "exported_job" may not start with exported_ (Prometheus renames a scraped label that clashes with a target label to exported_NAME); ' +
        '"a\\u2028b" is not key=value',
    );
    expect(parseLabels(["site=dc1", "pool=train"])).toEqual({ site: "dc1", pool: "train" });
  });
});
