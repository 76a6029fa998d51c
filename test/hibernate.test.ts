import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, inject, it, onTestFinished } from 'vitest';
import { InvalidArgumentError, Sandbox, Snapshot } from 'nullspace';
import { api, conn, sandbox } from './helpers.js';
import { cleanupDataDir, freePort, ownServer, qemuPid, serverProcess, tempDataDir, waitFor } from './servers.js';

const COUNTER = [
  'import signal, time',
  'n = 0',
  'def dump(*_):',
  '    open("/workspace/n", "w").write(str(n))',
  'signal.signal(signal.SIGUSR1, dump)',
  'open("/workspace/ready", "w").close()',
  'while True:',
  '    n += 1',
  '    time.sleep(0.05)',
  '',
].join('\n');

/** Starts the counter process and waits until it handles SIGUSR1. */
async function startCounter(s: Sandbox): Promise<number> {
  await s.files.write('/workspace/counter.py', COUNTER);
  const proc = await s.commands.run('python3 /workspace/counter.py', { background: true, timeoutMs: 0 });
  await s.commands.run('while [ ! -e /workspace/ready ]; do sleep 0.1; done', { timeoutMs: 30_000 });
  return proc.pid;
}

/** The in-memory value of the counter process (it dumps it on SIGUSR1). */
async function counter(s: Sandbox, pid: number): Promise<number> {
  const out = (await s.commands.run(`rm -f /workspace/n; kill -USR1 ${pid}; while [ ! -s /workspace/n ]; do sleep 0.05; done; cat /workspace/n`, { timeoutMs: 30_000 })).stdout;
  return Number(out);
}

describe('hibernate and resume', () => {
  it('stops the VM and persists memory and disk; resume brings back the same sandbox, processes included', async () => {
    const s = await sandbox({ metadata: { who: 'hib' }, timeoutMs: 600_000 });
    const pid = await startCounter(s);
    const before = await counter(s, pid);
    await s.commands.run('echo unsynced > /workspace/last');
    const hib = await s.hibernate();
    expect(hib).toMatchObject({ kind: 'hibernate', sandboxId: s.sandboxId });
    const paused = await s.getInfo();
    expect(paused).toMatchObject({ state: 'paused', metadata: { who: 'hib' } });
    expect(paused.remainingTimeoutMs).toBeGreaterThan(500_000);
    expect(paused.expiresAt).toBeNull();
    expect(qemuPid(s.sandboxId)).toBeUndefined();
    expect(fs.existsSync(path.join(inject('dataDir'), 'sandboxes', s.sandboxId))).toBe(false);
    await expect(s.commands.run('true')).rejects.toMatchObject({ code: 'sandbox_not_running' });
    // a hibernated sandbox cannot be forked or snapshotted: it has no running VM
    await expect(s.fork()).rejects.toMatchObject({ code: 'sandbox_not_running', status: 409 });
    await expect(s.createSnapshot()).rejects.toMatchObject({ code: 'sandbox_not_running', status: 409 });
    // hibernating a paused sandbox: harmless, returns the latest hibernation
    expect((await s.hibernate()).id).toBe(hib.id);

    const resumed = await Sandbox.resume(hib.id, conn());
    expect(resumed.sandboxId).toBe(s.sandboxId);
    const info = await s.getInfo();
    expect(info.state).toBe('running');
    expect(info.expiresAt!.getTime() - Date.now()).toBeGreaterThan(500_000);
    expect(await s.files.read('/workspace/last')).toBe('unsynced\n');
    expect(await counter(s, pid)).toBeGreaterThanOrEqual(before);
    const asked = Date.now();
    const clock = Number((await s.commands.run('date +%s.%N')).stdout) * 1000;
    expect(clock).toBeGreaterThan(asked - 1000);
    expect(clock).toBeLessThan(Date.now() + 1000);
    expect((await s.commands.run('hostname')).stdout.trim()).toBe(s.sandboxId);
    // resuming a running sandbox returns it unchanged
    expect((await Sandbox.resume(hib.id, conn())).sandboxId).toBe(s.sandboxId);
  });

  it('Sandbox.connect resumes a paused sandbox from its latest hibernation; lineage is enforced', async () => {
    const s = await sandbox();
    await s.files.write('/workspace/gen', '1');
    const h1 = await s.pause();
    const again = await Sandbox.connect(s.sandboxId, conn());
    expect(await again.files.read('/workspace/gen')).toBe('1');
    await s.files.write('/workspace/gen', '2');
    const h2 = await s.hibernate();
    expect(h2.id).not.toBe(h1.id);
    const err = await Sandbox.resume(h1.id, conn()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'snapshot_not_latest', status: 409 });
    // the hibernation it resumes from cannot be deleted from under it (older ones can)
    await expect(Snapshot.delete(h2.id, conn())).rejects.toMatchObject({ code: 'snapshot_in_use', status: 409 });
    expect((await s.getInfo()).state).toBe('paused');
    await Sandbox.resume(h2.id, conn());
    expect(await s.files.read('/workspace/gen')).toBe('2');
    const hibs: string[] = [];
    for await (const x of Snapshot.list({ ...conn(), sandboxId: s.sandboxId, kind: 'hibernate' })) hibs.push(x.id);
    expect(hibs).toEqual([h1.id, h2.id]);
    // a reusable snapshot is not resumed: it starts new sandboxes
    const reusable = await s.createSnapshot();
    const bad = await Sandbox.resume(reusable.id, conn()).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(InvalidArgumentError);
    expect((bad as Error).message).toMatch(/Sandbox\.create/);
    await Snapshot.delete(reusable.id, conn());
    // a hibernation snapshot does not start new sandboxes
    await expect(Sandbox.create({ ...conn(), snapshotId: h2.id })).rejects.toMatchObject({ status: 400 });
  });

  it('10 cycles of write, change memory, hibernate, resume lose nothing', async () => {
    const s = await sandbox();
    const pid = await startCounter(s);
    let last = await counter(s, pid);
    for (let i = 0; i < 10; i++) {
      // written just before hibernating, never synced
      await s.commands.run(`echo ${i} > /workspace/cycle-${i}`);
      await s.hibernate();
      expect(qemuPid(s.sandboxId)).toBeUndefined();
      await Sandbox.connect(s.sandboxId, conn());
      const n = await counter(s, pid);
      expect(n).toBeGreaterThan(last);
      last = n;
    }
    const ls = (await s.commands.run('cat /workspace/cycle-* | tr "\\n" ,')).stdout;
    expect(ls).toBe('0,1,2,3,4,5,6,7,8,9,');
  });

  it('lifecycle onTimeout hibernate: the timeout hibernates instead of killing; connect resumes', async () => {
    const s = await sandbox({ timeoutMs: 2000, lifecycle: { onTimeout: 'hibernate' } });
    await s.files.write('/workspace/keep', 'kept');
    const info = await waitFor('hibernated by timeout', async () => {
      const i = await s.getInfo();
      return i.state === 'paused' ? i : undefined;
    });
    expect(info.lifecycle.onTimeout).toBe('hibernate');
    // hibernated by its timeout: it comes back with its whole timeout
    expect(info.remainingTimeoutMs).toBe(2000);
    const back = await Sandbox.connect(s.sandboxId, conn());
    expect(await back.files.read('/workspace/keep')).toBe('kept');
    await back.setTimeout(120_000);
  });

  it('the reaper checks each expired sandbox again when it gets to it: a timeout extended meanwhile is kept', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    // (fault injection: a reaper pass that found expired sandboxes waits until the test releases it)
    const server = await ownServer(dataDir, { NULLSPACE_REAPER_INTERVAL_MS: '300', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_FAULT_INJECTION: 'reaper-waits' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const a = await Sandbox.create({ ...c, lifecycle: { onTimeout: 'hibernate' } });
    const b = await Sandbox.create(c);
    onTestFinished(async () => {
      await Promise.all([a.kill().catch(() => {}), b.kill().catch(() => {})]);
    });
    // both expire; b first, so that every pass that lists a lists b too
    await b.setTimeout(1000);
    await a.setTimeout(1000);
    // a pass has listed them and waits: b's timeout is extended meanwhile, then the pass goes on
    await waitFor('a reaper pass with expired sandboxes', async () => (fs.existsSync(path.join(dataDir, 'fault-reaper.waiting')) ? true : undefined), 30_000);
    await b.setTimeout(120_000);
    fs.writeFileSync(path.join(dataDir, 'fault-reaper.go'), '');
    await waitFor('a hibernated by its timeout', async () => ((await a.getInfo()).state === 'paused' ? true : undefined), 60_000);
    // (a wrong kill of b would follow a's hibernation at once: give it the time to show)
    await new Promise((r) => setTimeout(r, 1000));
    expect(await b.getInfo()).toMatchObject({ state: 'running', timeoutMs: 120_000 });
    expect(await b.commands.run('echo alive')).toMatchObject({ stdout: 'alive\n' });
  });

  it('refuses unknown and killed sandboxes; serializes concurrent hibernate, fork, snapshot and kill', async () => {
    expect((await api('POST', '/v1/sandboxes/sbx_0000000000000000/hibernate')).status).toBe(404);
    const k = await sandbox();
    await k.kill();
    await expect(k.hibernate()).rejects.toMatchObject({ code: 'sandbox_not_running', status: 409 });
    await expect(Sandbox.connect(k.sandboxId, conn())).resolves.toBeDefined(); // connect to a killed one: a handle, no resume
    // twice: all four at once (the kill wins over what waits for the sandbox), then fork, snapshot
    // and hibernate at once and the kill after them; each completed one is checked for what it claims
    const orders: Array<Array<'hibernate' | 'fork' | 'snapshot' | 'kill'>> = [
      ['hibernate', 'fork', 'snapshot', 'kill'],
      ['fork', 'snapshot', 'hibernate'],
    ];
    for (const order of orders) {
      const s = await sandbox();
      await s.files.write('/workspace/marker', 'before');
      // the server serializes them in whatever order they arrive: each completes or is refused (409)
      const calls = { hibernate: () => s.hibernate(), fork: () => s.fork(), snapshot: () => s.createSnapshot(), kill: () => s.kill() };
      const settled = await Promise.allSettled(order.map((op) => calls[op]()));
      const result = <K extends keyof typeof calls>(op: K) => settled[order.indexOf(op)] as PromiseSettledResult<Awaited<ReturnType<(typeof calls)[K]>>>;
      const [hib, fork, snap] = [result('hibernate'), result('fork'), result('snapshot')];
      const kill = order.includes('kill') ? result('kill') : await s.kill().then((value) => ({ status: 'fulfilled' as const, value }));
      if (fork.status === 'fulfilled') {
        onTestFinished(async () => {
          await fork.value.kill().catch(() => {});
        });
      }
      for (const r of [hib, fork, snap]) {
        // refused because another of them ran first: busy, or no longer running (paused or killed)
        if (r.status === 'rejected') expect(r.reason).toMatchObject({ status: 409, code: expect.stringMatching(/^(sandbox_busy|sandbox_not_running)$/) });
      }
      // each one that completed did what it says
      if (hib.status === 'fulfilled') expect(hib.value).toMatchObject({ kind: 'hibernate', sandboxId: s.sandboxId });
      if (fork.status === 'fulfilled') {
        const child = fork.value;
        expect(child.sandboxId).not.toBe(s.sandboxId);
        const info = await child.getInfo();
        expect(info).toMatchObject({ state: 'running', forkedFrom: s.sandboxId });
        expect(await child.files.read('/workspace/marker')).toBe('before');
        await child.kill();
        if (hib.status === 'fulfilled') expect(info.createdAt.getTime()).toBeLessThanOrEqual(hib.value.createdAt.getTime());
      }
      if (snap.status === 'fulfilled') {
        expect(snap.value).toMatchObject({ kind: 'reusable', sandboxId: s.sandboxId });
        // a reusable snapshot outlives its source: it restores after the kill
        const restored = await sandbox({ snapshotId: snap.value.id });
        expect(await restored.files.read('/workspace/marker')).toBe('before');
        await restored.kill();
        await Snapshot.delete(snap.value.id, conn());
      }
      // nothing runs on a paused sandbox: what completed besides the hibernation came before it
      if (hib.status === 'fulfilled' && snap.status === 'fulfilled') expect(snap.value.createdAt.getTime()).toBeLessThanOrEqual(hib.value.createdAt.getTime());
      expect(kill.status).toBe('fulfilled');
      expect(qemuPid(s.sandboxId)).toBeUndefined();
      expect((await s.getInfo()).state).toBe('killed');
      const left: string[] = [];
      for await (const x of Snapshot.list({ ...conn(), sandboxId: s.sandboxId, kind: ['hibernate', 'reusable', 'fork'] })) left.push(x.id);
      expect(left).toEqual([]);
    }
  });
});

describe('hibernation across server crashes', () => {
  it('a paused sandbox survives kill -9 of the server; interrupted hibernate and resume end in a defined state', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const key = 'hib-restart-key-0123456789';
    const port = freePort();
    // 1. a paused sandbox survives kill -9
    let srv = await serverProcess(dataDir, key, port);
    let c = { apiUrl: srv.url, apiKey: key };
    const s = await Sandbox.create(c);
    await s.files.write('/workspace/a', 'A');
    await s.hibernate();
    await srv.kill();
    srv = await serverProcess(dataDir, key, port);
    expect((await Sandbox.getInfo(s.sandboxId, c)).state).toBe('paused');
    const back = await Sandbox.connect(s.sandboxId, c);
    expect(await back.files.read('/workspace/a')).toBe('A');
    await srv.kill();

    // 2. the server dies right after the hibernation was recorded, before the VM stopped: paused
    srv = await serverProcess(dataDir, key, port, { NULLSPACE_FAULT_INJECTION: 'crash-after-hibernate-capture' });
    await back.files.write('/workspace/b', 'B').catch(() => {});
    await expect(back.hibernate()).rejects.toBeDefined();
    await srv.exited();
    srv = await serverProcess(dataDir, key, port);
    c = { apiUrl: srv.url, apiKey: key };
    expect((await Sandbox.getInfo(s.sandboxId, c)).state).toBe('paused');
    expect(qemuPid(s.sandboxId)).toBeUndefined();
    await srv.kill();

    // 3. the server dies in the middle of a resume: paused again, and a later resume works
    srv = await serverProcess(dataDir, key, port, { NULLSPACE_FAULT_INJECTION: 'crash-during-resume' });
    await expect(Sandbox.connect(s.sandboxId, c)).rejects.toBeDefined();
    await srv.exited();
    srv = await serverProcess(dataDir, key, port);
    expect((await Sandbox.getInfo(s.sandboxId, c)).state).toBe('paused');
    const finalSbx = await Sandbox.connect(s.sandboxId, c);
    expect(await finalSbx.files.read('/workspace/b')).toBe('B');
    await finalSbx.files.write('/workspace/c', 'C');
    await srv.kill();

    // 4. the server dies before a hibernation was recorded (older ones exist): it runs on, nothing lost
    srv = await serverProcess(dataDir, key, port, { NULLSPACE_FAULT_INJECTION: 'crash-before-hibernate-capture' });
    await expect(finalSbx.hibernate()).rejects.toBeDefined();
    await srv.exited();
    srv = await serverProcess(dataDir, key, port);
    expect((await Sandbox.getInfo(s.sandboxId, c)).state).toBe('running');
    expect(await finalSbx.files.read('/workspace/c')).toBe('C');
    expect((await finalSbx.commands.run('echo alive')).stdout).toBe('alive\n');
    await finalSbx.kill();
  }, 360_000); // (three server starts and several captures: near 180 s on a loaded 2-core host)

  it('QEMU dying during hibernation ends the sandbox failed with a reason, never silently running', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const key = 'hib-fault-key-0123456789';
    const srv = await serverProcess(dataDir, key, freePort(), { NULLSPACE_FAULT_INJECTION: 'kill-vm-during-hibernate' });
    const c = { apiUrl: srv.url, apiKey: key };
    const s = await Sandbox.create(c);
    await expect(s.hibernate()).rejects.toMatchObject({ code: 'vm_exited' });
    const info = await waitFor('failed', async () => {
      const i = await s.getInfo();
      return i.state === 'failed' ? i : undefined;
    });
    expect(info.endReason).toMatch(/exited/);
  });
});
