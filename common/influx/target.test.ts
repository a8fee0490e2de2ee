import { describe, expect, it } from "vitest";
import { quoteIdent, quoteString } from "./quote.js";
import { authorizationHeader, describeTarget, influxTarget } from "./target.js";

describe("InfluxTarget", () => {
  it("never shows credentials when it describes the target", () => {
    const t = { baseUrl: "http://h:8086", database: "trueidle", username: "u", password: "p4ss" };
    expect(describeTarget(t)).toBe('http://h:8086, database "trueidle" (with credentials)');
    expect(describeTarget({ baseUrl: "http://h:8086", database: "d" })).toBe('http://h:8086, database "d"');
    expect(authorizationHeader(t)).toBe(`Basic ${Buffer.from("u:p4ss").toString("base64")}`);
    expect(authorizationHeader({ baseUrl: "http://h", database: "d" })).toBeUndefined();
  });

  it("joins a parsed URL and credentials, and carries none when there are none", () => {
    const url = { baseUrl: "http://h:8086", database: "fleet" };
    expect(influxTarget(url)).toEqual(url);
    expect(Object.keys(influxTarget(url))).toEqual(["baseUrl", "database"]);
    expect(influxTarget(url, { username: "u", password: "" })).toEqual({ ...url, username: "u", password: "" });
  });
});

describe("InfluxQL quoting", () => {
  it("quotes identifiers so no tag key can end the quote", () => {
    expect(quoteIdent("site")).toBe('"site"');
    expect(quoteIdent('a"b\\c')).toBe('"a\\"b\\\\c"');
  });

  it("quotes string literals so no value can end the quote", () => {
    expect(quoteString("a100")).toBe("'a100'");
    expect(quoteString("it's\\")).toBe("'it\\'s\\\\'");
  });
});
