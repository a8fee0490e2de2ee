import { describe, expect, it } from "vitest";
import { UNSAFE_TEXT_RE, codePointName, quoteText, unsafeTextProblem } from "./text-safety.js";

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Every character refused, by class, with the words its message must hold. */
const CLASSES: Array<[string, number[], RegExp]> = [
  ["C0 control", range(0x00, 0x1f), /^holds control characters \(U\+00[01][0-9A-F]\)$/],
  ["DEL", [0x7f], /^holds control characters \(U\+007F\)$/],
  ["C1 control", range(0x80, 0x9f), /^holds control characters \(U\+00[89][0-9A-F]\)$/],
  [
    "bidi mark or embedding",
    [0x061c, 0x200e, 0x200f, ...range(0x202a, 0x202e), ...range(0x2066, 0x2069)],
    /^holds a bidi control character \(U\+(061C|200[EF]|202[A-E]|206[6-9])\); bidi control characters can make a name read differently from what it is$/,
  ],
  [
    "line or paragraph separator",
    [0x2028, 0x2029],
    /^holds a line or paragraph separator \(U\+202[89]\), which breaks a line/,
  ],
];

describe("unsafeTextProblem", () => {
  for (const [name, codes, message] of CLASSES) {
    it(`refuses every ${name}, naming it as U+XXXX, anywhere in a name`, () => {
      for (const c of codes) {
        const ch = String.fromCharCode(c);
        for (const value of [ch, `gpu-a01${ch}`, `${ch}gpu-a01`, `gpu${ch}a01`]) {
          const problem = unsafeTextProblem(value);
          expect(problem, codePointName(ch)).toMatch(message);
          expect(problem).toContain(codePointName(ch));
        }
      }
    });
  }

  it("accepts what real names hold: unicode letters, symbols, emoji, quotes, zero-width joiners", () => {
    for (const value of [
      "gpu-a01",
      "NVIDIA H100 80GB HBM3",
      "550.54.15",
      "GPU-3f1c…",
      "rechenzentrum-köln",
      "東京-1",
      'a"b\\c{}=,',
      "🚀",
      "👩‍💻",
      "\u00a0",
      "\u00a0\u00ff",
      "\u061b\u061d",
      "\u200d",
      "\u202f",
      "\u2065\u206a",
      "\u2027",
    ]) {
      expect(unsafeTextProblem(value), JSON.stringify(value)).toBeUndefined();
    }
  });

  it("is one class: the RegExp and the problem agree on every BMP character", () => {
    for (let c = 0; c <= 0xffff; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      const ch = String.fromCharCode(c);
      expect(unsafeTextProblem(ch) !== undefined).toBe(UNSAFE_TEXT_RE.test(ch));
    }
  });
});

describe("quoteText", () => {
  it("quotes a refused name so that it can neither break a log line nor reorder it", () => {
    expect(quoteText("gpu-a01")).toBe('"gpu-a01"');
    expect(quoteText("a\nb")).toBe('"a\\u000ab"');
    expect(quoteText("gpu\u202e10a")).toBe('"gpu\\u202e10a"');
    expect(quoteText('q"b\\')).toBe('"q\\"b\\\\"');
    expect(quoteText("x\u2028\u0085")).toBe('"x\\u2028\\u0085"');
  });
});
