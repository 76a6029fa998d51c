import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { ALL_TRAFFIC, CommandExitError, FilesystemEventType, InvalidArgumentError, NotFoundError, Sandbox, SandboxError, type FilesystemEvent, type SandboxOpts } from 'e2b';
import { apiKey, apiUrl } from './helpers.js';
import { e2bRun, nativeKill, until } from './e2b-helpers.js';

/**
 * The E2B surface's terminals, watches, metrics, port traffic (getHost), snapshots and fork
 * (docs/api.md, "E2B compatibility"), through E2B's own SDK (e2b 2.51.0), unchanged, configured only
 * through E2B's environment variables, against the suite's server and real VMs.
 */

const { RUN, META, made, create } = e2bRun();

/**
 * GET `url` as is. `*.localhost` names the loopback (RFC 6761: browsers and systemd-resolved do so;
 * this machine's resolver does not, so the lookup is given here: the URL itself is getHost()'s).
 */
function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const lookup = (host: string, opts: { all?: boolean }, cb: (...a: unknown[]) => void) => {
    if (!host.endsWith('.localhost')) return cb(new Error(`unexpected host ${host}`));
    if (opts.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
    else cb(null, '127.0.0.1', 4);
  };
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, lookup: lookup as never }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** A Connect unary call as E2B's Python SDK makes it (its polling watcher is not in the JS SDK). */
async function rpc(sbx: Sandbox, method: string, msg: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const token = ((await (await fetch(`${apiUrl()}/sandboxes/${sbx.sandboxId}`, { headers: { 'x-api-key': apiKey() } })).json()) as { envdAccessToken: string }).envdAccessToken;
  const r = await fetch(`${apiUrl()}/filesystem.Filesystem/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983', 'x-access-token': token },
    body: JSON.stringify(msg),
  });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

let sbx: Sandbox;

beforeAll(async () => {
  process.env.E2B_API_URL = apiUrl();
  process.env.E2B_SANDBOX_URL = apiUrl();
  process.env.E2B_API_KEY = apiKey();
  sbx = await create({ timeoutMs: 900_000 });
});

afterAll(async () => {
  for (const id of made) await nativeKill(id);
});

describe('E2B SDK: PTY', () => {
  it('create (bash -i -l on a terminal), sendInput, resize (stty size), connect, kill', async () => {
    let out = '';
    const dec = new TextDecoder();
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += dec.decode(d, { stream: true })) });
    const type = (s: string) => sbx.pty.sendInput(term.pid, new TextEncoder().encode(s));
    await type('stty size; echo "tty=$(tty) user=$(whoami) term=$TERM"\n');
    await until(() => /24 80/.test(out) && /tty=\/dev\/pts\/\d+ user=user term=xterm-256color/.test(out), () => out);
    await sbx.pty.resize(term.pid, { cols: 120, rows: 40 });
    await type('stty size\n');
    await until(() => /40 120/.test(out), () => out);
    // a bad size is refused (not applied)
    await expect(sbx.pty.resize(term.pid, { cols: 0, rows: 40 })).rejects.toBeInstanceOf(InvalidArgumentError);
    // reattached: the output is terminal data again
    let again = '';
    const attached = await sbx.pty.connect(term.pid, { onData: (d) => void (again += dec.decode(d)) });
    await type('echo re$((1+1))attached\n');
    await until(() => again.includes('re2attached'), () => again);
    // Ctrl-C reaches the foreground job (a terminal's job control)
    await type('sleep 600\n');
    await type('\x03echo after-ctrl-c\n');
    await until(() => out.includes('after-ctrl-c\r\n'), () => out);
    expect(await sbx.pty.kill(term.pid)).toBe(true);
    expect(await term.wait().catch((e: unknown) => e)).toBeInstanceOf(CommandExitError);
    await attached.wait().catch(() => {});
    expect(await sbx.pty.kill(term.pid)).toBe(false);
    await expect(sbx.pty.sendInput(term.pid, new Uint8Array([65]))).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('E2B SDK: watchDir', () => {
  it('sees create, write and remove with names relative to the directory; recursive sees below', async () => {
    await sbx.files.makeDir('/tmp/w/sub');
    const events: FilesystemEvent[] = [];
    const handle = await sbx.files.watchDir('/tmp/w', (e) => void events.push(e));
    onTestFinished(() => handle.stop());
    await sbx.commands.run('echo one > /tmp/w/f.txt');
    // (files.write replaces a file by a rename: its final name is created, not written)
    await sbx.files.write('/tmp/w/g.txt', 'two');
    await sbx.files.remove('/tmp/w/f.txt');
    await sbx.files.write('/tmp/w/sub/deep.txt', 'not seen: not recursive');
    await until(() => events.some((e) => e.name === 'f.txt' && e.type === FilesystemEventType.REMOVE), () => events);
    expect(events.filter((e) => e.name === 'f.txt').map((e) => e.type)).toEqual(expect.arrayContaining([FilesystemEventType.CREATE, FilesystemEventType.WRITE, FilesystemEventType.REMOVE]));
    expect(events).toContainEqual(expect.objectContaining({ name: 'g.txt', type: FilesystemEventType.CREATE }));

    const deep: FilesystemEvent[] = [];
    const rec = await sbx.files.watchDir('/tmp/w', (e) => void deep.push(e), { recursive: true });
    onTestFinished(() => rec.stop());
    await sbx.commands.run('echo x > /tmp/w/sub/r.txt');
    await until(() => deep.some((e) => e.name === 'sub/r.txt' && e.type === FilesystemEventType.WRITE), () => deep);
    expect(events.some((e) => e.name.includes('deep') || e.name.includes('r.txt'))).toBe(false);

    await expect(sbx.files.watchDir('/tmp/nope', () => {})).rejects.toBeInstanceOf(NotFoundError);
    await expect(sbx.files.watchDir('/etc/hostname', () => {})).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it("the polling watcher of E2B's Python SDK: CreateWatcher, GetWatcherEvents, RemoveWatcher", async () => {
    await sbx.files.makeDir('/tmp/p');
    const made = await rpc(sbx, 'CreateWatcher', { path: '/tmp/p' });
    expect(made.status).toBe(200);
    const watcherId = made.body.watcherId as string;
    expect(watcherId).toMatch(/^[0-9a-f]{24}$/);
    await sbx.files.write('/tmp/p/a.txt', 'a');
    const seen: Array<{ name: string; type: string }> = [];
    for (let i = 0; i < 100 && !seen.some((e) => e.type === 'EVENT_TYPE_WRITE'); i++) {
      seen.push(...((await rpc(sbx, 'GetWatcherEvents', { watcherId })).body.events as typeof seen));
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen).toContainEqual({ name: 'a.txt', type: 'EVENT_TYPE_CREATE' });
    // polled events are gone from the buffer
    expect((await rpc(sbx, 'GetWatcherEvents', { watcherId })).body).toEqual({ events: [] });
    expect((await rpc(sbx, 'RemoveWatcher', { watcherId })).status).toBe(200);
    expect(await rpc(sbx, 'GetWatcherEvents', { watcherId })).toMatchObject({ status: 404, body: { code: 'not_found' } });
    expect(await rpc(sbx, 'CreateWatcher', { path: '/tmp/none' })).toMatchObject({ status: 404, body: { code: 'not_found' } });
  });
});

describe('E2B SDK: metrics', () => {
  it("getMetrics returns the sampler's series in E2B's fields; a killed sandbox's is not found", async () => {
    let m: Awaited<ReturnType<typeof sbx.getMetrics>> = [];
    for (let i = 0; i < 60 && m.length === 0; i++) {
      m = await sbx.getMetrics();
      if (m.length === 0) await new Promise((r) => setTimeout(r, 500));
    }
    expect(m.length).toBeGreaterThan(0);
    const last = m.at(-1)!;
    expect(last.timestamp).toBeInstanceOf(Date);
    expect(Math.abs(last.timestamp.getTime() - Date.now())).toBeLessThan(120_000);
    expect(last.cpuCount).toBeGreaterThanOrEqual(1);
    expect(last.memTotal).toBeGreaterThan(100 * 1024 * 1024);
    expect(last.memUsed).toBeGreaterThan(0);
    expect(last.memUsed).toBeLessThan(last.memTotal);
    expect(last.diskTotal).toBeGreaterThan(last.diskUsed);
    expect(last.diskUsed).toBeGreaterThan(0);
    // start/end bound the series (unix seconds)
    expect(await sbx.getMetrics({ start: new Date(Date.now() + 3_600_000) })).toEqual([]);
    expect((await sbx.getMetrics({ end: new Date() })).length).toBeGreaterThan(0);
    await expect(Sandbox.getMetrics(`sbx_${'0'.repeat(16)}`)).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('E2B SDK: getHost(port) through the preview proxy', () => {
  it('reaches a guest http.server by the host the SDK builds; public unless restricted, then e2b-traffic-access-token', async () => {
    const serve = (s: Sandbox) =>
      s.commands.run(
        `mkdir -p /tmp/www && echo "hello from $(hostname)" > /tmp/www/index.txt && cd /tmp/www && (python3 -m http.server 8000 >/dev/null 2>&1 &) && for i in $(seq 300); do (echo > /dev/tcp/127.0.0.1/8000) 2>/dev/null && exit 0; sleep 0.1; done; exit 1`,
        { timeoutMs: 60_000 },
      );
    await serve(sbx);
    const host = sbx.getHost(8000);
    expect(host).toBe(`8000-${sbx.sandboxId}.localhost:${new URL(apiUrl()).port}`);
    const hostname = (await sbx.commands.run('hostname')).stdout.trim();
    expect(await get(`http://${host}/index.txt`)).toEqual({ status: 200, body: `hello from ${hostname}\n` });
    // E2B's header form on the API's own host reaches the same server
    const byHeader = await fetch(`${apiUrl()}/index.txt`, { headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8000' } });
    expect(byHeader.status).toBe(200);
    expect(await byHeader.text()).toBe(`hello from ${hostname}\n`);
    expect((await get(`http://${sbx.getHost(8001)}/`)).status).toBe(502);

    const closed = await create({ network: { allowPublicTraffic: false } });
    expect(closed.trafficAccessToken).toMatch(/^[0-9a-f]{48}$/);
    expect(sbx.trafficAccessToken).toBeUndefined();
    await serve(closed);
    const url = `http://${closed.getHost(8000)}/index.txt`;
    expect((await get(url)).status).toBe(401);
    expect((await get(url, { 'e2b-traffic-access-token': 'wrong' })).status).toBe(403);
    expect((await get(url, { 'e2b-traffic-access-token': closed.trafficAccessToken! })).status).toBe(200);
    const restricted = await fetch(`${apiUrl()}/index.txt`, { headers: { 'e2b-sandbox-id': closed.sandboxId, 'e2b-sandbox-port': '8000' } });
    expect(restricted.status).toBe(401);
    await closed.kill();
  });
});

describe('E2B SDK: snapshots and fork', () => {
  it('createSnapshot (named), listSnapshots, create from its id and name, deleteSnapshot', async () => {
    await sbx.files.write('/tmp/snap.txt', 'in the snapshot');
    const name = `e2b-snap-${RUN}`;
    const snap = await sbx.createSnapshot({ name });
    expect(snap.snapshotId).toMatch(/^snap_/);
    expect(snap.names).toEqual([name]);
    onTestFinished(async () => {
      await Sandbox.deleteSnapshot(snap.snapshotId).catch(() => {});
    });
    expect(await sbx.isRunning()).toBe(true);
    await expect(sbx.createSnapshot({ name })).rejects.toThrow(/exists/);
    const mine = await sbx.listSnapshots().nextItems();
    expect(mine).toContainEqual({ snapshotId: snap.snapshotId, names: [name] });
    expect(await Sandbox.listSnapshots({ name }).nextItems()).toEqual([{ snapshotId: snap.snapshotId, names: [name] }]);
    const byId = await create({ template: snap.snapshotId } as SandboxOpts);
    expect(await byId.files.read('/tmp/snap.txt')).toBe('in the snapshot');
    await byId.kill();
    const byName = await Sandbox.create(name, { metadata: META });
    made.push(byName.sandboxId);
    expect(await byName.files.read('/tmp/snap.txt')).toBe('in the snapshot');
    await byName.kill();
    expect(await Sandbox.deleteSnapshot(snap.snapshotId)).toBe(true);
    expect(await Sandbox.deleteSnapshot(snap.snapshotId)).toBe(false);
    expect(await Sandbox.listSnapshots({ name }).nextItems()).toEqual([]);
  });

  it('fork({count: 2}): running copies with their own ids and tokens; the source runs on', async () => {
    await sbx.commands.run('echo forked-state > /tmp/fork.txt');
    const forks = await sbx.fork({ count: 2 });
    expect(forks).toHaveLength(2);
    for (const f of forks) {
      if (!(f instanceof Sandbox)) throw f;
      made.push(f.sandboxId);
    }
    const [a, b] = forks as Sandbox[];
    expect(new Set([a!.sandboxId, b!.sandboxId, sbx.sandboxId]).size).toBe(3);
    expect(await a!.files.read('/tmp/fork.txt')).toBe('forked-state\n');
    await a!.files.write('/tmp/fork.txt', 'changed in a');
    expect(await b!.files.read('/tmp/fork.txt')).toBe('forked-state\n');
    expect(await sbx.files.read('/tmp/fork.txt')).toBe('forked-state\n');
    expect(await a!.kill()).toBe(true);
    expect(await b!.kill()).toBe(true);
    await expect(Sandbox.fork(`sbx_${'0'.repeat(16)}`)).rejects.toBeInstanceOf(SandboxError);
  });
});

describe('E2B SDK: small gaps', () => {
  it('list refuses a newest-first order instead of ignoring it', async () => {
    const asc = await Sandbox.list({ query: { metadata: { e2bRun: RUN } }, order: 'asc' } as never).nextItems();
    expect(asc.map((s) => s.sandboxId)).toContain(sbx.sandboxId);
    await expect(Sandbox.list({ query: { metadata: { e2bRun: RUN } }, order: 'desc' } as never).nextItems()).rejects.toThrow(/order .* is not supported/);
  });

  it("a download is gzip-encoded when the client asks for gzip alone (the SDK's gzip: true), not for a library's default list", async () => {
    await sbx.files.write('enc.txt', 'x'.repeat(100_000));
    const token = ((await (await fetch(`${apiUrl()}/sandboxes/${sbx.sandboxId}`, { headers: { 'x-api-key': apiKey() } })).json()) as { envdAccessToken: string }).envdAccessToken;
    const encoding = async (accept: string) => {
      const r = await fetch(`${apiUrl()}/files?path=enc.txt&username=user`, {
        headers: { 'accept-encoding': accept, 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983', 'x-access-token': token },
      });
      const body = await r.text();
      expect(body).toBe('x'.repeat(100_000));
      return r.headers.get('content-encoding');
    };
    expect(await encoding('gzip')).toBe('gzip');
    expect(await encoding('gzip, deflate')).toBeNull();
    expect(await encoding('identity')).toBeNull();
    expect(Buffer.from(await sbx.files.read('enc.txt', { format: 'bytes', gzip: true })).toString()).toBe('x'.repeat(100_000));
  });

  it("the login shell E2B runs every command in (bash -l -c) starts no subprocess of its own, and keeps Debian's PATHs", async () => {
    // (Debian's /etc/profile ran `$(id -u)`; base's uses bash's $EUID)
    expect((await sbx.commands.run('bash -lxc true 2>&1 | grep -c "id -u" || true')).stdout).toBe('0\n');
    expect((await sbx.commands.run('echo $PATH')).stdout).toBe('/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games\n');
    expect((await sbx.commands.run('echo $PATH', { user: 'root' })).stdout).toBe('/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n');
    expect((await sbx.commands.run("sh -lc 'echo $PATH'", { user: 'root' })).stdout).toBe('/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n');
  });
});

describe('E2B SDK: egress rules (network.allowOut / denyOut, updateNetwork)', () => {
  const rules = async (id: string) => {
    const r = (await (await fetch(`${apiUrl()}/v1/sandboxes/${id}/network`, { headers: { authorization: `Bearer ${apiKey()}` } })).json()) as { allowOut: string[]; denyOut: string[] };
    return { allowOut: r.allowOut, denyOut: r.denyOut };
  };

  it("maps E2B's rules onto nullspace's at create and on update; what cannot be kept exactly is refused, not widened", async () => {
    // E2B's usual form: everything denied but an allow list (an allow rule is an exception there)
    const s = await create({ network: { denyOut: [ALL_TRAFFIC], allowOut: ['10.213.99.7'] } });
    expect(await rules(s.sandboxId)).toEqual({ allowOut: ['10.213.99.7'], denyOut: [] });
    // a guest connection to an address outside the allow list is refused at once (a reset)
    const out = await s.commands.run("python3 -c \"import socket; s=socket.socket(); s.settimeout(5)\ntry:\n  s.connect(('10.213.98.1', 80)); print('connected')\nexcept Exception as e: print(type(e).__name__)\"");
    expect(out.stdout.trim()).toBe('ConnectionRefusedError');
    // names too (matched on SNI / Host by nullspace's egress proxy)
    await s.updateNetwork({ denyOut: [ALL_TRAFFIC], allowOut: ['10.213.99.7', '*.example.test'] });
    expect(await rules(s.sandboxId)).toEqual({ allowOut: ['10.213.99.7', '*.example.test'], denyOut: [] });

    await s.updateNetwork({ denyOut: ['10.213.98.0/24'] });
    expect(await rules(s.sandboxId)).toEqual({ allowOut: [], denyOut: ['10.213.98.0/24'] });
    await s.updateNetwork({});
    expect(await rules(s.sandboxId)).toEqual({ allowOut: [], denyOut: [] });
    // everything denied, nothing allowed
    await s.updateNetwork({ denyOut: [ALL_TRAFFIC] });
    expect(await rules(s.sandboxId)).toEqual({ allowOut: [], denyOut: [ALL_TRAFFIC] });

    // an exception inside a narrower deny rule has no exact nullspace form: refused, rules unchanged
    await expect(s.updateNetwork({ denyOut: ['10.213.98.0/24'], allowOut: ['10.213.98.5'] })).rejects.toThrow(/allowOut without ALL_TRAFFIC/);
    expect(await rules(s.sandboxId)).toEqual({ allowOut: [], denyOut: [ALL_TRAFFIC] });
    await expect(create({ network: { allowOut: ['10.213.98.5'], denyOut: ['10.213.98.0/24'] } })).rejects.toThrow(/allowOut without ALL_TRAFFIC/);
    await expect(s.updateNetwork({ allowInternetAccess: false })).rejects.toThrow(/allow_internet_access/);
  });
});
