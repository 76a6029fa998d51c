import fs from 'node:fs';
import path from 'node:path';
import { errorFromResponse, SandboxError, TimeoutError } from './errors.js';

export const DEFAULT_API_URL = 'http://127.0.0.1:7070';
export const DEFAULT_DATA_DIR = '/var/lib/nullspace/data';
export const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;

export interface ConnectionOpts {
  /** Server URL; default NULLSPACE_API_URL, else http://127.0.0.1:7070. */
  apiUrl?: string;
  /** API key; default NULLSPACE_API_KEY, else the key in the local server's data dir. */
  apiKey?: string;
  /**
   * Limit for each API request until the response starts, and then for each wait for more of its
   * body (a large file keeps flowing however long it takes). Command output streams and uploads
   * given as a stream or larger than 8 MiB have no limit. Default 120000.
   */
  requestTimeoutMs?: number;
}

/** Resolves where the server is and how to authenticate, once per client. */
export class ConnectionConfig {
  readonly apiUrl: string;
  declare readonly apiKey: string;
  readonly requestTimeoutMs: number;

  constructor(opts: ConnectionOpts = {}) {
    // (an empty variable counts as unset)
    this.apiUrl = (opts.apiUrl || process.env.NULLSPACE_API_URL || DEFAULT_API_URL).replace(/\/+$/, '');
    const key = opts.apiKey || process.env.NULLSPACE_API_KEY || readLocalKey();
    if (!key) {
      throw new SandboxError(
        `no API key: set NULLSPACE_API_KEY or pass apiKey (the local server keeps its key in ${localKeyFile()})`,
        { code: 'missing_api_key' },
      );
    }
    // not enumerable: logging or serializing an SDK object never prints the key
    Object.defineProperty(this, 'apiKey', { value: key, enumerable: false, writable: false });
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  }
}

function localKeyFile(): string {
  return path.join(process.env.NULLSPACE_DATA_DIR ?? DEFAULT_DATA_DIR, 'api-key');
}

function readLocalKey(): string | undefined {
  try {
    return fs.readFileSync(localKeyFile(), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export interface RequestOpts {
  method?: string;
  query?: Record<string, string | number | boolean | string[] | undefined>;
  json?: unknown;
  body?: RequestInit["body"] | ReadableStream<Uint8Array>;
  headers?: Record<string, string>;
  /** false: no request timeout (long streams). */
  timeoutMs?: number | false;
  /** Aborts the request, or the reading of its response (a stream the caller stops following). */
  signal?: AbortSignal;
}

/** Thin HTTP client of the nullspace API: auth, timeouts, errors mapped to SandboxError classes. */
export class ApiClient {
  constructor(readonly config: ConnectionConfig) {}

  url(p: string, query?: RequestOpts['query']): string {
    const u = new URL(this.config.apiUrl + p);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const item of v) u.searchParams.append(k, item);
      else u.searchParams.set(k, String(v));
    }
    return u.toString();
  }

  async request(p: string, opts: RequestOpts = {}): Promise<Response> {
    const timeoutMs = opts.timeoutMs === undefined ? this.config.requestTimeoutMs : opts.timeoutMs;
    const headers: Record<string, string> = { authorization: `Bearer ${this.config.apiKey}`, ...opts.headers };
    let body = opts.body as RequestInit["body"] | undefined;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    }
    const abort = new AbortController();
    opts.signal?.addEventListener('abort', () => abort.abort(), { once: true });
    const init: RequestInit & { duplex?: 'half' } = { method: opts.method ?? 'GET', headers, body, signal: abort.signal };
    if (body instanceof ReadableStream) init.duplex = 'half';
    const what = `${init.method} ${p}`;
    const failure = (err: unknown): SandboxError => {
      if (err instanceof SandboxError) return err;
      const e = err as Error & { cause?: { code?: string } };
      if (abort.signal.aborted || e.name === 'TimeoutError' || e.name === 'AbortError') {
        return new TimeoutError(`request ${what}: no answer from the server within ${String(timeoutMs)} ms`, { code: 'request_timeout', cause: err });
      }
      return new SandboxError(`request ${what}: the connection to the nullspace server at ${this.config.apiUrl} failed: ${e.cause?.code ?? e.message}`, {
        code: 'connection_failed',
        cause: err,
      });
    };
    let res: Response;
    const timer = timeoutMs === false ? undefined : setTimeout(() => abort.abort(), timeoutMs);
    try {
      res = await fetch(this.url(p, opts.query), init);
    } catch (err) {
      throw failure(err);
    } finally {
      clearTimeout(timer);
    }
    res = guardBody(res, timeoutMs, abort, failure);
    if (!res.ok) {
      let parsed: unknown;
      try {
        parsed = await res.json();
      } catch {
        parsed = undefined;
      }
      throw errorFromResponse(res.status, parsed);
    }
    return res;
  }

  async json<T>(p: string, opts: RequestOpts = {}): Promise<T> {
    const res = await this.request(p, opts);
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new SandboxError(`${p}: the server's answer is not JSON: ${text.slice(0, 100)}`, { code: 'invalid_response', cause: err });
    }
  }
}

/**
 * The response with a body whose every wait for data is limited to `timeoutMs` (a slow but steady
 * transfer goes on) and whose failures (connection cut, timeout) are SandboxErrors.
 */
function guardBody(res: Response, timeoutMs: number | false, abort: AbortController, failure: (err: unknown) => SandboxError): Response {
  if (!res.body) return res;
  const reader = res.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const timer = timeoutMs === false ? undefined : setTimeout(() => abort.abort(), timeoutMs);
      try {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        controller.error(failure(err));
      } finally {
        clearTimeout(timer);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** Reads an NDJSON response line by line. */
export async function* ndjson(res: Response): AsyncGenerator<Record<string, unknown>> {
  if (!res.body) return;
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) yield parseLine(line);
    }
  }
  buf += decoder.decode();
  if (buf.trim()) yield parseLine(buf.trim());
}

function parseLine(line: string): Record<string, unknown> {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch (err) {
    throw new SandboxError(`the server sent a line that is not JSON: ${line.slice(0, 100)}`, { code: 'invalid_response', cause: err });
  }
}
