/**
 * The load generator's /metrics scrape, in a worker thread of its own: at 50,000 GPUs the
 * exposition is about 190 MiB of text, and gunzipping and scanning it on the generator's
 * event loop held that loop for seconds, which showed as late acks of the collector's
 * that were only late in being read. Here it costs the generator's hosts nothing.
 *
 * `scrapeInWorker(url, names)` resolves to the time to the last byte, the bytes on the
 * wire and decoded, whether it was gzip, the sum of the samples of each of `names`, and the
 * CPU the worker thread spent (from /proc/thread-self, so the generator can leave it out of
 * its own CPU). Plain JavaScript, so the worker needs no TypeScript loader.
 */
import { readFileSync } from "node:fs";
import * as http from "node:http";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { gunzipSync } from "node:zlib";

/** Sum of the unlabelled or labelled samples of `name` in an exposition, without parsing all of it. */
export function metricSum(text, name) {
  let sum;
  for (let at = text.indexOf(name); at >= 0; at = text.indexOf(name, at + name.length)) {
    if (at > 0 && text[at - 1] !== "\n") continue;
    const next = text[at + name.length];
    if (next !== " " && next !== "{") continue;
    const eol = text.indexOf("\n", at);
    const line = text.slice(at, eol < 0 ? undefined : eol);
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(value)) sum = (sum ?? 0) + value;
  }
  return sum;
}

/** CPU time of the calling thread, µs (Linux: schedstat in ns, else stat's clock ticks; 0 where neither reads). */
function threadCpuUs() {
  try {
    return Number(readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[0]) / 1_000;
  } catch {
    try {
      const stat = readFileSync("/proc/thread-self/stat", "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // utime and stime are fields 14 and 15 of stat, in clock ticks (100 a second on Linux).
      return (Number(f[11]) + Number(f[12])) * 10_000;
    } catch {
      return 0;
    }
  }
}

function get(url) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = http.get(url, { headers: { "accept-encoding": "gzip" }, timeout: 120_000 }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${url} answered ${res.statusCode}`));
        else
          resolve({
            ms: performance.now() - started,
            wire: Buffer.concat(chunks),
            gzip: res.headers["content-encoding"] === "gzip",
          });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url} took over 120 s`)));
    req.on("error", reject);
  });
}

if (!isMainThread && workerData?.loadgenScrape) {
  const { url, names } = workerData;
  const cpu0 = threadCpuUs();
  get(url)
    .then(({ ms, wire, gzip }) => {
      const body = gzip ? gunzipSync(wire) : wire;
      const text = body.toString("utf8");
      const sums = Object.fromEntries(names.map((n) => [n, metricSum(text, n)]));
      parentPort.postMessage({
        ok: true,
        ms,
        wireBytes: wire.length,
        bytes: body.length,
        gzip,
        sums,
        cpuUs: threadCpuUs() - cpu0,
      });
    })
    .catch((err) =>
      parentPort.postMessage({
        ok: false,
        error: err instanceof Error ? err.message : String(err),
        cpuUs: threadCpuUs() - cpu0,
      }),
    );
}

/** One scrape in a fresh worker thread; rejects with the scrape's error (its CPU is in `err.cpuUs`). */
export function scrapeInWorker(url, names) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), {
      workerData: { loadgenScrape: true, url, names },
      execArgv: [],
    });
    worker.once("message", (m) => {
      if (m.ok) resolve(m);
      else reject(Object.assign(new Error(m.error), { cpuUs: m.cpuUs }));
      void worker.terminate();
    });
    worker.once("error", reject);
  });
}
