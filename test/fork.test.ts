import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, inject, it, onTestFinished } from 'vitest';
import { RateLimitError, Sandbox, Snapshot } from 'nullspace';
import { api, conn, expectGuestReachesArchive, sandbox } from './helpers.js';
import { cleanupDataDir, ownServer, qemuPid, tempDataDir } from './servers.js';

/** Kills `s` when the test ends (children made by fork are not tracked by `sandbox()`). */
async function tracked(s: Sandbox): Promise<Sandbox> {
  const { onTestFinished } = await import('vitest');
  onTestFinished(async () => {
    await s.kill().catch(() => {});
  });
  return s;
}

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

/** Samples the clock and the kernel RNG every 20 ms: "<epoch seconds> <8 random bytes, hex>" per line. */
const SAMPLER = [
  'import os, time',
  'f = open("/workspace/samples", "a", buffering=1)',
  'while True:',
  '    f.write("%.3f %s\\n" % (time.time(), os.urandom(8).hex()))',
  '    time.sleep(0.02)',
  '',
].join('\n');

/** Starts the sampler in `src` and waits until it has written. */
async function startSampler(src: Sandbox): Promise<void> {
  await src.files.write('/workspace/sampler.py', SAMPLER);
  await src.commands.run('python3 /workspace/sampler.py', { background: true, timeoutMs: 0 });
  await src.commands.run('while [ ! -s /workspace/samples ]; do sleep 0.1; done', { timeoutMs: 60_000 });
}

/** Run after the clone, in new processes: /dev/urandom, Python's os.urandom and random module, a UUID, boot id, machine id, hostname, clock. */
const PROBE =
  'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; python3 -c "import os, random; print(os.urandom(16).hex()); print(random.getrandbits(128))"; ' +
  'cat /proc/sys/kernel/random/uuid /proc/sys/kernel/random/boot_id /etc/machine-id; hostname; date +%s.%N';

/**
 * Every clone is unique and current: `children` were cloned from `src` (whose sampler ran at the
 * clone instant) by requests sent at `clonedAt` (host ms) or later. Checks new processes (random
 * bytes from every source, UUID, boot id, machine id, hostname, clock) and the sampler that ran
 * through the clone: each child's samples file is the source's up to the clone instant, then its
 * own; what a child sampled after the clone differs from the other children's and the source's
 * and carries the current clock.
 */
async function expectUniqueClones(src: Sandbox, children: Sandbox[], clonedAt: number): Promise<void> {
  const all = [...children, src];
  const probeStart = Date.now();
  const outs = await Promise.all(all.map((s) => s.commands.run(PROBE)));
  const probeEnd = Date.now();
  const rows = outs.map((o) => {
    const [dev, pyOs, pyRandom, uuid, boot, machine, host, clock] = o.stdout.trim().split('\n');
    return { dev, pyOs, pyRandom, uuid, boot, machine, host, clock: Number(clock) * 1000 };
  });
  for (const field of ['dev', 'pyOs', 'pyRandom', 'uuid', 'boot', 'machine'] as const) {
    const values = rows.map((r) => r[field]);
    expect(values.every((v) => v && v.length >= 16), `${field}: ${values.join(', ')}`).toBe(true);
    expect(new Set(values).size, `${field} differs in every clone and the source: ${values.join(', ')}`).toBe(all.length);
  }
  for (const r of rows) expect(r.machine).toMatch(/^[0-9a-f]{32}$/);
  expect(rows.map((r) => r.host)).toEqual(all.map((s) => s.sandboxId));
  // the guest clock read during the probe is the host's, within 1 s
  for (const r of rows.slice(0, children.length)) {
    expect(r.clock).toBeGreaterThan(probeStart - 1000);
    expect(r.clock).toBeLessThan(probeEnd + 1000);
  }

  // the sampler: a child's file is the source's up to the clone instant (the longest common
  // prefix), then its own samples
  const parse = (text: string) => text.split('\n').filter((l) => /^\d+\.\d+ [0-9a-f]{16}$/.test(l));
  const samplesOf = async (s: Sandbox, min: number) =>
    parse((await s.commands.run(`while [ "$(wc -l < /workspace/samples)" -lt ${min} ]; do sleep 0.05; done; cat /workspace/samples`, { timeoutMs: 60_000 })).stdout);
  const source = await samplesOf(src, 1);
  const firstAfter: string[] = [];
  for (const child of children) {
    let own = await samplesOf(child, 1);
    let shared = 0;
    while (shared < own.length && shared < source.length && own[shared] === source[shared]) shared++;
    expect(shared, 'samples from before the clone').toBeGreaterThan(0);
    // (wait until it sampled after the clone, and the source too)
    own = await samplesOf(child, shared + 1);
    const sourceNow = await samplesOf(src, shared + 1);
    const after = own.slice(shared).map((l) => ({ t: Number(l.split(' ')[0]) * 1000, r: l.split(' ')[1]! }));
    for (const x of after) {
      expect(x.t, `a sample after the clone shows the clock of ${new Date(x.t).toISOString()}, the clone was asked for at ${new Date(clonedAt).toISOString()}`).toBeGreaterThan(clonedAt - 1000);
      expect(x.t).toBeLessThan(Date.now() + 1000);
    }
    // what the child's sampler drew first after the clone is not what the source drew next
    expect(after[0]!.r).not.toBe(sourceNow[shared]!.split(' ')[1]);
    firstAfter.push(after[0]!.r);
  }
  expect(new Set(firstAfter).size, `first draws after the clone: ${firstAfter.join(', ')}`).toBe(children.length);
}

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
