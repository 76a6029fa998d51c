import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, inject, it, onTestFinished } from 'vitest';
import { RateLimitError, Sandbox, Snapshot } from 'nullspace';
import { api, conn, expectGuestReachesArchive, sandbox } from './helpers.js';
import { expectUniqueClones, startSampler, tracked } from './clones.js';
import { cleanupDataDir, ownServer, qemuPid, tempDataDir } from './servers.js';

describe('fork', () => {
  it('gives a live child equal to the source at the fork instant; the source keeps running; both diverge', async () => {
    const src = await sandbox({ metadata: { role: 'source' }, timeoutMs: 240_000 });
    await src.files.write('/workspace/shared.txt', 'before fork');
    const bg = await src.commands.run('python3 -c "import time\nn=0\nwhile True:\n    n+=1\n    open(\'/workspace/n\',\'w\').write(str(n))\n    time.sleep(0.05)"', {
      background: true,
      timeoutMs: 0,
    });
    // python starts slowly under emulation: fork once its counter is running
    await src.commands.run('while [ ! -s /workspace/n ]; do sleep 0.1; done', { timeoutMs: 60_000 });
    const before = await src.getInfo();
    const child = await tracked(await src.fork());
    const info = await child.getInfo();
    expect(info).toMatchObject({ state: 'running', forkedFrom: src.sandboxId, template: 'base', metadata: { role: 'source' } });
    expect(child.sandboxId).not.toBe(src.sandboxId);
    // the source keeps its id, state and timeout
    const after = await src.getInfo();
    expect(after).toMatchObject({ sandboxId: src.sandboxId, state: 'running', timeoutMs: 240_000 });
    expect(after.expiresAt!.getTime()).toBe(before.expiresAt!.getTime());
    // the child has the source's files and its running process
    expect(await child.files.read('/workspace/shared.txt')).toBe('before fork');
    expect((await child.commands.list()).find((p) => p.pid === bg.pid)?.running).toBe(true);
    const n1 = Number(await child.files.read('/workspace/n'));
    // the process runs on in the child: its counter moves
    await child.commands.run(`while [ "$(cat /workspace/n)" -le ${n1} ]; do sleep 0.1; done`, { timeoutMs: 60_000 });
    // they diverge
    await child.files.write('/workspace/shared.txt', 'child');
    await src.files.write('/workspace/shared.txt', 'source');
    expect(await child.files.read('/workspace/shared.txt')).toBe('child');
    expect(await src.files.read('/workspace/shared.txt')).toBe('source');
    // no listed snapshot is left behind
    const listed: string[] = [];
    for await (const s of Snapshot.list({ ...conn(), sandboxId: src.sandboxId, kind: ['reusable', 'hibernate', 'fork'] })) listed.push(s.id);
    expect(listed).toEqual([]);
  });

  it('a chain of 20 successive forks works, stays usable, and keeps disk backing chains bounded', async () => {
    let current = await sandbox();
    await current.files.write('/workspace/gen-0', '0');
    const chain: Sandbox[] = [current];
    for (let i = 1; i <= 20; i++) {
      const next = await tracked(await current.fork());
      await next.files.write(`/workspace/gen-${i}`, String(i));
      chain.push(next);
      // keep at most two alive: the source of the next fork and the newest
      if (chain.length > 2) await chain.shift()!.kill();
      current = next;
    }
    expect((await current.commands.run('ls /workspace | grep -c gen-')).stdout.trim()).toBe('21');
    for (let i = 0; i <= 20; i++) expect(await current.files.read(`/workspace/gen-${i}`)).toBe(String(i));
    expect((await current.commands.run("python3 -c 'print(6*7)'")).stdout).toBe('42\n');
    const overlay = execFileSync('sh', ['-c', `ls -t ${path.join(inject('dataDir'), 'sandboxes', current.sandboxId)}/disk-*.qcow2 | head -1`]).toString().trim();
    const chainLen = (JSON.parse(execFileSync('qemu-img', ['info', '-U', '--backing-chain', '--output=json', overlay]).toString()) as unknown[]).length;
    // overlay + at most 8 frozen layers + template disk + image root disk
    expect(chainLen).toBeLessThanOrEqual(11);
  });

  it('fork of a fork works, and killing the source or a sibling never affects the others', async () => {
    const a = await sandbox();
    await a.files.write('/workspace/who', 'a');
    const b = await tracked(await a.fork());
    const c = await tracked(await a.fork());
    const d = await tracked(await b.fork());
    await a.kill();
    expect(qemuPid(a.sandboxId)).toBeUndefined();
    await c.kill();
    for (const s of [b, d]) expect(await s.files.read('/workspace/who')).toBe('a');
    expect((await d.getInfo()).forkedFrom).toBe(b.sandboxId);
  });

  it('refuses unknown, killed and malformed requests with clear codes', async () => {
    expect((await api('POST', '/v1/sandboxes/sbx_0000000000000000/fork', {})).status).toBe(404);
    const s = await sandbox();
    expect((await api('POST', `/v1/sandboxes/${s.sandboxId}/fork`, { surprise: 1 })).status).toBe(400);
    await s.kill();
    await expect(s.fork()).rejects.toMatchObject({ code: 'sandbox_not_running', status: 409 });
  });

  it('many concurrent forks of one source: all succeed or are refused by admission control, none corrupt', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_MAX_SANDBOXES: '4' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const src = await Sandbox.create(c);
    await src.files.write('/workspace/data', 'payload');
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => src.fork()));
    const children = results.filter((r): r is PromiseFulfilledResult<Sandbox> => r.status === 'fulfilled').map((r) => r.value);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as Error);
    expect(children.length).toBe(3);
    for (const e of refused) expect(e).toBeInstanceOf(RateLimitError);
    for (const child of children) {
      expect(await child.files.read('/workspace/data')).toBe('payload');
      expect((await child.commands.run('echo ok')).stdout).toBe('ok\n');
    }
    await Promise.all([...children, src].map((s) => s.kill()));
  });
});

describe('every clone is unique and current', () => {
  it('children of one snapshot differ in randomness, boot id, machine id and hostname, and have the current clock, even for processes that ran at the snapshot instant', async () => {
    const src = await sandbox();
    await startSampler(src);
    const snap = await src.createSnapshot();
    onTestFinished(async () => {
      await snap.delete().catch(() => {});
    });
    // the snapshot ages: a child that kept the snapshot's clock would be 3 s behind
    await new Promise((r) => setTimeout(r, 3000));
    const restoredAt = Date.now();
    const children = await Promise.all([sandbox({ snapshotId: snap.id }), sandbox({ snapshotId: snap.id }), sandbox({ snapshotId: snap.id })]);
    await expectUniqueClones(src, children, restoredAt);
  });

  it('fork children differ in the same way from each other and from their source', async () => {
    const src = await sandbox();
    await startSampler(src);
    const forkedAt = Date.now();
    const children: Sandbox[] = [];
    for (let i = 0; i < 3; i++) children.push(await tracked(await src.fork()));
    await expectUniqueClones(src, children, forkedAt);
  });

  it('networking works in every child independently', async () => {
    const src = await sandbox();
    const [a, b] = [await tracked(await src.fork()), await tracked(await src.fork())];
    await Promise.all([expectGuestReachesArchive(a), expectGuestReachesArchive(b)]);
  });
});
