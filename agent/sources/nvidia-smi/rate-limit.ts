/**
 * At most `limit` log lines per window, so a child that floods stderr cannot flood the
 * log. `take` answers "drop", or how many lines were dropped since the last one let
 * through (so that line can say so).
 */
export class RateLimit {
  private windowStart = Number.NEGATIVE_INFINITY;
  private used = 0;
  private dropped = 0;

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}

  take(nowMs: number): number | "drop" {
    if (nowMs - this.windowStart >= this.windowMs) {
      this.windowStart = nowMs;
      this.used = 0;
    }
    if (this.used >= this.limit) {
      this.dropped++;
      return "drop";
    }
    this.used++;
    const d = this.dropped;
    this.dropped = 0;
    return d;
  }
}
