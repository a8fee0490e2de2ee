/** The one error type of trueidle: a stable `code` for programs, a sentence for people. */
export type ErrorCode =
  | "bad_config"
  | "bad_input"
  | "bad_scenario"
  | "source_failed"
  | "not_found"
  | "unavailable"
  | "nvml_unavailable"
  | "aborted"
  | "internal";

export class TrueidleError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TrueidleError";
    this.code = code;
  }
}

/** A message for any thrown value, without a stack. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
