import http from 'node:http';
import net from 'node:net';

/** One request the fuzzer sends, and what it knows about it. */
export interface FuzzRequest {
  /** The route as the OpenAPI document names it ("POST /v1/sandboxes/{id}/fork"), for reports. */
  route: string;
  method: string;
  /** Path and query, already encoded. */
  path: string;
  headers: Record<string, string>;
  body?: Buffer | undefined;
  /** Why the request is invalid by construction: any answer but a 4xx is then a finding. */
  reject?: string | undefined;
  /** A well-formed request naming an unknown id of this kind: it must be a 404. */
  unknown?: string | undefined;
  /** What it exercises, for the allow-lists (e.g. the guest path it reads). */
  note?: Record<string, unknown> | undefined;
  /** Sent as raw bytes over a socket instead (malformed HTTP). */
  raw?: Buffer | undefined;
}

export interface FuzzResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** At most `maxBody` bytes of it. */
  body: Buffer;
  /** The body was longer (or kept streaming) and was cut by the client. */
  truncated: boolean;
  ms: number;
  /** No answer at all: the connection failed or was closed before a status line. */
  error?: string;
  /** No answer (status line) within the bound. */
  timedOut?: boolean;
}

export interface SendOpts {
  /** The status line must come within this. */
  boundMs: number;
  /** Read at most this much of a body... */
  maxBody: number;
  /** ...and for at most this long after the status line (streams: command output, /dev/zero). */
  bodyMs: number;
  agent: http.Agent;
}

/** Sends a request and reads (a bounded part of) its answer; never throws. */
export function send(base: URL, req: FuzzRequest, opts: SendOpts): Promise<FuzzResponse> {
  if (req.raw) return sendRaw(base, req.raw, opts);
  const t0 = Date.now();
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: Omit<FuzzResponse, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(bound);
      resolve({ ...r, ms: Date.now() - t0 });
    };
    let r: http.ClientRequest;
    try {
      r = http.request(
        // (a length always: Node's client would send the body of a GET or DELETE unframed)
        { host: base.hostname, port: base.port, method: req.method, path: req.path, headers: { ...req.headers, ...(req.body ? { 'content-length': String(req.body.length) } : {}) }, agent: opts.agent },
        (res) => {
          clearTimeout(bound);
          const chunks: Buffer[] = [];
          let size = 0;
          const cut = () => {
            res.destroy();
            r.destroy();
            finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), truncated: true });
          };
          const bodyTimer = setTimeout(cut, opts.bodyMs);
          res.on('data', (b: Buffer) => {
            chunks.push(b);
            size += b.length;
            if (size >= opts.maxBody) cut();
          });
          res.on('end', () => {
            clearTimeout(bodyTimer);
            finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), truncated: false });
          });
          res.on('error', () => {
            clearTimeout(bodyTimer);
            // the body was cut by the server: the answer is what came
            finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), truncated: true });
          });
        },
      );
    } catch (err) {
      finish({ status: 0, headers: {}, body: Buffer.alloc(0), truncated: false, error: `client refused the request: ${(err as Error).message}` });
      return;
    }
    const bound = setTimeout(() => {
      r.destroy();
      finish({ status: 0, headers: {}, body: Buffer.alloc(0), truncated: false, timedOut: true });
    }, opts.boundMs);
    r.on('error', (err) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), truncated: false, error: (err as Error).message }));
    r.end(req.body);
  });
}

/**
 * Raw bytes over a fresh connection (malformed request lines, headers, bodies that stall): the
 * answer is its status line, headers and the body bytes that came with them. A connection the
 * server closes without a word has status 0 and `error` set.
 */
export function sendRaw(base: URL, bytes: Buffer, opts: SendOpts): Promise<FuzzResponse> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const sock = net.connect(Number(base.port), base.hostname);
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = (extra: Partial<FuzzResponse> = {}) => {
      if (done) return;
      done = true;
      clearTimeout(bound);
      sock.destroy();
      buf = withoutInterim(buf);
      const text = buf.toString('latin1');
      const head = text.indexOf('\r\n\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const headers: http.IncomingHttpHeaders = {};
      for (const line of (head >= 0 ? text.slice(0, head) : text).split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      let body = head >= 0 ? buf.subarray(head + 4) : Buffer.alloc(0);
      if (/chunked/i.test(String(headers['transfer-encoding'] ?? ''))) body = dechunk(body);
      resolve({
        status: m ? Number(m[1]) : 0,
        headers,
        body,
        truncated: false,
        ms: Date.now() - t0,
        ...(m ? {} : { error: 'connection closed without an answer' }),
        ...extra,
      });
    };
    const bound = setTimeout(() => finish(buf.length ? {} : { timedOut: true }), opts.boundMs);
    let bodyTimer: NodeJS.Timeout | undefined;
    sock.on('data', (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      bodyTimer ??= setTimeout(() => finish({ truncated: true }), opts.bodyMs);
      if (buf.length > opts.maxBody) finish({ truncated: true });
      else if (complete(buf)) finish();
    });
    sock.on('close', () => clearTimeout(bodyTimer));
    sock.on('error', () => finish());
    sock.on('close', () => finish());
    sock.write(bytes);
  });
}

/** The answer without the interim ones before it (100 Continue). */
function withoutInterim(buf: Buffer): Buffer {
  for (;;) {
    const text = buf.toString('latin1');
    const head = text.indexOf('\r\n\r\n');
    if (head < 0 || !/^HTTP\/1\.[01] 1\d\d/.test(text)) return buf;
    buf = buf.subarray(head + 4);
  }
}

/** Whether `buf` holds a whole answer. */
function complete(all: Buffer): boolean {
  const buf = withoutInterim(all);
  const text = buf.toString('latin1');
  const head = text.indexOf('\r\n\r\n');
  if (head < 0) return false;
  const headers = text.slice(0, head).toLowerCase();
  const len = /\r\ncontent-length: *(\d+)/.exec(headers);
  if (len) return buf.length - head - 4 >= Number(len[1]);
  if (/\r\ntransfer-encoding: *chunked/.test(headers)) return text.endsWith('0\r\n\r\n');
  return false;
}

function dechunk(b: Buffer): Buffer {
  const out: Buffer[] = [];
  let i = 0;
  for (;;) {
    const eol = b.indexOf('\r\n', i);
    if (eol < 0) break;
    const n = parseInt(b.subarray(i, eol).toString('latin1'), 16);
    if (!Number.isFinite(n) || n <= 0) break;
    out.push(b.subarray(eol + 2, eol + 2 + n));
    i = eol + 2 + n + 2;
  }
  return Buffer.concat(out);
}

/** The API's error body of an answer, if it has one. */
export function errorOf(res: FuzzResponse): { code: string; message: string } | undefined {
  try {
    const j = JSON.parse(res.body.toString('utf8')) as { error?: { code?: unknown; message?: unknown } };
    if (typeof j?.error?.code === 'string' && typeof j.error.message === 'string') return { code: j.error.code, message: j.error.message };
  } catch {
    /* not JSON */
  }
  return undefined;
}

/** The JSON body of an answer, or undefined. */
export function jsonOf<T = Record<string, unknown>>(res: FuzzResponse): T | undefined {
  try {
    return JSON.parse(res.body.toString('utf8')) as T;
  } catch {
    return undefined;
  }
}
