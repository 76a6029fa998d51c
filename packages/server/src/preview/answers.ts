import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { NsError } from '@nullspace/runtime';
import { httpStatusFor, isPublicCode } from '../errors.js';

/**
 * The proxy's own answers (it could not reach the sandbox's server): the API's JSON error body
 * for API clients, a small page for browsers (an Accept with text/html), with the same stable code.
 */

const TITLES: Record<string, string> = {
  sandbox_not_found: 'No such sandbox',
  sandbox_ended: 'This sandbox has ended',
  sandbox_paused: 'This sandbox is hibernated',
  sandbox_not_running: 'This sandbox is not running',
  port_not_open: 'Nothing is listening on this port',
  bad_gateway: 'The server in the sandbox did not answer',
  traffic_token_missing: 'Access token required',
  traffic_token_invalid: 'Access denied',
  signed_url_expired: 'This link has expired',
};

function escape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface Answer {
  status: number;
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export function answerFor(err: unknown): Answer {
  if (err instanceof NsError) {
    const code = isPublicCode(err.code) ? err.code : 'internal';
    const details = Object.keys(err.details).length ? err.details : undefined;
    return { status: httpStatusFor(code), code, message: err.message, ...(details ? { details } : {}) };
  }
  return { status: 500, code: 'internal', message: err instanceof Error ? err.message : String(err) };
}

function render(req: IncomingMessage, a: Answer): { type: string; body: string } {
  const html = (req.headers.accept ?? '').includes('text/html');
  if (!html) {
    return { type: 'application/json', body: JSON.stringify({ error: { code: a.code, message: a.message, ...(a.details ? { details: a.details } : {}) } }) };
  }
  const title = TITLES[a.code] ?? 'Error';
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escape(title)} (${a.status})</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}h1{font-size:1.4rem}code{background:#f2f2f2;padding:.1rem .3rem;border-radius:3px}.c{color:#777;font-size:.9rem}</style>
</head><body><h1>${escape(title)}</h1><p>${escape(a.message)}</p><p class="c">nullspace · ${a.status} · <code>${escape(a.code)}</code></p></body></html>
`;
  return { type: 'text/html; charset=utf-8', body };
}

/** Answers `err` on a response that has not started; one that has is cut (the client sees a broken response). */
export function sendError(req: IncomingMessage, res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const a = answerFor(err);
  const { type, body } = render(req, a);
  res.writeHead(a.status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** Answers `err` on the raw socket of an upgrade request, then closes it. */
export function sendUpgradeError(req: IncomingMessage, socket: Duplex, err: unknown): void {
  if (socket.destroyed) return;
  const a = answerFor(err);
  const { type, body } = render(req, a);
  socket.end(
    `HTTP/1.1 ${a.status} ${a.code}\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** A redirect (a signed URL's clean URL, with its cookie). */
export function sendRedirect(res: ServerResponse, location: string, cookie: string): void {
  res.writeHead(302, { location, 'set-cookie': cookie, 'content-length': 0, 'cache-control': 'no-store' });
  res.end();
}
