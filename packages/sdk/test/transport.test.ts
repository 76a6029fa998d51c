import util from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, SandboxError, Snapshot, TimeoutError } from '../src/index.js';
import { startFakeServer, type FakeServer, type Handler } from './fake-server.js';

// a scripted server: each test sets what a route answers (no VM needed: the transport only)
let fake: FakeServer;
let routes: Map<string, Handler>;
let apiUrl = '';
const apiKey = 'transport-test-key-0123456789';

beforeAll(async () => {
  fake = await startFakeServer();
  routes = fake.routes;
  apiUrl = fake.url;
});
afterAll(() => fake.close());

const SBX = 'sbx_0123456789abcdef';
const info = { sandboxId: SBX, template: 'base', snapshotId: null, forkedFrom: null, state: 'running', metadata: {}, memoryMiB: 512, vcpus: 1 };
const snapshotJson = { snapshotId: 'snap_0123456789abcdef', sandboxId: SBX, kind: 'reusable', template: 'base', metadata: {}, createdAt: new Date().toISOString(), pauseMs: 30, sizeBytes: 1, volumes: {} };

describe('TS SDK transport', () => {
  it('an answer that is not JSON, or a body cut short, is a SandboxError with a code', async () => {
    routes.set(`GET /v1/sandboxes/${SBX}`, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{not json'));
    const err = await Sandbox.getInfo(SBX, { apiUrl, apiKey }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxError);
    expect(err).toMatchObject({ code: 'invalid_response' });

    routes.set(`GET /v1/sandboxes/${SBX}`, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(info)));
    routes.set(`GET /v1/sandboxes/${SBX}/files`, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write(Buffer.alloc(1000, 1));
      setTimeout(() => res.socket?.destroy(), 50); // the connection breaks mid-body
    });
    const sbx = await Sandbox.connect(SBX, { apiUrl, apiKey });
    const cut = await sbx.files.read('/x', { format: 'bytes' }).catch((e: unknown) => e);
    expect(cut).toBeInstanceOf(SandboxError);
    expect(cut).toMatchObject({ code: 'connection_failed' });
  });

  it('the request timeout limits each wait, not a body that keeps coming', async () => {
    routes.set(`GET /v1/sandboxes/${SBX}/files`, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let n = 0;
      const tick = setInterval(() => {
        res.write(Buffer.alloc(100, 2));
        if (++n === 8) {
          clearInterval(tick);
          res.end();
        }
      }, 100); // 0.8 s in all, never more than 0.1 s between chunks
    });
    const sbx = await Sandbox.connect(SBX, { apiUrl, apiKey, requestTimeoutMs: 400 });
    expect((await sbx.files.read('/x', { format: 'bytes' })).length).toBe(800);
    // a body that stalls longer than the limit is a TimeoutError
    routes.set(`GET /v1/sandboxes/${SBX}/files`, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write(Buffer.alloc(10));
      setTimeout(() => res.end(), 2000);
    });
    const stalled = await sbx.files.read('/x', { format: 'bytes' }).catch((e: unknown) => e);
    expect(stalled).toBeInstanceOf(TimeoutError);
    expect(stalled).toMatchObject({ code: 'request_timeout' });
  });

  it('an upload over 8 MiB may take longer than the request timeout; a small one may not', async () => {
    routes.set(`PUT /v1/sandboxes/${SBX}/files`, (req, res) => {
      // a slow reader: the upload takes ~1 s whatever the client's limit
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        req.pause();
        setTimeout(() => req.resume(), 5);
      });
      req.on('end', () => setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path: '/x', size })), 600));
    });
    const sbx = await Sandbox.connect(SBX, { apiUrl, apiKey, requestTimeoutMs: 300 });
    expect(await sbx.files.write('/x', new Uint8Array(9 * 1024 * 1024))).toEqual({ path: '/x', size: 9 * 1024 * 1024 });
    await expect(sbx.files.write('/x', 'small')).rejects.toMatchObject({ code: 'request_timeout' });
  });

  it('a list whose first page failed can be listed again', async () => {
    let calls = 0;
    routes.set('GET /v1/snapshots', (_req, res) => {
      calls++;
      if (calls === 1) res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'shutting_down', message: 'try again' } }));
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ snapshots: [snapshotJson], nextToken: null }));
    });
    const pager = Snapshot.list({ apiUrl, apiKey });
    await expect(pager.nextItems()).rejects.toMatchObject({ code: 'shutting_down' });
    expect(pager.hasNext).toBe(true);
    const ids = [];
    for await (const s of pager) ids.push(s.id);
    expect(ids).toEqual([snapshotJson.snapshotId]);
  });

  it('never prints the API key when an SDK object is logged or serialized', async () => {
    routes.set(`GET /v1/snapshots/${snapshotJson.snapshotId}`, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(snapshotJson)));
    const snap = await Snapshot.get(snapshotJson.snapshotId, { apiUrl, apiKey });
    const sbx = await Sandbox.connect(SBX, { apiUrl, apiKey });
    for (const text of [JSON.stringify(snap), util.inspect(snap, { depth: 10 }), util.inspect(sbx, { depth: 10 }), JSON.stringify({ ...snap })]) {
      expect(text).not.toContain(apiKey);
    }
    expect(JSON.parse(JSON.stringify(snap))).toMatchObject({ id: snapshotJson.snapshotId, sandboxId: SBX, volumes: {} });
  });

  it('refuses a template and a snapshotId together, and takes an empty NULLSPACE_API_URL as unset', async () => {
    await expect(Sandbox.create('base', { apiUrl, apiKey, snapshotId: snapshotJson.snapshotId })).rejects.toMatchObject({ code: 'bad_request' });
    const saved = process.env.NULLSPACE_API_URL;
    process.env.NULLSPACE_API_URL = '';
    try {
      // the default URL, not an "Invalid URL" TypeError
      const err = await Sandbox.getInfo(SBX, { apiKey, requestTimeoutMs: 2000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SandboxError);
    } finally {
      if (saved === undefined) delete process.env.NULLSPACE_API_URL;
      else process.env.NULLSPACE_API_URL = saved;
    }
  });
});
