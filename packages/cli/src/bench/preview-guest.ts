import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Sandbox } from 'nullspace';

/**
 * What the preview URL benchmark (preview.ts) and tests (test/preview.test.ts) run: a Python HTTP
 * server for the guest (stdlib only), and a client that sends requests to the server's address
 * with a preview Host header, and a minimal WebSocket client.
 */

/**
 * The guest's server: GET / answers "hello" and the headers it got (JSON); GET /file?path= streams
 * a file; PUT /upload hashes its body (sha256 hex); GET /sse sends `n` events 300 ms apart, the
 * last after /sse-go was requested; GET /ws is a WebSocket echo (text and binary frames, close).
 */
export const GUEST_SERVER = String.raw`
import base64, hashlib, json, os, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

go = threading.Event()

class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def send(self, code, body, ctype='application/json'):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
    def do_HEAD(self): self.do_GET()
    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        if u.path == '/':
            self.send(200, json.dumps({'hello': 'preview', 'path': self.path, 'headers': {k.lower(): v for k, v in self.headers.items()}}).encode())
        elif u.path == '/page':
            self.send(200, b'<!doctype html><title>guest page</title><h1 id="t">served from the sandbox</h1>', 'text/html')
        elif u.path == '/file':
            p = q['path'][0]
            self.send_response(200)
            self.send_header('Content-Type', 'application/octet-stream')
            self.send_header('Content-Length', str(os.path.getsize(p)))
            self.end_headers()
            with open(p, 'rb') as f:
                while True:
                    b = f.read(1 << 20)
                    if not b: break
                    self.wfile.write(b)
        elif u.path == '/sse':
            n = int(q.get('n', ['3'])[0])
            self.send_response(200)
            self.send_header('Content-Type', 'text/event-stream')
            self.send_header('Cache-Control', 'no-store')
            self.send_header('Connection', 'close')
            self.end_headers()
            for i in range(n):
                if i == n - 1:
                    go.wait(60)
                self.wfile.write(('data: event %d\n\n' % i).encode())
                self.wfile.flush()
                time.sleep(0.3)
            self.close_connection = True
        elif u.path == '/sse-go':
            go.set()
            self.send(200, b'{}')
        elif u.path == '/ws':
            if (self.headers.get('Upgrade') or '').lower() != 'websocket' or 'upgrade' not in (self.headers.get('Connection') or '').lower():
                return self.send(400, b'{"guest": "not an upgrade"}')
            key = self.headers['Sec-WebSocket-Key']
            acc = base64.b64encode(hashlib.sha1((key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
            self.send_response(101)
            self.send_header('Upgrade', 'websocket')
            self.send_header('Connection', 'Upgrade')
            self.send_header('Sec-WebSocket-Accept', acc)
            self.end_headers()
            self.wfile.flush()
            r, w = self.rfile, self.wfile
            while True:
                h = r.read(2)
                if len(h) < 2: break
                op, ln = h[0] & 15, h[1] & 127
                if ln == 126: ln = struct.unpack('>H', r.read(2))[0]
                elif ln == 127: ln = struct.unpack('>Q', r.read(8))[0]
                mask = r.read(4) if h[1] & 128 else b'\0\0\0\0'
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(ln)))
                hdr = bytes([128 | op])
                hdr += bytes([len(data)]) if len(data) < 126 else (bytes([126]) + struct.pack('>H', len(data)) if len(data) < 65536 else bytes([127]) + struct.pack('>Q', len(data)))
                w.write(hdr + data)
                w.flush()
                if op == 8: break
            self.close_connection = True
        else:
            self.send(404, b'{"guest": "not found"}')
    def do_PUT(self):
        n = int(self.headers['Content-Length'])
        h = hashlib.sha256()
        while n > 0:
            b = self.rfile.read(min(n, 1 << 20))
            if not b: break
            h.update(b)
            n -= len(b)
        self.send(200, json.dumps({'sha256': h.hexdigest(), 'left': n}).encode())
    do_POST = do_PUT

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;

/** Starts GUEST_SERVER in `s` on `port` (in the background) and waits until it accepts connections. */
export async function startGuestServer(s: Sandbox, port = 8000): Promise<void> {
  await s.files.write('/workspace/srv.py', GUEST_SERVER);
  await s.commands.run(`python3 /workspace/srv.py ${port}`, { background: true, timeoutMs: 0 });
  await s.commands.run(`for i in $(seq 300); do (echo > /dev/tcp/127.0.0.1/${port}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1`, { timeoutMs: 60_000 });
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** The address of a server (`http://127.0.0.1:PORT`) and a preview host, as a request's target. */
export interface Target {
  url: string;
  host: string;
}

/** A request to `target.url` with `Host: target.host`; the whole answer. */
export function request(
  target: Target,
  path: string,
  opts: { method?: string; headers?: Record<string, string | number>; body?: Buffer | Readable; agent?: http.Agent } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(target.url);
    const req = http.request(
      { host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers: { host: target.host, ...opts.headers }, agent: opts.agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body && Buffer.isBuffer(opts.body)) req.end(opts.body);
    else if (opts.body) (opts.body as Readable).pipe(req);
    else req.end();
  });
}

/** A request whose answer's body is streamed through sha256: status and hex digest and size. */
export function download(target: Target, path: string, headers: Record<string, string> = {}): Promise<{ status: number; sha256: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const u = new URL(target.url);
    const req = http.request({ host: u.hostname, port: u.port, path, headers: { host: target.host, ...headers } }, (res) => {
      const h = createHash('sha256');
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        h.update(c);
        bytes += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, sha256: h.digest('hex'), bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A minimal WebSocket client over an HTTP upgrade (masked frames of up to 64 KiB). */
export class WsClient {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private constructor(private readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', () => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Opens a WebSocket; rejects with the status of a refused upgrade. */
  static open(target: Target, path: string, headers: Record<string, string> = {}): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const u = new URL(target.url);
      const req = http.request({
        host: u.hostname,
        port: u.port,
        path,
        headers: { host: target.host, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'), ...headers },
      });
      req.on('upgrade', (res, socket, head) => {
        const ws = new WsClient(socket);
        if (head.length) ws.buf = Buffer.from(head);
        resolve(ws);
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode} ${Buffer.concat(chunks).toString()}`), { status: res.statusCode, body: Buffer.concat(chunks).toString() })));
      });
      req.on('error', reject);
      req.end();
    });
  }

  send(data: string | Buffer, opcode = typeof data === 'string' ? 1 : 2): void {
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data);
    const mask = randomBytes(4);
    const len = payload.length < 126 ? Buffer.from([0x80 | payload.length]) : Buffer.from([0x80 | 126, payload.length >> 8, payload.length & 255]);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
    this.socket.write(Buffer.concat([Buffer.from([0x80 | opcode]), len, mask, masked]));
  }

  /** The next frame from the server. */
  async next(): Promise<{ opcode: number; data: Buffer }> {
    for (;;) {
      if (this.buf.length >= 2) {
        let len = this.buf[1]! & 127;
        let off = 2;
        if (len === 126) {
          len = this.buf.length >= 4 ? this.buf.readUInt16BE(2) : Infinity;
          off = 4;
        }
        if (this.buf.length >= off + len) {
          const frame = { opcode: this.buf[0]! & 15, data: this.buf.subarray(off, off + len) };
          this.buf = this.buf.subarray(off + len);
          return frame;
        }
      }
      if (this.socket.destroyed) throw new Error('the WebSocket closed');
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
