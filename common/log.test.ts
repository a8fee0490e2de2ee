import { describe, expect, it } from "vitest";
import { createLogger, defaultLogFormat, type LogFormat } from "./log.js";

const NOW = new Date(Date.UTC(2024, 4, 1, 12, 0, 0, 123));

function lines(
  format: LogFormat,
  level: "debug" | "info" = "info",
): { lines: string[]; logger: ReturnType<typeof createLogger> } {
  const out: string[] = [];
  return {
    lines: out,
    logger: createLogger({ format, level, now: () => NOW, write: (l) => void out.push(l) }, { component: "agent" }),
  };
}

describe("log lines", () => {
  it("json: one object per line with the time, level, message and fields", () => {
    const { lines: out, logger } = lines("json");
    logger.warn("The collector did not answer.", { collector: "10.0.0.5:9746", attempts: 3 });
    expect(out).toEqual([
      '{"ts":"2024-05-01T12:00:00.123Z","level":"warn","msg":"The collector did not answer.","component":"agent","collector":"10.0.0.5:9746","attempts":3}\n',
    ]);
  });

  it("text: time, level, message, then key=value, quoting only what needs it", () => {
    const { lines: out, logger } = lines("text", "debug");
    logger.info("The agent stopped.", { windows_measured: 360, windows_acked: 360, ok: true });
    logger.warn("The collector did not answer.", {
      collector: "10.0.0.5:9746",
      err: "connect ECONNREFUSED 10.0.0.5:9746",
      empty: "",
      gone: undefined,
    });
    logger.error("A window was lost.", {
      path: "/var/lib/trueidle",
      detail: { gpu: 3, why: 'a "b" = c' },
      list: ["a", "b"],
    });
    logger.debug("Tick.", { eq: "a=b", backslash: "C:\\x" });
    expect(out).toEqual([
      "2024-05-01T12:00:00.123Z INFO  The agent stopped. component=agent windows_measured=360 windows_acked=360 ok=true\n",
      '2024-05-01T12:00:00.123Z WARN  The collector did not answer. component=agent collector=10.0.0.5:9746 err="connect ECONNREFUSED 10.0.0.5:9746" empty=""\n',
      '2024-05-01T12:00:00.123Z ERROR A window was lost. component=agent path=/var/lib/trueidle detail.gpu=3 detail.why="a \\"b\\" = c" list=a,b\n',
      '2024-05-01T12:00:00.123Z DEBUG Tick. component=agent eq="a=b" backslash="C:\\\\x"\n',
    ]);
  });

  it("text: a hostile value or message can neither break the line nor reorder the terminal", () => {
    const { lines: out, logger } = lines("text");
    logger.warn("Refused host gpu-a01\nFAKE LINE.", { host: "gpu-a01\u202E10a", esc: "\u001b[31mred", c1: "a\u0085b" });
    expect(out).toHaveLength(1);
    expect(out[0]).toBe(
      '2024-05-01T12:00:00.123Z WARN  Refused host gpu-a01\\u000aFAKE LINE. component=agent host="gpu-a01\\u202e10a" esc="\\u001b[31mred" c1="a\\u0085b"\n',
    );
    expect(out[0]!.slice(0, -1)).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e]/);
  });

  it("chooses text for a terminal and json for anything else", () => {
    expect(defaultLogFormat({ isTTY: true })).toBe("text");
    expect(defaultLogFormat({ isTTY: false })).toBe("json");
    expect(defaultLogFormat({})).toBe("json");
  });
});
