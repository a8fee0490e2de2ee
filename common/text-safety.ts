/**
 * The characters no name trueidle shows or stores may hold, in one place: host names, machine
 * ids, agent versions, sources, label values, GPU uuids, models and driver versions. The agent
 * refuses them in its own host name and `--label` values; the collector in everything an agent
 * sends (collector/validate.ts).
 *
 * - C0 controls, DEL and C1 controls (U+0000–U+001F, U+007F–U+009F): a newline ends a line of
 *   line protocol, exposition text or a log; ESC sequences recolour or rewrite a terminal;
 *   U+0085 is a newline to some readers.
 * - Bidi formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069): they
 *   reorder the text around them, so `gpu-a01\u202E10a` shows as another host's name in a
 *   dashboard, a report or a terminal.
 * - Line and paragraph separators (U+2028, U+2029): line breaks to JavaScript and many viewers.
 */

// eslint-disable-next-line no-control-regex
export const UNSAFE_TEXT_RE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;
// eslint-disable-next-line no-control-regex
const UNSAFE_TEXT_GLOBAL_RE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

/** `U+202E` for a character. */
export function codePointName(char: string): string {
  return `U+${(char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * Why `value` cannot be used as a name, completing a sentence that starts with the field
 * ("hello.host.hostname holds control characters (U+000A)"), or undefined when it can.
 * Allocates nothing for an acceptable value.
 */
export function unsafeTextProblem(value: string): string | undefined {
  const m = UNSAFE_TEXT_RE.exec(value);
  if (m === null) return undefined;
  const c = m[0].charCodeAt(0);
  const code = codePointName(m[0]);
  if (c <= 0x9f) return `holds control characters (${code})`;
  if (c === 0x2028 || c === 0x2029)
    return `holds a line or paragraph separator (${code}), which breaks a line in logs and text exports`;
  return `holds a bidi control character (${code}); bidi control characters can make a name read differently from what it is`;
}

/**
 * `value` in double quotes for a message, every unsafe character written as `\uXXXX`, so that
 * quoting a refused name can neither break the log line nor reorder it.
 */
export function quoteText(value: string): string {
  return `"${escapeUnsafeText(value.replace(/["\\]/g, "\\$&"))}"`;
}

/** `value` with every unsafe character written as `\uXXXX`, and nothing else changed. */
export function escapeUnsafeText(value: string): string {
  return value.replace(UNSAFE_TEXT_GLOBAL_RE, (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, "0")}`);
}
