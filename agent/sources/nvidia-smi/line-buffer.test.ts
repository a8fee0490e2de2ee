import { describe, expect, it } from "vitest";
import { LineBuffer } from "./line-buffer.js";

describe("LineBuffer", () => {
  it("joins a line cut across chunks and strips CR", () => {
    const b = new LineBuffer();
    expect(b.push("0, GPU-a, 4")).toEqual([]);
    expect(b.push("5 %\r\n1, GPU-b")).toEqual(["0, GPU-a, 45 %"]);
    expect(b.push(", 0 %\n\n")).toEqual(["1, GPU-b, 0 %", ""]);
    expect(b.flush()).toEqual([]);
  });

  it("hands out a last line without newline on flush", () => {
    const b = new LineBuffer();
    b.push("a\nb");
    expect(b.flush()).toEqual(["b"]);
    expect(b.flush()).toEqual([]);
  });

  it("cuts a line that never ends instead of growing without bound", () => {
    const b = new LineBuffer(8);
    expect(b.push("0123456789")).toEqual(["01234567"]);
    expect(b.push("ab\n")).toEqual(["ab"]);
  });
});
