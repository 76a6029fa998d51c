import { NsError } from '@nullspace/runtime';
import { httpStatusFor, isPublicCode } from '../errors.js';

/**
 * Errors on the E2B surface, in E2B's body shapes (the native API's `{error: {code, message}}` is
 * never produced here, and these shapes never leave this module):
 * - control plane and envd HTTP (`/files`): `{"code": <HTTP status>, "message"}`; the SDK branches on
 *   the body's `code` (404 -> not found, 409 -> already paused) and on 401/429/503;
 * - Connect RPCs: `{"code": "<connect code>", "message"}` (unary: with the code's HTTP status;
 *   streams: in the end-of-stream envelope).
 */

/** An error answered as is on the E2B surface (status and message chosen by the caller). */
export class E2bError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Extra fields of the body (E2B's proxy adds `sandboxId`). */
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** The status of a native error code on E2B's surface (its own map, so that /v1 stays untouched). */
function statusOf(err: NsError): number {
  const code = isPublicCode(err.code) ? err.code : 'internal';
  switch (code) {
    case 'template_not_found':
    case 'snapshot_not_found':
    case 'sandbox_not_found':
      return 404;
    // bad input of any kind is a 400 to E2B's clients (they raise InvalidArgumentError from it)
    case 'is_a_directory':
    case 'not_a_directory':
    case 'invalid_path':
    case 'validation_failed':
      return 400;
    default:
      return httpStatusFor(code);
  }
}

/** `{code, message}` and status for the control plane and envd HTTP routes. */
export function httpError(err: unknown): { status: number; body: Record<string, unknown> } {
  if (err instanceof E2bError) return { status: err.status, body: { ...err.extra, code: err.status, message: err.message } };
  if (err instanceof NsError) {
    const status = statusOf(err);
    return { status, body: { code: status, message: status >= 500 && !isPublicCode(err.code) ? `internal error: ${err.message}` : err.message } };
  }
  const fe = err as { statusCode?: number; message?: string };
  if (err instanceof SyntaxError) return { status: 400, body: { code: 400, message: `malformed JSON: ${err.message}` } };
  if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) return { status: fe.statusCode, body: { code: fe.statusCode, message: fe.message ?? 'bad request' } };
  return { status: 500, body: { code: 500, message: err instanceof Error ? err.message : String(err) } };
}

export type ConnectCode =
  | 'canceled'
  | 'unknown'
  | 'invalid_argument'
  | 'deadline_exceeded'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'resource_exhausted'
  | 'failed_precondition'
  | 'aborted'
  | 'out_of_range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data_loss'
  | 'unauthenticated';

/** The HTTP status of a Connect error code (connectrpc.com/docs/protocol: error codes). */
export const CONNECT_STATUS: Record<ConnectCode, number> = {
  canceled: 499,
  unknown: 500,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  out_of_range: 400,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  data_loss: 500,
  unauthenticated: 401,
};

/** A Connect error with its code (thrown by the RPC handlers, answered by connect.ts). */
export class ConnectError extends Error {
  constructor(
    readonly code: ConnectCode,
    message: string,
  ) {
    super(message);
  }
}

/** The Connect code of any error (nullspace's codes mapped the way envd reports the same failures). */
export function connectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof E2bError) {
    const mapped: ConnectCode = err.status === 401 ? 'unauthenticated' : err.status === 404 ? 'not_found' : err.status === 502 ? 'unavailable' : err.status === 501 ? 'unimplemented' : err.status < 500 ? 'invalid_argument' : 'internal';
    return new ConnectError(mapped, err.message);
  }
  if (err instanceof NsError) {
    const byCode: Record<string, ConnectCode> = {
      file_not_found: 'not_found',
      process_not_found: 'not_found',
      sandbox_not_found: 'not_found',
      already_exists: 'already_exists',
      invalid_path: 'invalid_argument',
      bad_request: 'invalid_argument',
      validation_failed: 'invalid_argument',
      not_a_directory: 'invalid_argument',
      is_a_directory: 'invalid_argument',
      not_empty: 'failed_precondition',
      process_not_running: 'failed_precondition',
      permission_denied: 'permission_denied',
      unauthorized: 'unauthenticated',
      sandbox_not_running: 'unavailable',
      agent_unavailable: 'unavailable',
      shutting_down: 'unavailable',
      no_space: 'resource_exhausted',
      payload_too_large: 'resource_exhausted',
    };
    return new ConnectError(byCode[err.code] ?? 'internal', err.message);
  }
  if (err instanceof SyntaxError) return new ConnectError('invalid_argument', `malformed JSON: ${err.message}`);
  return new ConnectError('internal', err instanceof Error ? err.message : String(err));
}

/** What a feature that nullspace does not have on this surface yet answers (docs/api.md lists them). */
export function notSupported(what: string): E2bError {
  return new E2bError(501, `${what} is not supported by nullspace's E2B-compatible API yet (see docs/api.md, "E2B compatibility")`);
}
