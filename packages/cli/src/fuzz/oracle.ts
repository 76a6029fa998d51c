/**
 * What every answer must satisfy, and the explicit exceptions: the 5xx codes that report real
 * faults of the host (not of a request), and guest-side defects owned by another branch.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { httpStatusFor, isPublicCode } from '@nullspace/server';
import { errorOf, type FuzzRequest, type FuzzResponse } from './http.js';

export interface Finding {
  /** What went wrong: server_error, hang, no_answer, accepted_invalid, not_404, bad_error_body, unknown_code, status_mismatch, undocumented_code, ... */
  kind: string;
  route: string;
  message: string;
  /** The request, as curl would need it (method, path, body excerpt). */
  request?: string | undefined;
  status?: number | undefined;
  code?: string | undefined;
  /** The run's seed and the round (and fast-check path) that found it: FUZZ_SEED=<seed> repeats the run. */
  seed?: number;
  round?: number | undefined;
  counterexamplePath?: string | undefined;
  /** How often it was seen. */
  count?: number;
  /** Why it is allowed, when it is (see KNOWN_GUEST_DEFECTS). */
  allowed?: string;
}

/**
 * 5xx answers that are not defects: each reports a real fault of the host, which a fuzz run on a
 * shared machine may meet. Everything else at or above 500 is a finding.
 */
export const DOCUMENTED_FAULTS: Record<string, string> = {
  // 503: admission refuses to start a VM while the host's available memory is below its reserve
  // (NULLSPACE_MIN_HOST_AVAILABLE_MIB): a state of the host, which other work on it changes
  insufficient_memory: 'the host is short of memory (admission control)',
  // 507: the data disk is below its free-space reserve (NULLSPACE_MIN_FREE_DISK_MIB)
  no_space: 'the host disk is (nearly) full',
  // 503: the server is closing (only at the end of a run against a server being stopped)
  shutting_down: 'the server is shutting down',
};

/**
 * Known defects owned by other work, seen by this fuzzer and reported as `allowed` rather than as
 * failures while they are being fixed: each entry says whose and why, and goes once that is merged.
 * Empty: the two it held (file reads of devices: a 500 guest_io_error; `input` of a command that
 * ended before it was written: a 500 internal) were fixed by the `defects` branch.
 */
export const KNOWN_GUEST_DEFECTS: Array<{ why: string; match: (f: Finding, req: FuzzRequest | undefined) => boolean }> = [];

/** The guest paths a request names (for entries of KNOWN_GUEST_DEFECTS). */
export function guestPaths(req: FuzzRequest | undefined): string[] {
  const paths = req?.note?.guestPaths;
  return Array.isArray(paths) ? paths.filter((p): p is string => typeof p === 'string') : [];
}

/** The error codes docs/api.md documents (its Errors section). */
export function documentedCodes(file?: string): Set<string> {
  const docs = file ?? fileURLToPath(new URL('../../../../docs/api.md', import.meta.url));
  const text = fs.readFileSync(docs, 'utf8');
  const start = text.indexOf('## Errors');
  const end = text.indexOf('\n## ', start + 1);
  const section = text.slice(start, end < 0 ? undefined : end);
  return new Set([...section.matchAll(/`([a-z][a-z_]*)`/g)].map((m) => m[1] as string));
}

export function describe(req: FuzzRequest): string {
  if (req.raw) return `raw ${JSON.stringify(req.raw.toString('latin1').slice(0, 300))}`;
  const body = req.body ? ` ${JSON.stringify(req.body.toString('utf8').slice(0, 300))}${req.body.length > 300 ? `... (${req.body.length} bytes)` : ''}` : '';
  const ct = req.headers['content-type'] ? ` [content-type: ${req.headers['content-type']}]` : '';
  const auth = req.headers.authorization?.startsWith('Bearer ') ? '' : ` [authorization: ${req.headers.authorization ? 'other' : 'none'}]`;
  return `${req.method} ${req.path.slice(0, 500)}${ct}${auth}${body}`;
}

export interface Judge {
  documented: Set<string>;
  boundMs: number;
}

/** The findings one answer makes. */
export function judge(req: FuzzRequest, res: FuzzResponse, j: Judge): Finding[] {
  const out: Finding[] = [];
  const f = (kind: string, message: string, extra: Partial<Finding> = {}) => out.push({ kind, route: req.route, message, request: describe(req), ...extra });
  if (res.timedOut) {
    f('hang', `no answer within ${j.boundMs} ms`);
    return out;
  }
  if (res.error) {
    f('no_answer', `no answer: ${res.error}`);
    return out;
  }
  const { status } = res;
  const err = errorOf(res);
  const code = err?.code;
  // (an answer to HEAD has no body)
  if (status >= 400 && req.method !== 'HEAD') {
    if (!err) f('bad_error_body', `a ${status} without the {error: {code, message}} body: ${res.body.toString('utf8').slice(0, 200)}`, { status });
    else {
      if (!isPublicCode(err.code)) f('unknown_code', `code "${err.code}" is not in the server's status map (errors.ts)`, { status, code });
      else if (httpStatusFor(err.code) !== status) f('status_mismatch', `code "${err.code}" came with ${status}, the map says ${httpStatusFor(err.code)}`, { status, code });
      if (!j.documented.has(err.code)) f('undocumented_code', `code "${err.code}" is not documented in docs/api.md`, { status, code });
    }
  }
  if (status >= 500 && !(code && DOCUMENTED_FAULTS[code])) f('server_error', `${status} ${code ?? ''}: ${err?.message ?? res.body.toString('utf8').slice(0, 300)}`, { status, code });
  if (req.reject && status < 400) f('accepted_invalid', `${status} for a request that is invalid: ${req.reject}`, { status });
  if (req.unknown && !req.reject && status !== 404 && status < 500) f('not_404', `${status} ${code ?? ''} for an unknown ${req.unknown}: ${err?.message ?? ''}`, { status, code });
  if (status >= 200 && status < 300 && !res.truncated && /json/.test(String(res.headers['content-type'] ?? '')) && !/ndjson/.test(String(res.headers['content-type']))) {
    try {
      JSON.parse(res.body.toString('utf8'));
    } catch {
      f('bad_success_body', `a ${status} whose JSON body does not parse: ${res.body.toString('utf8').slice(0, 200)}`, { status });
    }
  }
  return out;
}

export function signature(f: Finding): string {
  return `${f.kind} ${f.route} ${f.status ?? ''} ${f.code ?? ''}`;
}

export function knownDefect(f: Finding, req: FuzzRequest | undefined): string | undefined {
  return KNOWN_GUEST_DEFECTS.find((k) => k.match(f, req))?.why;
}
