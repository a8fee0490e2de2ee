/**
 * The fault tests' accounting: the windows in InfluxDB against what the agents measured.
 *
 * The count is exact. Every run of an agent states how many windows it measured: a run
 * stopped with SIGTERM in its "The agent stopped." line, a run killed with SIGKILL in the
 * trueidle_agent_windows_total the harness read just before the kill (AgentNode.kill). An
 * agent's points in InfluxDB must number exactly the sum over its runs — with no window
 * twice, none outside its runs and none of a GPU no agent has, that means nothing lost and
 * nothing doubled. A run that ran once and was stopped with SIGTERM must also have had
 * exactly that many acknowledged (acks come only once a window is durable, and an agent
 * counts each window's ack once).
 *
 * Where each window lies follows from when the agent ran: windows are aligned to
 * wall-clock seconds and the sim source answers every tick, so for each GPU
 * - a window wholly inside a run (from MARGIN_MS after the run's "The agent is sampling."
 *   to MARGIN_MS before the harness ended it) is expected; when a run's count is unknown it
 *   must be there, else its absence is counted as a stall (a loaded machine can hold an
 *   agent's timer back past a whole window: nothing was measured, so nothing is missing);
 * - a window that only touches a run — the one a run begins in, the one it was stopped or
 *   killed in — may be partial or absent;
 * - any other window must be absent.
 * A window holds ten samples (observed_s == FULL_WINDOW_S) unless the agent's timer ran more
 * than an interval late and skipped a tick; such short windows are counted, not failed. One
 * tick samples every GPU of an agent, so each window start must be present for all of the
 * agent's GPUs or for none, with the same observed_s. InfluxDB's sums must also equal the
 * collector's counters where one collector saw everything (compareCounters).
 */
import {
  FULL_WINDOW_S,
  WINDOW_MS,
  sumOf,
  type AgentRun,
  type ExpositionSample,
  type WindowPoint,
} from "./fleet-harness.js";

/** Slack around a run's start and end for the tick timer and the write of a just-closed window. */
export const MARGIN_MS = 250;
/** A SIGTERMed agent closes the window it is in when it handles the signal; allow for a late handler. */
const STOP_SLACK_MS = 1_500;
const EPSILON = 1e-9;

/** What the accounting needs of an agent (an AgentNode has it). */
export interface AccountedAgent {
  host: string;
  uuids: readonly string[];
  runs: ReadonlyArray<Pick<AgentRun, "samplingAtMs" | "endedAtMs" | "end" | "final" | "measuredAtKill">>;
}

export interface AgentAccount {
  host: string;
  gpus: number;
  /** Points in InfluxDB for the agent's GPUs. */
  points: number;
  /** GPU windows wholly inside a run. */
  required: number;
  /** Of those, absent because the agent measured nothing then (timer held back a whole window). */
  stalled: number;
  /** Of those, present with fewer than ten samples: the agent skipped ticks (timer late). */
  short: number;
  /** Windows at a run's edge: present (complete or partial) and absent. */
  edgePresent: number;
  edgeAbsent: number;
  /** Windows its runs measured, when every run's count is known. */
  measured?: number | undefined;
  /** windows_acked of its final log line, when it ran once and was stopped with SIGTERM. */
  acked?: number | undefined;
}

export interface AccountingReport {
  /** Every discrepancy, each a sentence; empty when InfluxDB holds exactly what was measured. */
  problems: string[];
  agents: AgentAccount[];
  /** Points in InfluxDB in all. */
  points: number;
}

/** Checks `points` (all of InfluxDB's gpu_window points) against the runs of `agents`. */
export function accountWindows(points: readonly WindowPoint[], agents: readonly AccountedAgent[]): AccountingReport {
  const problems: string[] = [];
  const byUuid = new Map<string, WindowPoint[]>();
  for (const p of points) {
    const list = byUuid.get(p.uuid) ?? [];
    list.push(p);
    byUuid.set(p.uuid, list);
  }
  const known = new Set(agents.flatMap((a) => a.uuids));
  for (const uuid of byUuid.keys())
    if (!known.has(uuid))
      problems.push(`InfluxDB holds ${byUuid.get(uuid)!.length} windows of ${uuid}, a GPU no agent has.`);

  const accounts: AgentAccount[] = [];
  for (const agent of agents) {
    const runs = agent.runs.map((r, i) => {
      if (r.samplingAtMs === undefined || r.endedAtMs === undefined)
        throw new Error(`agent ${agent.host} run ${i + 1} has not both started and ended`);
      return { start: r.samplingAtMs, end: r.endedAtMs, slack: r.end === "sigterm" ? STOP_SLACK_MS : MARGIN_MS };
    });
    const account: AgentAccount = {
      host: agent.host,
      gpus: agent.uuids.length,
      points: 0,
      required: 0,
      stalled: 0,
      short: 0,
      edgePresent: 0,
      edgeAbsent: 0,
    };
    if (runs.length === 0) {
      accounts.push(account);
      continue;
    }
    const perRun = agent.runs.map((r) =>
      r.end === "sigterm" ? numberOr(r.final?.["windows_measured"]) : r.measuredAtKill,
    );
    const measured = perRun.every((m) => m !== undefined) ? perRun.reduce<number>((a, b) => a + b!, 0) : undefined;
    account.measured = measured;
    const from = Math.floor(Math.min(...runs.map((r) => r.start)) / WINDOW_MS) * WINDOW_MS;
    const to = Math.floor(Math.max(...runs.map((r) => r.end + r.slack)) / WINDOW_MS) * WINDOW_MS;
    /** observed_s of each window start, one entry per GPU that has it. */
    const byStart = new Map<number, number[]>();
    for (const uuid of agent.uuids) {
      const mine = byUuid.get(uuid) ?? [];
      account.points += mine.length;
      const at = new Map<number, WindowPoint>();
      for (const p of mine) {
        if (p.host !== agent.host)
          problems.push(`${uuid} window ${iso(p.timeMs)} carries host "${p.host}", not "${agent.host}".`);
        if (p.timeMs % WINDOW_MS !== 0)
          problems.push(`${uuid} window ${iso(p.timeMs)} is not aligned to ${WINDOW_MS} ms.`);
        if (at.has(p.timeMs)) problems.push(`${uuid} window ${iso(p.timeMs)} is in InfluxDB twice.`);
        at.set(p.timeMs, p);
        byStart.set(p.timeMs, [...(byStart.get(p.timeMs) ?? []), p.observedS]);
        if (!(p.observedS > 0 && p.observedS <= FULL_WINDOW_S + EPSILON)) {
          problems.push(
            `${uuid} window ${iso(p.timeMs)} has observed_s ${p.observedS}, outside (0, ${FULL_WINDOW_S}].`,
          );
        }
        if (p.timeMs < from || p.timeMs > to)
          problems.push(`${uuid} window ${iso(p.timeMs)} lies outside every run of agent ${agent.host}.`);
      }
      for (let w = from; w <= to; w += WINDOW_MS) {
        const p = at.get(w);
        const required = runs.some((r) => w >= r.start + MARGIN_MS && w + WINDOW_MS <= r.end - MARGIN_MS);
        const touched = runs.some((r) => w + WINDOW_MS > r.start && w <= r.end + r.slack);
        if (required) {
          account.required++;
          if (!p && measured !== undefined) account.stalled++;
          else if (!p)
            problems.push(
              `${uuid} window ${iso(w)} is missing from InfluxDB (agent ${agent.host} was sampling all through it).`,
            );
          else if (p.observedS < FULL_WINDOW_S - EPSILON) account.short++;
        } else if (touched) {
          if (p) account.edgePresent++;
          else account.edgeAbsent++;
        } else if (p) {
          problems.push(`${uuid} window ${iso(w)} is in InfluxDB though agent ${agent.host} was not running then.`);
        }
      }
    }
    for (const [start, observed] of byStart) {
      if (observed.length !== agent.uuids.length) {
        problems.push(
          `window ${iso(start)} of agent ${agent.host} is in InfluxDB for ${observed.length} of its ${agent.uuids.length} GPUs.`,
        );
      } else if (observed.some((o) => o !== observed[0])) {
        problems.push(
          `window ${iso(start)} of agent ${agent.host} has observed_s ${observed.join(", ")} on its GPUs; one tick samples them all.`,
        );
      }
    }
    if (measured !== undefined && measured !== account.points) {
      problems.push(
        `agent ${agent.host} measured ${measured} windows (${perRun.join(" + ")} over its runs); InfluxDB holds ${account.points}.`,
      );
    }
    for (const [i, r] of agent.runs.entries()) {
      const dropped = numberOr(r.final?.["windows_dropped"]) ?? 0;
      if (dropped !== 0) problems.push(`agent ${agent.host} run ${i + 1} dropped ${dropped} windows.`);
    }
    const only = agent.runs.length === 1 ? agent.runs[0] : undefined;
    if (only?.final) {
      account.acked = numberOr(only.final["windows_acked"]);
      if (account.acked !== account.points) {
        problems.push(
          `agent ${agent.host} says the collector acknowledged ${String(only.final["windows_acked"])} windows; InfluxDB holds ${account.points}.`,
        );
      }
    }
    accounts.push(account);
  }
  return { problems, agents: accounts, points: points.length };
}

/**
 * Compares a collector's trueidle_gpu_observed_seconds_total per GPU with InfluxDB's
 * sum(observed_s). They agree when one collector, never restarted, received every window:
 * the collector counts a window once however often it arrives, InfluxDB overwrites it.
 */
export function compareCounters(
  samples: readonly ExpositionSample[],
  totals: ReadonlyMap<string, { count: number; sum: number }>,
): string[] {
  const problems: string[] = [];
  const counted = new Set<string>();
  for (const s of samples) if (s.name === "trueidle_gpu_observed_seconds_total") counted.add(s.labels["uuid"] ?? "");
  for (const [uuid, t] of totals) {
    const c = sumOf(samples, "trueidle_gpu_observed_seconds_total", { uuid });
    if (!counted.has(uuid)) problems.push(`the collector has no trueidle_gpu_observed_seconds_total for ${uuid}.`);
    else if (Math.abs(c - t.sum) > 1e-6)
      problems.push(
        `${uuid}: the collector counted ${c} observed seconds, InfluxDB sums ${t.sum} over ${t.count} windows.`,
      );
  }
  for (const uuid of counted)
    if (!totals.has(uuid)) problems.push(`the collector counted ${uuid}, which InfluxDB does not hold.`);
  return problems;
}

/** A short line per agent for test output and the soak summary. */
export function describeAccounting(r: AccountingReport): string {
  return r.agents
    .map(
      (a) =>
        `${a.host}: ${a.gpus} GPUs, ${a.points} windows in InfluxDB` +
        `${a.measured !== undefined ? `, ${a.measured} measured` : ""}${a.acked !== undefined ? `, ${a.acked} acknowledged` : ""}` +
        ` (${a.required} wholly inside runs${a.stalled > 0 ? `, ${a.stalled} of them not measured as the agent's timer stalled` : ""}` +
        `${a.short > 0 ? `, ${a.short} short of samples as the timer ran late` : ""}` +
        `; ${a.edgePresent} at run edges present, ${a.edgeAbsent} absent)`,
    )
    .join("\n");
}

function numberOr(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
