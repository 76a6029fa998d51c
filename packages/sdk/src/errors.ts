/**
 * Every error of the SDK is a SandboxError with the server's stable `code` (or an SDK code such as
 * `request_timeout`), the HTTP `status` when there was one, and the server's `details`.
 * `errorFromResponse` is the one place that maps an API error to a class.
 */
export class SandboxError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  readonly details: Record<string, unknown>;
  constructor(message: string, opts: { code?: string; status?: number; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code ?? 'sandbox_error';
    this.status = opts.status;
    this.details = opts.details ?? {};
  }
}

/** 401: no or wrong API key. */
export class AuthenticationError extends SandboxError {}
/** 400: a request field is malformed. */
export class InvalidArgumentError extends SandboxError {}
/** 404 of any kind. */
export class NotFoundError extends SandboxError {}
export class SandboxNotFoundError extends NotFoundError {}
export class TemplateNotFoundError extends NotFoundError {}
export class FileNotFoundError extends NotFoundError {}
export class ProcessNotFoundError extends NotFoundError {}
export class SnapshotNotFoundError extends NotFoundError {}
export class VolumeNotFoundError extends NotFoundError {}
/** 409: the sandbox (or target) is not in a state that allows the operation. */
export class ConflictError extends SandboxError {}
export class SandboxNotRunningError extends ConflictError {}
/** 403 */
export class PermissionDeniedError extends SandboxError {}
/** 413 */
export class PayloadTooLargeError extends SandboxError {}
/** 429 / 503: the server refuses more sandboxes (admission control) or is unavailable. */
export class RateLimitError extends SandboxError {}
export class ServiceUnavailableError extends SandboxError {}
/** 507: no space left (host data disk or the sandbox's disk). */
export class NotEnoughSpaceError extends SandboxError {}
/** A request or a command ran out of time. For commands, `result` holds the output so far. */
export class TimeoutError extends SandboxError {
  result?: unknown;
}

/**
 * A template build that failed after it started (a step failed, the ready check timed out, the VM
 * failed): `code` from the build's error event (`template_build_failed`, `template_ready_timeout`,
 * ...), the step it failed at (1-based; null when no step was running), the failed command's exit
 * code, and the end of its output (the server keeps the last 4 KiB).
 */
export class TemplateBuildError extends SandboxError {
  readonly step: number | null;
  readonly exitCode: number | null;
  readonly output: string;
  constructor(message: string, opts: { code?: string; step?: number | null; exitCode?: number | null; output?: string; details?: Record<string, unknown> } = {}) {
    super(message, { code: opts.code ?? 'template_build_failed', ...(opts.details ? { details: opts.details } : {}) });
    this.step = opts.step ?? null;
    this.exitCode = opts.exitCode ?? null;
    this.output = opts.output ?? '';
  }
}

const BY_CODE: Record<string, typeof SandboxError> = {
  sandbox_not_found: SandboxNotFoundError,
  template_not_found: TemplateNotFoundError,
  file_not_found: FileNotFoundError,
  process_not_found: ProcessNotFoundError,
  snapshot_not_found: SnapshotNotFoundError,
  volume_not_found: VolumeNotFoundError,
  sandbox_not_running: SandboxNotRunningError,
};

const BY_STATUS: Record<number, typeof SandboxError> = {
  400: InvalidArgumentError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  429: RateLimitError,
  503: ServiceUnavailableError,
  507: NotEnoughSpaceError,
};

export function errorFromResponse(status: number, body: unknown): SandboxError {
  const e = (body as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
  const code = e?.code ?? `http_${status}`;
  const Cls = BY_CODE[code] ?? BY_STATUS[status] ?? SandboxError;
  return new Cls(e?.message ?? `HTTP ${status}`, { code, status, details: e?.details ?? {} });
}
