import { NsError, type AgentErrorCode, type PublicErrorCode } from '@nullspace/runtime';

export { NsError };

/**
 * The one map from error code to HTTP status: every public code (PUBLIC_ERROR_CODES in the runtime)
 * has exactly one, and docs/api.md says when each happens. Any other code (an internal one, or an
 * agent's code that was not mapped) reaches a client as a 500 `internal`.
 */
const STATUS: Record<PublicErrorCode, number> = {
  bad_request: 400,
  validation_failed: 400,
  invalid_path: 400,
  invalid_json: 400,
  invalid_dockerfile: 400,
  invalid_build_spec: 400,
  invalid_context: 400,
  unauthorized: 401,
  permission_denied: 403,
  // preview URLs (docs/api.md "Preview URLs")
  traffic_token_missing: 401,
  traffic_token_invalid: 403,
  signed_url_expired: 403,
  sandbox_paused: 409,
  sandbox_ended: 410,
  port_not_open: 502,
  // a preview URL's server in the sandbox closed the connection without a complete answer
  bad_gateway: 502,
  route_not_found: 404,
  sandbox_not_found: 404,
  template_not_found: 404,
  file_not_found: 404,
  process_not_found: 404,
  snapshot_not_found: 404,
  // the request's headers or body did not arrive in time (NULLSPACE_HEADERS_TIMEOUT_MS, NULLSPACE_BODY_TIMEOUT_MS)
  request_timeout: 408,
  sandbox_not_running: 409,
  sandbox_busy: 409,
  already_exists: 409,
  not_a_directory: 409,
  is_a_directory: 409,
  not_empty: 409,
  process_not_running: 409,
  template_incompatible: 409,
  template_build_in_progress: 409,
  template_exists: 409,
  template_build_failed: 422,
  template_ready_timeout: 422,
  snapshot_incompatible: 409,
  snapshot_not_latest: 409,
  snapshot_in_use: 409,
  volume_in_use: 409,
  volume_missing: 409,
  volume_busy: 409,
  volume_not_found: 404,
  webhook_not_found: 404,
  // the fleet (docs/api.md "Hosts")
  host_not_found: 404,
  join_token_invalid: 401,
  host_credential_invalid: 401,
  fleet_disabled: 409,
  no_compatible_host: 409,
  host_unavailable: 503,
  snapshot_unavailable: 503,
  // artifacts between hosts (docs/api.md "Artifacts")
  grant_invalid: 401,
  grant_expired: 401,
  grant_forbidden: 403,
  layer_not_found: 404,
  template_missing: 409,
  artifact_source_unreachable: 502,
  artifact_source_refused: 502,
  artifact_source_failed: 502,
  artifact_digest_mismatch: 502,
  // not http(s), credentials in it, or (unless NULLSPACE_WEBHOOK_ALLOW_PRIVATE) a loopback/private host
  invalid_webhook_url: 400,
  image_not_found: 404,
  // a registry refused the credentials of an image pull (401 is this API's own key)
  registry_auth_failed: 403,
  invalid_volume_name: 400,
  invalid_network_rule: 400,
  network_rules_unsupported: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  headers_too_large: 431,
  image_invalid: 422,
  disk_too_small: 422,
  too_many_sandboxes: 429,
  insufficient_memory: 503,
  agent_unavailable: 503,
  shutting_down: 503,
  no_space: 507,
  registry_unreachable: 502,
  // the guest reported an I/O failure it could not map to a more precise code
  guest_io_error: 500,
  // failures of the host side, reported with their own code
  internal: 500,
  vm_start_failed: 500,
  restore_failed: 500,
  migration_failed: 500,
  qmp_error: 500,
  vm_exited: 500,
  network_isolation_failed: 500,
  snapshot_failed: 500,
  disk_failed: 500,
  // a disk image names a backing or data file it must not (a tampered sandbox overlay)
  disk_invalid: 500,
  artifact_missing: 500,
  timeout: 500,
};

export function httpStatusFor(code: string): number {
  return isPublicCode(code) ? STATUS[code] : 500;
}

/** A code clients may see: everything else is reported as `internal`. */
export function isPublicCode(code: string): code is PublicErrorCode {
  return Object.hasOwn(STATUS, code);
}

/** The code a client sees for `code`. */
export function publicCode(code: string): PublicErrorCode {
  return isPublicCode(code) ? code : 'internal';
}

export function notFound(kind: 'sandbox' | 'template' | 'file' | 'process' | 'snapshot' | 'webhook', id: string): NsError {
  return new NsError(`${kind}_not_found`, `${kind} ${id} not found`, { details: { [kind === 'file' ? 'path' : 'id']: id } });
}

export function badRequest(message: string, details: Record<string, unknown> = {}): NsError {
  return new NsError('bad_request', message, { details });
}

/** Agent error codes (spec/agent.json) as API codes: exhaustive, so a new agent code must be mapped here. */
const FROM_AGENT: Record<AgentErrorCode, PublicErrorCode> = {
  not_found: 'file_not_found',
  bad_request: 'bad_request',
  invalid_path: 'invalid_path',
  already_exists: 'already_exists',
  not_a_directory: 'not_a_directory',
  is_a_directory: 'is_a_directory',
  not_empty: 'not_empty',
  permission_denied: 'permission_denied',
  no_space: 'no_space',
  process_failed: 'bad_request',
  not_running: 'process_not_running',
  volume_busy: 'volume_busy',
  port_not_open: 'port_not_open',
  io_error: 'guest_io_error',
  cancelled: 'agent_unavailable',
  // the server sent an op the agent does not know: a bug of the server
  unknown_op: 'internal',
};

/** An error of an agent call as an API error (the agent client's own `agent_unavailable` passes through). */
export function fromAgentError(err: unknown, subject: string): NsError {
  if (!(err instanceof NsError)) return new NsError('internal', `${subject}: ${String(err)}`);
  const code = err.code === 'agent_unavailable' ? err.code : Object.hasOwn(FROM_AGENT, err.code) ? FROM_AGENT[err.code as AgentErrorCode] : 'internal';
  return new NsError(code, err.message, { cause: err, details: err.details });
}
