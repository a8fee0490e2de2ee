import { describe, expect, it } from "vitest";
import { parseComm, parsePasswd, parseProcStat, parseStatusUid, safeName } from "./proc-parse.js";

describe("/proc/PID/stat", () => {
  it("reads kthreadd as Linux writes it", () => {
    const line =
      "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 14 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    expect(parseProcStat(line)).toEqual({ comm: "kthreadd", ppid: 0, startTime: "14" });
  });

  it("counts fields from the last ) so a command with spaces and parentheses is read", () => {
    const line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1894 0 0 0 12 3 0 0 20 0 1 0 987654321 12734464 2214\n";
    expect(parseProcStat(line)).toEqual({ comm: "a) b (c", ppid: 1, startTime: "987654321" });
  });

  it("refuses what is not a stat line", () => {
    expect(parseProcStat("")).toBeUndefined();
    expect(parseProcStat("hello (x) S 1")).toBeUndefined();
    expect(parseProcStat("12 (x) S 1 2 3\n")).toBeUndefined();
  });
});

describe("/proc/PID/status, comm and /etc/passwd", () => {
  it("takes the real uid", () => {
    expect(parseStatusUid("Name:\tsleep\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n")).toBe(1000);
    expect(parseStatusUid("Name:\tsleep\n")).toBeUndefined();
  });

  it("drops comm's newline", () => {
    expect(parseComm("python3\n")).toBe("python3");
    expect(parseComm("\n")).toBeUndefined();
  });

  it("keeps the first entry of a uid and skips comments and NIS lines", () => {
    const names = parsePasswd(
      "# x\n+@netgroup::::::\nroot:x:0:0::/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\nbad:x:abc:0::/:/bin/sh\nshort:x\n",
    );
    expect([...names]).toEqual([[0, "root"]]);
  });

  it("replaces characters that could break a line or reorder text", () => {
    expect(safeName("ok-name_1")).toBe("ok-name_1");
    expect(safeName("a\nb\u0085c\u2066d")).toBe("a?b?c?d");
  });
});
