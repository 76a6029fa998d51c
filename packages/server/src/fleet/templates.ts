import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  acquireDirLock,
  backingChain,
  checkQcow2Backing,
  compareRequirements,
  fsyncDir,
  NsError,
  readRegistry,
  registerTemplate,
  setBackingFile,
  TEMPLATE_NAME_RE,
  waitForPrune,
  writeFileAtomic,
  type HostProfile,
  type RestoreRequirements,
  type TemplateInfo,
} from '@nullspace/runtime';
import { checkFreeDisk } from '../admission.js';
import type { Logger } from '../log.js';
import { KeyedMutex } from '../util.js';
import { isFile, readHeader } from './artifacts.js';
import { fetchChecked, fetchManifest, fileSha256, type CheckedFetch } from './transfer.js';

/**
 * Moving a template between servers' caches (docs/ARCHITECTURE.md "Fleet" -> "Artifacts"): a
 * server exports the current version of a template as a manifest of the files it needs, each by its
 * path relative to the cache dir with its size and sha256 (`GET /v1/artifacts/templates/{name}/...`,
 * opened by the API key or a grant for `template:<name>`: fleet/grant.ts): its directory
 * (`template.json`, RAM, device state, disk), the disk chain below its disk (build-cache layers, the
 * disks of the templates it was built from, the image's root disk) and the image's kernel and
 * initrd. Another server imports it (`POST /v1/artifacts/templates/import`): checked against this
 * host's VM profile before anything moves, every file fetched into a staging dir, checked against
 * its sha256, the absolute paths of the source's cache rewritten (template.json, qcow2 backing
 * headers), renamed into place under the template's build lock, and registered.
 *
 * Where the files land: the template's own directory at the same place (`templates/<name>-<key>`,
 * what a build of the same recipe here would make: if that directory is here, nothing moves), and
 * every other group of files (a directory of the chain, or one build-cache layer) under its source
 * name with `~<digest>` appended, the digest of what it holds: a host's own build of `base` has the
 * same name as the source's but other bytes (debootstrap, mkfs), so the chain of the copy must not
 * rest on it; the same group imported again (another template of the same lineage) is there already,
 * and so is a group at its source's name that an earlier import placed with the same digests (the
 * directory of a copied template that this one was built FROM).
 */

export interface TemplateManifestFile {
  /** Relative to the cache dir. */
  path: string;
  bytes: number;
  sha256: string;
}

export interface TemplateManifest {
  name: string;
  /** Its version on the source. */
  version: number;
  key: string;
  /** Its directory, relative to `cacheDir`. */
  dir: string;
  cacheDir: string;
  requirements: RestoreRequirements;
  files: TemplateManifestFile[];
}

export interface TemplateImportResult {
  name: string;
  /** Its version here. */
  version: number;
  key: string;
  filesFetched: number;
  filesReused: number;
  bytesFetched: number;
}

export interface TemplateArtifactsDeps {
  cacheDir: string;
  profile: HostProfile;
  /** The data disk's reserve (NULLSPACE_MIN_FREE_DISK_MIB), checked on the cache's disk before an import. */
  minFreeDiskMiB: number;
  log: Logger;
}

const SHA256_RE = /^[0-9a-f]{64}$/;
const KEY_RE = /^[0-9a-f]{16}$/;

/**
 * What is kept of a cache file (`<cache>/digests/`), valid while its size, mtime and inode are
 * those: its sha256 (computed at its first export), and for a file an import placed, the sha256 it
 * had on its source (before its paths were rewritten here).
 */
interface DigestEntry {
  path: string;
  bytes: number;
  mtimeMs: number;
  ino: number;
  sha256?: string;
  received?: string;
}

export class TemplateArtifacts {
  private readonly imports = new KeyedMutex();
  private readonly hashing = new Map<string, Promise<string>>();

  constructor(private readonly deps: TemplateArtifactsDeps) {}

  /** The files of template `name`'s current version (relative paths), its registry entry and template.json. */
  private closure(name: string): { files: string[]; dir: string; version: number; info: TemplateInfo } {
    const { cacheDir } = this.deps;
    const notFound = () => new NsError('template_not_found', `template "${name}" is not built on this host`, { details: { template: name } });
    if (!TEMPLATE_NAME_RE.test(name)) throw notFound();
    const entry = readRegistry(cacheDir, name);
    if (!entry || !isFile(path.join(entry.dir, 'template.json'))) throw notFound();
    const info = JSON.parse(fs.readFileSync(path.join(entry.dir, 'template.json'), 'utf8')) as TemplateInfo;
    const files = fs
      .readdirSync(entry.dir)
      .filter((f) => isFile(path.join(entry.dir, f)))
      .map((f) => path.join(entry.dir, f));
    return { files, dir: entry.dir, version: entry.version, info };
  }

  /** Every file the template needs, as paths relative to the cache dir (the directory's, its disk chain, kernel and initrd). */
  private async files(name: string): Promise<{ rel: string[]; dir: string; version: number; info: TemplateInfo }> {
    const { cacheDir } = this.deps;
    const c = this.closure(name);
    const chain = (await backingChain(path.join(c.dir, 'disk.qcow2'))).slice(1).map((e) => e.filename);
    const all = [...c.files, ...chain, c.info.image.kernel, c.info.image.initrd];
    const rel: string[] = [];
    for (const f of all) {
      const r = path.relative(cacheDir, f);
      if (r.startsWith('..') || path.isAbsolute(r) || !isFile(f)) {
        throw new NsError('internal', `template ${name}: ${f} is not a file of the cache dir ${cacheDir}`);
      }
      if (!rel.includes(r)) rel.push(r);
    }
    return { rel, dir: path.relative(cacheDir, c.dir), version: c.version, info: c.info };
  }

  /** The manifest of template `name` as this server holds it (digests computed once per file, kept in `<cache>/digests/`). */
  async manifest(name: string): Promise<TemplateManifest> {
    const { rel, dir, version, info } = await this.files(name);
    const files: TemplateManifestFile[] = [];
    for (const r of rel) {
      const file = path.join(this.deps.cacheDir, r);
      files.push({ path: r, bytes: fs.statSync(file).size, sha256: await this.digest(r) });
    }
    return { name, version, key: info.key, dir, cacheDir: this.deps.cacheDir, requirements: info.requirements, files };
  }

  /** A file of template `name`'s manifest, opened for sending (400 `invalid_path` for a path that is not a plain relative one, 404 for any other file). */
  async openFile(name: string, rel: string): Promise<{ stream: Readable; bytes: number }> {
    if (!validRel(rel)) throw new NsError('invalid_path', `${JSON.stringify(rel)} is not a path relative to the cache dir`, { details: { path: rel } });
    const { rel: files } = await this.files(name);
    if (!files.includes(rel)) throw new NsError('file_not_found', `${rel} is not a file of template ${name}`, { details: { path: rel } });
    const fd = fs.openSync(path.join(this.deps.cacheDir, rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    return { stream: fs.createReadStream('', { fd }), bytes: fs.fstatSync(fd).size };
  }

  private sidecar(rel: string): string {
    return path.join(this.deps.cacheDir, 'digests', `${createHash('sha256').update(rel).digest('hex').slice(0, 32)}.json`);
  }

  /** What is kept of cache file `rel`, if it still describes the file. */
  private kept(rel: string): DigestEntry | undefined {
    try {
      const st = fs.statSync(path.join(this.deps.cacheDir, rel));
      const d = JSON.parse(fs.readFileSync(this.sidecar(rel), 'utf8')) as DigestEntry;
      return d.path === rel && d.bytes === st.size && d.mtimeMs === st.mtimeMs && d.ino === st.ino ? d : undefined;
    } catch {
      return undefined;
    }
  }

  private keep(rel: string, entry: Pick<DigestEntry, 'sha256' | 'received'>): void {
    const st = fs.statSync(path.join(this.deps.cacheDir, rel));
    fs.mkdirSync(path.join(this.deps.cacheDir, 'digests'), { recursive: true });
    writeFileAtomic(this.sidecar(rel), JSON.stringify({ ...this.kept(rel), path: rel, bytes: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ...entry } satisfies DigestEntry));
  }

  private digest(rel: string): Promise<string> {
    const file = path.join(this.deps.cacheDir, rel);
    const d = this.kept(rel);
    if (d?.sha256 && SHA256_RE.test(d.sha256)) return Promise.resolve(d.sha256);
    let p = this.hashing.get(rel);
    if (!p) {
      p = (async () => {
        const t0 = Date.now();
        const st = fs.statSync(file);
        const sha256 = await fileSha256(file);
        this.keep(rel, { sha256 });
        this.deps.log.info({ file: rel, bytes: st.size, ms: Date.now() - t0 }, 'template file digest computed');
        return sha256;
      })().finally(() => this.hashing.delete(rel));
      this.hashing.set(rel, p);
    }
    return p;
  }

  /**
   * Imports template `name` from the server at `source` with a grant of that server: refused
   * (409 `template_incompatible`) before anything moves when its VM profile does not match this
   * host's; nothing moves when its directory is here already (it is registered again if need be).
   */
  async import(req: { name: string; source: string; grant: string }): Promise<TemplateImportResult> {
    const { cacheDir } = this.deps;
    return this.imports.run(req.name, async () => {
      const m = await this.readManifest(req);
      const mismatches = compareRequirements(m.requirements, this.deps.profile);
      if (mismatches.length) {
        throw new NsError(
          'template_incompatible',
          `template "${m.name}" on ${req.source} was built for another VM profile (${mismatches.map((x) => `${x.field}: ${x.snapshot} vs ${x.host}`).join(', ')})`,
          { details: { template: m.name, source: req.source, mismatches } },
        );
      }
      const own = path.join(cacheDir, m.dir);
      fs.mkdirSync(path.dirname(own), { recursive: true });
      // the lock a build of this very template directory takes (template.ts), then no prune meanwhile
      const release = await acquireDirLock(`${own}.lock`, 30 * 60_000);
      const staging = path.join(cacheDir, 'staging', `tpl-${m.name}-${randomBytes(4).toString('hex')}`);
      try {
        await waitForPrune(cacheDir);
        const result = (filesFetched: number, bytesFetched: number) => ({
          name: m.name,
          version: registerTemplate(cacheDir, m.name, own),
          key: m.key,
          filesFetched,
          filesReused: m.files.length - filesFetched,
          bytesFetched,
        });
        if (isFile(path.join(own, 'template.json'))) return result(0, 0);
        // a group this host imported before at its source's name (the template directory of an
        // earlier copy: what a template built FROM it rests on) is reused where it is
        const plan = groupsOf(m, (rel, sha256) => this.kept(rel)?.received === sha256);
        const fetch = plan.groups.filter((g) => g.own || !fs.existsSync(path.join(cacheDir, g.target)));
        for (const g of plan.groups.filter((x) => !fetch.includes(x))) {
          for (const f of g.files) {
            if (!isFile(path.join(cacheDir, plan.targetOf(f.path)!))) throw new NsError('artifact_missing', `${plan.targetOf(f.path)} (of ${g.target}) is missing here: remove ${g.target} and retry`);
          }
        }
        checkFreeDisk(cacheDir, this.deps.minFreeDiskMiB, `importing template ${m.name}`);
        fs.mkdirSync(staging, { recursive: true, mode: 0o700 });
        let bytesFetched = 0;
        let filesFetched = 0;
        for (const g of fetch) {
          for (const f of g.files) {
            const dst = path.join(staging, plan.targetOf(f.path)!);
            fs.mkdirSync(path.dirname(dst), { recursive: true });
            bytesFetched += await this.fetchFile(req, f, dst);
            filesFetched++;
          }
        }
        // the source's paths become this host's: template.json, then each disk's backing header
        const mapPath = (p: string) => {
          if (!p.startsWith(m.cacheDir + '/')) return undefined;
          const t = plan.targetOf(p.slice(m.cacheDir.length + 1));
          return t === undefined ? undefined : path.join(cacheDir, t);
        };
        const infoFile = path.join(staging, m.dir, 'template.json');
        const info = rewritePaths(JSON.parse(fs.readFileSync(infoFile, 'utf8')) as unknown, m, mapPath) as TemplateInfo;
        if (info.name !== m.name || info.key !== m.key) throw sourceFailed(req, `its template.json is of ${info.name} ${info.key}`);
        // what QEMU opens as what: the disk as qcow2 (its header checked below), the rest as raw files
        const ownFile = (f: string) => path.join(own, f);
        if (info.disk !== ownFile('disk.qcow2') || info.memFile !== ownFile('mem') || info.stateFile !== ownFile('state') || !info.image?.rootDisk?.endsWith('.qcow2')) {
          throw sourceFailed(req, 'its template.json names files other than its own disk.qcow2, mem and state');
        }
        fs.rmSync(infoFile);
        writeFileAtomic(infoFile, JSON.stringify(info, null, 2));
        for (const g of fetch) {
          for (const f of g.files.filter((x) => x.path.endsWith('.qcow2'))) {
            const file = path.join(staging, plan.targetOf(f.path)!);
            const h = readHeader(file);
            if (h.externalData || h.encrypted) throw new NsError('disk_invalid', `${f.path} from ${req.source} names an external data file or is encrypted: refused`);
            if (h.backingFile === undefined) continue;
            const backing = h.backingFile.endsWith('.qcow2') ? mapPath(h.backingFile) : undefined;
            if (!backing) throw sourceFailed(req, `${f.path} rests on ${h.backingFile}, which is not a qcow2 file of the manifest`);
            await setBackingFile(file, backing);
            checkQcow2Backing(file, (b) => b === backing);
          }
        }
        // into place: the chain first, the template's directory last (one rename each), then registered
        await this.imports.run('\0commit', async () => {
          for (const g of [...fetch.filter((x) => !x.own), ...fetch.filter((x) => x.own)]) {
            const src = path.join(staging, g.target);
            const dst = path.join(cacheDir, g.target);
            for (const f of g.files) fs.chmodSync(path.join(staging, plan.targetOf(f.path)!), 0o444);
            if (!g.file) fs.chmodSync(src, 0o755);
            fs.mkdirSync(path.dirname(dst), { recursive: true });
            if (!g.own && fs.existsSync(dst)) continue; // placed by another import meanwhile (same content: its name says so)
            fs.renameSync(src, dst);
            fsyncDir(path.dirname(dst));
            for (const f of g.files) this.keep(plan.targetOf(f.path)!, { received: f.sha256 });
          }
        });
        const r = result(filesFetched, bytesFetched);
        this.deps.log.info({ template: m.name, source: req.source, version: r.version, filesFetched, bytesFetched }, 'template imported');
        return r;
      } finally {
        fs.rmSync(staging, { recursive: true, force: true });
        release();
      }
    });
  }

  private async readManifest(req: { name: string; source: string; grant: string }): Promise<TemplateManifest> {
    const body = await fetchManifest(`${req.source}/v1/artifacts/templates/${req.name}/manifest`, req.source, req.grant, this.notFound(req.name));
    return validManifest(body, req);
  }

  private notFound(name: string): CheckedFetch['notFound'] {
    return { what: `template ${name}`, notFound: 'template_not_found', details: { template: name } };
  }

  /** Downloads one file to `dst` (runs of zeros left as holes), checking its size and sha256; the bytes received. */
  private fetchFile(req: { name: string; source: string; grant: string }, f: TemplateManifestFile, dst: string): Promise<number> {
    return fetchChecked(
      {
        url: `${req.source}/v1/artifacts/templates/${req.name}/files/${f.path.split('/').map(encodeURIComponent).join('/')}`,
        source: req.source,
        grant: req.grant,
        what: `${f.path} of template ${req.name}`,
        bytes: f.bytes,
        sha256: f.sha256,
        notFound: this.notFound(req.name),
        details: { path: f.path },
        disk: "the cache's disk",
      },
      dst,
    );
  }
}

/** A group of files placed by one rename: the template's directory, a directory of its chain, or one build-cache layer. */
interface Group {
  /** Where it lands, relative to the cache dir. */
  target: string;
  own: boolean;
  /** A single file (a build-cache layer), not a directory. */
  file: boolean;
  files: TemplateManifestFile[];
}

/** The manifest's files in groups, with where each lands here (see the module's comment). */
function groupsOf(m: TemplateManifest, held: (rel: string, sha256: string) => boolean): { groups: Group[]; targetOf: (rel: string) => string | undefined } {
  const byRoot = new Map<string, TemplateManifestFile[]>();
  const rootOf = (rel: string) => (rel.startsWith(m.dir + '/') ? m.dir : rel.startsWith('build/layers/') ? rel : path.dirname(rel));
  for (const f of m.files) {
    const r = rootOf(f.path);
    byRoot.set(r, [...(byRoot.get(r) ?? []), f]);
  }
  const roots = new Map<string, Group>();
  for (const [root, files] of byRoot) {
    const own = root === m.dir;
    const file = !own && root.startsWith('build/layers/');
    let target = root;
    if (!own && !files.every((f) => held(f.path, f.sha256))) {
      const h = createHash('sha256');
      for (const f of [...files].sort((a, b) => a.path.localeCompare(b.path))) h.update(`${f.path.slice(root.length)}\0${f.sha256}\n`);
      const tag = `~${h.digest('hex').slice(0, 12)}`;
      const ext = file ? path.extname(root) : '';
      target = `${root.slice(0, root.length - ext.length)}${tag}${ext}`;
    }
    roots.set(root, { target, own, file, files });
  }
  const targetOf = (rel: string) => {
    for (const [root, g] of roots) {
      if (rel === root) return g.target;
      if (!g.file && rel.startsWith(root + '/')) return g.target + rel.slice(root.length);
    }
    return undefined;
  };
  return { groups: [...roots.values()], targetOf };
}

/** `value` with every string that names a path under the source's cache dir mapped to this one's (one that maps to nothing: refused). */
function rewritePaths(value: unknown, m: TemplateManifest, map: (p: string) => string | undefined): unknown {
  if (typeof value === 'string') {
    if (!value.startsWith(m.cacheDir + '/')) return value;
    const to = map(value);
    if (to === undefined) throw new NsError('artifact_source_failed', `template ${m.name}: its template.json names ${value}, which is not in its manifest`);
    return to;
  }
  if (Array.isArray(value)) return value.map((v) => rewritePaths(v, m, map));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, rewritePaths(v, m, map)]));
  return value;
}

/** A path relative to the cache dir, normalized, without `..`, NUL or a leading slash. */
function validRel(rel: string): boolean {
  return rel.length > 0 && rel.length <= 1000 && !rel.includes('\0') && !path.isAbsolute(rel) && path.normalize(rel) === rel && !rel.split('/').includes('..') && !rel.split('/').includes('.');
}

function sourceFailed(req: { name: string; source: string }, why: string): NsError {
  return new NsError('artifact_source_failed', `template ${req.name} from ${req.source}: ${why}`, { details: { source: req.source } });
}

/** The source's manifest, checked field by field. */
function validManifest(body: unknown, req: { name: string; source: string }): TemplateManifest {
  const bad = (why: string) => sourceFailed(req, `the manifest is invalid: ${why}`);
  const m = body as Partial<TemplateManifest> | null;
  if (!m || typeof m !== 'object' || !Array.isArray(m.files) || !m.requirements || typeof m.requirements !== 'object') throw bad('not a manifest');
  if (m.name !== req.name) throw bad(`it is template ${String(m.name)}`);
  if (typeof m.key !== 'string' || !KEY_RE.test(m.key) || !Number.isSafeInteger(m.version)) throw bad('its key or version');
  if (m.dir !== `templates/${req.name}-${m.key}`) throw bad(`its dir ${String(m.dir)}`);
  if (typeof m.cacheDir !== 'string' || !m.cacheDir.startsWith('/') || path.normalize(m.cacheDir) !== m.cacheDir || m.cacheDir.endsWith('/')) throw bad('its cacheDir');
  const seen = new Set<string>();
  const files: TemplateManifestFile[] = [];
  for (const f of m.files) {
    if (!f || typeof f.path !== 'string' || !validRel(f.path) || seen.has(f.path) || !Number.isSafeInteger(f.bytes) || f.bytes < 0 || typeof f.sha256 !== 'string' || !SHA256_RE.test(f.sha256)) {
      throw bad(`file ${JSON.stringify(f).slice(0, 200)}`);
    }
    // (only the places a template's files live: its directory, the images, the build cache's layers, other templates)
    if (!/^(templates|images|build\/layers)\//.test(f.path) || f.path.split('/').length !== 3) throw bad(`file ${f.path}`);
    seen.add(f.path);
    files.push({ path: f.path, bytes: f.bytes, sha256: f.sha256 });
  }
  for (const need of ['template.json', 'disk.qcow2', 'mem', 'state']) if (!seen.has(`${m.dir}/${need}`)) throw bad(`it has no ${need}`);
  return { name: m.name, version: m.version!, key: m.key, dir: m.dir, cacheDir: m.cacheDir, requirements: m.requirements, files };
}
