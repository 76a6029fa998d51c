import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { Sandbox } from 'nullspace';
import { api, apiKey, apiUrl, sandbox } from './helpers.js';
import { cleanupDataDir, ownServer, tempDataDir } from './servers.js';

type ErrorBody = { error: { code: string; message: string; details?: { field?: string; state?: string } } };

/**
 * Sends raw bytes (malformed or unfinished HTTP) on a connection of its own; resolves when the
 * server closes it (or after `waitMs`, with `open: true`), with the answer's status and body.
 */
function raw(url: string, text: string, waitMs = 20_000): Promise<{ status: number; body: string; ms: number; open: boolean }> {
  const u = new URL(url);
  const t0 = Date.now();
  return new Promise((resolve) => {
    const sock = net.connect(Number(u.port), u.hostname);
    let out = '';
    const done = (open: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      const answer = out.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
      resolve({ status: Number(/^HTTP\/1\.[01] (\d+)/.exec(answer)?.[1] ?? 0), body: answer.slice(answer.indexOf('\r\n\r\n') + 4), ms: Date.now() - t0, open });
    };
    const timer = setTimeout(() => done(true), waitMs);
    sock.on('data', (b: Buffer) => (out += b.toString('latin1')));
    sock.on('close', () => done(false));
    sock.on('error', () => {});
    sock.write(Buffer.from(text, 'latin1'));
  });
}

const code = async (res: Response) => [res.status, ((await res.json()) as ErrorBody).error.code];

/** Bad input over real HTTP: each gets a stable code and a 4xx, never a crash or a hang. */
describe('API: authentication and bad input', () => {
  it('requires the API key on every route', async () => {
    for (const [method, path] of [
      ['GET', '/v1/health'],
      ['POST', '/v1/openapi.json'],
      ['GET', '/v1/sandboxes?path=/v1/openapi.json'],
      ['GET', '/v1/sandboxes'],
      ['POST', '/v1/sandboxes'],
      ['DELETE', '/v1/sandboxes/sbx_0000000000000000'],
      ['GET', '/v1/nothing-here'],
    ]) {
      const none = await fetch(apiUrl() + path, { method });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(((await none.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
      const wrong = await fetch(apiUrl() + path, { method, headers: { authorization: 'Bearer wrong-key-wrong-key' } });
      expect(wrong.status).toBe(401);
    }
  });

  it('serves its OpenAPI document, without the key (an API description is public)', async () => {
    const res = await fetch(apiUrl() + '/v1/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/sandboxes', '/v1/sandboxes/{id}', '/v1/sandboxes/{id}/files', '/v1/sandboxes/{id}/commands']));
  });

  it('answers unknown sandboxes, templates and routes with 404 and a code', async () => {
    const cases: Array<[string, string, unknown, string]> = [
      ['GET', '/v1/sandboxes/sbx_0000000000000000', undefined, 'sandbox_not_found'],
      ['GET', '/v1/sandboxes/..%2F..%2Fetc', undefined, 'sandbox_not_found'],
      ['DELETE', '/v1/sandboxes/nope', undefined, 'sandbox_not_found'],
      ['GET', '/v1/sandboxes/sbx_0000000000000000/files?path=/etc/hostname', undefined, 'sandbox_not_found'],
      ['POST', '/v1/sandboxes', { template: 'no-such-template' }, 'template_not_found'],
      ['POST', '/v1/sandboxes', { template: '../../etc' }, 'template_not_found'],
      ['GET', '/v1/templates/nope', undefined, 'template_not_found'],
      ['GET', '/v1/no/such/route', undefined, 'route_not_found'],
    ];
    for (const [method, path, body, code] of cases) {
      const res = await api(method, path, body);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code, `${method} ${path}`).toBe(code);
    }
  });

  it('rejects malformed JSON and fields with 400 naming the field', async () => {
    const bad = await api('POST', '/v1/sandboxes', '{"template": ');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    const cases: Array<[unknown, string]> = [
      [{ timeoutMs: 'soon' }, 'timeoutMs'],
      [{ timeoutMs: 5 }, 'timeoutMs'],
      [{ metadata: { k: 5 } }, 'metadata'],
      [{ metadata: 'flat' }, 'metadata'],
      [{ envs: { 'BAD-NAME': 'x' } }, 'envs'],
      [{ surprise: true }, 'surprise'],
      [{ allowInternetAccess: 'yes please' }, 'allowInternetAccess'],
    ];
    for (const [body, field] of cases) {
      const res = await api('POST', '/v1/sandboxes', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const e = ((await res.json()) as { error: { code: string; message: string; details: { field: string } } }).error;
      expect(e.code).toBe('validation_failed');
      expect(e.details.field, JSON.stringify(body)).toContain(field);
    }
    const tooLong = await api('POST', '/v1/sandboxes', { timeoutMs: 10 * 24 * 3600_000 });
    expect(tooLong.status).toBe(400);
  });

  it('bounds every number: Infinity (1e400 in JSON), 2^53 and above, and past the maximum are refused', async () => {
    const s = '/v1/sandboxes/sbx_0000000000000000';
    const cases: Array<[string, string, string]> = [
      ['/v1/sandboxes', '{"timeoutMs":1e400}', 'timeoutMs'],
      ['/v1/sandboxes', '{"timeoutMs":9007199254740993}', 'timeoutMs'],
      [`${s}/timeout`, '{"timeoutMs":1e400}', 'timeoutMs'],
      [`${s}/timeout`, '{"timeoutMs":123456789012345678901234567890}', 'timeoutMs'],
      [`${s}/fork`, '{"timeoutMs":1e400}', 'timeoutMs'],
      [`${s}/commands`, '{"cmd":"true","timeoutMs":1e400}', 'timeoutMs'],
      [`${s}/commands`, '{"cmd":"true","timeoutMs":9007199254740993}', 'timeoutMs'],
      [`${s}/commands`, `{"cmd":"true","timeoutMs":${366 * 24 * 3600_000}}`, 'timeoutMs'],
      [`${s}/files/mkdir`, '{"path":"/x","mode":1e400}', 'mode'],
    ];
    for (const [path, body, field] of cases) {
      const res = await api('POST', path, body);
      expect(await code(res), `${path} ${body}`).toEqual([400, 'validation_failed']);
    }
    for (const pid of ['1e3', '99999999999', '0x10', '4194305']) {
      const res = await api('GET', `${s}/commands/${pid}/stream`);
      expect(await code(res), pid).toEqual([400, 'validation_failed']);
    }
    // the server's own maximum (NULLSPACE_MAX_TIMEOUT_MS) below the schema's
    const past = await api('POST', `${s}/timeout`, { timeoutMs: 2 * 24 * 3600_000 });
    expect(await code(past)).toEqual([400, 'validation_failed']);
  });

  it('takes integers in query strings and paths as decimal digits (a file mode also as octal digits after a 0)', async () => {
    const s = '/v1/sandboxes/sbx_0000000000000000';
    for (const q of ['mode=0x1ff', 'mode=1e3', 'mode=0999', 'mode=%2012', 'mode=0b11', 'mode=010000', 'mode=-1', 'mode=1.0']) {
      const res = await api('PUT', `${s}/files?path=/x&${q}`, 'data', { 'content-type': 'application/octet-stream' });
      const e = ((await res.json()) as ErrorBody).error;
      expect([res.status, e.code, e.details?.field], q).toEqual([400, 'validation_failed', 'querystring.mode']);
    }
    for (const q of ['/v1/sandboxes?limit=1e2', '/v1/sandboxes?limit=0x10', '/v1/snapshots?limit=%2B5', `${s}/files/list?path=/&depth=1e1`]) {
      expect(await code(await api('GET', q)), q).toEqual([400, 'validation_failed']);
    }
    // well-formed ones are not refused: the request gets as far as the (unknown) sandbox
    for (const q of ['mode=420', 'mode=0644', 'mode=0']) {
      expect(await code(await api('PUT', `${s}/files?path=/x&${q}`, 'data', { 'content-type': 'application/octet-stream' })), q).toEqual([404, 'sandbox_not_found']);
    }
  });

  it('refuses unknown fields, other types and malformed JSON on POSTs that take no body; unknown query parameters', async () => {
    const routes = ['/v1/gc', '/v1/snapshots/snap_0000000000000000/resume', '/v1/sandboxes/sbx_0000000000000000/hibernate', '/v1/sandboxes/sbx_0000000000000000/pause'];
    for (const route of routes) {
      const unknown = await api('POST', route, { surprise: 1 });
      const e = ((await unknown.json()) as ErrorBody).error;
      expect([unknown.status, e.code, e.details?.field], route).toEqual([400, 'validation_failed', 'surprise']);
      expect(await code(await api('POST', route, 'not json', { 'content-type': 'text/plain' })), route).toEqual([415, 'unsupported_media_type']);
      expect(await code(await api('POST', route, 'a=b', { 'content-type': 'application/x-www-form-urlencoded' })), route).toEqual([415, 'unsupported_media_type']);
      expect(await code(await api('POST', route, '{"a":')), route).toEqual([400, 'invalid_json']);
      expect(await code(await api('POST', route, '[]')), route).toEqual([400, 'validation_failed']);
    }
    // what the SDKs send, and no body at all, still work
    expect((await api('POST', '/v1/gc', {})).status).toBe(200);
    expect((await api('POST', '/v1/gc')).status).toBe(200);
    // a query parameter a route does not take is refused, not ignored
    for (const [method, path] of [
      ['GET', '/v1/volumes?surprise=1'],
      ['GET', '/v1/health?x='],
      ['POST', '/v1/sandboxes/sbx_0000000000000000/files/mkdir?parents=false'],
      ['DELETE', '/v1/sandboxes/sbx_0000000000000000?force=true'],
    ]) {
      expect(await code(await api(method!, path!, method === 'POST' ? { path: '/x' } : undefined)), path).toEqual([400, 'validation_failed']);
    }
  });

  it('answers malformed HTTP in its error format', async () => {
    const auth = `authorization: Bearer ${apiKey()}\r\n`;
    const badUrl = await raw(apiUrl(), `GET /v1/sandboxes/%ZZ HTTP/1.1\r\nhost: x\r\n${auth}connection: close\r\n\r\n`);
    expect([badUrl.status, (JSON.parse(badUrl.body) as ErrorBody).error.code]).toEqual([400, 'bad_request']);
    const noHost = await raw(apiUrl(), `GET /v1/health HTTP/1.1\r\n${auth}connection: close\r\n\r\n`);
    expect([noHost.status, (JSON.parse(noHost.body) as ErrorBody).error.code]).toEqual([400, 'bad_request']);
    const huge = await raw(apiUrl(), `GET /v1/health HTTP/1.1\r\nhost: x\r\n${auth}x-big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect([huge.status, (JSON.parse(huge.body) as ErrorBody).error.code]).toEqual([431, 'headers_too_large']);
    const garbage = await raw(apiUrl(), 'GARBAGE\r\n\r\n');
    expect([garbage.status, (JSON.parse(garbage.body) as ErrorBody).error.code]).toEqual([400, 'bad_request']);
  });

  it('serves the next request on a connection whose last body was not read, or read in part (an unknown route, a GET, an upload the guest refused)', async () => {
    const sbx = await sandbox();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const u = new URL(apiUrl());
    const send = (method: string, path: string, body?: Buffer) =>
      new Promise<number>((resolve, reject) => {
        const headers = { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/octet-stream', 'content-length': String(body?.length ?? 0) };
        const r = http.request({ host: u.hostname, port: u.port, method, path, agent, headers }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        r.on('error', reject);
        r.setTimeout(15_000, () => r.destroy(new Error(`${method} ${path}: no answer`)));
        r.end(body);
      });
    try {
      expect(await send('PUT', '/v1/sandboxes////files?path=/x', Buffer.alloc(300_000, 120))).toBe(404);
      expect(await send('GET', '/v1/health', Buffer.alloc(300_000, 120))).toBe(200);
      expect(await send('GET', '/v1/health')).toBe(200);
      // the guest refuses the upload once it has begun: the rest of its body is read and dropped
      expect(await send('PUT', `/v1/sandboxes/${sbx.sandboxId}/files?path=/workspace`, Buffer.alloc(600_000, 120))).toBe(409);
      expect(await send('GET', '/v1/health')).toBe(200);
    } finally {
      agent.destroy();
    }
  });

  it('answers a request whose sandbox is killed under it with 409 sandbox_not_running, not 503', async () => {
    const sbx = await sandbox();
    // a listing of the whole guest file system takes tens of seconds under TCG
    const listing = api('GET', `/v1/sandboxes/${sbx.sandboxId}/files/list?path=/&depth=12`);
    await new Promise((r) => setTimeout(r, 1500));
    await sbx.kill();
    const res = await listing;
    const e = ((await res.json()) as ErrorBody).error;
    expect([res.status, e.code]).toEqual([409, 'sandbox_not_running']);
    expect(['killing', 'killed']).toContain(e.details?.state);
  });

  it('refuses huge JSON bodies with 413, which the client gets to see however much it sends', async () => {
    // (a body larger than the socket buffers: the server must not close on a client still sending)
    for (const mib of [2, 32]) {
      const res = await api('POST', '/v1/sandboxes', { metadata: { big: 'x'.repeat(mib * 1024 * 1024) } });
      expect(await code(res), `${mib} MiB`).toEqual([413, 'payload_too_large']);
    }
    const chunk = new Uint8Array(1024 * 1024).fill(120);
    let sent = 0;
    const chunked = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent++ === 0) c.enqueue(new TextEncoder().encode('{"metadata":{"big":"'));
        if (sent > 32) c.close();
        else c.enqueue(chunk);
      },
    });
    const res = await fetch(`${apiUrl()}/v1/sandboxes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/json' },
      body: chunked,
      duplex: 'half',
    } as RequestInit);
    expect(await code(res), 'chunked').toEqual([413, 'payload_too_large']);
  });

  it('rejects bad list queries', async () => {
    expect((await api('GET', '/v1/sandboxes?state=sleeping')).status).toBe(400);
    expect((await api('GET', '/v1/sandboxes?limit=0')).status).toBe(400);
    expect((await api('GET', '/v1/sandboxes?nextToken=garbage')).status).toBe(400);
    expect((await api('GET', '/v1/sandboxes?metadata=novalue')).status).toBe(400);
    // an empty list of states is the default filter (live sandboxes), not "every state"
    const ended = await sandbox();
    await ended.kill();
    for (const q of ['state=,', 'state=']) {
      const res = await api('GET', `/v1/sandboxes?${q}&limit=1000`);
      expect(res.status).toBe(200);
      const ids = ((await res.json()) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes.map((x) => x.sandboxId);
      expect(ids, q).not.toContain(ended.sandboxId);
    }
    const all = ((await (await api('GET', '/v1/sandboxes?state=killed&limit=1000')).json()) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes;
    expect(all.map((x) => x.sandboxId)).toContain(ended.sandboxId);
  });

  it('rejects relative and malformed paths in a running sandbox with 400', async () => {
    const sbx = await sandbox();
    for (const path of ['relative/file', '', '../etc/passwd', 'a\u0000b']) {
      const res = await api('GET', `/v1/sandboxes/${sbx.sandboxId}/files?path=${encodeURIComponent(path)}`);
      expect(res.status, JSON.stringify(path)).toBe(400);
    }
    const mk = await api('POST', `/v1/sandboxes/${sbx.sandboxId}/files/mkdir`, { path: 'rel' });
    expect(mk.status).toBe(400);
    expect(((await mk.json()) as { error: { code: string } }).error.code).toBe('invalid_path');
    const cmd = await api('POST', `/v1/sandboxes/${sbx.sandboxId}/commands`, { cmd: 'true', cwd: 'tmp' });
    expect(cmd.status).toBe(400);
    // a command line longer than exec takes (128 KiB, counted in bytes) is refused up front
    for (const long of ['x'.repeat(131_072), 'é'.repeat(70_000)]) {
      const res = await api('POST', `/v1/sandboxes/${sbx.sandboxId}/commands`, { cmd: long });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('validation_failed');
    }
    // a new file's mode in decimal or as octal digits after a 0
    for (const [q, mode] of [['mode=0640', 0o640], ['mode=493', 0o755], ['mode=0', 0]] as const) {
      const w = await api('PUT', `/v1/sandboxes/${sbx.sandboxId}/files?path=/tmp/m-${mode}&${q}`, 'x', { 'content-type': 'application/octet-stream' });
      expect(w.status, q).toBe(200);
      const st = (await (await api('GET', `/v1/sandboxes/${sbx.sandboxId}/files/stat?path=/tmp/m-${mode}`)).json()) as { mode: number };
      expect(st.mode & 0o7777, q).toBe(mode);
    }
    // paths the guest's file system refuses are the request's fault too (4xx with a code, not a 500)
    const code = async (res: Response) => [res.status, ((await res.json()) as { error: { code: string } }).error.code];
    expect(await code(await api('GET', `/v1/sandboxes/${sbx.sandboxId}/files?path=/${'n'.repeat(300)}`))).toEqual([400, 'invalid_path']);
    await sbx.commands.run('mkdir -p /workspace/loop && ln -sfn a /workspace/loop/b && ln -sfn b /workspace/loop/a');
    expect(await code(await api('GET', `/v1/sandboxes/${sbx.sandboxId}/files?path=/workspace/loop/a`))).toEqual([400, 'invalid_path']);
    expect(await code(await api('POST', `/v1/sandboxes/${sbx.sandboxId}/files/rename`, { from: '/workspace/loop', to: '/workspace/loop/inside' }))).toEqual([400, 'bad_request']);
    expect(await code(await api('POST', `/v1/sandboxes/${sbx.sandboxId}/files/rename`, { from: '/tmp', to: '/workspace/tmp-moved' }))).toEqual([400, 'bad_request']);
  });
});

describe('API: request limits (NULLSPACE_HEADERS_TIMEOUT_MS, NULLSPACE_BODY_TIMEOUT_MS)', () => {
  it('answers (408) or closes a stalled request within its limit; an upload that keeps moving is not cut', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_HEADERS_TIMEOUT_MS: '1500', NULLSPACE_BODY_TIMEOUT_MS: '1500', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const sbx = await Sandbox.create({ apiUrl: server.url, apiKey: server.key });
    const auth = `authorization: Bearer ${server.key}\r\n`;
    const stalls: Array<[string, string, number, string]> = [
      ['headers', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-ty`, 408, 'request_timeout'],
      ['JSON body', `POST /v1/sandboxes/${sbx.sandboxId}/timeout HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ncontent-length: 100\r\n\r\n{"timeoutMs":`, 408, 'request_timeout'],
      ['chunked JSON body', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n`, 408, 'request_timeout'],
      ['upload', `PUT /v1/sandboxes/${sbx.sandboxId}/files?path=/tmp/stalled HTTP/1.1\r\nhost: x\r\n${auth}content-length: 1000000\r\n\r\n${'x'.repeat(5000)}`, 408, 'request_timeout'],
      ['body after 100-continue', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n`, 408, 'request_timeout'],
      // answered before the body came: the rest is read and dropped, and a stalled rest closes it
      ['body of an unauthorized request', `POST /v1/gc HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`, 401, 'unauthorized'],
      ['upload to an unknown sandbox', `PUT /v1/sandboxes/sbx_0000000000000000/files?path=/x HTTP/1.1\r\nhost: x\r\n${auth}content-length: 1000000\r\n\r\nxx`, 404, 'sandbox_not_found'],
    ];
    const answers = await Promise.all(stalls.map(([, text]) => raw(server.url, text)));
    for (const [i, [what, , status, errorCode]] of stalls.entries()) {
      const a = answers[i]!;
      // (without the limits every one of these connections stays open: raw() gives up after 20 s)
      expect(a.open, `${what}: still open after 20 s`).toBe(false);
      expect([a.status, (JSON.parse(a.body) as ErrorBody).error.code], what).toEqual([status, errorCode]);
    }
    // the old content stays: a stalled upload writes nothing
    await expect(sbx.files.exists('/tmp/stalled')).resolves.toBe(false);
    // an upload slower than the limit as a whole, but never pausing that long, goes through
    const slow = new ReadableStream<Uint8Array>({
      async pull(c) {
        await new Promise((r) => setTimeout(r, 300));
        c.enqueue(new Uint8Array(10_000).fill(97));
        if (++sent === 10) c.close();
      },
    });
    let sent = 0;
    const res = await fetch(`${server.url}/v1/sandboxes/${sbx.sandboxId}/files?path=/tmp/slow`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${server.key}` },
      body: slow,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { size: number }).size).toBe(100_000);
    await sbx.kill();
  });
});
