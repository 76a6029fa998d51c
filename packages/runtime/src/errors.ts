/**
 * Errors of every layer carry a stable `code` (part of the public API: it reaches HTTP clients and
 * SDK users unchanged) and a message that accumulates the context of each layer it crossed
 * ("creating sandbox sbx_1: restoring snapshot: qmp migrate-incoming: ...").
 * The HTTP status for a code is decided in one place, in the server (`httpStatusFor`).
 */
export type ErrorDetails = Record<string, unknown>;

export class NsError extends Error {
  readonly code: string;
  readonly details: ErrorDetails;

  constructor(code: string, message: string, opts: { cause?: unknown; details?: ErrorDetails } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NsError';
    this.code = code;
    this.details = opts.details ?? {};
  }
}

/** Adds a layer's context to an error, keeping its code (or `fallbackCode` for foreign errors). */
export function wrapError(err: unknown, context: string, fallbackCode = 'internal'): NsError {
  if (err instanceof NsError) {
    const wrapped = new NsError(err.code, `${context}: ${err.message}`, { cause: err, details: err.details });
    return wrapped;
  }
  const message = err instanceof Error ? err.message : String(err);
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  const code = errno === 'ENOSPC' || errno === 'EDQUOT' ? 'no_space' : fallbackCode;
  return new NsError(code, `${context}: ${message}`, { cause: err });
}

/** Runs `fn`, wrapping whatever it throws with `context`. */
export async function withContext<T>(context: string, fn: () => Promise<T>, fallbackCode?: string): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw wrapError(err, context, fallbackCode);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
