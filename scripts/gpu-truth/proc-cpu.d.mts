/** Types of proc-cpu.mjs, for the TypeScript that imports it (bench/agent-process.ts). */
export interface ProcessCpu {
  pid: number;
  alive: boolean;
  /** CPU of the process's own threads, ns. */
  selfNs: number;
  /** CPU of its descendants, live and reaped, ns. */
  childrenNs: number;
  /** Thread ids now. */
  threads: string[];
  /** False where a figure came from clock ticks (10 ms) rather than schedstat. */
  precise: boolean;
  rssKiB?: number | undefined;
  hwmKiB?: number | undefined;
}
export function readProcessCpu(pids: readonly number[]): ProcessCpu[];
