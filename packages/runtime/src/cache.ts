import fs from 'node:fs';
import path from 'node:path';
import { pidAlive } from './fsutil.js';
import { allocatedBytes, backingChain } from './storage.js';
import type { TemplateInfo } from './template.js';

/**
 * Pruning the build cache: every rebuild of a template (a new agent, kernel or recipe) leaves the
 * previous template and image directories behind (~0.4 GiB each). A directory can go when nothing
 * can use it any more: it is not the current build of a template, it is not being built, and no
 * disk chain of the given data dirs (snapshot layers, sandbox overlays, prepared VMs) rests on a
 * file in it. Snapshot and hibernation restores only need their chain (which goes down to the image's
 * root disk) and the image's kernel and initrd, which live next to that root disk.
 */

export interface PruneEntry {
  dir: string;
  bytes: number;
  /** Why it stays (kept entries only). */
  why?: string;
}

export interface PruneReport {
  removed: PruneEntry[];
  kept: PruneEntry[];
  freedBytes: number;
  dryRun: boolean;
}

/** Files under `cacheDir` that a disk chain of one of `dataDirs` rests on, with one holder each. */
export async function cacheFilesInUse(cacheDir: string, dataDirs: string[]): Promise<Map<string, string>> {
  const inCache = path.resolve(cacheDir) + '/';
  const held = new Map<string, string>();
  const seen = new Set<string>();
  for (const dataDir of dataDirs) {
    const tops: Array<{ file: string; holder: string }> = [];
    const layers = path.join(dataDir, 'layers');
    for (const f of listDir(layers)) if (f.endsWith('.qcow2')) tops.push({ file: path.join(layers, f), holder: `layer ${f.slice(0, -6)}` });
    const sandboxes = path.join(dataDir, 'sandboxes');
    for (const id of listDir(sandboxes)) {
      for (const f of listDir(path.join(sandboxes, id))) if (f.endsWith('.qcow2')) tops.push({ file: path.join(sandboxes, id, f), holder: `sandbox ${id}` });
    }
    for (const { file, holder } of tops) {
      if (seen.has(file)) continue;
      let chain;
      try {
        chain = await backingChain(file);
      } catch {
        continue; // removed meanwhile, or a chain already broken: nothing to keep for it
      }
      for (const c of chain) {
        seen.add(c.filename);
        const f = path.resolve(c.filename);
        if (f.startsWith(inCache) && !held.has(f)) held.set(f, `${holder} in ${dataDir}`);
      }
    }
  }
  return held;
}

/**
 * Removes (or with `dryRun` only lists) the template and image directories of `cacheDir` that
 * nothing can use any more (see above). Directories being built (their lock is held by a live
 * process) are kept; those of an interrupted build go.
 */
export async function pruneCache(cacheDir: string, dataDirs: string[], opts: { dryRun: boolean }): Promise<PruneReport> {
  const report: PruneReport = { removed: [], kept: [], freedBytes: 0, dryRun: opts.dryRun };
  const held = await cacheFilesInUse(cacheDir, dataDirs);
  const heldIn = (dir: string) => [...held].find(([f]) => f.startsWith(dir + '/'))?.[1];
  const templatesDir = path.join(cacheDir, 'templates');
  // what each registry file names is current, even if its build turned out broken
  const current = new Map<string, string>();
  for (const f of listDir(templatesDir).filter((f) => f.endsWith('.json'))) {
    const dir = readManifest<{ dir: string }>(path.join(templatesDir, f))?.dir;
    if (typeof dir === 'string') current.set(path.resolve(dir), f.slice(0, -5));
  }
  const keepImages = new Map<string, string>();
  // a template build in progress boots from an image that nothing else names yet
  const templateBuilding = listDir(templatesDir).some((f) => f.endsWith('.lock') && building(path.join(templatesDir, f.slice(0, -5))));
  const visit = (dir: string, keep: string | undefined) => {
    const entry = { dir, bytes: dirBytes(dir) };
    if (keep) return void report.kept.push({ ...entry, why: keep });
    report.removed.push(entry);
    report.freedBytes += entry.bytes;
    if (!opts.dryRun) {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(`${dir}.lock`, { recursive: true, force: true }); // a stale one (its holder is gone)
    }
  };
  for (const dir of subdirs(templatesDir)) {
    const manifest = readManifest<TemplateInfo>(path.join(dir, 'template.json'));
    const cur = current.get(dir);
    const holder = heldIn(dir);
    const keep = building(dir)
      ? 'being built'
      : cur
        ? `current build of template ${cur}`
        : holder
          ? `a disk chain rests on it (${holder})`
          : undefined;
    if (keep && manifest?.image?.dir) keepImages.set(path.resolve(manifest.image.dir), `used by template directory ${path.basename(dir)}`);
    visit(dir, keep);
  }
  for (const dir of subdirs(path.join(cacheDir, 'images'))) {
    const holder = heldIn(dir);
    visit(
      dir,
      building(dir)
        ? 'being built'
        : (keepImages.get(dir) ?? (holder ? `a disk chain rests on it (${holder})` : templateBuilding ? 'a template build is in progress' : undefined)),
    );
  }
  return report;
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Build directories (not their `.lock` siblings), as absolute paths. */
function subdirs(dir: string): string[] {
  return listDir(dir)
    .filter((f) => !f.endsWith('.lock'))
    .map((f) => path.resolve(dir, f))
    .filter((f) => {
      try {
        return fs.lstatSync(f).isDirectory();
      } catch {
        return false;
      }
    });
}

/** A build of `dir` holds its lock (acquireDirLock) and is alive. */
function building(dir: string): boolean {
  try {
    return pidAlive(Number(fs.readFileSync(path.join(`${dir}.lock`, 'pid'), 'utf8')));
  } catch {
    // no lock, or one being created this instant: a lock dir without a pid yet counts as held
    return fs.existsSync(`${dir}.lock`) && !fs.existsSync(path.join(`${dir}.lock`, 'pid'));
  }
}

function readManifest<T>(file: string): Partial<T> | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<T>;
  } catch {
    return undefined;
  }
}

function dirBytes(dir: string): number {
  let sum = 0;
  for (const f of listDir(dir)) {
    const p = path.join(dir, f);
    try {
      sum += fs.lstatSync(p).isDirectory() ? dirBytes(p) : allocatedBytes(p);
    } catch {
      /* gone */
    }
  }
  return sum;
}
