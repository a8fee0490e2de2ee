/** InfluxQL quoting, so that no name or value (a tag key, a database) can end its quotes. */

/** An identifier in double quotes, `"` and `\` escaped. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** A string literal in single quotes, `'` and `\` escaped. */
export function quoteString(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}
