import type { AGENT_ERROR_CODES } from './agent/protocol.js';

/**
 * Errors of every layer carry a stable `code` (part of the public API: it reaches HTTP clients and
 * SDK users unchanged) and a message that accumulates the context of each layer it crossed
 * ("creating sandbox sbx_1: restoring snapshot: qmp migrate-incoming: ...").
 *
 * The codes form one closed union, so that a misspelt code is a compile error:
 * - PUBLIC_ERROR_CODES reach HTTP clients as they are: each has exactly one HTTP status (`STATUS` in
 *   packages/server/src/errors.ts) and a line in docs/api.md saying when it happens; the SDKs map them;
 * - INTERNAL_ERROR_CODES are seen only on the host (the CLI prints them, the server logs them): an HTTP
 *   client gets them as 500 `internal`, on purpose;
 * - the guest agent's codes (AGENT_ERROR_CODES, spec/agent.json) are carried by an AgentError (and by
 *   an NsError wrapping one) until the server maps them to public codes (`fromAgentError`).
 * packages/server/test/error-codes.test.ts scans the sources for every code thrown and checks this.
 */
export const PUBLIC_ERROR_CODES = [
  // 400
  'bad_request',
  'validation_failed',
  'invalid_json',
  'invalid_path',
  'invalid_volume_name',
  'invalid_network_rule',
  'invalid_dockerfile',
  'invalid_build_spec',
  'invalid_context',
  'invalid_webhook_url',
  // 401, 403
  'unauthorized',
  'permission_denied',
  // preview URLs: a request without the sandbox's traffic token, a wrong one, an expired signed URL
  // the fleet: a runtime host's join token or credential is wrong
  'join_token_invalid',
  'host_credential_invalid',
  // artifact grants (GET /v1/artifacts/...): malformed or not signed by this server's key, expired;
  // a valid grant for another snapshot
  'grant_invalid',
  'grant_expired',
  'grant_forbidden',
  'traffic_token_missing',
  'traffic_token_invalid',
  'signed_url_expired',
  // 404
  'route_not_found',
  'sandbox_not_found',
  'template_not_found',
  'file_not_found',
  'process_not_found',
  'snapshot_not_found',
  'volume_not_found',
  'webhook_not_found',
  'host_not_found',
  'layer_not_found',
  'image_not_found',
  // 403: a registry refused the credentials (401 is this API's own key)
  'registry_auth_failed',
  // 409
  'sandbox_not_running',
  'sandbox_busy',
  'already_exists',
  'not_a_directory',
  'is_a_directory',
  'not_empty',
  'process_not_running',
  'template_incompatible',
  'snapshot_incompatible',
  'snapshot_not_latest',
  'network_rules_unsupported',
  'snapshot_in_use',
  'volume_in_use',
  'volume_missing',
  'volume_busy',
  'template_build_in_progress',
  'template_exists',
  // a host joins a control plane started without a join token
  'fleet_disabled',
  // a snapshot no ready host of the fleet can restore (each host's mismatches in details.hosts)
  'no_compatible_host',
  // an imported snapshot's disk chain rests on a template disk this host does not have
  'template_missing',
  // 409: a preview URL of a hibernated sandbox that does not wake on requests
  'sandbox_paused',
  // 410: a preview URL of a sandbox that ended
  'sandbox_ended',
  // 408 (the headers or body of a request did not arrive in time), 413, 415, 422, 429, 431
  'request_timeout',
  'payload_too_large',
  'unsupported_media_type',
  'image_invalid',
  'disk_too_small',
  'template_build_failed',
  'template_ready_timeout',
  'too_many_sandboxes',
  'headers_too_large',
  // 502: a registry could not be reached; nothing listens on a preview URL's port in the sandbox
  'registry_unreachable',
  'port_not_open',
  'bad_gateway',
  // an artifact import: the source could not be reached, refused the grant, answered something
  // unusable, or sent a layer whose sha256 is not the manifest's
  'artifact_source_unreachable',
  'artifact_source_refused',
  'artifact_source_failed',
  'artifact_digest_mismatch',
  // 503, 507
  'insufficient_memory',
  'agent_unavailable',
  'shutting_down',
  // a sandbox's or snapshot's host is lost or did not answer; every copy of a snapshot is on lost hosts
  'host_unavailable',
  'snapshot_unavailable',
  'no_space',
  // 500: failures of the guest or the host, reported with their own code
  'internal',
  'guest_io_error',
  'vm_start_failed',
  'restore_failed',
  'migration_failed',
  'qmp_error',
  'vm_exited',
  'network_isolation_failed',
  'snapshot_failed',
  'disk_failed',
  'disk_invalid',
  'artifact_missing',
  'timeout',
] as const;

/** Codes of failures only the host sees (configuration, template builds, host commands, bugs). */
export const INTERNAL_ERROR_CODES = [
  // the server's configuration or host (printed by the CLI at start)
  'invalid_config',
  'qemu_missing',
  'kernel_missing',
  // template and image builds, cache pruning (CLI)
  'invalid_template_name',
  'invalid_recipe',
  'image_build_failed',
  'template_boot_failed',
  'busy',
  // a host command failed and its caller gave no more precise code
  'command_failed',
  // an illegal lifecycle transition: a bug of the server
  'invalid_transition',
  // a host operation was cancelled (streaming a disk chain while the sandbox is killed); the agent
  // has a code of the same name for its streams
  'cancelled',
] as const;

export type PublicErrorCode = (typeof PUBLIC_ERROR_CODES)[number];
export type InternalErrorCode = (typeof INTERNAL_ERROR_CODES)[number];
export type AgentErrorCode = (typeof AGENT_ERROR_CODES)[number];
/** Every code an NsError can carry. */
export type ErrorCode = PublicErrorCode | InternalErrorCode | AgentErrorCode;

export type ErrorDetails = Record<string, unknown>;

export class NsError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; details?: ErrorDetails } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NsError';
    this.code = code;
    this.details = opts.details ?? {};
  }
}

/** Adds a layer's context to an error, keeping its code (or `fallbackCode` for foreign errors). */
export function wrapError(err: unknown, context: string, fallbackCode: ErrorCode = 'internal'): NsError {
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
export async function withContext<T>(context: string, fn: () => Promise<T>, fallbackCode?: ErrorCode): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw wrapError(err, context, fallbackCode);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
