/**
 * Whole-process CPU and memory of running processes, read from /proc: every thread of the
 * process and every descendant, live or already exited. Plain JavaScript for a bare Node, so
 * the GPU kit (scripts/gpu-truth/agent-cpu.mjs) and `npm run bench` (bench/agent-process.ts)
 * measure the same way.
 *
 * * A process's own CPU: the sum of /proc/PID/task/TID/schedstat (nanoseconds on the CPU,
 *   per thread) where the kernel has schedstat; else utime + stime of /proc/PID/stat (clock
 *   ticks, 10 ms). A thread that exits between two readings takes its schedstat time with
 *   it, so `threads` is returned: a caller that sees the set change knows a reading is short.
 * * Children: descendants alive now (their own CPU and their reaped children's), plus the
 *   process's cutime + cstime (descendants that exited and were waited for), in clock ticks.
 */
import { readdirSync, readFileSync } from "node:fs";

/** USER_HZ: the unit of /proc/PID/stat times on every Linux architecture Node runs on. */
const TICK_NS = 10_000_000;

function read(path) {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses). */
function statFields(pid) {
  const text = read(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  return text
    .slice(text.lastIndexOf(")") + 2)
    .trim()
    .split(" ");
}

/** stat field n (1-based, as proc(5) numbers them) as a number. */
const field = (f, n) => Number(f[n - 3]);

/** Own CPU ns of a process (all its threads) and the thread ids it has now. */
function ownCpu(pid) {
  const f = statFields(pid);
  if (f === undefined) return undefined;
  const ticksNs = (field(f, 14) + field(f, 15)) * TICK_NS;
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return {
      ns: ticksNs,
      reapedNs: (field(f, 16) + field(f, 17)) * TICK_NS,
      ppid: field(f, 4),
      threads: [],
      precise: false,
    };
  }
  let ns = 0;
  let precise = true;
  for (const tid of tids) {
    const s = read(`/proc/${pid}/task/${tid}/schedstat`);
    if (s === undefined) {
      precise = false;
      break;
    }
    ns += Number(s.split(" ")[0]);
  }
  return {
    ns: precise ? ns : ticksNs,
    reapedNs: (field(f, 16) + field(f, 17)) * TICK_NS,
    ppid: field(f, 4),
    threads: tids.sort(),
    precise,
  };
}

/** Parent pid of every process on the machine. */
function parents() {
  const out = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(name);
    if (f !== undefined) out.set(Number(name), field(f, 4));
  }
  return out;
}

/** Every live descendant of `pid`. */
function descendants(pid, parentOf) {
  const children = new Map();
  for (const [p, pp] of parentOf) {
    if (!children.has(pp)) children.set(pp, []);
    children.get(pp).push(p);
  }
  const out = [];
  const todo = [...(children.get(pid) ?? [])];
  while (todo.length > 0) {
    const p = todo.pop();
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

function kib(status, key) {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status ?? "");
  return m ? Number(m[1]) : undefined;
}

/**
 * One reading of each pid: `{ pid, alive, selfNs, childrenNs, threads, precise, rssKiB, hwmKiB }`.
 * `childrenNs` counts live descendants and reaped ones; `precise` is false where a figure
 * came from clock ticks rather than schedstat.
 */
export function readProcessCpu(pids) {
  const parentOf = parents();
  return pids.map((pid) => {
    const own = ownCpu(pid);
    if (own === undefined) return { pid, alive: false, selfNs: 0, childrenNs: 0, threads: [], precise: false };
    let childrenNs = own.reapedNs;
    let precise = own.precise;
    for (const d of descendants(pid, parentOf)) {
      const c = ownCpu(d);
      if (c === undefined) continue;
      // A live child's reaped children are in its cutime, not yet in ours.
      childrenNs += c.ns + c.reapedNs;
      precise &&= c.precise;
    }
    const status = read(`/proc/${pid}/status`);
    return {
      pid,
      alive: true,
      selfNs: own.ns,
      childrenNs,
      threads: own.threads,
      precise,
      rssKiB: kib(status, "VmRSS"),
      hwmKiB: kib(status, "VmHWM"),
    };
  });
}
