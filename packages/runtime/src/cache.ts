import fs from 'node:fs';
import path from 'node:path';
import { NsError, wrapError } from './errors.js';
import { run } from './exec.js';
import { acquireDirLock } from './fsutil.js';
import { lockHeld, PRUNE_LOCK } from './prunelock.js';
import { allocatedBytes, backingChain, withRegularFileAsync } from './storage.js';
import type { TemplateInfo } from './template.js';

/**
 * Pruning the build cache: every rebuild of a template (a new agent, kernel or recipe) leaves the
 * previous template and image directories behind (~0.4 GiB each). A directory can go when nothing
 * can use it any more: it is not the current build of a template, and no disk chain of the given
 * data dirs (snapshot layers, sandbox overlays, prepared VMs) rests on a file in it. Snapshot and
 * hibernation restores only need their chain (which goes down to the image's root disk) and the
 * image's kernel and initrd, which live next to that root disk.
 *
 * Builds and prunes exclude each other: a prune holds `<cache>/prune.lock` and refuses to start while
 * a build holds its lock; a build takes its own lock first, then waits for any prune to finish
 * (`waitForPrune` in prunelock.ts), so that neither can start unseen by the other.
 *
 * It fails closed: a data dir that is not one, or a chain it cannot read, stops it before anything
 * is removed.
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
  const inCache = fs.realpathSync(cacheDir) + '/';
  const held = new Map<string, string>();
  const hold = (file: string, holder: string) => {
    const f = realpathOr(file);
    if (f.startsWith(inCache) && !held.has(f)) held.set(f, holder);
  };
  for (const dataDir of dataDirs) {
    // (a server on PostgreSQL has no nullspace.db: its sandboxes/ directory, made at its first start, marks it)
    if (!fs.existsSync(path.join(dataDir, 'nullspace.db')) && !fs.existsSync(path.join(dataDir, 'sandboxes'))) {
      throw new NsError('bad_request', `${dataDir} is not a nullspace data dir (no nullspace.db, no sandboxes/): nothing removed`);
    }
    // layers are the server's own files: their chains are followed whole
    const layers = path.join(dataDir, 'layers');
    for (const f of listDir(layers).filter((f) => f.endsWith('.qcow2'))) {
      const file = path.join(layers, f);
      const chain = await backingChain(file).catch((err: unknown) => {
        if (!fs.existsSync(file)) return []; // collected meanwhile
        throw new NsError('disk_failed', `reading the backing chain of ${file}: ${(err as Error).message}: nothing removed`);
      });
      for (const c of chain) hold(c.filename, `layer ${f.slice(0, -'.qcow2'.length)} in ${dataDir}`);
    }
    // a sandbox's overlay sits in a directory its QEMU's uid owns: only its header is read, through a
    // descriptor of a regular file (never a link or a FIFO planted there), without opening what it
    // names; what it backs onto is a layer (above) or a template disk
    const sandboxes = path.join(dataDir, 'sandboxes');
    for (const id of listDir(sandboxes)) {
      if (!fs.lstatSync(path.join(sandboxes, id)).isDirectory()) continue;
      for (const f of listDir(path.join(sandboxes, id)).filter((f) => f.endsWith('.qcow2'))) {
        const backing = await overlayBacking(path.join(sandboxes, id, f));
        if (backing) hold(backing, `sandbox ${id} in ${dataDir}`);
      }
    }
  }
  return held;
}

/**
 * Removes (or with `dryRun` only lists) the template and image directories of `cacheDir` that
 * nothing can use any more (see above); leftovers of interrupted builds (`.tmp` staging directories,
 * locks of dead processes) go too.
 */
export async function pruneCache(cacheDir: string, dataDirs: string[], opts: { dryRun: boolean }): Promise<PruneReport> {
  let release: () => void;
  try {
    release = await acquireDirLock(path.join(cacheDir, PRUNE_LOCK), 2000);
  } catch (err) {
    throw new NsError('busy', `another cache prune is running (${(err as Error).message})`);
  }
  try {
    const templatesDir = path.join(cacheDir, 'templates');
    const imagesDir = path.join(cacheDir, 'images');
    const live = [templatesDir, imagesDir].flatMap((d) => listDir(d).filter((f) => f.endsWith('.lock') && lockHeld(path.join(d, f))).map((f) => path.join(d, f)));
    if (live.length) throw new NsError('busy', `a build is in progress (${live.join(', ')}): prune when it has finished`);
    const report: PruneReport = { removed: [], kept: [], freedBytes: 0, dryRun: opts.dryRun };
    const held = await cacheFilesInUse(cacheDir, dataDirs);
    const heldIn = (dir: string) => [...held].find(([f]) => f.startsWith(dir + '/'))?.[1];
    // what each registry file names is current, even if its build turned out broken
    const current = new Map<string, string>();
    for (const f of listDir(templatesDir).filter((f) => f.endsWith('.json'))) {
      const dir = readJson<{ dir: string }>(path.join(templatesDir, f))?.dir;
      if (typeof dir === 'string') current.set(realpathOr(dir), f.slice(0, -'.json'.length));
    }
    // a template stays when it is current or a data dir's chain rests on it; the chain of each that
    // stays holds what it rests on: the build cache's layers, the template it was built FROM, images
    const holdChain = async (file: string, holder: string) => {
      const chain = await backingChain(file).catch((err: unknown) => {
        throw new NsError('disk_failed', `reading the backing chain of ${file}: ${(err as Error).message}: nothing removed`);
      });
      for (const c of chain) {
        const f = realpathOr(c.filename);
        if (!held.has(f)) held.set(f, holder);
      }
    };
    for (const dir of subdirs(templatesDir)) {
      const real = realpathOr(dir);
      const disk = path.join(dir, 'disk.qcow2');
      if ((current.has(real) || heldIn(real)) && fs.existsSync(disk)) await holdChain(disk, `template ${path.basename(dir)}`);
    }
    const keepImages = new Map<string, string>();
    const visit = (dir: string, keep: string | undefined) => {
      const entry = { dir, bytes: dirBytes(dir) };
      if (keep) return void report.kept.push({ ...entry, why: keep });
      report.removed.push(entry);
      report.freedBytes += entry.bytes;
      if (!opts.dryRun) fs.rmSync(dir, { recursive: true, force: true });
    };
    for (const dir of subdirs(templatesDir)) {
      const real = realpathOr(dir);
      const name = current.get(real);
      const holder = heldIn(real);
      const keep = name ? `current build of template ${name}` : holder ? `a disk chain rests on it (${holder})` : undefined;
      const image = readJson<TemplateInfo>(path.join(dir, 'template.json'))?.image?.dir;
      if (keep && image) keepImages.set(realpathOr(image), `used by template directory ${path.basename(dir)}`);
      visit(dir, keep);
    }
    for (const dir of subdirs(imagesDir)) {
      const real = realpathOr(dir);
      const holder = heldIn(real);
      visit(dir, keepImages.get(real) ?? (holder ? `a disk chain rests on it (${holder})` : undefined));
    }
    // the build cache (template builds from a Dockerfile, an image or a recipe): layers no kept
    // template's chain rests on go, with the step entries that name them (their next build redoes them)
    const buildDir = path.join(cacheDir, 'build');
    const layersDir = path.join(buildDir, 'layers');
    const gone = new Set<string>();
    for (const f of listDir(layersDir)) {
      const file = path.join(layersDir, f);
      const holder = held.get(realpathOr(file));
      if (holder) {
        report.kept.push({ dir: file, bytes: allocatedBytes(file), why: `a disk chain rests on it (${holder})` });
        continue;
      }
      gone.add(file);
      const bytes = allocatedBytes(file);
      report.removed.push({ dir: file, bytes });
      report.freedBytes += bytes;
      if (!opts.dryRun) fs.rmSync(file, { force: true });
    }
    for (const f of listDir(path.join(buildDir, 'steps'))) {
      const entry = readJson<{ layer: string }>(path.join(buildDir, 'steps', f));
      if (!entry?.layer || gone.has(entry.layer) || !fs.existsSync(entry.layer)) {
        if (!opts.dryRun) fs.rmSync(path.join(buildDir, 'steps', f), { force: true });
      }
    }
    if (!opts.dryRun) fs.rmSync(path.join(buildDir, 'scratch'), { recursive: true, force: true });
    // locks their builders left behind (none is held: checked above, and new builds wait for us)
    if (!opts.dryRun) for (const d of [templatesDir, imagesDir]) for (const f of listDir(d).filter((f) => f.endsWith('.lock'))) fs.rmSync(path.join(d, f), { recursive: true, force: true });
    return report;
  } finally {
    release();
  }
}

/** The backing file named in a (possibly untrusted) qcow2 header, or undefined. */
async function overlayBacking(file: string): Promise<string | undefined> {
  try {
    // qemu-img info opens no backing file without --backing-chain
    const { stdout } = await withRegularFileAsync(file, (fd) => run('qemu-img', ['info', '-U', '--output=json', '/dev/fd/3'], { fds: [fd], errorCode: 'disk_failed' }));
    return (JSON.parse(stdout) as { 'backing-filename'?: string })['backing-filename'];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // removed meanwhile
    throw wrapError(err, `reading the header of ${file} (nothing removed)`, 'disk_failed');
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new NsError('internal', `listing ${dir}: ${(err as Error).message}: nothing removed`);
  }
}

/** Build directories and the staging (`.tmp`) directories of interrupted builds, as absolute paths. */
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

function realpathOr(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return path.resolve(file);
  }
}

function readJson<T>(file: string): Partial<T> | undefined {
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
