/**
 * The fault tests' accounting: the windows in InfluxDB against what the agents measured.
 *
 * What an agent measured follows from when it ran. The sim source answers every tick and
 * windows are aligned to wall-clock seconds, so while an agent process samples, each of
 * its GPUs closes one window per second holding ten samples (observed_s ==
 * FULL_WINDOW_S). For each GPU and each aligned window:
 * - a window wholly inside a run (from MARGIN_MS after the run's "The agent is sampling."
 *   to MARGIN_MS before the harness ended it) must be in InfluxDB exactly once, complete;
 * - a window that only touches a run — the one a run begins in, the one it was stopped or
 *   killed in — may be partial or absent;
 * - any other window must be absent: nothing invented, nothing from outside the runs.
 * Times come from the agent's own log timestamp and the harness's clock on one machine.
 *
 * An agent that ran once and was stopped with SIGTERM also states how many windows it
 * measured and how many the collector acknowledged; both must equal its points in InfluxDB
 * exactly (acks are sent only once a window is durable, and an agent counts each window's
 * ack once).
 */
import { FULL_WINDOW_S, WINDOW_MS, sumOf, type AgentRun, type ExpositionSample, type WindowPoint } from "./fleet-harness.js";

/** Slack around a run's start and end for the tick timer and the write of a just-closed window. */
export const MARGIN_MS = 250;
/** A SIGTERMed agent closes the window it is in when it handles the signal; allow for a late handler. */
const STOP_SLACK_MS = 1_500;
const EPSILON = 1e-9;

/** What the accounting needs of an agent (an AgentNode has it). */
export interface AccountedAgent {
  host: string;
  uuids: readonly string[];
  runs: ReadonlyArray<Pick<AgentRun, "samplingAtMs" | "endedAtMs" | "end" | "final">>;
}

export interface AgentAccount {
  host: string;
  gpus: number;
  /** Points in InfluxDB for the agent's GPUs. */
  points: number;
  /** Windows that had to be there, complete (all were, unless a problem says otherwise). */
  required: number;
  /** Windows at a run's edge: present (complete or partial) and absent. */
  edgePresent: number;
  edgeAbsent: number;
  /** windows_measured and windows_acked of its final log line, when it ran once and was stopped with SIGTERM. */
  measured?: number | undefined;
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
  for (const uuid of byUuid.keys()) if (!known.has(uuid)) problems.push(`InfluxDB holds ${byUuid.get(uuid)!.length} windows of ${uuid}, a GPU no agent has.`);

  const accounts: AgentAccount[] = [];
  for (const agent of agents) {
    const runs = agent.runs.map((r, i) => {
      if (r.samplingAtMs === undefined || r.endedAtMs === undefined) throw new Error(`agent ${agent.host} run ${i + 1} has not both started and ended`);
      return { start: r.samplingAtMs, end: r.endedAtMs, slack: r.end === "sigterm" ? STOP_SLACK_MS : MARGIN_MS };
    });
    const account: AgentAccount = { host: agent.host, gpus: agent.uuids.length, points: 0, required: 0, edgePresent: 0, edgeAbsent: 0 };
    if (runs.length === 0) {
      accounts.push(account);
      continue;
    }
    const from = Math.floor(Math.min(...runs.map((r) => r.start)) / WINDOW_MS) * WINDOW_MS;
    const to = Math.floor(Math.max(...runs.map((r) => r.end + r.slack)) / WINDOW_MS) * WINDOW_MS;
    for (const uuid of agent.uuids) {
      const mine = byUuid.get(uuid) ?? [];
      account.points += mine.length;
      const at = new Map<number, WindowPoint>();
      for (const p of mine) {
        if (p.host !== agent.host) problems.push(`${uuid} window ${iso(p.timeMs)} carries host "${p.host}", not "${agent.host}".`);
        if (p.timeMs % WINDOW_MS !== 0) problems.push(`${uuid} window ${iso(p.timeMs)} is not aligned to ${WINDOW_MS} ms.`);
        if (at.has(p.timeMs)) problems.push(`${uuid} window ${iso(p.timeMs)} is in InfluxDB twice.`);
        at.set(p.timeMs, p);
        if (!(p.observedS > 0 && p.observedS <= FULL_WINDOW_S + EPSILON)) {
          problems.push(`${uuid} window ${iso(p.timeMs)} has observed_s ${p.observedS}, outside (0, ${FULL_WINDOW_S}].`);
        }
        if (p.timeMs < from || p.timeMs > to) problems.push(`${uuid} window ${iso(p.timeMs)} lies outside every run of agent ${agent.host}.`);
      }
      for (let w = from; w <= to; w += WINDOW_MS) {
        const p = at.get(w);
        const required = runs.some((r) => w >= r.start + MARGIN_MS && w + WINDOW_MS <= r.end - MARGIN_MS);
        const touched = runs.some((r) => w + WINDOW_MS > r.start && w <= r.end + r.slack);
        if (required) {
          account.required++;
          if (!p) problems.push(`${uuid} window ${iso(w)} is missing from InfluxDB (agent ${agent.host} was sampling all through it).`);
          else if (Math.abs(p.observedS - FULL_WINDOW_S) > EPSILON) {
            problems.push(`${uuid} window ${iso(w)} has observed_s ${p.observedS}, not ${FULL_WINDOW_S} (agent ${agent.host} was sampling all through it).`);
          }
        } else if (touched) {
          if (p) account.edgePresent++;
          else account.edgeAbsent++;
        } else if (p) {
          problems.push(`${uuid} window ${iso(w)} is in InfluxDB though agent ${agent.host} was not running then.`);
        }
      }
    }
    const finals = agent.runs.map((r) => r.final);
    if (finals.every((f) => f !== undefined)) {
      for (const [i, f] of finals.entries()) {
        if (Number(f["windows_dropped"] ?? 0) !== 0) problems.push(`agent ${agent.host} run ${i + 1} dropped ${String(f["windows_dropped"])} windows.`);
      }
      if (agent.runs.length === 1) {
        account.measured = Number(finals[0]!["windows_measured"]);
        account.acked = Number(finals[0]!["windows_acked"]);
        if (account.measured !== account.points) {
          problems.push(`agent ${agent.host} says it measured ${finals[0]!["windows_measured"]} windows; InfluxDB holds ${account.points}.`);
        }
        if (account.acked !== account.points) {
          problems.push(`agent ${agent.host} says the collector acknowledged ${account.acked} windows; InfluxDB holds ${account.points}.`);
        }
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
    else if (Math.abs(c - t.sum) > 1e-6) problems.push(`${uuid}: the collector counted ${c} observed seconds, InfluxDB sums ${t.sum} over ${t.count} windows.`);
  }
  for (const uuid of counted) if (!totals.has(uuid)) problems.push(`the collector counted ${uuid}, which InfluxDB does not hold.`);
  return problems;
}

/** A short line per agent for test output and the soak summary. */
export function describeAccounting(r: AccountingReport): string {
  return r.agents
    .map((a) => `${a.host}: ${a.gpus} GPUs, ${a.points} windows in InfluxDB (${a.required} required and complete` +
      `${a.edgePresent + a.edgeAbsent > 0 ? `, ${a.edgePresent} edge windows present, ${a.edgeAbsent} absent` : ""})` +
      `${a.acked !== undefined ? `; the agent measured ${a.measured} and had ${a.acked} acknowledged` : ""}`)
    .join("\n");
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
