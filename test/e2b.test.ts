import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { loadConfig, startServer, type RunningServer } from '@nullspace/server';
import { AuthenticationError, CommandExitError, FileNotFoundError, NotFoundError, Sandbox, SandboxError, TimeoutError } from 'e2b';
import { Sandbox as OldSandbox } from 'e2b-old';
import { apiKey, apiUrl } from './helpers.js';
import { cleanupDataDir, tempDataDir } from './servers.js';
import { e2bRun, nativeKill, until } from './e2b-helpers.js';

/**
 * The E2B-compatible surface (docs/api.md, "E2B compatibility") driven by E2B's own SDK, unchanged:
 * `e2b` 2.51.0 (create/connect on /v2) and `e2b-old` = e2b 2.45.0 (the older POST /sandboxes and
 * /sandboxes/:id/connect), configured only through E2B's environment variables, against the suite's
 * real server and real VMs.
 */

const { RUN, META, made, create } = e2bRun();

/** A raw envd request (as the SDK makes it) for the checks of tokens. */
function envd(path: string, id: string, token: string | undefined, init: RequestInit = {}): Promise<Response> {
  return fetch(`${apiUrl()}${path}`, {
    ...init,
    headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': '49983', ...(token ? { 'x-access-token': token } : {}), ...(init.headers as Record<string, string>) },
  });
}

function streamOf(bytes: Buffer, piece = 64 * 1024): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      c.enqueue(new Uint8Array(bytes.subarray(off, off + piece)));
      off += piece;
    },
  });
}

async function readAll(s: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of s as unknown as AsyncIterable<Uint8Array>) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

let sbx: Sandbox;

beforeAll(async () => {
  // what a user sets: nothing else is configured below
  process.env.E2B_API_URL = apiUrl();
  process.env.E2B_SANDBOX_URL = apiUrl();
  process.env.E2B_API_KEY = apiKey();
  sbx = await create({ envs: { FROM_CREATE: 'yes' }, timeoutMs: 600_000, metadata: { 'odd key': 'a&b=c %' } });
});

afterAll(async () => {
  for (const id of made) await nativeKill(id);
});

describe('E2B SDK (2.51.0): control plane', () => {
  it('create and getInfo: E2B shapes, metadata, envdVersion, the sandbox running', async () => {
    expect(sbx.sandboxId).toMatch(/^sbx_/);
    const info = await sbx.getInfo();
    expect(info.sandboxId).toBe(sbx.sandboxId);
    expect(info.templateId).toBe('base');
    expect(info.state).toBe('running');
    expect(info.metadata).toMatchObject({ ...META, 'odd key': 'a&b=c %' });
    expect(info.envdVersion).toBe('0.5.7');
    expect(await sbx.isRunning()).toBe(true);
  });

  it('setTimeout moves the end (shorter too)', async () => {
    await sbx.setTimeout(200_000);
    const end1 = (await sbx.getInfo()).endAt.getTime();
    await sbx.setTimeout(500_000);
    const end2 = (await sbx.getInfo()).endAt.getTime();
    expect(end2 - end1).toBeGreaterThan(250_000);
  });

  it('refuses a wrong API key (AuthenticationError) and an unknown template (404)', async () => {
    await expect(Sandbox.create({ apiKey: 'not-the-key' })).rejects.toBeInstanceOf(AuthenticationError);
    await expect(Sandbox.list({ apiKey: 'not-the-key' }).nextItems()).rejects.toBeInstanceOf(AuthenticationError);
    const err = await Sandbox.create('no-such-template').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxError);
    expect((err as SandboxError & { statusCode?: number }).statusCode).toBe(404);
  });
});

describe('beside /v1', () => {
  it("E2B's routes answer in E2B's shapes; /v1 keeps its own document, errors and defaults", async () => {
    const noKey = await fetch(`${apiUrl()}/sandboxes/${sbx.sandboxId}`);
    expect(noKey.status).toBe(401);
    expect(await noKey.json()).toMatchObject({ code: 401 });
    const bearer = await fetch(`${apiUrl()}/sandboxes/${sbx.sandboxId}`, { headers: { authorization: `Bearer ${apiKey()}` } });
    expect(((await bearer.json()) as { sandboxID: string }).sandboxID).toBe(sbx.sandboxId);
    const doc = (await (await fetch(`${apiUrl()}/v1/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => !p.startsWith('/v1/'))).toEqual([]);
    const native = await fetch(`${apiUrl()}/v1/sandboxes/${sbx.sandboxId}`, { headers: { authorization: `Bearer ${apiKey()}` } });
    expect(native.status).toBe(200);
    expect(await native.json()).not.toHaveProperty('accessToken');
    const notFound = await fetch(`${apiUrl()}/v1/sandboxes/sbx_nope`, { headers: { authorization: `Bearer ${apiKey()}` } });
    expect(await notFound.json()).toMatchObject({ error: { code: 'sandbox_not_found' } });
    // the native API's commands keep root and /workspace
    const run = await fetch(`${apiUrl()}/v1/sandboxes/${sbx.sandboxId}/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ cmd: 'whoami; pwd' }),
    });
    const lines = (await run.text()).trim().split('\n').map((l) => JSON.parse(l) as { type: string; data?: string });
    expect(lines.filter((l) => l.type === 'stdout').map((l) => Buffer.from(l.data!, 'base64').toString()).join('')).toBe('root\n/workspace\n');
  });
});

describe('E2B SDK (2.51.0): what is not supported answers a clear error', () => {
  it('an egress proxy in network: 501 naming the feature; a filesystem-only pause or a reboot on connect: 400', async () => {
    await expect(Sandbox.updateNetwork(sbx.sandboxId, { egressProxy: { address: 'proxy.example.test:1080' } } as never)).rejects.toThrow(/501: network.egressProxy is not supported/);
    await expect(Sandbox.pause(sbx.sandboxId, { keepMemory: false } as never)).rejects.toThrow(/filesystem-only pause/);
    await expect(Sandbox.connect(sbx.sandboxId, { onResume: 'reboot' } as never)).rejects.toThrow(/memory: false/);
    expect((await sbx.getInfo()).state).toBe('running');
  });
});

describe('E2B SDK (2.51.0): commands', () => {
  it('run: streamed stdout/stderr, the E2B user and home, sandbox envs, exit codes as CommandExitError', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const r = await sbx.commands.run('echo out; echo err >&2; whoami; pwd; echo "$FROM_CREATE $MINE"', {
      envs: { MINE: "it's mine" },
      onStdout: (d) => void out.push(d),
      onStderr: (d) => void err.push(d),
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe("out\nuser\n/home/user\nyes it's mine\n");
    expect(r.stderr).toBe('err\n');
    expect(out.join('')).toBe(r.stdout);
    expect(err.join('')).toBe('err\n');
    const root = await sbx.commands.run('whoami; pwd', { user: 'root', cwd: '/tmp' });
    expect(root.stdout).toBe('root\n/tmp\n');
    const failed = await sbx.commands.run('echo partial; exit 3').catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(CommandExitError);
    expect((failed as CommandExitError).exitCode).toBe(3);
    expect((failed as CommandExitError).stdout).toBe('partial\n');
    await expect(sbx.commands.run('sleep 30', { timeoutMs: 1500 })).rejects.toBeInstanceOf(TimeoutError);
  });

  it('background commands: list, sendStdin, connect, closeStdin, kill', async () => {
    const first: string[] = [];
    const cat = await sbx.commands.run('cat', { background: true, stdin: true, cwd: '/tmp', envs: { X: '1' }, onStdout: (d) => void first.push(d) });
    const listed = await sbx.commands.list();
    const entry = listed.find((p) => p.pid === cat.pid);
    expect(entry).toMatchObject({ cmd: '/bin/bash', args: ['-l', '-c', 'cat'], envs: { X: '1' }, cwd: '/tmp' });
    await sbx.commands.sendStdin(cat.pid, 'hello\n');
    await until(() => first.join('') === 'hello\n');
    const seen: string[] = [];
    const attached = await sbx.commands.connect(cat.pid, { onStdout: (d) => void seen.push(d) });
    await sbx.commands.sendStdin(cat.pid, 'again\n');
    await sbx.commands.closeStdin(cat.pid);
    const done = await cat.wait();
    expect(done.exitCode).toBe(0);
    expect(done.stdout).toBe('hello\nagain\n');
    await attached.wait();
    expect(seen.join('')).toBe('again\n');

    const sleeper = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 0 });
    expect(await sbx.commands.kill(sleeper.pid)).toBe(true);
    const killed = await sleeper.wait().catch((e: unknown) => e);
    expect(killed).toBeInstanceOf(CommandExitError);
    expect(await sbx.commands.kill(sleeper.pid)).toBe(false);
    expect((await sbx.commands.list()).some((p) => p.pid === sleeper.pid)).toBe(false);
    await expect(sbx.commands.sendStdin(999_999, 'x')).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('E2B SDK (2.51.0): files', () => {
  it('text, bytes and streams; relative and ~ paths against /home/user, owned by the user', async () => {
    const w = await sbx.files.write('notes/a.txt', 'hello');
    expect(w.path).toBe('/home/user/notes/a.txt');
    expect(await sbx.files.read('~/notes/a.txt')).toBe('hello');
    expect((await sbx.commands.run('stat -c %U notes notes/a.txt')).stdout).toBe('user\nuser\n');
    const bytes = randomBytes(1000);
    await sbx.files.write('/tmp/b.bin', new Uint8Array(bytes).buffer);
    expect(Buffer.from(await sbx.files.read('/tmp/b.bin', { format: 'bytes' }))).toEqual(bytes);
    expect(await sbx.files.read('/tmp/b.bin', { format: 'bytes', user: 'root' })).toHaveLength(1000);
    // a stream goes as application/octet-stream; gzip both ways
    const big = randomBytes(1024 * 1024 + 7);
    await sbx.files.write('big/one.bin', streamOf(big));
    expect(await readAll(await sbx.files.read('big/one.bin', { format: 'stream' }))).toEqual(big);
    await sbx.files.write('big/two.bin', new Uint8Array(big).buffer, { gzip: true });
    expect(Buffer.from(await sbx.files.read('big/two.bin', { format: 'bytes', gzip: true }))).toEqual(big);
    // several files in one multipart request
    const many = await sbx.files.write([
      { path: 'multi/x.txt', data: 'x' },
      { path: '/tmp/multi/y.txt', data: 'yy' },
    ]);
    expect(many.map((f) => f.path)).toEqual(['/home/user/multi/x.txt', '/tmp/multi/y.txt']);
    expect(await sbx.files.read('/tmp/multi/y.txt')).toBe('yy');
    expect(await sbx.files.read('/tmp/empty.txt').catch((e: unknown) => e)).toBeInstanceOf(FileNotFoundError);
    await sbx.files.write('/tmp/empty.txt', '');
    expect(await sbx.files.read('/tmp/empty.txt')).toBe('');
  });

  it('signed upload and download URLs (no headers, no sandbox id: the signature names the sandbox)', async () => {
    const up = await sbx.uploadUrl('/tmp/signed.txt');
    const form = new FormData();
    form.append('file', new Blob(['via url']), 'ignored-name');
    const put = await fetch(up, { method: 'POST', body: form });
    expect(put.status).toBe(200);
    const down = await sbx.downloadUrl('/tmp/signed.txt', { useSignatureExpiration: 120 });
    expect(down).not.toContain(sbx.sandboxId);
    expect(await (await fetch(down)).text()).toBe('via url');
    // the signature covers the path and the operation
    const other = new URL(down);
    other.searchParams.set('path', '/etc/shadow');
    expect((await fetch(other)).status).toBe(401);
    expect((await fetch(up, { method: 'GET' })).status).toBe(401); // (a write signature does not read)
    expect((await fetch(await sbx.downloadUrl('/tmp/signed.txt', { user: 'root' }))).status).toBe(200);
  });

  it('list, exists, makeDir, getInfo, rename, remove', async () => {
    expect(await sbx.files.makeDir('~/d1/d2')).toBe(true);
    expect(await sbx.files.makeDir('d1/d2')).toBe(false);
    expect((await sbx.commands.run('stat -c %U d1 d1/d2')).stdout).toBe('user\nuser\n');
    await sbx.files.write('d1/d2/f.txt', '12345');
    const list = await sbx.files.list('d1', { depth: 2 });
    expect(list.map((e) => [e.path, e.type])).toEqual([
      ['/home/user/d1/d2', 'dir'],
      ['/home/user/d1/d2/f.txt', 'file'],
    ]);
    const info = await sbx.files.getInfo('d1/d2/f.txt');
    expect(info).toMatchObject({ name: 'f.txt', type: 'file', size: 5, path: '/home/user/d1/d2/f.txt', permissions: '-rw-r--r--' });
    expect(await sbx.files.exists('d1/d2/f.txt')).toBe(true);
    expect(await sbx.files.exists('d1/nope')).toBe(false);
    const moved = await sbx.files.rename('d1/d2/f.txt', 'd1/g.txt');
    expect(moved.path).toBe('/home/user/d1/g.txt');
    expect(await sbx.files.read('d1/g.txt')).toBe('12345');
    await sbx.files.remove('d1');
    expect(await sbx.files.exists('d1')).toBe(false);
    await sbx.files.remove('d1'); // (no error when missing, as envd)
    await expect(sbx.files.list('/tmp/b.bin')).rejects.toThrow();
    // a symbolic link lists as one (Debian's /bin -> usr/bin)
    expect((await sbx.files.list('/')).find((e) => e.name === 'bin')).toMatchObject({ type: 'symlink', symlinkTarget: 'usr/bin' });
    await expect(sbx.files.getInfo('/nope/nope')).rejects.toBeInstanceOf(FileNotFoundError);
  });
});

describe('E2B SDK (2.51.0): lifecycle, list, tokens', () => {
  let other: Sandbox;
  beforeAll(async () => {
    other = await create({ metadata: { role: 'other' } });
  });

  it('list: metadata filter (encoded twice by the SDK), pagination with X-Next-Token', async () => {
    const odd = await Sandbox.list({ query: { metadata: { e2bRun: RUN, 'odd key': 'a&b=c %' } } }).nextItems();
    expect(odd.map((s) => s.sandboxId)).toEqual([sbx.sandboxId]);
    const pager = Sandbox.list({ query: { metadata: { e2bRun: RUN } }, limit: 1 });
    const seen: string[] = [];
    while (pager.hasNext) seen.push(...(await pager.nextItems()).map((s) => s.sandboxId));
    expect(seen.sort()).toEqual([sbx.sandboxId, other.sandboxId].sort());
    const running = await Sandbox.list({ query: { metadata: { e2bRun: RUN, role: 'other' }, state: ['running'] } }).nextItems();
    expect(running.map((s) => [s.sandboxId, s.state])).toEqual([[other.sandboxId, 'running']]);
  });

  it("an envd token opens its own sandbox only (X-Access-Token)", async () => {
    const token = (id: string) => fetch(`${apiUrl()}/sandboxes/${id}`, { headers: { 'x-api-key': apiKey() } }).then(async (r) => ((await r.json()) as { envdAccessToken: string }).envdAccessToken);
    const mine = await token(sbx.sandboxId);
    const theirs = await token(other.sandboxId);
    expect(mine).not.toBe(theirs);
    const path = '/files?path=%2Fetc%2Fhostname';
    expect((await envd(path, sbx.sandboxId, mine)).status).toBe(200);
    expect((await envd(path, sbx.sandboxId, theirs)).status).toBe(401);
    expect((await envd(path, sbx.sandboxId, undefined)).status).toBe(401);
    const rpc = await envd('/filesystem.Filesystem/Stat', sbx.sandboxId, theirs, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"path":"/"}' });
    expect(rpc.status).toBe(401);
    // the native API's key is not a sandbox token either
    expect((await envd('/health', sbx.sandboxId, apiKey())).status).toBe(401);
    expect((await envd('/health', sbx.sandboxId, mine)).status).toBe(204);
  });

  it('pause (= hibernate) and connect (= resume): 201 then 200, same token, memory kept', async () => {
    await other.commands.run('echo kept > /tmp/state; sleep 3600 >/dev/null 2>&1 &');
    expect(await other.pause()).toBe(true);
    expect(await Sandbox.pause(other.sandboxId)).toBe(false);
    expect((await other.getInfo()).state).toBe('paused');
    expect(await other.isRunning()).toBe(false);
    const resumed = await Sandbox.connect(other.sandboxId);
    expect((await resumed.getInfo()).state).toBe('running');
    expect(await resumed.files.read('/tmp/state')).toBe('kept\n');
    expect((await resumed.commands.run('pgrep -x sleep >/dev/null && echo alive')).stdout).toBe('alive\n');
    // the handle from create still works: the token survived the hibernation
    expect((await other.commands.run('echo same')).stdout).toBe('same\n');
    const again = await Sandbox.connect(other.sandboxId, { timeoutMs: 900_000 });
    expect(again.sandboxId).toBe(other.sandboxId);
    // on the wire: 201 when connect resumed it, 200 when it was running
    const connect = () => fetch(`${apiUrl()}/v2/sandboxes/${other.sandboxId}/connect`, { method: 'POST', headers: { 'x-api-key': apiKey(), 'content-type': 'application/json' }, body: '{"timeout":300}' });
    expect((await connect()).status).toBe(200);
    expect(await Sandbox.pause(other.sandboxId)).toBe(true);
    expect((await connect()).status).toBe(201);
    expect((await connect()).status).toBe(200);
  });

  it('kill: true, then false; a killed sandbox is not found everywhere', async () => {
    const id = other.sandboxId;
    expect(await other.kill()).toBe(true);
    expect(await Sandbox.kill(id)).toBe(false);
    await expect(Sandbox.getInfo(id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(Sandbox.connect(id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(other.setTimeout(60_000)).rejects.toBeInstanceOf(NotFoundError);
    expect(await other.isRunning()).toBe(false);
    await expect(other.commands.run('true')).rejects.toBeInstanceOf(SandboxError);
    await expect(other.files.read('/etc/hostname')).rejects.toBeInstanceOf(SandboxError);
  });
});

describe('E2B SDK 2.45.0 (POST /sandboxes, /sandboxes/:id/connect)', () => {
  it('create, run, files, pause, connect, kill', async () => {
    // 2.45 checks that the key looks like E2B's (e2b_ + hex) unless told not to; 2.51 does not
    process.env.E2B_VALIDATE_API_KEY = 'false';
    const old = await OldSandbox.create({ metadata: { ...META, sdk: 'old' } });
    made.push(old.sandboxId);
    expect((await old.commands.run('whoami')).stdout).toBe('user\n');
    await old.files.write('x.txt', 'old sdk');
    expect(await old.files.read('/home/user/x.txt')).toBe('old sdk');
    expect(await old.pause()).toBe(true);
    const back = await OldSandbox.connect(old.sandboxId);
    expect(await back.files.read('x.txt')).toBe('old sdk');
    expect(await back.kill()).toBe(true);
    expect(await OldSandbox.kill(old.sandboxId)).toBe(false);
  });
});

describe('the envd access token is stored with the sandbox', () => {
  it('survives a restart of the server (same token, still accepted)', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const key = `e2b_${randomBytes(16).toString('hex')}`;
    const env = { ...process.env, NULLSPACE_LOG_LEVEL: 'warn', NULLSPACE_API_KEY: key, NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' };
    let srv: RunningServer = await startServer(loadConfig(env, { dataDir, port: 0 }));
    const opts = () => ({ apiUrl: srv.url, sandboxUrl: srv.url, apiKey: key });
    const tokenOf = async (id: string) =>
      ((await (await fetch(`${srv.url}/sandboxes/${id}`, { headers: { 'x-api-key': key } })).json()) as { envdAccessToken: string }).envdAccessToken;
    onTestFinished(async () => {
      await srv.close();
    });
    const first = await Sandbox.create({ ...opts(), metadata: META });
    onTestFinished(async () => {
      await Sandbox.kill(first.sandboxId, opts()).catch(() => {});
    });
    const before = await tokenOf(first.sandboxId);
    expect(before).toMatch(/^[A-Za-z0-9_-]{32}$/);
    await srv.close();
    srv = await startServer(loadConfig(env, { dataDir, port: 0 }));
    expect(await tokenOf(first.sandboxId)).toBe(before);
    const again = await Sandbox.connect(first.sandboxId, opts());
    expect((await again.commands.run('echo after restart')).stdout).toBe('after restart\n');
  });
});
