export interface WorkerScrape {
  /** Time to the last byte, ms. */
  ms: number;
  wireBytes: number;
  bytes: number;
  gzip: boolean;
  /** The sum of each name's samples; undefined where the exposition has none. */
  sums: Record<string, number | undefined>;
  /** CPU the worker thread spent, µs. */
  cpuUs: number;
}
export function metricSum(text: string, name: string): number | undefined;
export function scrapeInWorker(url: string, names: readonly string[]): Promise<WorkerScrape>;
