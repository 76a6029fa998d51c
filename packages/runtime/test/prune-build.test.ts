import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { pruneCache, registerTemplate, run, unregisterTemplate } from '@nullspace/runtime';

/**
 * `cache prune` and the template build cache, on real qcow2 chains (qemu-img, no VM): the layers a
 * registered template's disk rests on stay with their step entries, the layers of a build nothing
 * rests on go with theirs, and an unregistered template frees its whole chain down to its image.
 */
let cacheDir: string;
let dataDir: string;
const f = (rel: string) => path.join(cacheDir, rel);

async function qcow2(file: string, backing?: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), file, ...(backing ? [] : ['64M'])]);
}

function step(key: string, layer: string): void {
  fs.mkdirSync(f('build/steps'), { recursive: true });
  fs.writeFileSync(f(`build/steps/${key}.json`), JSON.stringify({ layer, parent: '', createdAt: '' }));
}

beforeEach(async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-prune-'));
  cacheDir = path.join(root, 'cache');
  dataDir = path.join(root, 'data');
  fs.mkdirSync(dataDir, { recursive: true });
  fs.writeFileSync(path.join(dataDir, 'nullspace.db'), '');
  // an image, two builds on it: layers a -> c under template t, layer b of a build that failed later
  await qcow2(f('images/img-1/rootfs.qcow2'));
  await qcow2(f('build/layers/lyr_a.qcow2'), f('images/img-1/rootfs.qcow2'));
  await qcow2(f('build/layers/lyr_b.qcow2'), f('images/img-1/rootfs.qcow2'));
  await qcow2(f('build/layers/lyr_c.qcow2'), f('build/layers/lyr_a.qcow2'));
  step('k1', f('build/layers/lyr_a.qcow2'));
  step('k2', f('build/layers/lyr_b.qcow2'));
  step('k3', f('build/layers/lyr_c.qcow2'));
  fs.mkdirSync(f('build/scratch/x'), { recursive: true });
  await qcow2(f('templates/t-0123/disk.qcow2'), f('build/layers/lyr_c.qcow2'));
  fs.writeFileSync(f('templates/t-0123/template.json'), JSON.stringify({ name: 't', dir: f('templates/t-0123'), image: { dir: f('images/img-1') } }));
  registerTemplate(cacheDir, 't', f('templates/t-0123'));
});
afterEach(() => fs.rmSync(path.dirname(cacheDir), { recursive: true, force: true }));

const exists = (rel: string) => fs.existsSync(f(rel));

it('a dry run removes nothing and reports what a prune would', async () => {
  const report = await pruneCache(cacheDir, [dataDir], { dryRun: true });
  expect(report.removed.map((e) => path.relative(cacheDir, e.dir))).toEqual(['build/layers/lyr_b.qcow2']);
  expect(['build/layers/lyr_b.qcow2', 'build/steps/k2.json', 'build/scratch/x'].every(exists)).toBe(true);
});

it("keeps what a registered template's chain rests on; a build's layers nothing rests on go with their step entries", async () => {
  const report = await pruneCache(cacheDir, [dataDir], { dryRun: false });
  expect(report.removed.map((e) => path.relative(cacheDir, e.dir))).toEqual(['build/layers/lyr_b.qcow2']);
  const kept = Object.fromEntries(report.kept.map((e) => [path.relative(cacheDir, e.dir), e.why]));
  expect(kept).toEqual({
    'templates/t-0123': 'current build of template t',
    'images/img-1': 'used by template directory t-0123',
    'build/layers/lyr_a.qcow2': 'a disk chain rests on it (template t-0123)',
    'build/layers/lyr_c.qcow2': 'a disk chain rests on it (template t-0123)',
  });
  expect([exists('build/layers/lyr_b.qcow2'), exists('build/steps/k2.json'), exists('build/scratch')]).toEqual([false, false, false]);
  expect([exists('build/steps/k1.json'), exists('build/steps/k3.json')]).toEqual([true, true]);
});

it('a deleted (unregistered) template that nothing uses is freed with its whole chain', async () => {
  expect(unregisterTemplate(cacheDir, 't')).toBe(true);
  const report = await pruneCache(cacheDir, [dataDir], { dryRun: false });
  expect(report.removed.map((e) => path.relative(cacheDir, e.dir)).sort()).toEqual(['build/layers/lyr_a.qcow2', 'build/layers/lyr_b.qcow2', 'build/layers/lyr_c.qcow2', 'images/img-1', 'templates/t-0123']);
  expect(report.kept).toEqual([]);
  expect(fs.readdirSync(f('build/steps'))).toEqual([]);
});
