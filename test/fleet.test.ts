import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
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
// (lost after 2 s without a heartbeat: a busy 2-core machine delays a heartbeat by a second at times)
const HEARTBEAT_MS = 500;
const LOST_AFTER = 4;
const env = {
  ...process.env,
  NULLSPACE_CLUSTER_DIR: DIR,
  NULLSPACE_CLUSTER_NAME: NAME,
  NULLSPACE_CLUSTER_NET: String(NET),
  NULLSPACE_HOST_HEARTBEAT_MS: String(HEARTBEAT_MS),
  NULLSPACE_HOST_LOST_AFTER: String(LOST_AFTER),
  NULLSPACE_LOG_LEVEL: 'info',
  // (this file reads the control plane's records in its SQLite file; fleet-vms.test.ts runs on PostgreSQL)
  NULLSPACE_CLUSTER_DB: 'sqlite',
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

  it("a sandbox's view names its host: the control plane's own, which counts it", async () => {
    const res = await api('POST', '/v1/sandboxes', { body: { timeoutMs: 60_000 } });
    expect(res.status, await res.clone().text()).toBe(201);
    const sbx = (await res.json()) as { sandboxId: string; hostId: string };
    onTestFinished(async () => void (await api('DELETE', `/v1/sandboxes/${sbx.sandboxId}`)));
    expect(sbx.hostId).toBe('local');
    expect((await host('local')).counts).toEqual({ sandboxes: 1 });
    expect(((await (await api('GET', `/v1/sandboxes/${sbx.sandboxId}`)).json()) as { hostId: string }).hostId).toBe('local');
    await api('DELETE', `/v1/sandboxes/${sbx.sandboxId}`);
    expect((await host('local')).counts).toEqual({ sandboxes: 0 });
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
    const db = new Database(path.join(DIR, 'cp', 'nullspace.db'), { readonly: true });
    const rows = db.prepare('SELECT id, url, control_credential FROM hosts').all() as Array<{ id: string; url: string; control_credential: string }>;
    db.close();
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
    }
  });

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
  });

  it('a host cut off (its veth down) becomes lost, and ready again, fenced, once healed', async () => {
    const h = byIndex(2);
    const epoch = (await host(h.hostId)).epoch;
    const link = `${NAME}-h2`;
    const down = await run('ip', ['link', 'set', link, 'down']);
    expect(down.code).toBe(0);
    try {
      const lost = await waitFor('the cut-off host lost', async () => {
        const x = await host(h.hostId);
        return x.state === 'lost' ? x : undefined;
      });
      expect(lost.lostAt).not.toBeNull();
      // the others are not
      expect((await hosts()).filter((x) => x.state === 'lost').map((x) => x.hostId)).toEqual([h.hostId]);
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
  });

  it('a host killed with SIGKILL becomes lost; restarted on its data dir it is the same host, fenced', async () => {
    const h = byIndex(3);
    const epoch = (await host(h.hostId)).epoch;
    const pid = fs.readdirSync('/proc').find((p) => {
      try {
        const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return argv.includes('host') && argv.includes(path.join(DIR, 'h3'));
      } catch {
        return false;
      }
    });
    expect(pid).toBeDefined();
    process.kill(Number(pid), 'SIGKILL');
    await waitFor('the killed host lost', async () => ((await host(h.hostId)).state === 'lost' ? true : undefined));

    // restarted (in its namespace, without the join token: it has its credentials)
    const child = spawn('ip', ['netns', 'exec', `${NAME}-h3`, process.execPath, CLI, 'host', '--control', url, '--data-dir', path.join(DIR, 'h3'), '--listen', `10.214.${NET}.14:7071`], {
      env: { ...env, NULLSPACE_RUN_DIR: path.join(DIR, 'run-h3'), NULLSPACE_VM_UID_BASE: String(4_000_000 + NET * 70_000 + 3000), NULLSPACE_VM_UID_COUNT: '1000', NULLSPACE_JOIN_TOKEN: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    onTestFinished(async () => {
      child.kill('SIGKILL');
      await exited(child);
    });
    const back = await waitFor('the restarted host ready', async () => {
      if (child.exitCode !== null) throw new Error(`the restarted host exited (${child.exitCode}): ${out}`);
      const x = await host(h.hostId);
      return x.state === 'ready' ? x : undefined;
    }, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; its output: ${out}`);
    });
    expect(back.epoch).toBe(epoch + 1);
    expect((await hosts()).filter((x) => x.hostId !== 'local')).toHaveLength(3);
  });

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
  });

  it('cluster.sh down leaves nothing behind', async () => {
    expect(await leftovers()).not.toEqual([]);
    const down = await cluster('down');
    expect(down.code, down.stderr).toBe(0);
    expect(await leftovers()).toEqual([]);
    const tables = await run('nft', ['list', 'tables']);
    expect(tables.stdout).not.toContain(`nullspace_${4_000_000 + NET * 70_000}_1000`);
  });
});
