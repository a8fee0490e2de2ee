/** The fault tests' accounting catches every kind of discrepancy it is meant to. */
import { describe, expect, it } from "vitest";
import { accountWindows, compareCounters, type AccountedAgent } from "./fleet-accounting.js";
import { FULL_WINDOW_S, parseExposition, type WindowPoint } from "./fleet-harness.js";

const T0 = 1_700_000_040_000; // 2023-11-14T22:14:00Z: second k of a window reads :0k
const U1 = "GPU-11111111-1111-1111-1111-111111111111";
const U2 = "GPU-22222222-2222-2222-2222-222222222222";

/** One agent with two GPUs, sampling from T0+300 ms, stopped with SIGTERM at T0+6.6 s. */
function agent(
  runs: AccountedAgent["runs"] = [
    {
      samplingAtMs: T0 + 300,
      endedAtMs: T0 + 6_600,
      end: "sigterm",
      final: { windows_measured: 14, windows_acked: 14, windows_dropped: 0 },
    },
  ],
): AccountedAgent {
  return { host: "h", uuids: [U1, U2], runs };
}

/** Windows T0 … T0+6 s of both GPUs: the first and last partial, the rest complete. */
function points(): WindowPoint[] {
  const out: WindowPoint[] = [];
  for (const uuid of [U1, U2]) {
    for (let k = 0; k <= 6; k++)
      out.push({ uuid, host: "h", timeMs: T0 + k * 1000, observedS: k === 0 ? 0.7 : k === 6 ? 0.6 : FULL_WINDOW_S });
  }
  return out;
}

describe("accountWindows", () => {
  it("finds nothing wrong when InfluxDB holds exactly what the agent measured", () => {
    const r = accountWindows(points(), [agent()]);
    expect(r.problems).toEqual([]);
    expect(r.agents[0]).toMatchObject({ points: 14, required: 10, stalled: 0, short: 0, measured: 14, acked: 14 });
  });

  it("counts windows short of samples (a late timer) without failing, when all the agent's GPUs agree", () => {
    const p = points();
    for (const x of p) if (x.timeMs === T0 + 3_000) x.observedS = 0.7;
    const r = accountWindows(p, [agent()]);
    expect(r.problems).toEqual([]);
    expect(r.agents[0]!.short).toBe(2);
  });

  it("takes a window the agent never measured (its timer stalled) as no loss, when its count says so", () => {
    const p = points().filter((x) => x.timeMs !== T0 + 3_000);
    const r = accountWindows(p, [
      agent([
        {
          samplingAtMs: T0 + 300,
          endedAtMs: T0 + 6_600,
          end: "sigterm",
          final: { windows_measured: 12, windows_acked: 12, windows_dropped: 0 },
        },
      ]),
    ]);
    expect(r.problems).toEqual([]);
    expect(r.agents[0]).toMatchObject({ points: 12, measured: 12, stalled: 2 });
  });

  it("reports a lost, a doubled, an invented and a foreign window, and GPUs of one agent that disagree", () => {
    const p = points().filter((x) => !(x.uuid === U1 && x.timeMs === T0 + 3000));
    p.push({ uuid: U2, host: "h", timeMs: T0 + 2000, observedS: FULL_WINDOW_S });
    p.find((x) => x.uuid === U2 && x.timeMs === T0 + 4000)!.observedS = 0.9;
    p.push({ uuid: U2, host: "h", timeMs: T0 + 60_000, observedS: FULL_WINDOW_S });
    p.push({ uuid: "GPU-99999999-9999-9999-9999-999999999999", host: "x", timeMs: T0, observedS: 1 });
    const r = accountWindows(p, [agent()]);
    expect(r.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`${U2} window .*:02\\.000Z is in InfluxDB twice`)),
        expect.stringMatching(/window .*:04\.000Z of agent h has observed_s 0\.9999999999999999, 0\.9 on its GPUs/),
        expect.stringMatching(/window .*:03\.000Z of agent h is in InfluxDB for 1 of its 2 GPUs/),
        expect.stringMatching(new RegExp(`${U2} window .* lies outside every run`)),
        expect.stringMatching(/GPU-9999.* a GPU no agent has/),
        expect.stringMatching(/agent h measured 14 windows \(14 over its runs\); InfluxDB holds 15/),
        expect.stringMatching(/acknowledged 14 windows; InfluxDB holds 15/),
      ]),
    );
    // Without the agent's count, a window wholly inside a run must be there.
    const uncounted = accountWindows(p, [agent([{ samplingAtMs: T0 + 300, endedAtMs: T0 + 6_600, end: "sigkill" }])]);
    expect(uncounted.problems).toEqual(
      expect.arrayContaining([expect.stringMatching(new RegExp(`${U1} window .*:03\\.000Z is missing`))]),
    );
  });

  it("allows the windows a kill and a restart touch to be partial or absent, and nothing between runs", () => {
    const runs: AccountedAgent["runs"] = [
      { samplingAtMs: T0 + 300, endedAtMs: T0 + 3_500, end: "sigkill", measuredAtKill: 6 },
      {
        samplingAtMs: T0 + 5_800,
        endedAtMs: T0 + 9_600,
        end: "sigterm",
        final: { windows_measured: 10, windows_acked: 18, windows_dropped: 0 },
      },
    ];
    const p: WindowPoint[] = [];
    for (const uuid of [U1, U2]) {
      for (const k of [0, 1, 2, 5, 6, 7, 8, 9])
        p.push({ uuid, host: "h", timeMs: T0 + k * 1000, observedS: k === 0 || k === 5 ? 0.3 : FULL_WINDOW_S });
    }
    expect(accountWindows(p, [agent(runs)]).problems).toEqual([]);
    // A window while no agent ran cannot be there.
    const bad = [...p, { uuid: U1, host: "h", timeMs: T0 + 4_000, observedS: FULL_WINDOW_S }];
    expect(accountWindows(bad, [agent(runs)]).problems).toEqual([
      expect.stringMatching(/:04\.000Z is in InfluxDB though agent h was not running/),
      expect.stringMatching(/:04\.000Z of agent h is in InfluxDB for 1 of its 2 GPUs/),
      expect.stringMatching(/agent h measured 16 windows \(6 \+ 10 over its runs\); InfluxDB holds 17/),
    ]);
    // Window 2, measured before the kill, lost: the count says so.
    const lost = p.filter((x) => x.timeMs !== T0 + 2_000);
    expect(accountWindows(lost, [agent(runs)]).problems).toEqual([
      expect.stringMatching(/measured 16 windows .*; InfluxDB holds 14/),
    ]);
  });
});

describe("compareCounters", () => {
  it("compares the collector's observed seconds with InfluxDB's sums per GPU", () => {
    const samples = parseExposition(
      [
        "# TYPE trueidle_gpu_observed_seconds_total counter",
        `trueidle_gpu_observed_seconds_total{host="h",gpu="0",uuid="${U1}",model="m \\"x\\""} 12`,
        `trueidle_gpu_observed_seconds_total{host="h",gpu="1",uuid="${U2}",model="m"} 7`,
      ].join("\n"),
    );
    expect(samples[0]!.labels["model"]).toBe('m "x"');
    expect(
      compareCounters(
        samples,
        new Map([
          [U1, { count: 12, sum: 12 }],
          [U2, { count: 7, sum: 7 }],
        ]),
      ),
    ).toEqual([]);
    expect(
      compareCounters(
        samples,
        new Map([
          [U1, { count: 12, sum: 12 }],
          [U2, { count: 8, sum: 8 }],
        ]),
      ),
    ).toEqual([`${U2}: the collector counted 7 observed seconds, InfluxDB sums 8 over 8 windows.`]);
  });
});
