import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import pg from 'pg';
import { Sandbox, Volume } from 'nullspace';
import { AuthenticationError, Sandbox as E2bSandbox, SandboxError } from 'e2b';
import { apiKeyDigestHex, loadConfig, templateGrant } from '@nullspace/server';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { TEST_ROOT } from './env.js';
import { exited, waitFor } from './servers.js';

/**
 * The fleet's first layer over real processes (docs/ARCHITECTURE.md "Fleet"): `scripts/cluster.sh up
 * 3` starts a control plane and three `nullspace host` processes, each in its own network namespace;
 * they join with the join token, heartbeat, are drained, lost when cut off or killed, fenced when
 * they come back; `down` leaves nothing behind. Needs root (ip netns).
 */
const repo = path.resolve(__dirname, '..');
const CLI = path.join(repo, 'packages/cli/dist/main.js');
const root = process.getuid?.() === 0;

// a name, a /24 and a directory of this run only: `down` removes exactly these
const NAME = `nsf${randomBytes(2).toString('hex')}`;
const NET = randomInt(100, 250);
const DIR = path.join(TEST_ROOT, `c-${randomBytes(3).toString('hex')}`);
// (lost after 3 s without a heartbeat: a busy 2-core machine delays a heartbeat by a second or two at times)
const HEARTBEAT_MS = 500;
const LOST_AFTER = 6;
const env = {
  ...process.env,
  NULLSPACE_CLUSTER_DIR: DIR,
  NULLSPACE_CLUSTER_NAME: NAME,
  NULLSPACE_CLUSTER_NET: String(NET),
  NULLSPACE_HOST_HEARTBEAT_MS: String(HEARTBEAT_MS),
  NULLSPACE_HOST_LOST_AFTER: String(LOST_AFTER),
  NULLSPACE_LOG_LEVEL: 'info',
  // (hosts share the suite's template cache; no warm VMs: every VM here is one a test asked for)
  NULLSPACE_WARM_POOL: '0',
  NULLSPACE_SNAPSHOT_REPLICAS: '2',
};

/** Runs a command to its end without blocking this process. */
function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: repo, env: opts.env ?? env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 180_000);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const cluster = (...args: string[]) => run('bash', ['scripts/cluster.sh', ...args]);

interface HostView {
  hostId: string;
  state: 'ready' | 'draining' | 'lost';
  url: string | null;
  fingerprint: Record<string, unknown> & { templates: unknown[] };
  capacity: Record<string, number>;
  counts: { sandboxes: number };
  epoch: number;
  lostAt: string | null;
  fencedAt: string | null;
}

/** What is left of this run's cluster: processes naming its dir, its namespaces and links, its dir. */
async function leftovers(): Promise<string[]> {
  const out: string[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${DIR}/`)) out.push(`process ${p}`);
    } catch {
      /* gone */
    }
  }
  const ns = await run('ip', ['netns', 'list']);
  out.push(...ns.stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${NAME}-`)).map((n) => `netns ${n}`));
  const links = await run('ip', ['-o', 'link', 'show']);
  out.push(...[...links.stdout.matchAll(/^\d+: ([^:@]+)/gm)].map((m) => m[1]!).filter((l) => l.startsWith(`${NAME}-`)).map((l) => `link ${l}`));
  if (fs.existsSync(DIR)) out.push(`dir ${DIR}`);
  return out;
}

describe.skipIf(!root)('fleet: a control plane and runtime hosts in network namespaces', () => {
  let url = '';
  let key = '';
  const api = (method: string, p: string, opts: { token?: string; body?: unknown } = {}) =>
    fetch(url + p, {
      method,
      headers: { authorization: `Bearer ${opts.token ?? key}`, ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
  const hosts = async () => ((await (await api('GET', '/v1/hosts')).json()) as { hosts: HostView[] }).hosts;
  const host = async (id: string) => (await hosts()).find((h) => h.hostId === id)!;
  let joined: HostView[] = [];
  /** The host in namespace NAME-h<i>. */
  const byIndex = (i: number) => joined.find((x) => x.url === `http://10.214.${NET}.${4 * i + 2}:7071`)!;
  const conn = () => ({ apiUrl: url, apiKey: key });
  /** The control plane's records of its hosts, read from its PostgreSQL (the cluster's own, on a socket in its dir). */
  const hostRows = async () => {
    const dbUrl = /^DB_URL=(\S+)$/m.exec(fs.readFileSync(path.join(DIR, 'cluster.state'), 'utf8'))![1]!;
    const c = new pg.Client({ connectionString: dbUrl });
    await c.connect();
    try {
      return (await c.query<{ id: string; url: string; control_credential: string }>('SELECT id, url, control_credential FROM hosts ORDER BY id')).rows;
    } finally {
      await c.end();
    }
  };
  /** A call straight to a host's listener, as its control plane makes it. */
  const direct = async (hostId: string, p: string, init: RequestInit = {}) => {
    const row = (await hostRows()).find((r) => r.id === hostId)!;
    return fetch(row.url + p, { ...init, headers: { authorization: `Bearer ${row.control_credential}`, ...(init.headers as Record<string, string> | undefined) } });
  };
  /** What a host itself runs (its own records): ids of its live sandboxes. */
  const liveOn = async (hostId: string) =>
    ((await (await direct(hostId, '/v1/sandboxes?state=creating,running,hibernating,paused,resuming')).json()) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes.map((x) => x.sandboxId).sort();
  const info = async (id: string) => (await (await api('GET', `/v1/sandboxes/${id}`)).json()) as { sandboxId: string; hostId: string; state: string };
  const errorCode = async (res: Response) => ((await res.json()) as { error?: { code: string } }).error?.code;
  /** Runs `fn` with every joined host but `keep` drained (placement can only go to `keep`). */
  const onlyOn = async <T>(keep: string[], fn: () => Promise<T>): Promise<T> => {
    const others = joined.map((h) => h.hostId).filter((h) => !keep.includes(h));
    for (const h of others) expect((await api('POST', `/v1/hosts/${h}/drain`)).status).toBe(200);
    try {
      return await fn();
    } finally {
      for (const h of others) await api('POST', `/v1/hosts/${h}/undrain`);
    }
  };
  /** One sandbox on each joined host (the placement test makes them; later tests use them). */
  const placed = new Map<string, Sandbox>();
  /** Hosts a test restarted (stopped by cluster.sh down with the rest; killed here too, should it fail). */
  const restarted: ChildProcess[] = [];

  beforeAll(async () => {
    const up = await cluster('up', '3');
    if (up.code !== 0) throw new Error(`cluster.sh up failed (${up.code}): ${up.stderr}`);
    url = /^export NULLSPACE_API_URL=(\S+)$/m.exec(up.stdout)![1]!;
    key = /^export NULLSPACE_API_KEY=(\S+)$/m.exec(up.stdout)![1]!;
    joined = (await hosts()).filter((h) => h.hostId !== 'local');
  }, 240_000);

  // every process, namespace and link goes, even when a test failed
  afterAll(async () => {
    const down = await cluster('down');
    for (const c of restarted) {
      c.kill('SIGKILL');
      await exited(c);
    }
    if (down.code !== 0) throw new Error(`cluster.sh down failed: ${down.stderr}`);
  }, 120_000);

  it('three hosts join, each from its own namespace, and are ready with fingerprint and capacity', async () => {
    expect(url).toBe(`http://10.214.${NET}.1:7070`);
    const all = await hosts();
    expect(all[0]!.hostId).toBe('local');
    expect(joined).toHaveLength(3);
    const local = all[0]!;
    expect(new Set(joined.map((h) => h.url))).toEqual(new Set([1, 2, 3].map((i) => `http://10.214.${NET}.${4 * i + 2}:7071`)));
    for (const h of joined) {
      expect(h.hostId).toMatch(/^host_[0-9a-z]{16}$/);
      expect(h.state).toBe('ready');
      expect(h.epoch).toBe(1);
      // the same machine: the same compatibility fields as the control plane's own host
      for (const f of ['qemuVersion', 'machine', 'accel', 'cpuModel', 'hostCpu', 'deviceSet', 'hostKernel']) expect(h.fingerprint[f], f).toBe(local.fingerprint[f]);
      expect(h.fingerprint.qemuVersion).toMatch(/^\d+\.\d+\.\d+$/);
      expect(h.fingerprint.templates).toEqual(local.fingerprint.templates);
      expect(h.capacity.memoryMiB).toBeGreaterThan(0);
      expect(h.capacity.vcpus).toBeGreaterThan(0);
      expect(h.capacity.freeDiskMiB).toBeGreaterThan(0);
      expect(h.counts).toEqual({ sandboxes: 0 });
    }
    // each host keeps its credentials 0600 in its own data dir
    for (const i of [1, 2, 3]) {
      const st = fs.statSync(path.join(DIR, `h${i}`, 'fleet-credentials.json'));
      expect(st.mode & 0o777).toBe(0o600);
    }
    // heartbeats go on
    const before = (await host(joined[0]!.hostId)) as HostView & { lastHeartbeat: string };
    await waitFor('a newer heartbeat', async () => {
      const now = (await host(joined[0]!.hostId)) as HostView & { lastHeartbeat: string };
      return now.lastHeartbeat > before.lastHeartbeat ? true : undefined;
    });
  });

  it('refuses a wrong join token, at the API and in `nullspace host`', async () => {
    const body = { url: 'http://10.0.0.1:1', controlCredential: 'x'.repeat(40), fingerprint: joined[0]!.fingerprint, capacity: joined[0]!.capacity, counts: { sandboxes: 0 } };
    for (const token of ['wrong-join-token-0123456789', key]) {
      const res = await api('POST', '/v1/fleet/join', { token, body });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('join_token_invalid');
    }
    const none = await fetch(url + '/v1/fleet/join', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe('join_token_invalid');
    // (refused before the body is looked at)
    const junk = await api('POST', '/v1/fleet/join', { token: 'wrong-join-token-0123456789', body: { junk: true } });
    expect(((await junk.json()) as { error: { code: string } }).error.code).toBe('join_token_invalid');

    const dataDir = path.join(DIR, 'hx');
    const r = await run(process.execPath, [CLI, 'host', '--control', url, '--join-token', 'wrong-join-token-0123456789', '--data-dir', dataDir, '--listen', '127.0.0.1:0'], {
      env: { ...env, NULLSPACE_RUN_DIR: path.join(DIR, 'run-hx'), NULLSPACE_NETWORK_ISOLATION: 'off' },
      timeoutMs: 60_000,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('join_token_invalid');
    expect(fs.existsSync(path.join(dataDir, 'fleet-credentials.json'))).toBe(false);
    expect((await hosts()).filter((h) => h.hostId !== 'local')).toHaveLength(3);
  });

  it('refuses a wrong host credential, and a host answers only its control plane', async () => {
    const h = joined[0]!;
    const report = { url: h.url, fingerprint: h.fingerprint, capacity: h.capacity, counts: h.counts };
    for (const token of ['wrong-credential', key]) {
      const res = await api('POST', `/v1/fleet/hosts/${h.hostId}/heartbeat`, { token, body: report });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('host_credential_invalid');
    }
    // one host's credential is not another's; its own is taken (so that the refusals are about the credential)
    const cred = (i: number) => JSON.parse(fs.readFileSync(path.join(DIR, `h${i}`, 'fleet-credentials.json'), 'utf8')) as { hostId: string; credential: string };
    const [one, two] = [cred(1), cred(2)];
    const beat = async (id: string, token: string) => {
      const res = await api('POST', `/v1/fleet/hosts/${id}/heartbeat`, { token, body: { ...report, url: joined.find((x) => x.hostId === id)?.url ?? report.url } });
      return [res.status, ((await res.json()) as { error?: { code: string } }).error?.code];
    };
    expect(await beat(two.hostId, one.credential)).toEqual([401, 'host_credential_invalid']);
    expect(await beat('host_0000000000000000', one.credential)).toEqual([401, 'host_credential_invalid']);
    expect(await beat(one.hostId, one.credential)).toEqual([200, undefined]);

    // the host's listener: nothing without the control plane's credential (kept by the control plane)
    const rows = await hostRows();
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      for (const headers of [{} as Record<string, string>, { authorization: `Bearer ${key}` }, { authorization: 'Bearer wrong' }, { authorization: `Bearer ${rows.find((r) => r.id !== row.id)!.control_credential}` }]) {
        const res = await fetch(`${row.url}/v1/sandboxes`, { headers });
        expect(res.status, `${row.url} ${JSON.stringify(headers)}`).toBe(401);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
      }
      const res = await fetch(`${row.url}/v1/sandboxes`, { headers: { authorization: `Bearer ${row.control_credential}` } });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { sandboxes: unknown[] }).sandboxes).toEqual([]);
      // its E2B surface (what the control plane forwards E2B's requests to) likewise: the API key,
      // another host's secret or an envd request of its own do not open it; the control header does
      const other = rows.find((r) => r.id !== row.id)!.control_credential;
      for (const [p, headers] of [
        ['/v2/sandboxes', { 'x-api-key': key }],
        ['/v2/sandboxes', { 'x-nullspace-control': other }],
        ['/v2/sandboxes', { 'x-nullspace-control': 'wrong', authorization: `Bearer ${row.control_credential}` }],
        ['/health', { 'e2b-sandbox-id': 'sbx_0000000000000000', 'e2b-sandbox-port': '49983', 'x-access-token': 'x' }],
        ['/i.txt', { 'e2b-sandbox-id': 'sbx_0000000000000000', 'e2b-sandbox-port': '8000' }],
      ] as Array<[string, Record<string, string>]>) {
        const r = await fetch(`${row.url}${p}`, { headers });
        expect(r.status, `${row.url}${p} ${JSON.stringify(headers)}`).toBe(401);
      }
      // (nor the question whose signature a signed URL carries: the control plane's alone)
      const owner = await fetch(`${row.url}/nullspace/e2b/signature-owner`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': key }, body: JSON.stringify({ query: { signature: 'v1_x' }, operation: 'read' }) });
      expect(owner.status).toBe(401);
      const e2b = await fetch(`${row.url}/v2/sandboxes`, { headers: { 'x-nullspace-control': row.control_credential } });
      expect(e2b.status).toBe(200);
      expect(await e2b.json()).toEqual([]);
    }
  });

  it('places new sandboxes across the ready hosts and routes their requests there (commands, files, preview traffic)', async () => {
    const made: Sandbox[] = [];
    onTestFinished(async () => {
      // (kept for the tests below when this one passed; else killed)
      if (placed.size !== 3) for (const s of made) await s.kill().catch(() => {});
    });
    for (let i = 0; i < 3; i++) made.push(await Sandbox.create({ ...conn(), timeoutMs: 1_800_000 }));
    const hostIds = await Promise.all(made.map(async (s) => (await info(s.sandboxId)).hostId));
    // spread: one on each host, none on the control plane (it runs none in this cluster)
    expect(new Set(hostIds)).toEqual(new Set(joined.map((h) => h.hostId)));
    for (const [i, s] of made.entries()) {
      expect((await s.commands.run('echo $((6 * 7)) $(cat /etc/hostname)')).stdout).toBe(`42 ${s.sandboxId}\n`);
      await s.files.write('/workspace/where.txt', `on ${hostIds[i]}`);
      expect(await s.files.read('/workspace/where.txt')).toBe(`on ${hostIds[i]}`);
      // the host's own record of it: running there
      expect(await liveOn(hostIds[i]!)).toContain(s.sandboxId);
      placed.set(hostIds[i]!, s);
    }
    // the list is the fleet's, each sandbox with its host
    const list = (await (await api('GET', '/v1/sandboxes')).json()) as { sandboxes: Array<{ sandboxId: string; hostId: string }> };
    expect(new Map(list.sandboxes.map((x) => [x.sandboxId, x.hostId]))).toEqual(new Map(made.map((s, i) => [s.sandboxId, hostIds[i]!])));
    // pages over hosts: one at a time, each once
    const seen: string[] = [];
    let token: string | null = null;
    do {
      const pageRes: Response = await api('GET', `/v1/sandboxes?limit=1${token ? `&nextToken=${token}` : ''}`);
      const page = (await pageRes.json()) as { sandboxes: Array<{ sandboxId: string }>; nextToken: string | null };
      expect(page.sandboxes.length).toBeLessThanOrEqual(1);
      seen.push(...page.sandboxes.map((x) => x.sandboxId));
      token = page.nextToken;
    } while (token);
    expect(seen.sort()).toEqual(made.map((s) => s.sandboxId).sort());
    // the hosts' lifecycle events reach the control plane's own stream, with their host
    const seen0 = await waitFor('a relayed event', async () => {
      const ac = new AbortController();
      const res = await fetch(`${url}/v1/events?after=0&sandboxId=${made[0]!.sandboxId}`, { headers: { authorization: `Bearer ${key}` }, signal: ac.signal });
      let text = '';
      const deadline = setTimeout(() => ac.abort(), 2000);
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          text += Buffer.from(chunk).toString();
          if (text.includes('"hostId"')) break;
        }
      } catch {
        /* aborted: nothing yet */
      } finally {
        clearTimeout(deadline);
        ac.abort();
      }
      const data = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as { sandboxId: string; type: string; data: { hostId?: string } });
      return data.find((e) => e.data.hostId === hostIds[0]);
    });
    expect(seen0.sandboxId).toBe(made[0]!.sandboxId);
    // hosts count what they run
    await waitFor('each host counting its sandbox', async () => ((await hosts()).filter((h) => h.hostId !== 'local').every((h) => h.counts.sandboxes === 1) ? true : undefined));

    // preview traffic through the control plane to the host, whose access checks still apply
    const web = made[0]!;
    const started = await web.commands.run(
      'mkdir -p /tmp/www && echo "served by $(cat /etc/hostname)" > /tmp/www/index.txt && cd /tmp/www && (python3 -m http.server 8000 >/dev/null 2>&1 &) && for i in $(seq 300); do (echo > /dev/tcp/127.0.0.1/8000) 2>/dev/null && exit 0; sleep 0.1; done; exit 1',
    );
    expect(started.exitCode).toBe(0);
    const hostHeader = web.getHost(8000);
    expect(hostHeader).toBe(`8000-${web.sandboxId}.localhost:7070`);
    const viaCp = (headers: Record<string, string>) => new Promise<{ status: number; body: string }>((resolve, reject) => {
      const u = new URL(url);
      const req = http.request({ host: u.hostname, port: u.port, path: '/index.txt', headers: { host: hostHeader, ...headers } }, (res) => {
        let body = '';
        res.on('data', (b: Buffer) => (body += b.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(await viaCp({ 'x-nullspace-traffic-token': web.trafficAccessToken })).toEqual({ status: 200, body: `served by ${web.sandboxId}\n` });
    const refused = await viaCp({});
    expect(refused.status).toBe(401);
    expect(JSON.parse(refused.body).error.code).toBe('traffic_token_missing');
    // the host's listener takes preview traffic only from its control plane
    const row = (await hostRows()).find((r) => r.id === hostIds[0])!;
    const h = new URL(row.url);
    const straight = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: h.hostname, port: h.port, path: '/index.txt', headers: { host: hostHeader, 'x-nullspace-traffic-token': web.trafficAccessToken, 'x-nullspace-control': 'wrong' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(straight).toBe(401);
  }, 360_000);

  it("forks on the source's host", async () => {
    const [hostId, src] = [...placed.entries()][0]!;
    await src.files.write('/workspace/fork.txt', 'before the fork');
    const children = await src.fork({ count: 2 });
    onTestFinished(async () => {
      for (const c of children) await c.kill().catch(() => {});
    });
    for (const c of children) {
      expect((await info(c.sandboxId)).hostId).toBe(hostId);
      expect(await c.files.read('/workspace/fork.txt')).toBe('before the fork');
    }
    expect(await liveOn(hostId)).toEqual([src.sandboxId, ...children.map((c) => c.sandboxId)].sort());
    for (const c of children) await c.kill();
    expect(await liveOn(hostId)).toEqual([src.sandboxId]);
  }, 240_000);

  it('hibernates and resumes on its host (the hibernation is found through the control plane)', async () => {
    const s = await Sandbox.create({ ...conn(), timeoutMs: 600_000 });
    onTestFinished(async () => void (await s.kill().catch(() => {})));
    const hostId = (await info(s.sandboxId)).hostId;
    const value = (await s.commands.run('head -c 8 /dev/urandom | od -An -tx8 | tr -d " " | tee /dev/shm/h')).stdout.trim();
    const snap = await s.hibernate();
    expect((await info(s.sandboxId)).state).toBe('paused');
    expect(((await (await api('GET', `/v1/snapshots/${snap.id}`)).json()) as { kind: string }).kind).toBe('hibernate');
    const resumed = await Sandbox.resume(snap.id, conn());
    expect(resumed.sandboxId).toBe(s.sandboxId);
    expect((await info(s.sandboxId)).hostId).toBe(hostId);
    expect((await resumed.commands.run('cat /dev/shm/h')).stdout.trim()).toBe(value);
    await resumed.kill();
  }, 240_000);

  it('a volume lives on one host; sandboxes that mount it are placed there', async () => {
    const name = `fleetvol${randomBytes(3).toString('hex')}`;
    const vol = await Volume.create(name, conn());
    onTestFinished(async () => void (await api('DELETE', `/v1/volumes/${name}`)));
    const v = (await (await api('GET', `/v1/volumes/${name}`)).json()) as { name: string; hostId: string };
    expect(joined.map((h) => h.hostId)).toContain(v.hostId);
    expect(vol.name).toBe(name);
    // the host holds it (its own record)
    expect((await direct(v.hostId, `/v1/volumes/${name}`)).status).toBe(200);
    const all = (await (await api('GET', '/v1/volumes')).json()) as { volumes: Array<{ name: string; hostId: string }> };
    expect(all.volumes.filter((x) => x.name === name)).toEqual([expect.objectContaining({ name, hostId: v.hostId })]);
    // a name is the fleet's: taken is taken, whichever host has it
    const again = await api('POST', '/v1/volumes', { body: { name } });
    expect(again.status).toBe(409);
    expect(await errorCode(again)).toBe('already_exists');
    const users: Sandbox[] = [];
    onTestFinished(async () => {
      for (const u of users) await u.kill().catch(() => {});
    });
    for (let i = 0; i < 2; i++) {
      users.push(await Sandbox.create({ ...conn(), timeoutMs: 600_000, volumes: { '/data': name } }));
      expect((await info(users[i]!.sandboxId)).hostId).toBe(v.hostId);
    }
    await users[0]!.files.write('/data/shared.txt', 'from the first');
    expect(await users[1]!.files.read('/data/shared.txt')).toBe('from the first');
    for (const u of users) await u.kill();
    expect((await api('DELETE', `/v1/volumes/${name}`)).status).toBe(204);
    expect(await errorCode(await api('GET', `/v1/volumes/${name}`))).toBe('volume_not_found');
  }, 240_000);

  it("restores a snapshot taken on one host on another, its memory intact (the artifacts move, digest-checked)", async () => {
    const [a, src] = [...placed.entries()][0]!;
    // a process and a value that live only in memory (/dev/shm is RAM: no disk layer holds it)
    const setup = await src.commands.run('head -c 8 /dev/urandom | od -An -tx8 | tr -d " " > /dev/shm/v; (sleep 100000 >/dev/null 2>&1 & echo $! > /dev/shm/pid); cat /dev/shm/v');
    const value = setup.stdout.trim();
    expect(value).toMatch(/^[0-9a-f]{16}$/);
    const snap = await src.createSnapshot({ metadata: { test: 'cross-host' } });
    // the holder is drained: the restore must go to another host, which fetches the artifacts
    const restored = await onlyOn(
      joined.map((h) => h.hostId).filter((h) => h !== a),
      () => Sandbox.create({ ...conn(), snapshotId: snap.id, timeoutMs: 600_000 }),
    );
    onTestFinished(async () => void (await restored.kill().catch(() => {})));
    const b = (await info(restored.sandboxId)).hostId;
    expect(b).not.toBe(a);
    expect(joined.map((h) => h.hostId)).toContain(b);
    expect((await restored.commands.run('cat /dev/shm/v')).stdout.trim()).toBe(value);
    expect((await restored.commands.run('kill -0 $(cat /dev/shm/pid) && echo alive')).stdout).toBe('alive\n');
    // both hosts hold it now; the fleet lists it once; its compatibility names every host
    expect((await direct(a, `/v1/snapshots/${snap.id}`)).status).toBe(200);
    expect((await direct(b, `/v1/snapshots/${snap.id}`)).status).toBe(200);
    const snaps = (await (await api('GET', '/v1/snapshots')).json()) as { snapshots: Array<{ snapshotId: string }> };
    expect(snaps.snapshots.filter((x) => x.snapshotId === snap.id)).toHaveLength(1);
    const compat = (await (await api('GET', `/v1/snapshots/${snap.id}/compatibility`)).json()) as { hosts: Array<{ hostId: string; compatible: boolean }> };
    expect(compat.hosts.map((h) => h.hostId)).toEqual((await hosts()).map((h) => h.hostId));
    // a second restore prefers a host holding it (no copy needed)
    const again = await Sandbox.create({ ...conn(), snapshotId: snap.id, timeoutMs: 600_000 });
    onTestFinished(async () => void (await again.kill().catch(() => {})));
    expect([a, b]).toContain((await info(again.sandboxId)).hostId);
    await again.kill();
    await restored.kill();
    // deleted through the control plane: on every host holding a copy
    expect((await api('DELETE', `/v1/snapshots/${snap.id}`)).status).toBe(204);
    expect((await direct(a, `/v1/snapshots/${snap.id}`)).status).toBe(404);
    expect((await direct(b, `/v1/snapshots/${snap.id}`)).status).toBe(404);
    expect(await errorCode(await api('GET', `/v1/snapshots/${snap.id}`))).toBe('snapshot_not_found');
  }, 360_000);

  it("the E2B SDK, pointed at the control plane, drives sandboxes on the hosts (create, commands, files, list, pause/connect, named snapshot, fork, kill)", async () => {
    const e2b = () => ({ apiUrl: url, sandboxUrl: url, apiKey: key });
    const tag = randomBytes(3).toString('hex');
    const made: E2bSandbox[] = [];
    onTestFinished(async () => {
      for (const m of made) await api('DELETE', `/v1/sandboxes/${m.sandboxId}`).catch(() => {});
    });
    // the control plane's key, and E2B's answer for a template no host has (the host's own 404)
    await expect(E2bSandbox.create({ ...e2b(), apiKey: 'not-the-key' })).rejects.toBeInstanceOf(AuthenticationError);
    const missing = await E2bSandbox.create('no-such-template', e2b()).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(SandboxError);
    expect((missing as SandboxError & { statusCode?: number }).statusCode).toBe(404);
    const sbx = await E2bSandbox.create({ ...e2b(), timeoutMs: 600_000, metadata: { fleetE2b: tag } });
    made.push(sbx);
    // placed on a joined host (this control plane runs no sandbox itself), answered by its host
    const hostId = (await info(sbx.sandboxId)).hostId;
    expect(joined.map((h) => h.hostId)).toContain(hostId);
    expect(await liveOn(hostId)).toContain(sbx.sandboxId);
    expect((await hosts()).find((h) => h.hostId === 'local')!.counts.sandboxes).toBe(0);
    // envd through the control plane: commands (streamed), files, the user of E2B
    const out: string[] = [];
    const r = await sbx.commands.run('for i in 1 2 3; do echo line$i; done; whoami', { onStdout: (d) => void out.push(d) });
    expect(r.stdout).toBe('line1\nline2\nline3\nuser\n');
    expect(out.join('')).toBe(r.stdout);
    await sbx.files.write('notes/a.txt', 'through the control plane');
    expect(await sbx.files.read('/home/user/notes/a.txt')).toBe('through the control plane');
    // E2B's signed URLs name no sandbox: the control plane asks the hosts whose signature it is
    const up = await sbx.uploadUrl('/tmp/signed.txt');
    expect(up).not.toContain(sbx.sandboxId);
    const form = new FormData();
    form.append('file', new Blob(['via a signed url']), 'ignored-name');
    expect((await fetch(up, { method: 'POST', body: form })).status).toBe(200);
    const down = await sbx.downloadUrl('/tmp/signed.txt', { useSignatureExpiration: 120 });
    expect(await (await fetch(down)).text()).toBe('via a signed url');
    const forged = new URL(down);
    forged.searchParams.set('path', '/etc/shadow');
    expect((await fetch(forged)).status).toBe(401);
    expect((await fetch(up, { method: 'GET' })).status).toBe(401);
    // another sandbox's access token opens nothing of this one (the host checks it)
    const res = await fetch(`${url}/files?path=/home/user/notes/a.txt`, { headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983', 'x-access-token': 'not-its-token' } });
    expect(res.status).toBe(401);
    // port traffic in E2B's header form reaches the guest's server through its host
    await sbx.commands.run(
      `mkdir -p /tmp/www && echo "served by $(hostname)" > /tmp/www/i.txt && cd /tmp/www && (python3 -m http.server 8000 >/dev/null 2>&1 &) && for i in $(seq 300); do (echo > /dev/tcp/127.0.0.1/8000) 2>/dev/null && exit 0; sleep 0.1; done; exit 1`,
      { timeoutMs: 60_000 },
    );
    const byHeader = await fetch(`${url}/i.txt`, { headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8000' } });
    expect([byHeader.status, await byHeader.text()]).toEqual([200, `served by ${(await sbx.commands.run('hostname')).stdout.trim()}\n`]);
    // the list merges the hosts' own
    expect((await E2bSandbox.list({ ...e2b(), query: { metadata: { fleetE2b: tag } } }).nextItems()).map((x) => x.sandboxId)).toEqual([sbx.sandboxId]);
    // pause and connect: on its host, its memory kept
    await sbx.commands.run('echo kept-in-ram > /dev/shm/k');
    expect(await sbx.pause()).toBe(true);
    expect((await info(sbx.sandboxId)).state).toBe('paused');
    const again = await E2bSandbox.connect(sbx.sandboxId, e2b());
    expect((await info(sbx.sandboxId)).hostId).toBe(hostId);
    expect((await again.commands.run('cat /dev/shm/k')).stdout).toBe('kept-in-ram\n');
    // a named snapshot: listed, restored by its name (placed by the control plane), deleted everywhere
    const name = `fleet-${tag}`;
    const snap = await again.createSnapshot({ name });
    expect(await E2bSandbox.listSnapshots({ ...e2b(), name }).nextItems()).toEqual([{ snapshotId: snap.snapshotId, names: [name] }]);
    const fromName = await E2bSandbox.create(name, { ...e2b(), timeoutMs: 600_000 });
    made.push(fromName);
    expect(joined.map((h) => h.hostId)).toContain((await info(fromName.sandboxId)).hostId);
    expect((await fromName.commands.run('cat /dev/shm/k')).stdout).toBe('kept-in-ram\n');
    // fork: the children on the source's host, each its own
    const forks = (await again.fork({ count: 2 })).map((f) => {
      if (!(f instanceof E2bSandbox)) throw f;
      return f;
    });
    expect(forks).toHaveLength(2);
    made.push(...forks);
    for (const f of forks) {
      expect((await info(f.sandboxId)).hostId).toBe(hostId);
      expect(await f.files.read('/home/user/notes/a.txt')).toBe('through the control plane');
    }
    // kill: ended on its host, not found on E2B's surface afterwards
    expect(await E2bSandbox.kill(fromName.sandboxId, e2b())).toBe(true);
    expect((await info(fromName.sandboxId)).state).toBe('killed');
    expect(await E2bSandbox.kill(fromName.sandboxId, e2b())).toBe(false);
    for (const f of forks) await f.kill();
    expect(await E2bSandbox.deleteSnapshot(snap.snapshotId, e2b())).toBe(true);
    expect(await errorCode(await api('GET', `/v1/snapshots/${snap.snapshotId}`))).toBe('snapshot_not_found');
    expect(await E2bSandbox.listSnapshots({ ...e2b(), name }).nextItems()).toEqual([]);
    await again.kill();
    expect(await liveOn(hostId)).not.toContain(sbx.sandboxId);
  }, 360_000);

  it('drains a host: placement stops there, heartbeats keep it draining', async () => {
    const id = byIndex(1).hostId;
    const res = await api('POST', `/v1/hosts/${id}/drain`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as HostView).state).toBe('draining');
    const lastBefore = ((await host(id)) as HostView & { lastHeartbeat: string }).lastHeartbeat;
    await waitFor('a heartbeat after the drain', async () => {
      const h = (await host(id)) as HostView & { lastHeartbeat: string };
      return h.lastHeartbeat > lastBefore ? h : undefined;
    });
    expect((await host(id)).state).toBe('draining');
    expect((await hosts()).filter((h) => h.state === 'ready' && h.hostId !== 'local')).toHaveLength(2);
    const unknown = await api('POST', '/v1/hosts/host_0000000000000000/drain');
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('host_not_found');
    const local = await api('POST', '/v1/hosts/local/drain');
    expect(local.status).toBe(400);
    // a new sandbox goes to a ready host, never the draining one (whose sandbox runs on)
    const s = await Sandbox.create({ ...conn(), timeoutMs: 600_000 });
    onTestFinished(async () => void (await s.kill().catch(() => {})));
    expect([id, 'local']).not.toContain((await info(s.sandboxId)).hostId);
    expect((await placed.get(id)!.commands.run('echo still here')).stdout).toBe('still here\n');
    await s.kill();
    const undrained = await api('POST', `/v1/hosts/${id}/undrain`);
    expect(((await undrained.json()) as HostView).state).toBe('ready');
  }, 240_000);

  it("a host with another CPU model shows it in its fingerprint, and a snapshot's compatibility names it", async () => {
    // (a fourth host, in the root namespace: the control plane's address is reachable from here too)
    const token = /^JOIN_TOKEN=(\S+)$/m.exec(fs.readFileSync(path.join(DIR, 'cluster.state'), 'utf8'))![1]!;
    const child = spawn(process.execPath, [CLI, 'host', '--control', url, '--join-token', token, '--data-dir', path.join(DIR, 'hq'), '--listen', '127.0.0.1:0'], {
      env: { ...env, NULLSPACE_CPU_MODEL: 'qemu64', NULLSPACE_NETWORK_ISOLATION: 'off', NULLSPACE_RUN_DIR: path.join(DIR, 'run-hq') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onTestFinished(async () => {
      child.kill('SIGKILL');
      await exited(child);
    });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const closed = new Promise((r) => child.once('close', r));
    const q = await waitFor('the qemu64 host', async () => {
      if (child.exitCode !== null) {
        await closed;
        throw new Error(`the host exited (${child.exitCode}): ${out}`);
      }
      return (await hosts()).find((h) => h.fingerprint.cpuModel === 'qemu64' && h.state === 'ready');
    }, 60_000);
    // the templates of the cache were built for another CPU model
    expect((q.fingerprint.templates as Array<{ compatible: boolean }>).every((t) => !t.compatible)).toBe(true);

    const res = await api('POST', '/v1/sandboxes', { body: { timeoutMs: 60_000 } });
    expect(res.status).toBe(201);
    const sbx = (await res.json()) as { sandboxId: string };
    onTestFinished(async () => void (await api('DELETE', `/v1/sandboxes/${sbx.sandboxId}`)));
    const snap = (await (await api('POST', `/v1/sandboxes/${sbx.sandboxId}/snapshots`, { body: {} })).json()) as { snapshotId: string };
    onTestFinished(async () => void (await api('DELETE', `/v1/snapshots/${snap.snapshotId}`)));
    const compat = (await (await api('GET', `/v1/snapshots/${snap.snapshotId}/compatibility`)).json()) as {
      compatible: boolean;
      hosts: Array<{ hostId: string; compatible: boolean; mismatches: Array<{ field: string; snapshot: string; host: string }> }>;
    };
    expect(compat.compatible).toBe(true);
    expect(compat.hosts.map((h) => h.hostId)).toEqual((await hosts()).map((h) => h.hostId));
    expect(compat.hosts.filter((h) => !h.compatible).map((h) => [h.hostId, h.mismatches])).toEqual([[q.hostId, [{ field: 'cpuModel', snapshot: (await host('local')).fingerprint.cpuModel, host: 'qemu64' }]]]);
    // the only ready host is the qemu64 one: the snapshot is refused, each host's reason given
    const refused = await onlyOn([], () => api('POST', '/v1/sandboxes', { body: { snapshotId: snap.snapshotId } }));
    expect(refused.status).toBe(409);
    const body = (await refused.json()) as { error: { code: string; details: { hosts: Array<{ hostId: string; state: string; mismatches: Array<{ field: string }> }> } } };
    expect(body.error.code).toBe('no_compatible_host');
    expect(body.error.details.hosts.find((x) => x.hostId === q.hostId)).toMatchObject({ state: 'ready', mismatches: [{ field: 'cpuModel' }] });
    for (const j of joined) expect(body.error.details.hosts.find((x) => x.hostId === j.hostId)?.state).toBe('draining');
    // (the qemu64 host leaves; the others take placements again)
    child.kill('SIGKILL');
    await exited(child);
    await waitFor('the qemu64 host lost', async () => ((await host(q.hostId)).state === 'lost' ? true : undefined));
  }, 240_000);

  it('a host without the template is given a copy when placement picks it (from a host holding it, digest-checked)', async () => {
    // a fourth host (root namespace, like the qemu64 one) on a cache of its own that holds no template
    const token = /^JOIN_TOKEN=(\S+)$/m.exec(fs.readFileSync(path.join(DIR, 'cluster.state'), 'utf8'))![1]!;
    const sharedCache = loadConfig(process.env, { dataDir: '/nonexistent', port: 0 }).cacheDir;
    const cache = path.join(DIR, 'h4-cache');
    fs.mkdirSync(cache, { recursive: true });
    execFileSync('cp', ['-a', '--reflink=auto', path.join(sharedCache, 'egress'), path.join(cache, 'egress')]);
    const child = spawn(process.execPath, [CLI, 'host', '--control', url, '--join-token', token, '--data-dir', path.join(DIR, 'h4'), '--listen', '127.0.0.1:0'], {
      env: { ...env, NULLSPACE_CACHE_DIR: cache, NULLSPACE_NETWORK_ISOLATION: 'off', NULLSPACE_RUN_DIR: path.join(DIR, 'run-h4'), NULLSPACE_PUBLIC_DOMAIN: 'localhost:7070' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    restarted.push(child);
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const h4 = await waitFor('the fourth host', async () => {
      if (child.exitCode !== null) throw new Error(`the host exited (${child.exitCode}): ${out}`);
      return (await hosts()).find((h) => h.url?.startsWith('http://127.0.0.1:') && h.state === 'ready' && h.fingerprint.cpuModel !== 'qemu64');
    }, 60_000);
    expect(h4.fingerprint.templates).toEqual([]);
    try {
      // the others drained: placement can only pick the fourth, which must first get `base`
      const s = await onlyOn([h4.hostId], () => Sandbox.create({ ...conn(), timeoutMs: 600_000 }));
      onTestFinished(async () => void (await s.kill().catch(() => {})));
      expect((await info(s.sandboxId)).hostId).toBe(h4.hostId);
      expect((await s.commands.run('echo $((6 * 7))')).stdout).toBe('42\n');
      await s.kill();
      await waitFor('the copy in its fingerprint', async () => (((await host(h4.hostId)).fingerprint.templates as Array<{ name: string }>).some((t) => t.name === 'base') ? true : undefined));
      // a template only the control plane holds (it builds what `POST /v1/templates` asks) is fetched
      // from it: the host names it "control" (the URL it joined by), with a grant of the API key's digest
      // (the fourth host's copy is removed first: its sandbox is gone, nothing uses it)
      fs.rmSync(path.join(cache, 'templates'), { recursive: true, force: true });
      const fromCp = await direct(h4.hostId, '/v1/artifacts/templates/import', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'base', source: 'control', grant: templateGrant(apiKeyDigestHex(key), 'base', 600_000) }),
      });
      expect(fromCp.status, await fromCp.clone().text()).toBe(200);
      const imported = (await fromCp.json()) as { name: string; filesFetched: number; bytesFetched: number };
      expect(imported.name).toBe('base');
      expect(imported.filesFetched).toBeGreaterThan(0);
      expect(imported.bytesFetched).toBeGreaterThan(0);
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
    await waitFor('the fourth host lost', async () => ((await host(h4.hostId)).state === 'lost' ? true : undefined));
  }, 300_000);

  it('a host cut off (its veth down) becomes lost: its sandboxes show it, a kill is kept and done once it is back, fenced and reconciled', async () => {
    const h = byIndex(2);
    const epoch = (await host(h.hostId)).epoch;
    const survivor = placed.get(h.hostId)!;
    await survivor.files.write('/workspace/before-cut.txt', 'kept');
    // a second sandbox there, to be killed while the host is cut off
    const victim = await onlyOn([h.hostId], () => Sandbox.create({ ...conn(), timeoutMs: 600_000 }));
    onTestFinished(async () => void (await victim.kill().catch(() => {})));
    expect((await info(victim.sandboxId)).hostId).toBe(h.hostId);
    const link = `${NAME}-h2`;
    expect((await run('ip', ['link', 'set', link, 'down'])).code).toBe(0);
    try {
      const lost = await waitFor('the cut-off host lost', async () => {
        const x = await host(h.hostId);
        return x.state === 'lost' ? x : undefined;
      });
      expect(lost.lostAt).not.toBeNull();
      // (the others are not; the qemu64 host of the test above left for good)
      expect((await hosts()).filter((x) => x.state === 'lost' && joined.some((j) => j.hostId === x.hostId)).map((x) => x.hostId)).toEqual([h.hostId]);
      // its sandboxes: not silently running; their requests refused clearly
      expect((await info(survivor.sandboxId)).state).toBe('lost');
      const listed = (await (await api('GET', '/v1/sandboxes')).json()) as { sandboxes: Array<{ sandboxId: string; state: string; hostId: string }> };
      // (from the records: only what lives there; what was killed there before is not shown as lost)
      expect(listed.sandboxes.filter((x) => x.hostId === h.hostId).map((x) => [x.sandboxId, x.state]).sort()).toEqual(
        [[survivor.sandboxId, 'lost'], [victim.sandboxId, 'lost']].sort(),
      );
      const cmd = await api('POST', `/v1/sandboxes/${survivor.sandboxId}/commands`, { body: { cmd: 'true' } });
      expect(cmd.status).toBe(503);
      expect(await errorCode(cmd)).toBe('host_unavailable');
      // a kill while it is lost: recorded at once
      expect((await api('DELETE', `/v1/sandboxes/${victim.sandboxId}`)).status).toBe(204);
      expect((await info(victim.sandboxId)).state).toBe('killed');
      // placement goes on without it
      const s = await Sandbox.create({ ...conn(), timeoutMs: 600_000 });
      expect((await info(s.sandboxId)).hostId).not.toBe(h.hostId);
      await s.kill();
    } finally {
      await run('ip', ['link', 'set', link, 'up']);
    }
    const back = await waitFor('the healed host ready', async () => {
      const x = await host(h.hostId);
      return x.state === 'ready' ? x : undefined;
    });
    expect(back.epoch).toBe(epoch + 1);
    expect(back.fencedAt).not.toBeNull();
    expect(back.lostAt).toBeNull();
    // reconciled: the record wins (the victim is killed on the host), the survivor is adopted as it is
    await waitFor('the victim killed on the returning host', async () => ((await liveOn(h.hostId)).includes(victim.sandboxId) ? undefined : true));
    expect(await liveOn(h.hostId)).toEqual([survivor.sandboxId]);
    expect((await info(survivor.sandboxId)).state).toBe('running');
    expect(await survivor.files.read('/workspace/before-cut.txt')).toBe('kept');
  }, 240_000);

  it('a reusable snapshot is kept on two hosts (NULLSPACE_SNAPSHOT_REPLICAS=2): its host lost, it is restored from the copy', async () => {
    const h = byIndex(1);
    const src = placed.get(h.hostId)!;
    const value = (await src.commands.run('head -c 8 /dev/urandom | od -An -tx8 | tr -d " " | tee /dev/shm/replicated')).stdout.trim();
    const snap = await src.createSnapshot();
    onTestFinished(async () => void (await api('DELETE', `/v1/snapshots/${snap.id}`)));
    const holders = await waitFor('a second copy', async () => {
      const held: string[] = [];
      for (const j of joined) if ((await direct(j.hostId, `/v1/snapshots/${snap.id}`)).status === 200) held.push(j.hostId);
      return held.length === 2 ? held : undefined;
    }, 120_000);
    expect(holders).toContain(h.hostId);
    const link = `${NAME}-h1`;
    expect((await run('ip', ['link', 'set', link, 'down'])).code).toBe(0);
    try {
      await waitFor('the host lost', async () => ((await host(h.hostId)).state === 'lost' ? true : undefined));
      const restored = await Sandbox.create({ ...conn(), snapshotId: snap.id, timeoutMs: 600_000 });
      onTestFinished(async () => void (await restored.kill().catch(() => {})));
      expect((await info(restored.sandboxId)).hostId).not.toBe(h.hostId);
      expect((await restored.commands.run('cat /dev/shm/replicated')).stdout.trim()).toBe(value);
      await restored.kill();
    } finally {
      await run('ip', ['link', 'set', link, 'up']);
    }
    await waitFor('the host back', async () => ((await host(h.hostId)).state === 'ready' ? true : undefined));
    expect((await src.commands.run('cat /dev/shm/replicated')).stdout.trim()).toBe(value);
  }, 300_000);

  it('a host killed with SIGKILL during a fork: the fork fails clearly, the host comes back fenced, and runs exactly what the records place there', async () => {
    const h = byIndex(3);
    const epoch = (await host(h.hostId)).epoch;
    const src = placed.get(h.hostId)!;
    const pidOf = () =>
      fs.readdirSync('/proc').find((p) => {
        try {
          const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
          return argv.includes('host') && argv.includes(path.join(DIR, 'h3'));
        } catch {
          return false;
        }
      });
    const pid = pidOf();
    expect(pid).toBeDefined();
    // the fork's capture is under way on the host when it is killed
    const fork = api('POST', `/v1/sandboxes/${src.sandboxId}/fork`, { body: { count: 2 } });
    await waitFor('the fork under way on the host', async () => (fs.readdirSync(path.join(DIR, 'h3', 'sandboxes')).length > 1 || fs.readdirSync(path.join(DIR, 'h3', 'layers', '.staging')).length > 0 ? true : undefined), 60_000).catch(() => undefined);
    process.kill(Number(pid), 'SIGKILL');
    const res = await fork;
    // (a fork that won the race is a 201 whose children the records hold)
    expect([201, 503]).toContain(res.status);
    const forked = res.status === 201 ? ((await res.json()) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes.map((x) => x.sandboxId) : [];
    if (res.status === 503) expect(await errorCode(res)).toBe('host_unavailable');
    await waitFor('the killed host lost', async () => ((await host(h.hostId)).state === 'lost' ? true : undefined));

    // restarted (in its namespace, without the join token: it has its credentials)
    const child = spawn('ip', ['netns', 'exec', `${NAME}-h3`, process.execPath, CLI, 'host', '--control', url, '--data-dir', path.join(DIR, 'h3'), '--listen', `10.214.${NET}.14:7071`], {
      env: { ...env, NULLSPACE_RUN_DIR: path.join(DIR, 'run-h3'), NULLSPACE_VM_UID_BASE: String(4_000_000 + NET * 70_000 + 3000), NULLSPACE_VM_UID_COUNT: '1000', NULLSPACE_JOIN_TOKEN: '', NULLSPACE_PUBLIC_DOMAIN: 'localhost:7070' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    // (it runs on for the tests below; cluster.sh down stops it with the rest)
    restarted.push(child);
    const back = await waitFor('the restarted host ready', async () => {
      if (child.exitCode !== null) throw new Error(`the restarted host exited (${child.exitCode}): ${out}`);
      const x = await host(h.hostId);
      return x.state === 'ready' ? x : undefined;
    }, 120_000).catch((err: Error) => {
      throw new Error(`${err.message}; its output: ${out}`);
    });
    expect(back.epoch).toBe(epoch + 1);
    // (the same host: no second record for its address)
    expect((await hosts()).filter((x) => x.url === `http://10.214.${NET}.14:7071`).map((x) => x.hostId)).toEqual([h.hostId]);
    // what the host runs is what the records place there: the source (re-adopted, its VM ran on),
    // and the children only if the control plane recorded them
    const expected = [src.sandboxId, ...forked].sort();
    await waitFor('the host reconciled with the records', async () => (JSON.stringify(await liveOn(h.hostId)) === JSON.stringify(expected) ? true : undefined), 60_000).catch(async (err: Error) => {
      throw new Error(`${err.message}: the host runs ${JSON.stringify(await liveOn(h.hostId))}, the records place ${JSON.stringify(expected)}`);
    });
    expect((await src.commands.run('echo after the crash')).stdout).toBe('after the crash\n');
    for (const id of forked) await api('DELETE', `/v1/sandboxes/${id}`);
  }, 360_000);

  it('a control-plane restart loses nothing: hosts keep their VMs, requests are routed again', async () => {
    const before = new Map([...placed.entries()].map(([hid, s]) => [s.sandboxId, hid]));
    // (nothing else runs anywhere: every test killed what it made)
    for (const h of joined) expect(await liveOn(h.hostId), h.hostId).toEqual([placed.get(h.hostId)!.sandboxId]);
    const marks = new Map<string, string>();
    for (const s of placed.values()) {
      const v = (await s.commands.run('head -c 8 /dev/urandom | od -An -tx8 | tr -d " " | tee /dev/shm/mark')).stdout.trim();
      marks.set(s.sandboxId, v);
    }
    const r = await cluster('restart-cp');
    expect(r.code, r.stderr).toBe(0);
    const listed = (await (await api('GET', '/v1/sandboxes')).json()) as { sandboxes: Array<{ sandboxId: string; hostId: string; state: string }> };
    expect(new Map(listed.sandboxes.map((x) => [x.sandboxId, x.hostId])), JSON.stringify(listed.sandboxes, null, 1)).toEqual(before);
    for (const s of placed.values()) {
      // the same VM: the value it holds in memory
      expect((await s.commands.run('cat /dev/shm/mark')).stdout.trim()).toBe(marks.get(s.sandboxId));
    }
    await waitFor('every host heartbeating to the new control plane', async () => ((await hosts()).filter((h) => h.hostId !== 'local' && h.state === 'ready').length >= 3 ? true : undefined));
    const s = await Sandbox.create({ ...conn(), timeoutMs: 600_000 });
    expect(joined.map((h) => h.hostId)).toContain((await info(s.sandboxId)).hostId);
    await s.kill();
  }, 240_000);

  it('cluster.sh down leaves nothing behind', async () => {
    expect(await leftovers()).not.toEqual([]);
    const down = await cluster('down');
    expect(down.code, down.stderr).toBe(0);
    expect(await leftovers()).toEqual([]);
    const tables = await run('nft', ['list', 'tables']);
    expect(tables.stdout).not.toContain(`nullspace_${4_000_000 + NET * 70_000}_1000`);
  });
});
