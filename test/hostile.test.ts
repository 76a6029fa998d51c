import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox, Snapshot, Volume } from 'nullspace';
import { api, apiKey, apiUrl, conn, sandbox } from './helpers.js';
import { waitFor } from './servers.js';

/**
 * A client that does what a hostile or careless one would: leave in the middle of a request, point
 * the files API at device nodes and kernel files, send the largest inputs the schema allows, mount
 * through a guest symlink, run a fork bomb. Each gets a clear answer in bounded time, and the
 * sandbox (and the host) stay usable.
 */

/** A volume deleted when the test ends (after the test's sandboxes are killed). */
async function volume(): Promise<Volume> {
  const v = await Volume.create(`h-${randomBytes(4).toString('hex')}`, conn());
  onTestFinished(async () => {
    await Volume.delete(v.name, conn()).catch(() => {});
  });
  return v;
}

const filesUrl = (sbx: Sandbox, path: string, query = '') => `/v1/sandboxes/${sbx.sandboxId}/files${query}?path=${encodeURIComponent(path)}`;

/** The error code of an API answer (undefined for a success). */
async function codeOf(res: Response): Promise<string | undefined> {
  if (res.ok) {
    await res.arrayBuffer();
    return undefined;
  }
  return ((await res.json()) as { error: { code: string } }).error.code;
}

/** A request that must be answered: a hang fails the test (with this message) instead of the suite. */
const bounded = (ms = 90_000) => ({ signal: AbortSignal.timeout(ms) });

describe('hostile clients', () => {
  it('a recursive listing whose client left is cancelled: it holds up no snapshot of the sandbox', async () => {
    const v = await volume();
    const s = await sandbox({ volumes: { '/mnt/vol': v.name } });
    // a link on the volume to the guest's root: a depth-32 listing through it walks all of /proc and /sys
    await s.commands.run('ln -s / /mnt/vol/root');
    const left = new AbortController();
    let answered = false;
    const listing = fetch(`${apiUrl()}/v1/sandboxes/${s.sandboxId}/files/list?path=/mnt/vol/root&depth=32`, {
      headers: { authorization: `Bearer ${apiKey()}` },
      signal: left.signal,
    }).then(
      () => (answered = true),
      () => {},
    );
    // (the listing is still going when its client leaves)
    await s.commands.run('sleep 2');
    expect(answered).toBe(false);
    left.abort();
    await listing;
    const snap = await s.createSnapshot();
    await Snapshot.delete(snap.id, conn());
    await s.hibernate();
  });

  it('an upload in flight when its sandbox is killed is answered at once, also while its client sends nothing', async () => {
    const s = await sandbox();
    const url = new URL(apiUrl() + filesUrl(s, '/workspace/big'));
    const req = http.request(url, { method: 'PUT', headers: { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/octet-stream' } });
    onTestFinished(() => {
      req.destroy();
    });
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req.on('response', (res) => {
        let body = '';
        res.on('data', (b: Buffer) => (body += b.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    // 8 MiB of the body, then nothing more: the upload waits for the client when the sandbox dies
    const chunk = Buffer.alloc(64 * 1024, 7);
    for (let sent = 0; sent < 8 * 1024 * 1024; sent += chunk.length) {
      if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
    }
    await s.commands.run('until [ -n "$(ls -A /workspace)" ]; do sleep 0.1; done');
    await s.kill();
    // (the request is never finished: only the server's answer ends this)
    const { status, body } = await Promise.race([answer, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 60 s of the kill')), 60_000))]);
    // (the sandbox's state, not an unavailable agent)
    expect([status, (JSON.parse(body) as { error: { code: string } }).error.code]).toEqual([409, 'sandbox_not_running']);
  });

  it('reads of device nodes, FIFOs and kernel files that are not plain files are a 400; /proc and /sys files are readable', async () => {
    const s = await sandbox();
    await s.commands.run('mkfifo /tmp/fifo');
    for (const p of ['/dev/null', '/dev/zero', '/dev/vda', '/tmp/fifo', '/proc/self/mem', '/proc/kmsg']) {
      const res = await api('GET', filesUrl(s, p), undefined, {}).catch((e: unknown) => e);
      expect(res, p).toBeInstanceOf(Response);
      expect(await codeOf(res as Response), p).toBe('bad_request');
    }
    expect(await s.files.read('/proc/cpuinfo')).toMatch(/processor/);
    expect(await s.files.read('/proc/self/status')).toMatch(/^Name:/);
    expect(await s.files.read('/sys/kernel/mm/transparent_hugepage/enabled')).toMatch(/\[/);
    expect((await s.commands.run('echo ok')).stdout).toBe('ok\n');
  });

  it('command input and stdin data up to the request limit reach the process whole', async () => {
    const s = await sandbox();
    const big = 'x'.repeat(900_000);
    expect((await s.commands.run('wc -c', { input: big })).stdout.trim()).toBe('900000');
    // a command that never reads its input
    expect((await s.commands.run('true', { input: big })).exitCode).toBe(0);
    const bg = await s.commands.run('wc -c', { background: true, stdin: true });
    await s.commands.sendStdin(bg.pid, big);
    await s.commands.sendStdin(bg.pid, 'y'.repeat(900_000), { close: true });
    expect((await bg.wait()).stdout.trim()).toBe('1800000');
  });

  it('refuses to remove or replace device nodes and entries of /dev, /proc and /sys', async () => {
    const s = await sandbox();
    await s.commands.run('mknod /workspace/mynull c 1 3 && ln -s /dev /workspace/devlink && echo x > /tmp/x');
    const refused: Array<[string, string, unknown?]> = [
      ['DELETE', filesUrl(s, '/dev/null')],
      ['DELETE', filesUrl(s, '/workspace/devlink/null')],
      ['DELETE', filesUrl(s, '/workspace/mynull')],
      ['DELETE', `${filesUrl(s, '/dev')}&recursive=true`],
      ['DELETE', filesUrl(s, '/dev/pts')],
      ['DELETE', filesUrl(s, '/proc/sys/kernel/hostname')],
      ['DELETE', filesUrl(s, '/sys/kernel/mm/transparent_hugepage/enabled')],
      ['PUT', filesUrl(s, '/dev/new-file'), 'x'],
      ['PUT', filesUrl(s, '/proc/sys/kernel/hostname') + '&append=true', 'x'],
      ['POST', `/v1/sandboxes/${s.sandboxId}/files/rename`, { from: '/tmp/x', to: '/dev/null' }],
      ['POST', `/v1/sandboxes/${s.sandboxId}/files/rename`, { from: '/dev/null', to: '/tmp/null' }],
      ['POST', `/v1/sandboxes/${s.sandboxId}/files/rename`, { from: '/workspace/mynull', to: '/workspace/other' }],
      ['POST', `/v1/sandboxes/${s.sandboxId}/files/mkdir`, { path: '/dev/newdir' }],
    ];
    for (const [method, path, body] of refused) {
      const res = await api(method, path, body, method === 'PUT' ? { 'content-type': 'application/octet-stream' } : {});
      expect(await codeOf(res), `${method} ${path} ${JSON.stringify(body) ?? ''}`).toBe('bad_request');
    }
    expect((await s.commands.run('test -c /dev/null && test -c /workspace/mynull && test -d /dev/pts && cat /tmp/x && ls /dev/new-file /dev/newdir 2>&1 || true')).stdout).toMatch(/^x\n.*No such file/s);
    expect((await s.commands.run('echo still works')).stdout).toBe('still works\n');
    // /dev/shm is a tmpfs for users' files
    await s.files.write('/dev/shm/mine', 'shared memory');
    expect(await s.files.read('/dev/shm/mine')).toBe('shared memory');
    await s.files.remove('/dev/shm/mine');
  });

  it('a volume mount path through a guest symlink into a system directory is refused', async () => {
    const v = await volume();
    for (const p of ['/var/run', '/var/lock', '/var/run/x']) {
      const res = await api('POST', '/v1/sandboxes', { volumes: { [p]: v.name }, metadata: { suite: 'nullspace-tests' } });
      if (res.status === 201) {
        const { sandboxId } = (await res.json()) as { sandboxId: string };
        await api('DELETE', `/v1/sandboxes/${sandboxId}`);
        expect.fail(`a volume at ${p} was accepted`);
      }
      expect(await codeOf(res), p).toBe('invalid_path');
    }
    expect((await Volume.get(v.name, conn())).mountedBy).toEqual([]);
  });

  it('a read of /proc/kmsg is answered (refused), not left waiting for kernel messages', async () => {
    const s = await sandbox();
    const res = await api('GET', filesUrl(s, '/proc/kmsg'), undefined, {}).catch((e: unknown) => e);
    expect(res).toBeInstanceOf(Response);
    expect(await codeOf(res as Response)).toBe('bad_request');
  });

  it('after a fork bomb, a command start ends with a clear answer in bounded time; the sandbox recovers and can be killed', async () => {
    const s = await sandbox({ timeoutMs: 900_000 });
    // (bounded inside the guest: its user processes have a process and a memory limit; its first
    // shell stays, so that the whole process group can be killed through it)
    const bomb = await s.commands.run('bomb() { bomb | bomb & }; bomb; exec sleep 3600', { background: true, timeoutMs: 0 });
    // until it has taken hundreds of processes (the files API needs no new process in the guest)
    await waitFor(
      'the bomb to grow',
      async () => ((await s.files.list('/proc')).filter((e) => /^\d+$/.test(e.name)).length > 600 ? true : undefined),
      120_000,
    );
    const answers: string[] = [];
    for (let i = 0; i < 3; i++) {
      // a start the guest cannot serve is an error answer, not a hang (the fetch gives up after 2 min)
      const res = await fetch(`${apiUrl()}/v1/sandboxes/${s.sandboxId}/commands`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ cmd: 'echo alive', background: true }),
        ...bounded(120_000),
      });
      const body = (await res.json()) as { pid?: number; error?: { code: string; message: string } };
      answers.push(res.ok ? 'started' : `${res.status} ${body.error!.code}: ${body.error!.message}`);
      if (!res.ok) expect(body.error!.code).toMatch(/^(agent_unavailable|bad_request)$/);
    }
    // the agent still serves: the bomb's process group is killed, and the sandbox runs commands again
    await s.commands.kill(bomb.pid);
    await waitFor(
      'a command to run after the bomb was killed',
      async () => ((await s.commands.run('echo alive', { timeoutMs: 20_000 }).catch(() => undefined))?.stdout === 'alive\n' ? true : undefined),
      120_000,
    );
    await s.kill();
    expect((await api('GET', `/v1/sandboxes/${s.sandboxId}`).then((r) => r.json())) as { state: string }).toMatchObject({ state: 'killed' });
    expect((await api('GET', '/v1/health')).status).toBe(200);
  });
});
