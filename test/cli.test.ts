import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { findTemplate } from '@nullspace/runtime';
import { loadConfig } from '@nullspace/server';
import { Sandbox } from 'nullspace';
import { apiKey, apiUrl } from './helpers.js';
import { cleanupDataDir, ownServer, tempDataDir } from './servers.js';

const CLI = path.resolve(__dirname, '../packages/cli/dist/main.js');

function cli(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, NULLSPACE_API_URL: apiUrl(), NULLSPACE_API_KEY: apiKey() },
    input,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('nullspace CLI', () => {
  it('creates, lists, runs commands, moves files and kills', () => {
    const created = cli(['sandbox', 'create', '--metadata', 'suite=cli-test', '--env', 'WHO=cli', '--json']);
    expect(created.code, created.stderr).toBe(0);
    const id = (JSON.parse(created.stdout) as { sandboxId: string }).sandboxId;
    onTestFinished(() => {
      cli(['sandbox', 'kill', id]);
    });
    expect(id).toMatch(/^sbx_/);

    const list = cli(['sandbox', 'list', '--metadata', 'suite=cli-test', '--json']);
    expect((JSON.parse(list.stdout) as Array<{ sandboxId: string }>).map((s) => s.sandboxId)).toContain(id);
    expect(cli(['sandbox', 'list']).stdout).toContain(id);

    const exec = cli(['sandbox', 'exec', id, '--', 'echo hello $WHO; echo oops >&2; exit 4']);
    expect(exec).toMatchObject({ code: 4, stdout: 'hello cli\n', stderr: 'oops\n' });

    const w = cli(['files', 'write', id, '/workspace/from-cli.txt', '-'], 'piped content\n');
    expect(w.code, w.stderr).toBe(0);
    expect(cli(['files', 'read', id, '/workspace/from-cli.txt'])).toMatchObject({ code: 0, stdout: 'piped content\n' });

    const info = cli(['sandbox', 'info', id, '--json']);
    expect(JSON.parse(info.stdout)).toMatchObject({ sandboxId: id, state: 'running' });

    expect(cli(['sandbox', 'kill', id]).code).toBe(0);
    expect(JSON.parse(cli(['sandbox', 'info', id, '--json']).stdout)).toMatchObject({ state: 'killed' });
  });

  it('prints errors with their code and exits non-zero', () => {
    const r = cli(['sandbox', 'info', 'sbx_0000000000000000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[sandbox_not_found]');
    expect(cli(['files', 'read', 'sbx_0000000000000000', 'relative']).code).toBe(1);
  });

  it('lists templates', () => {
    const r = cli(['template', 'list', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Array<{ name: string }>).map((t) => t.name)).toContain('base');
  });
});

describe('nullspace cache prune', () => {
  it('removes template and image builds nothing can use, and keeps current ones, those being built and those a snapshot rests on', async () => {
    const realCache = loadConfig({ ...process.env, NULLSPACE_API_KEY: 'x'.repeat(20) }).cacheDir;
    const current = findTemplate(realCache, 'base')!;
    // a cache of its own: copies (reflinks) of the current base template and its image
    const cache = tempDataDir();
    const dataDir = tempDataDir();
    cleanupDataDir(cache);
    cleanupDataDir(dataDir);
    const image = path.join(cache, 'images', path.basename(current.image.dir));
    const copyTemplate = (key: string, pointer: boolean) => {
      const dir = path.join(cache, 'templates', `base-${key}`);
      execFileSync('cp', ['-a', '--reflink=always', current.dir, dir]);
      const manifest = fs.readFileSync(path.join(dir, 'template.json'), 'utf8').split(realCache).join(cache).split(current.dir.replace(realCache, cache)).join(dir);
      fs.chmodSync(path.join(dir, 'template.json'), 0o644);
      fs.writeFileSync(path.join(dir, 'template.json'), manifest);
      fs.chmodSync(path.join(dir, 'disk.qcow2'), 0o644);
      execFileSync('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', path.join(image, 'rootfs.qcow2'), '-F', 'qcow2', path.join(dir, 'disk.qcow2')]);
      if (pointer) fs.writeFileSync(path.join(cache, 'templates', 'base.json'), JSON.stringify({ dir }));
      return dir;
    };
    fs.mkdirSync(path.join(cache, 'templates'), { recursive: true });
    fs.mkdirSync(path.join(cache, 'images'), { recursive: true });
    execFileSync('cp', ['-a', '--reflink=always', current.image.dir, image]);
    const imageJson = path.join(image, 'image.json');
    fs.chmodSync(imageJson, 0o644);
    fs.writeFileSync(imageJson, fs.readFileSync(imageJson, 'utf8').split(realCache).join(cache));
    fs.copyFileSync(path.join(realCache, 'accel-probe.json'), path.join(cache, 'accel-probe.json'));
    const t1 = copyTemplate('1111111111111111', true);
    // stale builds: an older template, an unused image, an interrupted build; and one being built
    const stale = copyTemplate('0000000000000000', false);
    const staleImage = path.join(cache, 'images', 'base-0000000000000000-4096m');
    execFileSync('cp', ['-a', '--reflink=always', image, staleImage]);
    const interrupted = path.join(cache, 'templates', 'base-2222222222222222');
    fs.mkdirSync(interrupted);
    fs.writeFileSync(path.join(interrupted, 'mem'), 'partial');
    const building = path.join(cache, 'templates', 'base-3333333333333333');
    fs.mkdirSync(building);
    fs.mkdirSync(`${building}.lock`);
    fs.writeFileSync(path.join(`${building}.lock`, 'pid'), String(process.pid));

    const server = await ownServer(dataDir, { NULLSPACE_CACHE_DIR: cache, NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const src = await Sandbox.create(c);
    await src.files.write('/workspace/kept.txt', 'from t1\n');
    const snap = await src.createSnapshot();
    await src.kill();
    // an upgrade: base is rebuilt (same image here); the snapshot still rests on t1
    const t2 = copyTemplate('4444444444444444', true);

    const prune = (...extra: string[]) => {
      const r = spawnSync(process.execPath, [CLI, 'cache', 'prune', '--data-dir', dataDir, '--json', ...extra], {
        env: { ...process.env, NULLSPACE_CACHE_DIR: cache },
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { removed: Array<{ dir: string }>; kept: Array<{ dir: string; why: string }>; dryRun: boolean };
    };
    const dry = prune('--dry-run');
    expect(dry.removed.map((e) => e.dir).sort()).toEqual([stale, interrupted].sort());
    const why = Object.fromEntries(dry.kept.map((e) => [e.dir, e.why]));
    expect(why[t1]).toMatch(/disk chain rests on it \(layer lyr_/);
    expect(why[t2]).toBe('current build of template base');
    expect(why[building]).toBe('being built');
    expect(why[image]).toMatch(/used by template directory/);
    // the build in progress may be booting from any image nothing names yet
    expect(why[staleImage]).toBe('a template build is in progress');
    for (const d of [stale, interrupted, staleImage]) expect(fs.existsSync(d)).toBe(true);

    // that build is interrupted (its lock's process is gone): it goes too, and the unused image
    fs.writeFileSync(path.join(`${building}.lock`, 'pid'), '999999999');
    expect(prune().removed.map((e) => e.dir).sort()).toEqual([stale, interrupted, building, staleImage].sort());
    for (const d of [stale, interrupted, staleImage, building, `${building}.lock`]) expect(fs.existsSync(d)).toBe(false);
    // what stayed works: a restore from the snapshot (on t1) and a create from the current template (t2)
    const child = await Sandbox.create({ ...c, snapshotId: snap.id });
    expect(await child.files.read('/workspace/kept.txt')).toBe('from t1\n');
    await child.kill();
    // once nothing rests on t1 any more, it goes too; the image stays (t2 uses it)
    await snap.delete();
    const gc = await fetch(`${server.url}/v1/gc`, { method: 'POST', headers: { authorization: `Bearer ${server.key}` } });
    expect(gc.status).toBe(200);
    expect(prune().removed.map((e) => e.dir)).toEqual([t1]);
    const fresh = await Sandbox.create(c);
    expect((await fresh.commands.run('cat /etc/hostname')).stdout.trim()).toBe(fresh.sandboxId);
    await fresh.kill();
    expect(fs.existsSync(image)).toBe(true);
  });
});
