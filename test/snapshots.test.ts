import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest';
import Database from 'better-sqlite3';
import { ConflictError, InvalidArgumentError, Sandbox, SandboxNotFoundError, Snapshot, SnapshotNotFoundError } from 'nullspace';
import { api, conn, duringSnapshots, expectGuestReachesArchive, killAll, sandbox } from './helpers.js';
import { leftoverQemu } from './env.js';
import { DEVICE_SET } from '@nullspace/runtime';
import { cleanupDataDir, cli, ownServer, pools, qemuPid, tempDataDir, waitFor } from './servers.js';

describe('reusable snapshots: the product page, in TypeScript', () => {
  it('creates a snapshot, spawns independent children, manages it', async () => {
    const sbx = await sandbox({ template: 'base' });
    await sbx.files.write('/workspace/state.txt', 'baseline\n');
    const snapshot = await sbx.createSnapshot();
    expect(snapshot.id).toMatch(/^snap_[0-9a-z]{16}$/);
    expect(snapshot).toMatchObject({ sandboxId: sbx.sandboxId, kind: 'reusable', metadata: {} });
    expect(Math.abs(snapshot.createdAt.getTime() - Date.now())).toBeLessThan(60_000);
    expect(await sbx.files.read('/workspace/state.txt')).toBe('baseline\n');

    const first = await sandbox({ snapshotId: snapshot.id });
    const second = await sandbox({ snapshotId: snapshot.id });
    expect(new Set([sbx.sandboxId, first.sandboxId, second.sandboxId]).size).toBe(3);
    await first.files.write('/workspace/state.txt', 'first child\n');
    await second.files.write('/workspace/state.txt', 'second child\n');
    expect(await first.files.read('/workspace/state.txt')).toBe('first child\n');
    expect(await second.files.read('/workspace/state.txt')).toBe('second child\n');
    expect(await sbx.files.read('/workspace/state.txt')).toBe('baseline\n');
    expect((await first.getInfo()).snapshotId).toBe(snapshot.id);

    const got = await Snapshot.get(snapshot.id, conn());
    expect(got).toMatchObject({ id: snapshot.id, sandboxId: sbx.sandboxId });
    const listed: string[] = [];
    for await (const item of Snapshot.list({ ...conn(), sandboxId: sbx.sandboxId })) listed.push(item.id);
    expect(listed).toEqual([snapshot.id]);
    expect(await Snapshot.delete(snapshot.id, conn())).toBe(true);
    await expect(Snapshot.get(snapshot.id, conn())).rejects.toBeInstanceOf(SnapshotNotFoundError);
    expect(await Snapshot.delete(snapshot.id, conn())).toBe(false);
    await expect(Sandbox.create({ ...conn(), snapshotId: snapshot.id })).rejects.toBeInstanceOf(SnapshotNotFoundError);
    // children of a deleted snapshot are undisturbed
    expect(await first.files.read('/workspace/state.txt')).toBe('first child\n');
    expect((await second.commands.run('echo ok')).stdout).toBe('ok\n');
  });
});

describe('what a snapshot captures', () => {
  let source: Sandbox;
  let child: Sandbox | undefined;
  afterAll(() => killAll(source, child));

  it('memory and disk at one instant: running processes continue, unsynced writes are kept, later writes are not', async () => {
    source = await Sandbox.create({ ...conn(), metadata: { suite: 'nullspace-tests' } });
    await source.files.write(
      '/workspace/counter.py',
      [
        'import signal, time',
        'n = 0',
        'def dump(*_):',
        '    open("/workspace/dump", "w").write(str(n))',
        'def jump(*_):',
        '    global n',
        '    n += 1000000',
        'signal.signal(signal.SIGUSR1, dump)',
        'signal.signal(signal.SIGUSR2, jump)',
        'while True:',
        '    n += 1',
        '    open("/workspace/counter", "w").write(str(n))',
        '    time.sleep(0.05)',
        '',
      ].join('\n'),
    );
    const proc = await source.commands.run('python3 /workspace/counter.py', { background: true, timeoutMs: 0 });
    await waitFor('counter', async () => ((await source.commands.run('cat /workspace/counter 2>/dev/null || true')).stdout.trim() ? true : undefined));
    const before = Number((await source.commands.run('cat /workspace/counter')).stdout);
    // written just before the snapshot and never synced
    await source.commands.run('echo "$(date +%s%N)" > /workspace/last-moment');
    const snap = await source.createSnapshot({ metadata: { purpose: 'instant' } });
    await source.files.write('/workspace/after.txt', 'written after the snapshot');

    child = await Sandbox.create({ ...conn(), snapshotId: snap.id, metadata: { suite: 'nullspace-tests' } });
    const procs = await child.commands.list();
    expect(procs.find((p) => p.pid === proc.pid)).toMatchObject({ running: true });
    // the in-memory counter, as the process dumps it on SIGUSR1 (waits for the dump, however slow the guest)
    // (with `above`: the first value above it)
    const counter = async (s: Sandbox, above = -1) => {
      const dump = `rm -f /workspace/dump; kill -USR1 ${proc.pid}; while [ ! -s /workspace/dump ]; do sleep 0.05; done`;
      return Number((await s.commands.run(`${dump}; while [ "$(cat /workspace/dump)" -le ${above} ]; do sleep 0.1; ${dump}; done; cat /workspace/dump`, { timeoutMs: 60_000 })).stdout);
    };
    const dumped = await counter(child);
    const r = await child.commands.run('cat /workspace/last-moment; ls /workspace');
    const [lastMoment, ...files] = r.stdout.trim().split('\n');
    // the process kept its memory: its counter continues from the snapshot, not from zero
    // (the message says which counter processes the child runs, should this ever fail)
    if (dumped < before) console.error('snapshot instant:', { before, dumped, pid: proc.pid, child: (await child.commands.run('ps -eo pid,etimes,args | grep [c]ounter.py')).stdout, source: (await source.commands.run('ps -eo pid,etimes,args | grep [c]ounter.py')).stdout });
    expect(dumped).toBeGreaterThanOrEqual(before);
    expect(lastMoment).toMatch(/^\d+$/);
    expect(files).not.toContain('after.txt');
    // and it runs on in the child
    expect(await counter(child, dumped)).toBeGreaterThan(dumped);
    // source and child diverge from the instant of the snapshot: a change to the source process's
    // memory (its counter jumps by a million) is not in the child's copy, and the source counts on
    await source.commands.run(`kill -USR2 ${proc.pid}`);
    const srcNow = await counter(source);
    const childNow = await counter(child);
    expect(srcNow).toBeGreaterThan(before + 1_000_000);
    expect(childNow).toBeLessThan(1_000_000);
    expect(await source.files.read('/workspace/after.txt')).toBe('written after the snapshot');
    await Snapshot.delete(snap.id, conn());
  });

  it('keeps the source running through the snapshot (its processes, files, network)', async () => {
    const s = await sandbox();
    const bg = await s.commands.run('for i in $(seq 1 30); do echo $i >> /workspace/ticks; sleep 0.1; done', { background: true });
    await s.commands.run('while [ ! -s /workspace/ticks ]; do sleep 0.05; done');
    const asked = Date.now();
    const snap = await s.createSnapshot();
    const answered = Date.now();
    // the source was paused, and only within the request (a whole number of milliseconds)
    expect(Number.isInteger(snap.pauseMs)).toBe(true);
    expect(snap.pauseMs).toBeGreaterThan(0);
    expect(snap.pauseMs).toBeLessThanOrEqual(answered - asked);
    expect((await Snapshot.get(snap.id, conn())).pauseMs).toBe(snap.pauseMs);
    // its loop ran on through the capture: every tick, in order
    const done = await bg.wait();
    expect(done.exitCode).toBe(0);
    expect(await s.files.read('/workspace/ticks')).toBe(Array.from({ length: 30 }, (_, i) => `${i + 1}\n`).join(''));
    await expectGuestReachesArchive(s);
    expect((await s.getInfo()).state).toBe('running');
    await Snapshot.delete(snap.id, conn());
  });
});

describe('snapshot storage, lifetime and garbage collection', () => {
  it('outlives its source; children and their own snapshots survive the deletion of their parent snapshot; GC frees what nothing holds', async () => {
    const src = await sandbox();
    await src.files.write('/workspace/gen', 'one');
    const snap1 = await src.createSnapshot({ metadata: { gen: '1' } });
    await src.kill();
    const child = await sandbox({ snapshotId: snap1.id });
    expect(await child.files.read('/workspace/gen')).toBe('one');
    await child.files.write('/workspace/gen', 'two');
    const snap2 = await child.createSnapshot({ metadata: { gen: '2' } });

    // delete the parent snapshot while its child runs: the child and the child's snapshot live on
    await Snapshot.delete(snap1.id, conn());
    const report = (await (await api('GET', '/v1/gc')).json()) as { retained: Array<{ layerId: string; heldBy: string[] }>; freed: unknown[] };
    const heldByChild = report.retained.filter((l) => l.heldBy.some((h) => h.includes(child.sandboxId)));
    expect(heldByChild.length).toBeGreaterThan(0);
    expect((await child.commands.run('cat /workspace/gen')).stdout).toBe('two');
    const grandchild = await sandbox({ snapshotId: snap2.id });
    expect(await grandchild.files.read('/workspace/gen')).toBe('two');

    // once nothing holds them, the layers and their files go: every layer of either snapshot
    const db = new Database(path.join(inject('dataDir'), 'nullspace.db'));
    onTestFinished(() => {
      db.close();
    });
    const layersOf = (id: string) => {
      const r = db.prepare('SELECT mem_layer AS m, state_layer AS s, disk_layer AS d FROM snapshots WHERE id = ?').get(id) as { m: string; s: string; d: string };
      return [r.m, r.s, r.d];
    };
    const ours = layersOf(snap2.id);
    const pathOf = (id: string) => (db.prepare('SELECT path FROM layers WHERE id = ?').get(id) as { path: string } | undefined)?.path;
    const files = ours.map(pathOf);
    for (const f of files) expect(f !== undefined && fs.existsSync(f)).toBe(true);
    // (snap1 is deleted already: its RAM and state layers may be gone; its disk layer is under snap2's)
    const diskChain: string[] = [];
    for (let cur: string | null = ours[2]!; cur; cur = (db.prepare('SELECT parent_id AS p FROM layers WHERE id = ?').get(cur) as { p: string | null } | undefined)?.p ?? null) diskChain.push(cur);
    expect(diskChain.length).toBeGreaterThanOrEqual(2);
    const chainFiles = diskChain.map(pathOf);
    await Snapshot.delete(snap2.id, conn());
    await child.kill();
    await grandchild.kill();
    const run = (await (await api('POST', '/v1/gc')).json()) as { freed: Array<{ layerId: string }>; retained: Array<{ layerId: string; heldBy: string[] }> };
    for (const id of [...ours, ...diskChain]) expect(pathOf(id), id).toBeUndefined();
    for (const f of [...files, ...chainFiles]) expect(fs.existsSync(f!), f).toBe(false);
    for (const l of run.retained) {
      expect([...ours, ...diskChain]).not.toContain(l.layerId);
      expect(l.heldBy.some((h) => h.includes(snap1.id) || h.includes(snap2.id) || h.includes(child.sandboxId))).toBe(false);
    }
  });

  it('a GC dry run (GET /v1/gc, nullspace gc --dry-run) reports exactly what the real run then frees, and deletes nothing', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    // the collector runs only when asked: nothing frees layers between the dry run and the real one
    const server = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_FAULT_INJECTION: 'gc-on-request-only' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const db = new Database(path.join(dataDir, 'nullspace.db'));
    onTestFinished(() => {
      db.close();
    });
    type Report = { dryRun: boolean; freed: Array<{ layerId: string; kind: string; bytes: number }>; freedBytes: number; orphanFiles: string[]; retained: Array<{ layerId: string; heldBy: string[] }>; retainedBytes: number };
    const gcApi = async (method: 'GET' | 'POST') => (await (await fetch(`${server.url}/v1/gc`, { method, headers: { authorization: `Bearer ${server.key}` } })).json()) as Report;
    const gcCli = async (...args: string[]) => {
      const r = await cli(server, ['gc', ...args]);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    const layerRow = (id: string) => db.prepare('SELECT path, bytes FROM layers WHERE id = ?').get(id) as { path: string; bytes: number } | undefined;

    // a snapshot whose child and the child's snapshot rest on its disk layer; then it is deleted
    const src = await Sandbox.create(c);
    await src.files.write('/workspace/gen', 'one');
    const snap1 = await src.createSnapshot();
    const snap1Layers = db.prepare('SELECT mem_layer AS m, state_layer AS s, disk_layer AS d FROM snapshots WHERE id = ?').get(snap1.id) as { m: string; s: string; d: string };
    const child = await Sandbox.create({ ...c, snapshotId: snap1.id });
    await child.files.write('/workspace/gen', 'two');
    const snap2 = await child.createSnapshot();
    await src.kill();
    await snap1.delete();
    // and a file in the layer store that no record knows (as a crash leaves)
    const stray = path.join(dataDir, 'layers', 'lyr_strayfile00000000.mem');
    fs.writeFileSync(stray, 'left by a crash');

    const dry = await gcApi('GET');
    expect(dry.dryRun).toBe(true);
    // what nothing holds any more: the deleted snapshot's RAM and state (its disk layer is under snap2 and the child)
    expect(dry.freed.map((l) => l.layerId).sort()).toEqual([snap1Layers.m, snap1Layers.s].sort());
    for (const l of dry.freed) expect(l.bytes).toBe(layerRow(l.layerId)!.bytes);
    expect(dry.freedBytes).toBe(dry.freed.reduce((a, l) => a + l.bytes, 0));
    expect(dry.freedBytes).toBeGreaterThan(0);
    expect(dry.orphanFiles).toEqual([stray]);
    expect([...(dry.retained.find((l) => l.layerId === snap1Layers.d)?.heldBy ?? [])].sort()).toEqual([`sandbox ${child.sandboxId} (running)`, `snapshot ${snap2.id} (reusable)`].sort());
    // the CLI's dry run says the same, in JSON and in words
    const dryCli = JSON.parse(await gcCli('--dry-run', '--json')) as Report;
    expect(dryCli).toEqual(dry);
    const words = await gcCli('--dry-run');
    expect(words).toContain(`would free 2 layer(s), ${(dry.freedBytes / 1048576).toFixed(1)} MiB and 1 orphan file(s)\n`);
    for (const l of dry.freed) expect(words).toContain(`  ${l.layerId}  `);

    // nothing was deleted: rows, files, and what depends on them restores
    for (const l of dry.freed) expect(fs.existsSync(layerRow(l.layerId)!.path)).toBe(true);
    expect(fs.existsSync(stray)).toBe(true);
    const grandchild = await Sandbox.create({ ...c, snapshotId: snap2.id });
    expect(await grandchild.files.read('/workspace/gen')).toBe('two');
    await grandchild.kill();
    expect(await gcApi('GET')).toEqual(dry);

    // the real run frees exactly that: the same layers, the same bytes, the same orphan file
    const paths = dry.freed.map((l) => layerRow(l.layerId)!.path);
    const real = JSON.parse(await gcCli('--json')) as Report;
    expect(real.dryRun).toBe(false);
    expect(real.freed).toEqual(dry.freed);
    expect(real.freedBytes).toBe(dry.freedBytes);
    expect(real.orphanFiles).toEqual(dry.orphanFiles);
    expect(real.retained.map((l) => l.layerId).sort()).toEqual(dry.retained.map((l) => l.layerId).sort());
    for (const l of dry.freed) expect(layerRow(l.layerId)).toBeUndefined();
    for (const p of [...paths, stray]) expect(fs.existsSync(p), p).toBe(false);
    // and nothing that is held
    for (const l of real.retained) expect(fs.existsSync(layerRow(l.layerId)!.path)).toBe(true);
    const again = await Sandbox.create({ ...c, snapshotId: snap2.id });
    expect(await again.files.read('/workspace/gen')).toBe('two');
    expect(await child.files.read('/workspace/gen')).toBe('two');
    expect(await gcApi('GET')).toMatchObject({ freed: [], freedBytes: 0, orphanFiles: [] });
    await Promise.all([again.kill(), child.kill()]);
  });

  it('takes two snapshots of one sandbox requested at once: both complete and restore', async () => {
    const s = await sandbox();
    await s.files.write('/workspace/x', 'x');
    const [a, b] = await Promise.all([s.createSnapshot(), s.createSnapshot()]);
    expect(a.id).not.toBe(b.id);
    const ca = await sandbox({ snapshotId: a.id });
    const cb = await sandbox({ snapshotId: b.id });
    expect(await ca.files.read('/workspace/x')).toBe('x');
    expect(await cb.files.read('/workspace/x')).toBe('x');
    await Snapshot.delete(a.id, conn());
    await Snapshot.delete(b.id, conn());
  });

  it('commands started while snapshots are taken wait for the capture and run (none refused by the frozen user processes)', async () => {
    const s = await sandbox();
    const { ran, failed } = await duringSnapshots(s, 3, async (i) => {
      await s.commands.run(`echo ${i} >> /workspace/started`, { timeoutMs: 60_000 });
    });
    expect(failed).toEqual([]);
    expect((await s.commands.run('wc -l < /workspace/started')).stdout.trim()).toBe(String(ran));
  });

  it('a source snapshotted many times keeps a bounded disk chain (compacted in the background); every snapshot restores its own instant', async () => {
    const s = await sandbox();
    const snaps: Snapshot[] = [];
    try {
      for (let i = 0; i < 12; i++) {
        await s.files.write(`/workspace/gen-${i}`, String(i));
        snaps.push(await s.createSnapshot());
      }
      const dir = path.join(inject('dataDir'), 'sandboxes', s.sandboxId);
      const chainLen = () => {
        const overlay = execFileSync('sh', ['-c', `ls -t ${dir}/disk-*.qcow2 | head -1`]).toString().trim();
        return (JSON.parse(execFileSync('qemu-img', ['info', '-U', '--backing-chain', '--output=json', overlay]).toString()) as unknown[]).length;
      };
      // 12 frozen layers under the overlay unless compacted: overlay + at most 8 + template disk + image root
      await waitFor('the source chain compacted', async () => (chainLen() <= 11 ? true : undefined), 120_000);
      for (const i of [0, 8, 11]) {
        const child = await sandbox({ snapshotId: snaps[i]!.id });
        expect((await child.commands.run('ls /workspace | grep -c gen-')).stdout.trim()).toBe(String(i + 1));
        expect(await child.files.read(`/workspace/gen-${i}`)).toBe(String(i));
        await child.kill();
      }
      expect((await s.commands.run('ls /workspace | grep -c gen-')).stdout.trim()).toBe('12');
    } finally {
      for (const x of snaps) await x.delete().catch(() => {});
    }
  });

  it('a background chain stream the record missed (a server stopped or crashed meanwhile) does not block later captures', async () => {
    const s = await sandbox();
    const snaps: Snapshot[] = [];
    onTestFinished(async () => {
      for (const x of snaps) await x.delete().catch(() => {});
    });
    // (the 9th capture makes the chain deeper than MAX_CHAIN_DEPTH: it is streamed after it)
    for (let i = 0; i < 9; i++) {
      await s.files.write(`/workspace/g-${i}`, String(i));
      snaps.push(await s.createSnapshot());
    }
    // the background stream moves the overlay onto the template disk and the record with it
    const db = new Database(path.join(inject('dataDir'), 'nullspace.db'));
    onTestFinished(() => {
      db.close();
    });
    const parentOf = () => (db.prepare('SELECT disk_parent_layer AS p FROM sandboxes WHERE id = ?').get(s.sandboxId) as { p: string | null }).p;
    await waitFor('the chain streamed', async () => (parentOf() === null ? true : undefined), 120_000);
    // as if the stream had completed in QEMU after the server stopped: the record names a deep layer
    const deep = (db.prepare('SELECT disk_layer AS l FROM snapshots WHERE id = ?').get(snaps[snaps.length - 1]!.id) as { l: string }).l;
    db.prepare('UPDATE sandboxes SET disk_parent_layer = ? WHERE id = ?').run(deep, s.sandboxId);
    const snap = await s.createSnapshot();
    const child = await sandbox({ snapshotId: snap.id });
    expect(await child.files.read('/workspace/g-8')).toBe('8');
    await child.kill();
    await snap.delete();
  });

  it('lists with filters and pages', async () => {
    const s = await sandbox();
    const snaps = [];
    for (const color of ['red', 'blue', 'red']) snaps.push(await s.createSnapshot({ metadata: { color } }));
    try {
      const red: string[] = [];
      for await (const x of Snapshot.list({ ...conn(), sandboxId: s.sandboxId, metadata: { color: 'red' } })) red.push(x.id);
      expect(red).toEqual([snaps[0]!.id, snaps[2]!.id]);
      const pager = Snapshot.list({ ...conn(), sandboxId: s.sandboxId, limit: 2 });
      const page1 = await pager.nextItems();
      expect(page1).toHaveLength(2);
      expect(pager.hasNext).toBe(true);
      const page2 = await pager.nextItems();
      expect(page2.map((x) => x.id)).toEqual([snaps[2]!.id]);
      expect(pager.hasNext).toBe(false);
      const none: string[] = [];
      for await (const x of Snapshot.list({ ...conn(), sandboxId: s.sandboxId, kind: 'hibernate' })) none.push(x.id);
      expect(none).toEqual([]);
    } finally {
      for (const x of snaps) await Snapshot.delete(x.id, conn());
    }
  });
});

describe('snapshot errors', () => {
  it('refuses bad requests with clear codes', async () => {
    await expect(api('POST', '/v1/sandboxes/sbx_0000000000000000/snapshots', {}).then((r) => r.status)).resolves.toBe(404);
    const s = await sandbox();
    const bad = await api('POST', `/v1/sandboxes/${s.sandboxId}/snapshots`, { metadata: { nested: { a: 1 } } });
    expect(bad.status).toBe(400);
    const big = await api('POST', `/v1/sandboxes/${s.sandboxId}/snapshots`, { metadata: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, 'v'])) });
    expect(big.status).toBe(400);
    await expect(s.createSnapshot({ metadata: { ok: 'x'.repeat(2000) } })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(Snapshot.get('snap_0000000000000000', conn())).rejects.toBeInstanceOf(SnapshotNotFoundError);
    await expect(Snapshot.get('../../etc/passwd', conn())).rejects.toBeInstanceOf(SnapshotNotFoundError);
    await expect(Sandbox.create({ ...conn(), snapshotId: 'snap_0000000000000000' })).rejects.toBeInstanceOf(SnapshotNotFoundError);
    const both = await api('POST', '/v1/sandboxes', { template: 'base', snapshotId: 'snap_0000000000000000' });
    expect(both.status).toBe(400);
    await s.kill();
    await expect(s.createSnapshot()).rejects.toBeInstanceOf(ConflictError);
    await expect(s.createSnapshot()).rejects.toMatchObject({ code: 'sandbox_not_running' });
    await expect(Sandbox.connect('sbx_0000000000000000', conn())).rejects.toBeInstanceOf(SandboxNotFoundError);
  });

  it('an overlay whose header was rewritten by its (compromised) QEMU uid to name a host file is refused before root opens it', async () => {
    const s = await sandbox();
    await s.files.write('/workspace/x', 'x');
    const dir = path.join(inject('dataDir'), 'sandboxes', s.sandboxId);
    const disk = path.join(dir, 'disk-0.qcow2');
    expect(fs.existsSync(disk)).toBe(true);
    // what an escaped QEMU could do in the directory it owns: swap in an overlay backed by the server's database
    const evil = path.join(dir, 'evil.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-F', 'raw', '-b', path.join(inject('dataDir'), 'nullspace.db'), evil, '4G']);
    fs.renameSync(evil, disk);
    const err = await s.createSnapshot().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'disk_invalid', status: 500 });
    expect((err as Error).message).toMatch(/backing format is "raw"/);
    await expect(s.fork()).rejects.toMatchObject({ code: 'disk_invalid' });
    const listed = [];
    for await (const item of Snapshot.list({ ...conn(), sandboxId: s.sandboxId, kind: ['reusable', 'fork'] })) listed.push(item.id);
    expect(listed).toEqual([]);
    // the sandbox itself runs on (its QEMU has its real overlay open)
    expect(await s.files.read('/workspace/x')).toBe('x');
  });

  it('a QEMU killed in the middle of a snapshot: the error is reported, nothing is listed, no artifact remains', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_FAULT_INJECTION: 'kill-vm-during-snapshot' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const s = await Sandbox.create(c);
    const err = await s.createSnapshot().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'vm_exited' });
    const listed: string[] = [];
    for await (const x of Snapshot.list({ ...c, sandboxId: s.sandboxId })) listed.push(x.id);
    expect(listed).toEqual([]);
    const info = await waitFor('failed', async () => {
      const i = await s.getInfo();
      return i.state === 'failed' ? i : undefined;
    });
    expect(info.errorCode).toBe('vm_exited');
    await fetch(`${server.url}/v1/gc`, { method: 'POST', headers: { authorization: `Bearer ${server.key}` } });
    const layers = fs.readdirSync(path.join(dataDir, 'layers'));
    expect(layers).toEqual(['.staging']);
    expect(fs.readdirSync(path.join(dataDir, 'layers', '.staging'))).toEqual([]);
    expect(qemuPid(s.sandboxId)).toBeUndefined();
  });

  it('user processes a capture could not thaw are thawed before the sandbox serves anything again', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_FAULT_INJECTION: 'thaw-fails-after-capture', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const s = await Sandbox.create(c);
    try {
      await s.commands.run('i=0; while :; do i=$((i+1)); echo $i > /tmp/ticks; sleep 0.05; done', { background: true, timeoutMs: 0 });
      await s.commands.run('while [ ! -s /tmp/ticks ]; do sleep 0.05; done');
      // the capture froze the user processes and its thaw "failed": the snapshot itself is good
      const snap = await s.createSnapshot();
      expect(snap.id).toMatch(/^snap_/);
      // a command would otherwise be refused (the agent never joins a frozen cgroup) or hang
      const before = Number((await s.commands.run('cat /tmp/ticks')).stdout);
      // and the loop runs again (frozen, it would never move on)
      await waitFor('the loop to tick again', async () => (Number((await s.files.read('/tmp/ticks')).trim()) > before ? true : undefined), 60_000);
    } finally {
      await s.kill();
    }
  });

  it('a full data disk: a snapshot or a hibernation fails clearly, a guest write waits until space is freed; the source keeps running, nothing is lost or half-written', async () => {
    const dataDir = tempDataDir();
    const image = `${dataDir}.img`;
    cleanupDataDir(dataDir);
    fs.mkdirSync(dataDir, { recursive: true });
    execFileSync('truncate', ['-s', '1G', image]);
    execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
    execFileSync('mount', ['-o', 'loop', image, dataDir]);
    const filler = path.join(dataDir, 'filler');
    try {
      // no warm pools: their background copies would change the free space the test measures
      const server = await ownServer(dataDir, { NULLSPACE_MIN_FREE_DISK_MIB: '0', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
      const c = { apiUrl: server.url, apiKey: server.key };
      const s = await Sandbox.create(c);
      try {
        // the guest's RAM file fully allocated, so that the guest itself never needs a new block
        const mem = path.join(dataDir, 'sandboxes', s.sandboxId, 'mem');
        execFileSync('fallocate', ['-l', String(fs.statSync(mem).size), mem]);
        const free = () => {
          const st = fs.statfsSync(dataDir);
          return st.bavail * st.bsize;
        };
        execFileSync('fallocate', ['-l', String(free() - 256 * 1024), filler]);
        const err = await s.createSnapshot().catch((e: unknown) => e);
        expect(err).toMatchObject({ code: 'no_space', status: 507 });
        // hibernation on a full disk: the same clear error, and the sandbox keeps running
        const hibErr = await s.hibernate().catch((e: unknown) => e);
        expect(hibErr).toMatchObject({ code: 'no_space', status: 507 });
        expect((await s.getInfo()).state).toBe('running');
        const listed: string[] = [];
        for await (const x of Snapshot.list({ ...c, sandboxId: s.sandboxId })) listed.push(x.id);
        expect(listed).toEqual([]);
        expect(fs.readdirSync(path.join(dataDir, 'layers')).filter((f) => f !== '.staging')).toEqual([]);
        expect(fs.readdirSync(path.join(dataDir, 'layers', '.staging'))).toEqual([]);
        // a guest write that finds the host disk full: QEMU stops the VM and keeps the write (the
        // guest sees no error); the server resumes it once space is freed, and nothing is lost
        let done = false;
        const write = s.commands
          .run('head -c 4M /dev/urandom > /workspace/late && sync && sha256sum /workspace/late', { timeoutMs: 120_000 })
          .finally(() => (done = true));
        await new Promise((r) => setTimeout(r, 3000));
        expect(done).toBe(false);
        expect((await s.getInfo()).state).toBe('running');
        fs.rmSync(filler);
        const written = await write;
        expect(written.exitCode).toBe(0);
        expect(written.stdout).toMatch(/^[0-9a-f]{64} /);
        expect((await s.commands.run('sha256sum /workspace/late')).stdout).toBe(written.stdout);
        expect((await s.commands.run('echo still running')).stdout).toBe('still running\n');
        const snap = await s.createSnapshot();
        const child = await Sandbox.create({ ...c, snapshotId: snap.id });
        expect((await child.commands.run('echo child')).stdout).toBe('child\n');
        await child.kill();
      } finally {
        await s.kill();
        await server.close();
      }
    } finally {
      fs.rmSync(filler, { force: true });
      execFileSync('umount', ['-l', dataDir]);
      fs.rmSync(image, { force: true });
    }
  });
});

describe('compatibility', () => {
  it('records everything a restore needs, and refuses each kind of mismatch naming its field (create, resume, API, SDK, CLI)', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const first = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const c1 = { apiUrl: first.url, apiKey: first.key };
    const s = await Sandbox.create(c1);
    const snap = await s.createSnapshot();
    const profile = first.host.profile;
    const template = first.host.template('base');
    // every field, with what it must be
    const ok = await Snapshot.compatibility(snap.id, c1);
    expect(ok).toEqual({
      snapshotId: snap.id,
      compatible: true,
      mismatches: [],
      requirements: {
        qemuVersion: profile.qemuVersion,
        machine: profile.machine,
        accel: profile.accel,
        cpuModel: profile.cpuModel,
        hostCpu: profile.hostCpu,
        memoryMiB: 512,
        vcpus: 1,
        deviceSet: DEVICE_SET,
        kernelRelease: template.image.kernelRelease,
        agentVersion: template.image.agentVersion,
        template: 'base',
      },
      // every runtime host by its fingerprint: here the server's own only
      hosts: [{ hostId: 'local', state: 'ready', compatible: true, mismatches: [] }],
    });
    expect(profile.machine).toMatch(/^pc-i440fx-\d+\.\d+$/);
    const hib = await s.hibernate();

    // each kind of mismatch, made in the stored record where no setting of the host can make it
    const db = new Database(path.join(dataDir, 'nullspace.db'));
    onTestFinished(() => {
      db.close();
    });
    const requirements = (id: string) => (db.prepare('SELECT requirements AS r FROM snapshots WHERE id = ?').get(id) as { r: string }).r;
    const setRequirement = (id: string, field: string, value: string | number) =>
      db.prepare("UPDATE snapshots SET requirements = json_set(requirements, '$.' || ?, ?) WHERE id = ?").run(field, value, id);
    const refused = async (id: string, field: string, snapshotValue: string | number, hostValue: string | number) => {
      const no = await Snapshot.compatibility(id, c1);
      expect(no.compatible, field).toBe(false);
      expect(no.mismatches, field).toEqual([{ field, snapshot: snapshotValue, host: hostValue }]);
      const err = await (id === hib.id ? Sandbox.resume(id, c1) : Sandbox.create({ ...c1, snapshotId: id })).catch((e: unknown) => e);
      expect(err, field).toBeInstanceOf(ConflictError);
      expect(err, field).toMatchObject({ code: 'snapshot_incompatible', status: 409, details: { snapshotId: id, mismatches: [{ field, snapshot: snapshotValue, host: hostValue }] } });
      expect((err as Error).message, field).toContain(`${field} is ${snapshotValue} in ${id === hib.id ? 'its' : 'the'} snapshot but ${hostValue} here`);
    };
    const cases: Array<[field: string, snapshotValue: string | number, hostValue: string | number]> = [
      ['qemuVersion', '1.0.0', profile.qemuVersion],
      ['machine', 'pc-i440fx-1.0', profile.machine],
      ['accel', profile.accel === 'kvm' ? 'tcg' : 'kvm', profile.accel],
      ['cpuModel', 'Skylake-Server', profile.cpuModel],
      ['hostCpu', 'Another CPU [flags 0123456789ab]', profile.hostCpu],
      ['memoryMiB', 1024, 512],
      ['vcpus', 2, 1],
      ['deviceSet', 'pc/virtio-blk;v0', DEVICE_SET],
    ];
    const original = requirements(snap.id);
    for (const [field, snapshotValue, hostValue] of cases) {
      setRequirement(snap.id, field, snapshotValue);
      await refused(snap.id, field, snapshotValue, hostValue);
      db.prepare('UPDATE snapshots SET requirements = ? WHERE id = ?').run(original, snap.id);
    }
    // a resume is checked the same way
    setRequirement(hib.id, 'qemuVersion', '1.0.0');
    await refused(hib.id, 'qemuVersion', '1.0.0', profile.qemuVersion);
    expect((await s.getInfo()).state).toBe('paused');
    // the kernel and initramfs files the snapshot boots with must exist
    const vmConfig = (db.prepare('SELECT vm_config AS v FROM snapshots WHERE id = ?').get(snap.id) as { v: string }).v;
    const gone = path.join(dataDir, 'no-such-kernel');
    db.prepare("UPDATE snapshots SET vm_config = json_set(vm_config, '$.kernel', ?) WHERE id = ?").run(gone, snap.id);
    await refused(snap.id, 'kernelRelease', gone, 'missing');
    // the CLI says so, naming the field
    const info = await cli(first, ['snapshot', 'info', snap.id]);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toContain(`NOT restorable on this host: kernelRelease ${gone} (host: missing)`);
    const infoJson = JSON.parse((await cli(first, ['snapshot', 'info', snap.id, '--json'])).stdout) as { id: string; compatibility: { compatible: boolean } };
    expect(infoJson).toMatchObject({ id: snap.id, compatibility: { compatible: false, mismatches: [{ field: 'kernelRelease' }] } });
    db.prepare('UPDATE snapshots SET vm_config = ? WHERE id = ?').run(vmConfig, snap.id);
    // refused before anything started
    const all: string[] = [];
    for await (const x of Sandbox.list({ ...c1, query: { state: ['creating', 'running', 'failed'] } })) all.push(x.sandboxId);
    expect(all).toEqual([]);

    // informative only: the agent version and the template name
    setRequirement(snap.id, 'agentVersion', 'an older agent');
    setRequirement(snap.id, 'template', 'renamed');
    expect(await Snapshot.compatibility(snap.id, c1)).toMatchObject({ compatible: true, mismatches: [], requirements: { agentVersion: 'an older agent', template: 'renamed' } });
    expect((await cli(first, ['snapshot', 'info', snap.id])).stdout).toMatch(/\nrestorable on this host\n$/);
    const child = await Sandbox.create({ ...c1, snapshotId: snap.id });
    expect((await child.commands.run('echo restored')).stdout).toBe('restored\n');
    await child.kill();
    await Sandbox.kill(s.sandboxId, c1);
    await first.close();

    // a host that really differs: another CPU model
    const other = profile.cpuModel === 'qemu64' ? 'max' : 'qemu64';
    const second = await ownServer(dataDir, { NULLSPACE_CPU_MODEL: other, NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const c2 = { apiUrl: second.url, apiKey: second.key };
    const no = await Snapshot.compatibility(snap.id, c2);
    expect(no).toMatchObject({ compatible: false, mismatches: [{ field: 'cpuModel', snapshot: profile.cpuModel, host: other }] });
    const err = await Sandbox.create({ ...c2, snapshotId: snap.id }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'snapshot_incompatible', status: 409 });
    expect((err as Error).message).toContain('cpuModel');
  });
});

describe('snapshot pool', () => {
  it('keeps recent snapshots warm: a create takes a prepared sandbox whose processes stayed frozen until then', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '1' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const pool = async () => (await pools(server)).snapshotPool;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const src = await Sandbox.create({ ...c, template: 'base' });
    const kids: Sandbox[] = [];
    try {
      expect(await pool()).toEqual({ size: 1, ready: 0, preparing: 0, snapshots: [] });
      // a process that stamps, every 100 ms, the boot id it runs under (each restore gets its own:
      // the source's, a slot's throwaway one, the create's)
      await src.commands.run('while :; do cat /proc/sys/kernel/random/boot_id >> /tmp/ticks; sleep 0.1; done', { background: true, timeoutMs: 0 });
      await src.commands.run('while [ ! -s /tmp/ticks ]; do sleep 0.05; done');
      const srcBoot = (await src.files.read('/proc/sys/kernel/random/boot_id')).trim();
      const snap = await src.createSnapshot();
      await waitFor('a warm sandbox of the snapshot', async () => {
        const p = await pool();
        return p.ready === 1 && p.snapshots.join() === snap.id ? true : undefined;
      }, 60_000);
      const srcPid = leftoverQemu(`nullspace-${src.sandboxId}`)[0];
      const prepared = leftoverQemu(dataDir).filter((p) => p !== srcPid);
      expect(prepared).toHaveLength(1);
      // it waits, restored and running: the snapshot's processes must not run meanwhile (a slot
      // that ran them would stamp its throwaway boot id ~15 times here)
      await sleep(1500);
      const kid = await Sandbox.create({ ...c, snapshotId: snap.id, envs: { WHO: 'kid' } });
      kids.push(kid);
      expect(leftoverQemu(`nullspace-${kid.sandboxId}`)).toEqual(prepared);
      const kidBoot = (await kid.files.read('/proc/sys/kernel/random/boot_id')).trim();
      // the kid's stamps: the source's up to the capture, then its own (waited for), nothing between
      await kid.commands.run(`until grep -q ${kidBoot} /tmp/ticks; do sleep 0.05; done`, { timeoutMs: 60_000 });
      const ticks = (await kid.files.read('/tmp/ticks')).trim().split('\n');
      const fromSource = ticks.findIndex((t) => t !== srcBoot);
      expect(fromSource).toBeGreaterThan(0);
      expect(new Set(ticks.slice(fromSource))).toEqual(new Set([kidBoot]));
      // the create's own identity and environment
      const probe = await kid.commands.run('hostname; cat /etc/machine-id /proc/sys/kernel/random/boot_id; echo "$WHO"');
      const [host, machine, boot, who] = probe.stdout.trim().split('\n');
      const srcProbe = (await src.commands.run('cat /etc/machine-id /proc/sys/kernel/random/boot_id')).stdout.trim().split('\n');
      expect([host, who]).toEqual([kid.sandboxId, 'kid']);
      expect(machine).toMatch(/^[0-9a-f]{32}$/);
      expect(machine).not.toBe(srcProbe[0]);
      expect(boot).not.toBe(srcProbe[1]);
      expect((await kid.getInfo()).snapshotId).toBe(snap.id);
      // taken slots are replaced; a newer snapshot takes the only place, a deleted one leaves
      await waitFor('the pool refilled', async () => ((await pool()).ready === 1 ? true : undefined), 60_000);
      const snap2 = await src.createSnapshot();
      await waitFor('the newer snapshot warm instead', async () => {
        const p = await pool();
        return p.ready === 1 && p.snapshots.join() === snap2.id ? true : undefined;
      }, 60_000);
      expect(await Snapshot.delete(snap2.id, c)).toBe(true);
      expect(await pool()).toMatchObject({ ready: 0, snapshots: [] });
      await waitFor('no warm VM left', async () => (leftoverQemu(dataDir).length === 2 ? true : undefined), 10_000);
      // a create from the older snapshot, no longer warm, restores its own VM and puts it back first
      const cold = await Sandbox.create({ ...c, snapshotId: snap.id });
      kids.push(cold);
      expect((await cold.commands.run('hostname')).stdout.trim()).toBe(cold.sandboxId);
      expect((await pool()).snapshots).toEqual([snap.id]);
    } finally {
      await Promise.all([...kids, src].map((s) => s.kill()));
    }
    // prepared VMs are not sandboxes: they go with the server
    await server.close();
    expect(leftoverQemu(dataDir)).toEqual([]);
  });

  it('does not keep warm a snapshot whose user processes could not be frozen (they would run in the slot), nor try again on each create', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '1', NULLSPACE_FAULT_INJECTION: 'freeze-fails' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const pool = async () => (await pools(server)).snapshotPool;
    const src = await Sandbox.create({ ...c, template: 'base' });
    const kids: Sandbox[] = [];
    try {
      await src.commands.run('sleep 3600', { background: true, timeoutMs: 0 });
      const snap = await src.createSnapshot();
      expect((await pool()).snapshots).toEqual([snap.id]);
      // its slot is prepared, found to hold running user processes, and killed
      await waitFor('the slot refused', async () => {
        const p = await pool();
        return p.preparing === 0 && p.snapshots.length === 0 ? p : undefined;
      }, 60_000);
      await waitFor('no warm VM left', async () => (leftoverQemu(dataDir).length === 1 ? true : undefined), 10_000);
      // creates from it restore their own VM and do not put it back
      const kid = await Sandbox.create({ ...c, snapshotId: snap.id });
      kids.push(kid);
      expect((await kid.commands.run('hostname')).stdout.trim()).toBe(kid.sandboxId);
      expect(await pool()).toMatchObject({ ready: 0, preparing: 0, snapshots: [] });
    } finally {
      await Promise.all([...kids, src].map((s) => s.kill()));
    }
  });
});
