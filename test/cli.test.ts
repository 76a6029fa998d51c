import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { findTemplate } from '@nullspace/runtime';
import { loadConfig } from '@nullspace/server';
import { Sandbox } from 'nullspace';
import { apiKey, apiUrl } from './helpers.js';
import { cleanupDataDir, cli, ownServer, tempDataDir } from './servers.js';

const CLI = path.resolve(__dirname, '../packages/cli/dist/main.js');

/** The CLI against the suite's server. */
const run = (args: string[], input?: string) => cli({ url: apiUrl(), key: apiKey() }, args, input === undefined ? {} : { input });

describe('nullspace CLI', () => {
  it('creates, lists, runs commands, moves files and kills', async () => {
    const created = await run(['sandbox', 'create', '--metadata', 'suite=cli-test', '--env', 'WHO=cli', '--json']);
    expect(created.code, created.stderr).toBe(0);
    const id = (JSON.parse(created.stdout) as { sandboxId: string }).sandboxId;
    onTestFinished(async () => {
      await run(['sandbox', 'kill', id]);
    });
    expect(id).toMatch(/^sbx_/);

    const list = await run(['sandbox', 'list', '--metadata', 'suite=cli-test', '--json']);
    expect((JSON.parse(list.stdout) as Array<{ sandboxId: string }>).map((s) => s.sandboxId)).toContain(id);
    expect((await run(['sandbox', 'list'])).stdout).toContain(id);

    const exec = await run(['sandbox', 'exec', id, '--', 'echo hello $WHO; echo oops >&2; exit 4']);
    expect(exec).toMatchObject({ code: 4, stdout: 'hello cli\n', stderr: 'oops\n' });

    // without `--`, words after the id that look like options are the command's
    expect(await run(['sandbox', 'exec', id, 'ls', '-d', '/workspace'])).toMatchObject({ code: 0, stdout: '/workspace\n' });
    // ended by a signal: 128 + its number, as in a shell; killed by its timeout: 124 (and --json says so)
    expect((await run(['sandbox', 'exec', id, '--', 'kill -TERM $$'])).code).toBe(143);
    const late = await run(['sandbox', 'exec', '--timeout-ms', '1000', '--json', id, '--', 'echo started; sleep 30']);
    expect(late.code).toBe(124);
    expect(JSON.parse(late.stdout)).toMatchObject({ timedOut: true, stdout: 'started\n' });

    const w = await run(['files', 'write', id, '/workspace/from-cli.txt', '-'], 'piped content\n');
    expect(w.code, w.stderr).toBe(0);
    // a local file that is not there is said so (not a server problem)
    const missing = await run(['files', 'write', id, '/workspace/x', '/nonexistent/file']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot read /nonexistent/file');
    const local = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ns-cli-')), 'big.bin');
    onTestFinished(() => fs.rmSync(path.dirname(local), { recursive: true, force: true }));
    fs.writeFileSync(local, Buffer.alloc(3 * 1024 * 1024, 7));
    expect((await run(['files', 'write', id, '/workspace/big.bin', local])).code).toBe(0);
    expect((await run(['sandbox', 'exec', id, '--', "wc -c < /workspace/big.bin; tr -d '\\007' < /workspace/big.bin | wc -c"])).stdout).toBe('3145728\n0\n');
    expect(await run(['files', 'read', id, '/workspace/from-cli.txt'])).toMatchObject({ code: 0, stdout: 'piped content\n' });

    const info = await run(['sandbox', 'info', id, '--json']);
    expect(JSON.parse(info.stdout)).toMatchObject({ sandboxId: id, state: 'running' });

    expect((await run(['sandbox', 'kill', id])).code).toBe(0);
    expect(JSON.parse((await run(['sandbox', 'info', id, '--json'])).stdout)).toMatchObject({ state: 'killed' });
  });

  it('prints errors with their code and exits non-zero', async () => {
    const r = await run(['sandbox', 'info', 'sbx_0000000000000000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[sandbox_not_found]');
    expect((await run(['files', 'read', 'sbx_0000000000000000', 'relative'])).code).toBe(1);
  });

  it('lists templates', async () => {
    const r = await run(['template', 'list', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Array<{ name: string }>).map((t) => t.name)).toContain('base');
  });
});

describe('nullspace CLI command groups, end to end', () => {
  const ok = async (args: string[]) => {
    const r = await run(args);
    expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const json = async <T>(args: string[]) => JSON.parse(await ok([...args, '--json'])) as T;
  /** `sandbox create` with `args`; killed when the test ends. */
  const create = async (...args: string[]) => {
    const id = (await json<{ sandboxId: string }>(['sandbox', 'create', '--metadata', 'suite=cli-test', ...args])).sandboxId;
    killAtEnd(id);
    return id;
  };
  const killAtEnd = (id: string) =>
    onTestFinished(async () => {
      await run(['sandbox', 'kill', id]);
    });

  it('snapshot create, list, info, delete; sandbox create --snapshot', async () => {
    const id = await create();
    await ok(['sandbox', 'exec', id, '--', 'echo one > /workspace/gen']);
    const snap = await json<{ id: string; kind: string; sandboxId: string; metadata: Record<string, string> }>(['snapshot', 'create', id, '--metadata', 'step=cli']);
    expect(snap).toMatchObject({ id: expect.stringMatching(/^snap_/), kind: 'reusable', sandboxId: id, metadata: { step: 'cli' } });
    expect((await json<Array<{ id: string }>>(['snapshot', 'list', '--sandbox', id])).map((x) => x.id)).toEqual([snap.id]);
    expect(await ok(['snapshot', 'list', '--sandbox', id, '--metadata', 'step=cli'])).toMatch(new RegExp(`^${snap.id}  reusable +${id}  .*  step=cli\n$`));
    expect(await json(['snapshot', 'info', snap.id])).toMatchObject({ id: snap.id, compatibility: { compatible: true, mismatches: [] } });
    expect(await ok(['snapshot', 'info', snap.id])).toMatch(/\nrestorable on this host\n$/);
    const fromSnap = await create('--snapshot', snap.id);
    expect(await ok(['sandbox', 'exec', fromSnap, '--', 'cat /workspace/gen'])).toBe('one\n');
    expect(await json(['sandbox', 'info', fromSnap])).toMatchObject({ snapshotId: snap.id, state: 'running' });
    await ok(['snapshot', 'delete', snap.id]);
    const gone = await run(['snapshot', 'delete', snap.id]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('[snapshot_not_found]');
  });

  it('sandbox fork, hibernate, pause, resume', async () => {
    const id = await create();
    await ok(['sandbox', 'exec', id, '--', 'echo one > /workspace/gen']);
    // fork: a running child with the source's files
    const forked = await json<{ sandboxId: string; forkedFrom: string; state: string }>(['sandbox', 'fork', id, '--metadata', 'role=child']);
    killAtEnd(forked.sandboxId);
    expect(forked).toMatchObject({ forkedFrom: id, state: 'running', metadata: { role: 'child' } });
    expect(await ok(['sandbox', 'exec', forked.sandboxId, '--', 'cat /workspace/gen'])).toBe('one\n');
    const plain = (await ok(['sandbox', 'fork', id])).trim();
    killAtEnd(plain);
    expect(await json(['sandbox', 'info', plain])).toMatchObject({ sandboxId: plain, forkedFrom: id, state: 'running' });
    // --count: the children's ids, one a line, from one capture
    const two = (await ok(['sandbox', 'fork', id, '--count', '2'])).trim().split('\n');
    for (const c of two) killAtEnd(c);
    expect(two).toHaveLength(2);
    const infos = await Promise.all(two.map((c) => json<{ forkedFrom: string; snapshotId: string }>(['sandbox', 'info', c])));
    expect(infos.map((i) => i.forkedFrom)).toEqual([id, id]);
    expect(infos[0]!.snapshotId).toBe(infos[1]!.snapshotId);
    for (const c of two) await ok(['sandbox', 'kill', c]);
    // hibernate (and its alias pause) and resume: the same sandbox, with its unsynced writes
    await ok(['sandbox', 'exec', id, '--', 'echo unsynced > /workspace/late']);
    const hib = await json<{ snapshotId: string; kind: string; sandboxId: string }>(['sandbox', 'hibernate', id]);
    expect(hib).toMatchObject({ snapshotId: expect.stringMatching(/^snap_/), kind: 'hibernate', sandboxId: id });
    expect(await json(['sandbox', 'info', id])).toMatchObject({ state: 'paused' });
    expect((await ok(['sandbox', 'pause', id])).trim()).toBe(hib.snapshotId);
    expect(await ok(['sandbox', 'resume', id])).toBe(`${id} running\n`);
    expect(await ok(['sandbox', 'exec', id, '--', 'cat /workspace/gen /workspace/late; hostname'])).toBe(`one\nunsynced\n${id}\n`);
  }, 360_000); // (fork, hibernate, pause and resume in a row: minutes under TCG on a loaded 2-core host)

  it('volume create, list, info, delete; sandbox create --volume', async () => {
    const name = `cli-vol-${randomBytes(4).toString('hex')}`;
    onTestFinished(async () => {
      await run(['volume', 'delete', name]);
    });
    expect(await ok(['volume', 'create', name])).toBe(`${name}\n`);
    expect((await json<Array<{ name: string }>>(['volume', 'list'])).map((v) => v.name)).toContain(name);
    const user = await create('--volume', `${name}:/mnt/shared`);
    await ok(['sandbox', 'exec', user, '--', 'echo in the volume > /mnt/shared/note']);
    expect(await json(['volume', 'info', name])).toMatchObject({ name, mountedBy: [user] });
    expect(await ok(['volume', 'info', name])).toContain(`mounted by: ${user}`);
    const busy = await run(['volume', 'delete', name]);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain('[volume_in_use]');
    const reader = await create('--volume', `${name}:/data`);
    expect(await ok(['sandbox', 'exec', reader, '--', 'cat /data/note'])).toBe('in the volume\n');
    for (const s of [user, reader]) await ok(['sandbox', 'kill', s]);
    await ok(['volume', 'delete', name]);
    const noVolume = await run(['volume', 'info', name]);
    expect(noVolume.code).toBe(1);
    expect(noVolume.stderr).toContain('[volume_not_found]');
  });

  it('gc --dry-run and gc (what they report is checked against a real run in snapshots.test.ts)', async () => {
    const id = await create();
    const snap = await json<{ id: string }>(['snapshot', 'create', id]);
    onTestFinished(async () => {
      await run(['snapshot', 'delete', snap.id]);
    });
    const dry = await json<{ dryRun: boolean; retained: Array<{ heldBy: string[] }> }>(['gc', '--dry-run']);
    expect(dry.dryRun).toBe(true);
    expect(dry.retained.filter((l) => l.heldBy.includes(`snapshot ${snap.id} (reusable)`)).length).toBe(3);
    expect(await ok(['gc', '--dry-run'])).toMatch(new RegExp(`^would free \\d+ layer\\(s\\), [\\d.]+ MiB.*\\nretained \\d+ layer\\(s\\), [\\d.]+ MiB\\n.*held by .*snapshot ${snap.id} \\(reusable\\)`, 's'));
    expect(await json(['gc'])).toMatchObject({ dryRun: false });
    expect(await json(['snapshot', 'info', snap.id])).toMatchObject({ compatibility: { compatible: true } });
  });
});

describe('nullspace cache prune', () => {
  it('removes builds nothing can use; keeps current ones and those a snapshot or a running sandbox rests on; refuses during a build or without a data dir', async () => {
    const realCache = loadConfig({ ...process.env, NULLSPACE_API_KEY: 'x'.repeat(20) }).cacheDir;
    const current = findTemplate(realCache, 'base')!;
    // a cache of its own: copies (reflinks) of the current base template and its image
    const cache = tempDataDir();
    const dataDir = tempDataDir();
    cleanupDataDir(cache);
    cleanupDataDir(dataDir);
    const templates = path.join(cache, 'templates');
    const images = path.join(cache, 'images');
    fs.mkdirSync(templates, { recursive: true });
    fs.mkdirSync(images, { recursive: true });
    const rewrite = (file: string, pairs: Array<[string, string]>) => {
      let text = fs.readFileSync(file, 'utf8');
      for (const [from, to] of pairs) text = text.split(from).join(to);
      fs.chmodSync(file, 0o644);
      fs.writeFileSync(file, text);
    };
    const copyImage = (name: string) => {
      const dir = path.join(images, name);
      execFileSync('cp', ['-a', '--reflink=always', current.image.dir, dir]);
      rewrite(path.join(dir, 'image.json'), [[current.image.dir, dir]]);
      return dir;
    };
    const copyTemplate = (key: string, image: string, pointer: boolean) => {
      const dir = path.join(templates, `base-${key}`);
      execFileSync('cp', ['-a', '--reflink=always', current.dir, dir]);
      rewrite(path.join(dir, 'template.json'), [
        [current.image.dir, image],
        [current.dir, dir],
      ]);
      fs.chmodSync(path.join(dir, 'disk.qcow2'), 0o644);
      execFileSync('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', path.join(image, 'rootfs.qcow2'), '-F', 'qcow2', path.join(dir, 'disk.qcow2')]);
      if (pointer) fs.writeFileSync(path.join(templates, 'base.json'), JSON.stringify({ dir }));
      return dir;
    };
    const i1 = copyImage('base-1111111111111111-4096m');
    const t1 = copyTemplate('1111111111111111', i1, true);
    // stale: an older template and image, the staging dir of an interrupted build and its dead lock, a half-made dir
    const t0 = copyTemplate('0000000000000000', i1, false);
    const i0 = copyImage('base-0000000000000000-4096m');
    const staging = path.join(templates, 'base-2222222222222222.tmp');
    fs.mkdirSync(staging);
    fs.writeFileSync(path.join(staging, 'mem'), 'partial');
    const deadLock = path.join(templates, 'base-2222222222222222.lock');
    fs.mkdirSync(deadLock);
    fs.writeFileSync(path.join(deadLock, 'pid'), '999999999');
    const halfMade = path.join(templates, 'base-5555555555555555');
    fs.mkdirSync(halfMade);

    // as on a host without /dev/kvm (a laptop VM, a container): no KVM verdict in this cache, none needed
    const server = await ownServer(dataDir, { NULLSPACE_CACHE_DIR: cache, NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_KVM_DEVICE: '/nonexistent/kvm' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const health = (await (await fetch(`${server.url}/v1/health`, { headers: { authorization: `Bearer ${server.key}` } })).json()) as { accel: string; accelReason: string };
    expect(health).toMatchObject({ accel: 'tcg', accelReason: '/nonexistent/kvm is not available' });
    expect(fs.existsSync(path.join(cache, 'accel-probe.json'))).toBe(false);
    // on t1: a sandbox that keeps running (its overlay rests on t1's disk) and a snapshot of another
    const running = await Sandbox.create(c);
    const src = await Sandbox.create(c);
    await src.files.write('/workspace/kept.txt', 'from t1\n');
    const snap = await src.createSnapshot();
    await src.kill();
    // an upgrade: base is rebuilt on a new image
    const i2 = copyImage('base-4444444444444444-4096m');
    const t2 = copyTemplate('4444444444444444', i2, true);

    const prune = (...extra: string[]) =>
      spawnSync(process.execPath, [CLI, 'cache', 'prune', '--json', ...extra], {
        env: { ...process.env, NULLSPACE_CACHE_DIR: cache, NULLSPACE_KVM_DEVICE: '/nonexistent/kvm' },
        encoding: 'utf8',
        timeout: 120_000,
      });
    const pruned = (...extra: string[]) => {
      const r = prune('--data-dir', dataDir, ...extra);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { removed: Array<{ dir: string }>; kept: Array<{ dir: string; why: string }> };
    };
    // fails closed: no data dir, or a build in progress, and nothing is removed
    const noData = prune('--data-dir', `${dataDir}-missing`);
    expect(noData.status).toBe(1);
    expect(noData.stderr).toMatch(/not a nullspace data dir/);
    const building = path.join(images, 'base-3333333333333333-4096m.lock');
    fs.mkdirSync(building);
    fs.writeFileSync(path.join(building, 'pid'), String(process.pid));
    const busy = prune('--data-dir', dataDir);
    expect(busy.status).toBe(1);
    expect(busy.stderr).toMatch(/\[busy\].*build is in progress/);
    fs.rmSync(building, { recursive: true });
    for (const d of [t0, i0, staging, halfMade]) expect(fs.existsSync(d)).toBe(true);

    const dry = pruned('--dry-run');
    expect(dry.removed.map((e) => e.dir).sort()).toEqual([t0, i0, staging, halfMade].sort());
    const why = Object.fromEntries(dry.kept.map((e) => [e.dir, e.why]));
    expect(why[t1]).toMatch(/disk chain rests on it \((layer lyr_|sandbox sbx_)/);
    expect(why[i1]).toBe('used by template directory base-1111111111111111');
    expect(why[t2]).toBe('current build of template base');
    expect(why[i2]).toBe('used by template directory base-4444444444444444');
    for (const d of [t0, i0, staging, halfMade]) expect(fs.existsSync(d)).toBe(true);

    expect(pruned().removed).toHaveLength(4);
    for (const d of [t0, i0, staging, halfMade, deadLock]) expect(fs.existsSync(d)).toBe(false);
    // what stayed works: a restore from the snapshot (t1 on i1) and a create from the current build
    const child = await Sandbox.create({ ...c, snapshotId: snap.id });
    expect(await child.files.read('/workspace/kept.txt')).toBe('from t1\n');
    await child.kill();
    // without the snapshot, the running sandbox alone keeps t1 (and so i1)
    await snap.delete();
    const gc = async () => expect((await fetch(`${server.url}/v1/gc`, { method: 'POST', headers: { authorization: `Bearer ${server.key}` } })).status).toBe(200);
    await gc();
    const afterDelete = pruned();
    expect(afterDelete.removed).toEqual([]);
    expect(Object.fromEntries(afterDelete.kept.map((e) => [e.dir, e.why]))[t1]).toBe(`a disk chain rests on it (sandbox ${running.sandboxId} in ${dataDir})`);
    // once nothing rests on them, the old template and its image go
    await running.kill();
    await gc();
    expect(pruned().removed.map((e) => e.dir).sort()).toEqual([t1, i1].sort());
    const fresh = await Sandbox.create(c);
    expect((await fresh.commands.run('cat /etc/hostname')).stdout.trim()).toBe(fresh.sandboxId);
    await fresh.kill();
    expect(fs.existsSync(t2) && fs.existsSync(i2)).toBe(true);
  });
});
