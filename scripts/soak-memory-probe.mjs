/**
 * Preloaded into the collector by `npm run soak` (NODE_OPTIONS=--import): prints the
 * process's memory use on stderr as one JSON line every SOAK_PROBE_EVERY_MS (default
 * 5000), so the soak can follow the collector's heap as well as its RSS. The timer is
 * unref()ed: it never keeps the collector alive.
 */
const everyMs = Number(process.env.SOAK_PROBE_EVERY_MS ?? 5000);
const timer = setInterval(() => {
  const m = process.memoryUsage();
  process.stderr.write(
    `${JSON.stringify({ soak_memory: { rss: m.rss, heap_used: m.heapUsed, heap_total: m.heapTotal, external: m.external } })}\n`,
  );
}, everyMs);
timer.unref();
