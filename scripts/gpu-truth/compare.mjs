#!/usr/bin/env node
/**
 * Compares what trueidle said during loads of known shape with what they were and with an
 * independent reading of the GPU, and writes the table as Markdown on stdout.
 *
 *   compare.mjs --phases phases.jsonl --truth truth.csv --source NVML=nvml.jsonl
 *               [--source nvidia-smi=smi.jsonl ...] [--gpu 0] [--settle-s 5] [--json OUT]
 *
 * Inputs:
 *   phases.jsonl  loads.py's lines: {"phase", "start_ms", "end_ms", "expect"}, where expect
 *                 is a state or several joined by "|" (any of them counts as right)
 *   truth.csv     truth.py's rows: ts_ms,gpu,util,power_w,mem_used_mib,procs,
 *                 sm_active_pct,sm_occupancy_pct,tensor_pct (GPM columns empty where the
 *                 GPU has no GPM)
 *   NAME=FILE     `trueidle agent --watch` lines of one source, shown under NAME
 *
 * Per phase only samples from `--settle-s` after its start to its end count: the first
 * seconds of a phase show the one before it (the process list is read every 5 s, GPM and
 * utilization average over the last interval). Plain JavaScript with no dependency, so it
 * runs with a bare Node on the GPU machine.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const USAGE =
  "usage: compare.mjs --phases FILE --truth FILE --source NAME=FILE [--source NAME=FILE ...] [--gpu N] [--settle-s S] [--json OUT]";

export function parseArgs(argv) {
  const o = { sources: [], gpu: 0, settleS: 5, phases: undefined, truth: undefined, json: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === "--phases") o.phases = next();
    else if (a === "--truth") o.truth = next();
    else if (a === "--json") o.json = next();
    else if (a === "--gpu") o.gpu = Number(next());
    else if (a === "--settle-s") o.settleS = Number(next());
    else if (a === "--source") {
      const v = next();
      const eq = v.indexOf("=");
      if (eq <= 0) throw new Error(`--source takes NAME=FILE, not ${v}`);
      o.sources.push({ name: v.slice(0, eq), file: v.slice(eq + 1) });
    } else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  if (!o.phases || o.sources.length === 0) throw new Error(USAGE);
  if (!Number.isInteger(o.gpu) || o.gpu < 0) throw new Error("--gpu takes a GPU index");
  if (!(o.settleS >= 0)) throw new Error("--settle-s takes seconds, 0 or more");
  return o;
}

/** JSON lines of a file; lines that are not JSON objects (warnings) are skipped. A missing file is empty. */
export function readJsonLines(file) {
  if (!file || !existsSync(file)) return [];
  const out = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const t = line.trim();
    if (!t.startsWith("{")) continue;
    try {
      out.push(JSON.parse(t));
    } catch {
      // a line cut short when the process was stopped
    }
  }
  return out;
}

/** truth.py's CSV as objects of numbers; an empty cell is null. */
export function readTruth(file) {
  if (!file || !existsSync(file)) return [];
  const lines = readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "");
  const header =
    lines
      .shift()
      ?.split(",")
      .map((h) => h.trim()) ?? [];
  if (!header.includes("ts_ms")) return [];
  return lines
    .map((l) => {
      const cells = l.split(",");
      const row = {};
      header.forEach((h, i) => {
        const c = (cells[i] ?? "").trim();
        row[h] = c === "" || !Number.isFinite(Number(c)) ? null : Number(c);
      });
      return row;
    })
    .filter((r) => r.ts_ms !== null);
}

const mean = (xs) => (xs.length === 0 ? null : xs.reduce((s, x) => s + x, 0) / xs.length);

/** The sampling interval of a watch file: the median step between its ticks, in seconds. */
function intervalOf(lines) {
  const ts = [...new Set(lines.map((l) => l.ts_ms))].sort((a, b) => a - b);
  const steps = ts
    .slice(1)
    .map((t, i) => t - ts[i])
    .sort((a, b) => a - b);
  return steps.length === 0 ? 1 : steps[Math.floor(steps.length / 2)] / 1000;
}

function countBy(xs) {
  const m = new Map();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return [...m].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])));
}

/** The comparison as data: per phase, the truth and each source's figures. */
export function compare({ phases, truth, sources, gpu = 0, settleS = 5 }) {
  const rows = truth.filter((r) => r.gpu === gpu);
  const srcs = sources.map((s) => {
    const lines = s.lines.filter((l) => l.gpu === gpu);
    return { name: s.name, lines, intervalS: intervalOf(lines) };
  });
  const out = [];
  for (const p of phases) {
    const from = p.start_ms + settleS * 1000;
    const to = p.end_ms;
    const expect = String(p.expect)
      .split("|")
      .map((x) => x.trim())
      .filter(Boolean);
    const inPhase = (t) => t >= from && t < to;
    const tr = rows.filter((r) => inPhase(r.ts_ms));
    const phase = {
      phase: p.phase,
      expect,
      startMs: p.start_ms,
      endMs: p.end_ms,
      countedS: Math.max(0, to - from) / 1000,
      truth: {
        rows: tr.length,
        utilMean: mean(tr.map((r) => r.util).filter((x) => x !== null)),
        smMean: mean(tr.map((r) => r.sm_active_pct).filter((x) => x !== null)),
      },
      sources: {},
    };
    for (const s of srcs) {
      const ls = s.lines.filter((l) => inPhase(l.ts_ms));
      const valid = ls.filter((l) => l.state !== "unavailable");
      const inExpected = ls.filter((l) => expect.includes(l.state)).length;
      const sm = ls.map((l) => l.sm_active).filter((x) => typeof x === "number");
      phase.sources[s.name] = {
        samples: ls.length,
        seconds: ls.length * s.intervalS,
        inExpected,
        share: ls.length === 0 ? null : inExpected / ls.length,
        realMean: valid.length === 0 ? null : 100 * mean(valid.map((l) => l.real)),
        realSources: countBy(valid.map((l) => l.real_source)),
        smMean: sm.length === 0 ? null : 100 * mean(sm),
        states: countBy(ls.map((l) => l.state)),
      };
    }
    out.push(phase);
  }
  const overall = {};
  for (const s of srcs) {
    let samples = 0,
      inExpected = 0;
    const diffs = [];
    for (const p of out) {
      const f = p.sources[s.name];
      samples += f.samples;
      inExpected += f.inExpected;
      if (f.realMean !== null && p.truth.smMean !== null) diffs.push(Math.abs(f.realMean - p.truth.smMean));
    }
    overall[s.name] = {
      samples,
      seconds: samples * s.intervalS,
      inExpected,
      share: samples === 0 ? null : inExpected / samples,
      realVsTruthSmPp: mean(diffs),
    };
  }
  return {
    gpu,
    settleS,
    sources: srcs.map((s) => ({ name: s.name, intervalS: s.intervalS, lines: s.lines.length })),
    phases: out,
    overall,
  };
}

const pct0 = (x) => (x === null ? "n/a" : `${Math.round(x * 100)}%`);
const pct1 = (x) => (x === null ? "n/a" : `${x.toFixed(1)}%`);
const secs = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));

/** The comparison as a Markdown table with a short key. */
export function renderMarkdown(c) {
  const head = [
    "Phase",
    "Expected",
    "Truth: util",
    "Truth: SM active",
    "Source",
    "Seconds",
    "In expected state",
    "Real (mean, from)",
    "SM active (agent)",
    "States seen (samples)",
  ];
  const lines = [`| ${head.join(" | ")} |`, "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"];
  for (const p of c.phases) {
    for (const s of c.sources) {
      const f = p.sources[s.name];
      const from = f.realSources.length === 0 ? "" : ` (${f.realSources[0][0]})`;
      lines.push(
        `| ${[
          p.phase,
          p.expect.join(" or "),
          pct1(p.truth.utilMean),
          pct1(p.truth.smMean),
          s.name,
          secs(f.seconds),
          pct0(f.share),
          f.realMean === null ? "n/a" : `${pct1(f.realMean)}${from}`,
          pct1(f.smMean),
          f.states.length === 0 ? "no samples" : f.states.map(([k, n]) => `${k} ${n}`).join(", "),
        ].join(" | ")} |`,
      );
    }
  }
  for (const s of c.sources) {
    const o = c.overall[s.name];
    const diff =
      o.realVsTruthSmPp === null ? "" : `; real vs truth SM: ${o.realVsTruthSmPp.toFixed(1)} pp apart on average`;
    lines.push(
      `| all phases | | | | ${s.name} | ${secs(o.seconds)} | ${pct0(o.share)} | ${diff ? diff.slice(2) : "n/a"} | | |`,
    );
  }
  const key = [
    "",
    `GPU ${c.gpu}. Each phase counts from ${c.settleS} s after it began to its end; Seconds are the samples in that span ` +
      `times the agent's interval. In expected state: the share of those samples whose state is one the load should give. ` +
      "Real: trueidle's real utilization, averaged over the valid samples, with where it came from (sm_active: GPM through NVML; " +
      "power: the power estimate). Truth: NVML read directly beside the agents (truth.py; SM active is GPM SM activity, " +
      "n/a where the GPU or the runtime offers no GPM). SM active (agent): what the source itself read (nvidia-smi cannot).",
  ];
  return `${lines.join("\n")}\n${key.join("\n")}\n`;
}

function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  const phases = readJsonLines(o.phases).filter(
    (p) => typeof p.phase === "string" && Number.isFinite(p.start_ms) && Number.isFinite(p.end_ms),
  );
  if (phases.length === 0) {
    process.stderr.write(`compare.mjs: no phases in ${o.phases}; the loads did not run.\n`);
    process.exit(1);
  }
  const c = compare({
    phases,
    truth: readTruth(o.truth),
    sources: o.sources.map((s) => ({ name: s.name, lines: readJsonLines(s.file) })),
    gpu: o.gpu,
    settleS: o.settleS,
  });
  for (const p of c.phases) {
    if (p.countedS <= 0)
      process.stderr.write(`compare.mjs: phase ${p.phase} is no longer than --settle-s; nothing of it counts.\n`);
  }
  if (o.json) writeFileSync(o.json, `${JSON.stringify(c, null, 2)}\n`);
  process.stdout.write(renderMarkdown(c));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
