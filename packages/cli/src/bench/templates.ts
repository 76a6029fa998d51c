/**
 * The benchmark's template rows: build times of a three-step template (cold, unchanged, one step
 * changed), the import of an image archive (time and bytes), and a create from a custom template
 * whose service runs in its snapshot, to the service's first answer, against a create from `base`
 * and one command on the same server.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { agentHash, debootstrapHash, importImage, loadRecipe, Progress, run } from '@nullspace/runtime';
import type { Config as ServerConfig } from '@nullspace/server';
import { Sandbox, Template, waitForPort } from 'nullspace';
import { median, time, type Row } from './stats.js';

const MiB = 1048576;

interface Ctx {
  conn: { apiUrl: string; apiKey: string };
  config: ServerConfig;
  /** A scratch directory of the run (removed with it). */
  dir: string;
  n: number;
  quick: boolean;
  log: (m: string) => void;
  /** Resolves once the server's warm pools are full (nothing else measured takes CPU). */
  poolReady: () => Promise<unknown>;
}

/** The rows; every template it builds is deleted before it returns. */
export async function templateRows(ctx: Ctx): Promise<{ rows: Row[]; notes: string[] }> {
  const { conn, n, log } = ctx;
  const name = `bench-tpl-${randomBytes(3).toString('hex')}`;
  const notes: string[] = [];
  fs.mkdirSync(ctx.dir, { recursive: true });
  const page = path.join(ctx.dir, 'site');
  fs.mkdirSync(page, { recursive: true });
  fs.writeFileSync(path.join(page, 'index.html'), 'bench\n');
  // three steps (a copy, two commands) and a service whose port is the ready check
  const recipe = (last: string) =>
    new Template()
      .fromTemplate('base')
      .copy(page, '/srv/site')
      .runCmd('head -c 4M /dev/urandom > /srv/blob')
      .runCmd(last)
      .setStartCmd('python3 -m http.server 8000 --directory /srv/site', waitForPort(8000));
  try {
    const builds = { cold: [] as number[], unchanged: [] as number[], changed: [] as number[] };
    const samples = ctx.quick ? 1 : 3;
    for (let i = 0; i < samples; i++) {
      log(`template build ${i + 1}/${samples}: cold (no cache), unchanged, one step changed`);
      await ctx.poolReady();
      builds.cold.push((await time(() => Template.build(recipe('echo 1 > /srv/v'), { ...conn, name, noCache: true })))[0]);
      await ctx.poolReady();
      builds.unchanged.push((await time(() => Template.build(recipe('echo 1 > /srv/v'), { ...conn, name })))[0]);
      await ctx.poolReady();
      builds.changed.push((await time(() => Template.build(recipe(`echo ${randomBytes(4).toString('hex')} > /srv/v`), { ...conn, name })))[0]);
    }

    log('create from the custom template -> its service answering; create from base -> one command');
    const answer = 'curl -sf -o /dev/null http://127.0.0.1:8000/index.html';
    const fromCustom: number[] = [];
    const fromBase: number[] = [];
    for (let i = 0; i < n; i++) {
      await ctx.poolReady();
      const [ms, s] = await time(async () => {
        const s = await Sandbox.create({ ...conn, template: name });
        const r = await s.commands.run(answer);
        if (r.exitCode !== 0) throw new Error(`the template's service did not answer: ${r.stderr}`);
        return s;
      });
      fromCustom.push(ms);
      await s.kill();
      await ctx.poolReady();
      const [baseMs, b] = await time(async () => {
        const b = await Sandbox.create({ ...conn, template: 'base' });
        await b.commands.run('true');
        return b;
      });
      fromBase.push(baseMs);
      await b.kill();
    }
    const vsBase = { value: median(fromBase), label: 'base + 1 cmd' };
    const rows: Row[] = [
      { name: 'template build, 3 steps + service: cold', unit: 'ms', samples: builds.cold },
      { name: '  unchanged rebuild (all steps cached)', unit: 'ms', samples: builds.unchanged, ref: { value: median(builds.cold), label: 'cold' } },
      { name: '  last step changed', unit: 'ms', samples: builds.changed, ref: { value: median(builds.cold), label: 'cold' } },
      { name: 'create from custom template -> service answers', unit: 'ms', samples: fromCustom, ref: vsBase, target: '~ base + 1 cmd' },
      { name: '  create from base -> one command', unit: 'ms', samples: fromBase },
    ];
    const imported = await importRows(ctx).catch((err: unknown) => {
      notes.push(`image import rows: ${(err as Error).message.split('\n')[0]}`);
      return [];
    });
    return { rows: [...rows, ...imported], notes };
  } finally {
    await Template.delete(name, conn).catch(() => {});
  }
}

/**
 * Imports an image archive (docker save) into a scratch cache: the base recipe's Debian tree
 * without docs and locales (full runs), the host's busybox (--quick runs, proving the path).
 */
async function importRows(ctx: Ctx): Promise<Row[]> {
  const { config, log } = ctx;
  const dir = path.join(ctx.dir, 'image');
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(tree, { recursive: true });
  let what: string;
  if (ctx.quick) {
    fs.mkdirSync(path.join(tree, 'bin'));
    fs.copyFileSync('/bin/busybox', path.join(tree, 'bin', 'busybox'));
    fs.chmodSync(path.join(tree, 'bin', 'busybox'), 0o755);
    fs.symlinkSync('busybox', path.join(tree, 'bin', 'sh'));
    what = 'busybox';
  } else {
    const { recipe } = loadRecipe(config.imagesDir, 'base');
    const tarball = path.join(config.cacheDir, 'debootstrap', `${recipe.debootstrap.suite}-${debootstrapHash(recipe)}.tar`);
    if (!fs.existsSync(tarball)) throw new Error(`no debootstrap tarball ${tarball} (nullspace template build base makes it)`);
    const drop = ['usr/share/doc', 'usr/share/man', 'usr/share/locale', 'usr/share/info', 'var/lib/apt/lists', 'var/cache/apt'];
    await run('tar', ['--numeric-owner', '-C', tree, '-xf', tarball, ...drop.map((d) => `--exclude=./${d}`)]);
    what = 'Debian';
  }
  log(`image import: making a docker-save archive of a ${what} tree (umoci, skopeo)`);
  const layout = path.join(dir, 'layout');
  await run('umoci', ['init', '--layout', layout]);
  await run('umoci', ['new', '--image', `${layout}:img`]);
  await run('umoci', ['insert', '--image', `${layout}:img`, tree, '/']);
  const archive = path.join(dir, 'image.tar');
  await run('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${layout}:img`, `docker-archive:${archive}:bench:1`]);
  const treeMiB = Number((await run('du', ['-sm', '--apparent-size', tree])).stdout.split('\t')[0]);
  const archiveMiB = fs.statSync(archive).size / MiB;
  fs.rmSync(tree, { recursive: true, force: true });
  fs.rmSync(layout, { recursive: true, force: true });

  // a cache of its own (the agent copied: it is not compiled again), removed with the scratch dir
  const cacheDir = path.join(dir, 'cache');
  const version = agentHash(config.agentDir);
  const agent = path.join(config.cacheDir, 'agent', version, 'nullspace-agent');
  if (fs.existsSync(agent)) {
    fs.mkdirSync(path.join(cacheDir, 'agent', version), { recursive: true });
    fs.copyFileSync(agent, path.join(cacheDir, 'agent', version, 'nullspace-agent'));
  }
  log(`image import: ${Math.round(treeMiB)} MiB unpacked, ${Math.round(archiveMiB)} MiB archive`);
  const imports: number[] = [];
  const diskMiB: number[] = [];
  for (let i = 0; i < (ctx.quick ? 1 : 3); i++) {
    fs.rmSync(path.join(cacheDir, 'images'), { recursive: true, force: true });
    const [ms, image] = await time(() =>
      importImage({ source: { archive }, cacheDir, imagesDir: config.imagesDir, agentDir: config.agentDir, diskSizeMiB: 4096, progress: new Progress('bench-import', () => {}) }),
    );
    imports.push(ms);
    diskMiB.push((fs.statSync(image.rootDisk).blocks * 512) / MiB);
  }
  const [cachedMs] = await time(() =>
    importImage({ source: { archive }, cacheDir, imagesDir: config.imagesDir, agentDir: config.agentDir, diskSizeMiB: 4096, progress: new Progress('bench-import', () => {}) }),
  );
  return [
    { name: `image import (${what}, ${Math.round(treeMiB)} MiB unpacked)`, unit: 'ms', samples: imports },
    { name: '  same image again (cached by digest)', unit: 'ms', samples: [cachedMs] },
    { name: '  image archive size', unit: 'MiB', samples: [archiveMiB], ref: { value: treeMiB, label: 'unpacked' } },
    { name: '  root disk allocated', unit: 'MiB', samples: diskMiB, ref: { value: treeMiB, label: 'unpacked' } },
  ];
}
