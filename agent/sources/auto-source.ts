/**
 * `--source auto`, the default: NVML when the library loads and initialises, else
 * nvidia-smi. Says which it chose and why, at start (a log line) and in `describe()`
 * (shown by `agent --once`).
 */
import type { GpuReading } from "../../common/types.js";
import type { Logger } from "../../common/log.js";
import { TrueidleError, errorMessage } from "../../common/errors.js";
import type { GpuSource, SourceStats } from "./source.js";

export class AutoSource implements GpuSource {
  private chosen: GpuSource | undefined;
  private reason = "";

  constructor(
    private readonly nvml: () => GpuSource,
    private readonly fallback: () => GpuSource,
    private readonly logger: Logger,
  ) {}

  get name(): string {
    return this.chosen?.name ?? "auto";
  }

  describe(): string {
    const what = this.chosen?.describe?.() ?? this.name;
    return `${what} — chosen by --source auto: ${this.reason}`;
  }

  hungCalls(): number {
    return this.chosen?.hungCalls?.() ?? 0;
  }

  async start(signal?: AbortSignal): Promise<void> {
    if (this.chosen) return;
    const nvml = this.nvml();
    try {
      await nvml.start(signal);
      this.chosen = nvml;
      this.reason = "the NVML library loaded and initialised";
      this.logger.info("Source chosen: NVML.", { source: "nvml", why: this.reason });
      return;
    } catch (err) {
      if (!(err instanceof TrueidleError) || err.code !== "nvml_unavailable") throw err;
      this.reason = `NVML cannot be used (${errorMessage(err)}), so nvidia-smi`;
    }
    const smi = this.fallback();
    this.chosen = smi;
    this.logger.info("Source chosen: nvidia-smi, as NVML cannot be used here.", {
      source: "nvidia-smi",
      why: this.reason,
    });
    await smi.start(signal);
  }

  sample(nowMs: number): GpuReading[] {
    return this.chosen?.sample(nowMs) ?? [];
  }

  async stop(): Promise<void> {
    await this.chosen?.stop();
  }

  stats(): SourceStats {
    return this.chosen?.stats() ?? { restarts: 0, parseErrors: 0 };
  }
}
