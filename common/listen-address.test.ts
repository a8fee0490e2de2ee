import { describe, expect, it } from "vitest";
import { formatListenAddress, parseListenAddress } from "./listen-address.js";

describe("parseListenAddress", () => {
  it.each([
    ["0.0.0.0:9746", { host: "0.0.0.0", port: 9746 }],
    ["localhost:0", { host: "localhost", port: 0 }],
    ["[::1]:9745", { host: "::1", port: 9745 }],
    ["[::]:1", { host: "::", port: 1 }],
    [":9745", { host: "0.0.0.0", port: 9745 }],
    ["collector.example.com:65535", { host: "collector.example.com", port: 65535 }],
  ])("reads %s", (text, want) => {
    expect(parseListenAddress(text)).toEqual(want);
  });

  it.each([
    ["9745", /has no :PORT/],
    ["host:", /has port "", which is not a number/],
    ["host:http", /has port "http"/],
    ["host:65536", /above 65535/],
    ["host:-1", /not a number/],
    ["::1:9745", /IPv6 address without \[ \]/],
    ["[::1:9745", /unclosed \[/],
    ["[::1]9745", /no :PORT after the \]/],
    ["[localhost]:1", /no IPv6 address/],
    ["my host:1", /white space/],
  ])("refuses %s with a clear error", (text, message) => {
    expect(() => parseListenAddress(text, "--grpc-listen")).toThrow(message);
    expect(() => parseListenAddress(text, "--grpc-listen")).toThrow(/^--grpc-listen ".*" .*; use HOST:PORT/);
  });

  it("formats IPv6 hosts with brackets", () => {
    expect(formatListenAddress({ host: "::1", port: 5 })).toBe("[::1]:5");
    expect(formatListenAddress({ host: "127.0.0.1", port: 5 })).toBe("127.0.0.1:5");
  });
});
