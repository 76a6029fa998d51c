import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { NsError } from '@nullspace/runtime';
import { CONTROL_HEADER } from './credentials.js';
import { jsonCall } from './jsoncall.js';

/** A joined host as the control plane calls it: its listener and the credential it must present. */
export interface HostTarget {
  id: string;
  url: string;
  credential: string;
}

/** Headers never passed on by a proxy (RFC 9110 7.6.1), plus the ones each side sets itself. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

/** The largest JSON answer the control plane reads whole (to show its host id): the API's are small. */
const MAX_JSON = 8 * 1024 * 1024;

const agents = { http: new http.Agent({ keepAlive: true, maxFreeSockets: 32 }), https: new https.Agent({ keepAlive: true, maxFreeSockets: 32 }) };

export function hostUnavailable(host: HostTarget, why: string): NsError {
  return new NsError('host_unavailable', `host ${host.id} did not answer: ${why}`, { details: { hostId: host.id } });
}

function request(host: HostTarget, method: string, path: string, headers: http.OutgoingHttpHeaders): http.ClientRequest {
  const u = new URL(host.url);
  const lib = u.protocol === 'https:' ? https : http;
  return lib.request({
    agent: u.protocol === 'https:' ? agents.https : agents.http,
    host: u.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: u.port || (u.protocol === 'https:' ? 443 : 80),
    method,
    path,
    headers,
  });
}

/** `req`'s headers to pass on, without hop-by-hop ones and without `drop`. */
function passOn(req: IncomingMessage, drop: string[], keepUpgrade = false): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || drop.includes(name)) continue;
    if (HOP.has(name) && !(keepUpgrade && (name === 'connection' || name === 'upgrade'))) continue;
    out[name] = value;
  }
  return out;
}

/**
 * Proxies an API request to `host` (the control plane's credential instead of the client's key),
 * streaming both ways without buffering. A JSON answer (the API's: small) is read whole and given to
 * `json` (to show the host's id, to record what it created) before it is sent on; any other answer
 * is streamed, `json` told only its status (body undefined).
 */
export function forwardApi(
  req: IncomingMessage,
  res: ServerResponse,
  host: HostTarget,
  json: (status: number, body: unknown) => Promise<unknown>,
): Promise<void> {
  const headers = passOn(req, ['authorization']);
  headers.authorization = `Bearer ${host.credential}`;
  return pipe(req, res, request(host, req.method ?? 'GET', req.url ?? '/', headers), host, json);
}

/** Proxies a preview request to `host` as it came (its Host header names the sandbox there). */
export function forwardTraffic(req: IncomingMessage, res: ServerResponse, host: HostTarget): Promise<void> {
  const headers = passOn(req, [CONTROL_HEADER]);
  headers.host = req.headers.host ?? '';
  headers[CONTROL_HEADER] = host.credential;
  return pipe(req, res, request(host, req.method ?? 'GET', req.url ?? '/', headers), host, undefined);
}

function pipe(req: IncomingMessage, res: ServerResponse, preq: http.ClientRequest, host: HostTarget, json: ((status: number, body: unknown) => Promise<unknown>) | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const fail = (err: NsError) => {
      if (!res.headersSent) {
        res.writeHead(503, { 'content-type': 'application/json', connection: 'close' });
        res.end(JSON.stringify({ error: { code: err.code, message: err.message, details: err.details } }));
      } else res.destroy();
      resolve();
    };
    preq.on('error', (err) => fail(hostUnavailable(host, err.message)));
    res.once('close', () => {
      if (!res.writableFinished) preq.destroy();
      resolve();
    });
    preq.on('response', (pres) => {
      const type = String(pres.headers['content-type'] ?? '');
      const headers = { ...pres.headers };
      for (const h of HOP) delete headers[h];
      if (json && type.startsWith('application/json') && Number(pres.headers['content-length'] ?? MAX_JSON + 1) <= MAX_JSON) {
        const chunks: Buffer[] = [];
        pres.on('data', (c: Buffer) => chunks.push(c));
        pres.on('error', (err) => fail(hostUnavailable(host, err.message)));
        pres.on('end', () => {
          void (async () => {
            let body: unknown;
            try {
              body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              body = undefined;
            }
            const out = body === undefined ? Buffer.concat(chunks) : Buffer.from(JSON.stringify(await json(pres.statusCode ?? 502, body)));
            delete headers['content-length'];
            res.writeHead(pres.statusCode ?? 502, { ...headers, 'content-length': out.length });
            res.end(out);
          })().catch((err: unknown) => fail(err instanceof NsError ? err : hostUnavailable(host, String(err))));
        });
        return;
      }
      // (an answer without a JSON body, a kill's 204: told by its status alone)
      if (json) void json(pres.statusCode ?? 502, undefined).catch(() => {});
      res.writeHead(pres.statusCode ?? 502, headers);
      // (flushed as it comes: a command's output, a terminal, an event stream)
      res.flushHeaders();
      pres.pipe(res);
      pres.on('error', () => res.destroy());
    });
    req.pipe(preq);
    req.on('error', () => preq.destroy());
  });
}

/** Proxies a preview upgrade (WebSocket) to `host`: the two sockets are joined once it answers 101. */
export function forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, host: HostTarget): Promise<void> {
  const headers = passOn(req, [CONTROL_HEADER], true);
  headers.host = req.headers.host ?? '';
  headers[CONTROL_HEADER] = host.credential;
  return new Promise<void>((resolve) => {
    const preq = request(host, req.method ?? 'GET', req.url ?? '/', headers);
    preq.on('error', (err) => {
      const e = hostUnavailable(host, err.message);
      const body = JSON.stringify({ error: { code: e.code, message: e.message } });
      socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      resolve();
    });
    preq.on('upgrade', (pres, upstream, uhead) => {
      let head101 = `HTTP/1.1 101 ${pres.statusMessage ?? 'Switching Protocols'}\r\n`;
      for (let i = 0; i + 1 < pres.rawHeaders.length; i += 2) head101 += `${pres.rawHeaders[i]}: ${pres.rawHeaders[i + 1]}\r\n`;
      socket.write(head101 + '\r\n');
      if (uhead.length) socket.write(uhead);
      if (head.length) upstream.write(head);
      upstream.pipe(socket).pipe(upstream);
      const end = () => {
        upstream.destroy();
        socket.destroy();
        resolve();
      };
      upstream.on('error', end).on('close', end);
      socket.on('error', end).on('close', end);
    });
    preq.on('response', (pres) => {
      // refused (no upgrade): the answer as it is
      let text = `HTTP/1.1 ${pres.statusCode} ${pres.statusMessage ?? ''}\r\n`;
      for (let i = 0; i + 1 < pres.rawHeaders.length; i += 2) if (!HOP.has(pres.rawHeaders[i]!.toLowerCase())) text += `${pres.rawHeaders[i]}: ${pres.rawHeaders[i + 1]}\r\n`;
      socket.write(text + 'connection: close\r\n\r\n');
      pres.pipe(socket);
      pres.on('end', () => resolve());
    });
    preq.end();
  });
}

/** A JSON call of the control plane to `host` (placement, lists, imports, reconciliation). */
export async function callHost(host: HostTarget, method: string, path: string, body?: unknown, timeoutMs = 120_000): Promise<{ status: number; json: unknown; headers: Headers }> {
  try {
    return await jsonCall(new URL(path, host.url).toString(), host.credential, method, body, timeoutMs);
  } catch (err) {
    throw hostUnavailable(host, (err as Error).message);
  }
}

/** The host's error answer as an NsError of the same code (the API's error body). */
export function hostError(host: HostTarget, status: number, json: unknown): NsError {
  const e = (json as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
  return new NsError((e?.code ?? 'internal') as never, e?.message ?? `host ${host.id} answered ${status}`, { details: { ...(e?.details ?? {}), hostId: host.id } });
}
