/**
 * Splits a byte stream into lines as chunks arrive: a line cut across two chunks is held
 * until its end comes. A partial line longer than `maxLineChars` is cut there and handed
 * out, so a child that never prints a newline cannot grow memory without bound.
 */
export class LineBuffer {
  private rest = "";

  constructor(private readonly maxLineChars = 1 << 20) {}

  /** Complete lines in `chunk` (and what was held before), without their line endings. */
  push(chunk: string): string[] {
    const text = this.rest + chunk;
    const parts = text.split("\n");
    this.rest = parts.pop() ?? "";
    const lines = parts.map(stripCr);
    if (this.rest.length > this.maxLineChars) {
      lines.push(this.rest.slice(0, this.maxLineChars));
      this.rest = "";
    }
    return lines;
  }

  /** The last line when the stream ended without a newline. */
  flush(): string[] {
    const rest = this.rest;
    this.rest = "";
    return rest === "" ? [] : [stripCr(rest)];
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}
