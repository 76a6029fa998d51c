import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  allocatedBytes,
  checkQcow2Backing,
  cloneFile,
  fsyncDir,
  isTemplateDiskPath,
  LAYER_ID_RE,
  NsError,
  readQcow2Header,
  setBackingFile,
  SNAPSHOT_ID_RE,
  type DataDirLayout,
} from '@nullspace/runtime';
import { checkFreeDisk } from '../admission.js';
import type { Logger } from '../log.js';
import { secretDigest } from './credentials.js';
import type { LayerKind, LayerRecord, SnapshotRecord, SnapshotStore } from '../store/snapshots.js';
import { KeyedMutex, type RwLock } from '../util.js';
import { deltaRecords, fetchChecked, fetchManifest, fileSha256, type CheckedFetch } from './transfer.js';

/**
 * Moving a snapshot's artifacts between servers (docs/ARCHITECTURE.md "Fleet" -> "Artifacts"): a
 * server exports a snapshot's manifest and layer files (`GET /v1/artifacts/...`, opened by the API
 * key or by a short-lived grant for that one snapshot: fleet/grant.ts), and imports a snapshot from another server
 * (`POST /v1/artifacts/import`): only the layers it lacks are fetched, each checked against the
 * manifest's sha256, placed under its own layer store with their disk chain re-pointed at its own
 * paths, and recorded with the snapshot in one transaction under the layer lock.
 */

/** One layer of a snapshot as exported: its file's size (what is sent) and sha256. */
export interface ManifestLayer {
  id: string;
  kind: LayerKind;
  parentId: string | null;
  bytes: number;
  sha256: string;
}

export interface Manifest {
  snapshot: SnapshotRecord;
  /** The RAM and state layers, then the disk chain from the snapshot's disk layer down. */
  layers: ManifestLayer[];
  /** The template disk the bottom of the disk chain backs onto (under `cacheDir`). */
  templateDisk: string;
  cacheDir: string;
  layersDir: string;
}

export interface ImportResult {
  snapshotId: string;
  layersFetched: number;
  layersReused: number;
  bytesFetched: number;
}

/**
 * The sha256 (hex) of an API key: what grants are signed with (fleet/grant.ts). The same digest a
 * runtime host keeps of its control credential (`secretDigest`), so a host that keeps only that can
 * check grants.
 */
export const apiKeyDigestHex: (apiKey: string) => string = secretDigest;

// ---- the service ----

const SHA256_RE = /^[0-9a-f]{64}$/;

export interface ArtifactsDeps {
  snapshots: SnapshotStore;
  layout: DataDirLayout;
  cacheDir: string;
  /** The layer lock: gc runs under its write side, so nothing is freed or swept while an import places its layers. */
  layersLock: RwLock;
  /** The data disk's reserve (NULLSPACE_MIN_FREE_DISK_MIB): an import below it is refused, as a capture is. */
  minFreeDiskMiB: number;
  log: Logger;
}

export class Artifacts {
  /** One import of a snapshot at a time; one commit (placing files, recording rows) at a time. */
  private readonly imports = new KeyedMutex();
  /** Digests being computed, by layer id (two manifests at once hash a file once). */
  private readonly hashing = new Map<string, Promise<string>>();

  constructor(private readonly deps: ArtifactsDeps) {}

  /** The manifest of a snapshot of this server (layer digests computed now if never before). */
  async manifest(snapshotId: string): Promise<Manifest> {
    return this.deps.layersLock.read(async () => {
      const { snapshot, layers } = await this.localLayers(snapshotId);
      const bottom = layers.filter((l) => l.kind === 'disk').at(-1)!;
      const header = readHeader(bottom.path);
      if (!header.backingFile || !isTemplateDiskPath(this.deps.cacheDir, header.backingFile)) {
        throw new NsError('internal', `snapshot ${snapshotId}: its disk chain does not rest on a template disk (${String(header.backingFile)})`);
      }
      const out: ManifestLayer[] = [];
      for (const l of layers) {
        out.push({ id: l.id, kind: l.kind, parentId: l.parentId, bytes: fs.statSync(l.path).size, sha256: l.sha256 ?? (await this.digest(l)) });
      }
      return { snapshot, layers: out, templateDisk: header.backingFile, cacheDir: this.deps.cacheDir, layersDir: this.deps.layout.layers };
    });
  }

  /**
   * A layer file of a snapshot's manifest, opened for sending (404 `layer_not_found` for any other
   * layer). With `base`, a RAM or state layer of the same kind that this server holds too (the
   * importer has it: an earlier snapshot of the same sandbox), only what differs from it is sent
   * (`delta`: records of offset, length and bytes); without a usable base, the whole file.
   */
  async openLayer(snapshotId: string, layerId: string, base?: string): Promise<{ stream: Readable; bytes: number | undefined; delta: boolean }> {
    return this.deps.layersLock.read(async () => {
      const { layers } = await this.localLayers(snapshotId);
      const l = layers.find((x) => x.id === layerId);
      if (!l) throw new NsError('layer_not_found', `layer ${layerId} is not a layer of snapshot ${snapshotId}`, { details: { id: layerId, snapshotId } });
      // (open descriptors keep the files' data even if the collector frees a layer meanwhile)
      const fd = fs.openSync(l.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      const bytes = fs.fstatSync(fd).size;
      const b = base !== undefined && base !== l.id && l.kind !== 'disk' ? await this.deps.snapshots.layer(base) : undefined;
      if (b?.kind === l.kind && isFile(b.path)) {
        const baseFd = fs.openSync(b.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        return { stream: Readable.from(deltaRecords(fd, bytes, baseFd)), bytes: undefined, delta: true };
      }
      return { stream: fs.createReadStream('', { fd }), bytes, delta: false };
    });
  }

  /** The snapshot and its layers here: RAM, state, then the disk chain from the top down. */
  private async localLayers(snapshotId: string): Promise<{ snapshot: SnapshotRecord; layers: LayerRecord[] }> {
    const { snapshots } = this.deps;
    const snapshot = await snapshots.get(snapshotId);
    if (!snapshot) throw new NsError('snapshot_not_found', `snapshot ${snapshotId} not found`, { details: { id: snapshotId } });
    const need = async (id: string) => {
      const l = await snapshots.layer(id);
      if (!l || !fs.existsSync(l.path)) throw new NsError('artifact_missing', `snapshot ${snapshotId}: layer ${id} is missing`);
      return l;
    };
    const layers = [await need(snapshot.memLayer), await need(snapshot.stateLayer)];
    for (let id: string | null = snapshot.diskLayer, n = 0; id; n++) {
      if (n > 1000) throw new NsError('internal', `snapshot ${snapshotId}: its disk chain does not end`);
      const l = await need(id);
      layers.push(l);
      id = l.parentId;
    }
    return { snapshot, layers };
  }

  /** Computes and records a layer's sha256 (once: layers are immutable). */
  private digest(l: LayerRecord): Promise<string> {
    let p = this.hashing.get(l.id);
    if (!p) {
      p = (async () => {
        const t0 = Date.now();
        const hex = await fileSha256(l.path);
        await this.deps.snapshots.setLayerDigest(l.id, hex);
        this.deps.log.info({ layer: l.id, kind: l.kind, bytes: fs.statSync(l.path).size, ms: Date.now() - t0 }, 'layer digest computed');
        return hex;
      })().finally(() => this.hashing.delete(l.id));
      this.hashing.set(l.id, p);
    }
    return p;
  }

  /**
   * Imports snapshot `snapshotId` from the server at `source` with a grant of that server: fetches
   * the layers this one lacks (checked against the manifest's sha256), places them, re-points the
   * disk chain at this server's paths and records the layers and the snapshot. Idempotent.
   */
  async import(req: { snapshotId: string; source: string; grant: string }): Promise<ImportResult> {
    const { snapshotId } = req;
    return this.imports.run(snapshotId, async () => {
      const here = await this.deps.snapshots.get(snapshotId);
      if (here) {
        const { layers } = await this.localLayers(snapshotId);
        return { snapshotId, layersFetched: 0, layersReused: layers.length, bytesFetched: 0 };
      }
      const manifest = await this.readManifest(req);
      const plan = await this.plan(manifest);
      checkFreeDisk(this.deps.layout.root, this.deps.minFreeDiskMiB, `importing snapshot ${snapshotId}`);
      const staging = this.deps.layout.importStagingFor(snapshotId);
      fs.rmSync(staging, { recursive: true, force: true });
      fs.mkdirSync(staging, { recursive: true, mode: 0o700 });
      try {
        let bytesFetched = 0;
        for (const l of plan.fetch) bytesFetched += await this.fetchLayer(req, manifest, l, path.join(staging, l.id));
        // placing and recording: one at a time, under the layer lock (the collector neither frees a
        // reused layer nor sweeps a placed file as an orphan meanwhile)
        const reused = await this.imports.run('\0commit', () => this.deps.layersLock.read(() => this.commit(manifest, plan, staging)));
        this.deps.log.info({ snapshotId, source: req.source, layersFetched: plan.fetch.length, layersReused: reused, bytesFetched }, 'snapshot imported');
        return { snapshotId, layersFetched: plan.fetch.length, layersReused: reused, bytesFetched };
      } finally {
        fs.rmSync(staging, { recursive: true, force: true });
      }
    });
  }

  private async readManifest(req: { snapshotId: string; source: string; grant: string }): Promise<Manifest> {
    const body = await fetchManifest(`${req.source}/v1/artifacts/snapshots/${req.snapshotId}/manifest`, req.source, req.grant, this.notFound(req.snapshotId));
    return validManifest(body, req.snapshotId, req.source);
  }

  private notFound(snapshotId: string): CheckedFetch['notFound'] {
    return { what: `snapshot ${snapshotId}`, notFound: 'snapshot_not_found', details: { id: snapshotId } };
  }

  /** Which of the manifest's layers this server lacks, and the paths its chain will rest on here. */
  private async plan(m: Manifest): Promise<Plan> {
    const remap = (file: string) => (file.startsWith(m.cacheDir + '/') ? path.join(this.deps.cacheDir, file.slice(m.cacheDir.length + 1)) : file);
    const templateDisk = remap(m.templateDisk);
    if (!isTemplateDiskPath(this.deps.cacheDir, templateDisk) || !isFile(templateDisk)) {
      throw new NsError('template_missing', `snapshot ${m.snapshot.id} rests on the template disk ${templateDisk}, which this host does not have`, {
        details: { templateDisk, template: m.snapshot.template },
      });
    }
    const fetch: ManifestLayer[] = [];
    for (const l of m.layers) {
      const local = await this.deps.snapshots.layer(l.id);
      if (local && isFile(local.path)) continue;
      if (local) throw new NsError('artifact_missing', `layer ${l.id} is recorded here but its file ${local.path} is missing`);
      else fetch.push(l);
    }
    const snapshot: SnapshotRecord = { ...m.snapshot, vmConfig: { ...m.snapshot.vmConfig, kernel: remap(m.snapshot.vmConfig.kernel), initrd: remap(m.snapshot.vmConfig.initrd) } };
    return { fetch, templateDisk, snapshot };
  }

  /**
   * An earlier RAM or state layer of the imported snapshot's sandbox that this server holds: a
   * fetch of the new one asks for what differs from it only (most of a guest's RAM has not changed).
   */
  private async baseFor(m: Manifest, kind: LayerKind): Promise<LayerRecord | undefined> {
    if (kind === 'disk') return undefined;
    const { items } = await this.deps.snapshots.list({ sandboxId: m.snapshot.sandboxId, limit: 1000 });
    for (const s of items.reverse()) {
      const l = await this.deps.snapshots.layer(kind === 'mem' ? s.memLayer : s.stateLayer);
      if (l && isFile(l.path)) return l;
    }
    return undefined;
  }

  /**
   * Downloads one layer to `file` (the whole file, or what differs from a base layer of this
   * server's, applied onto a copy of it), checking its size and sha256; the bytes fetched.
   */
  private async fetchLayer(req: { snapshotId: string; source: string; grant: string }, m: Manifest, l: ManifestLayer, file: string): Promise<number> {
    // the base is copied first (the collector may free it once the copy exists: the copy stays)
    let base = await this.baseFor(m, l.kind);
    if (base) await cloneFile(base.path, file, 0o600).catch(() => (base = undefined));
    return fetchChecked(
      {
        url: `${req.source}/v1/artifacts/layers/${l.id}?snapshot=${req.snapshotId}${base ? `&base=${base.id}` : ''}`,
        source: req.source,
        grant: req.grant,
        what: `layer ${l.id}`,
        bytes: l.bytes,
        sha256: l.sha256,
        notFound: this.notFound(req.snapshotId),
        details: { layerId: l.id },
        disk: 'the data disk',
        base: base !== undefined,
      },
      file,
    );
  }

  /** Places the fetched layers, re-points their chain, records them and the snapshot; the number of layers reused. */
  private async commit(m: Manifest, plan: Plan, staging: string): Promise<number> {
    const { snapshots, layout } = this.deps;
    // another import may have placed some of these meanwhile; a reused one may have been freed
    const fetch: ManifestLayer[] = [];
    let reused = 0;
    for (const l of m.layers) {
      const local = await snapshots.layer(l.id);
      if (local && isFile(local.path)) reused++;
      else if (plan.fetch.includes(l) && !local) fetch.push(l);
      else throw new NsError('artifact_missing', `layer ${l.id} was freed here while the import ran; retry`);
    }
    const kindFile = (l: ManifestLayer) => layout.layerFile(l.id, l.kind);
    const localPath = async (id: string) => (await snapshots.layer(id))?.path ?? kindFile(m.layers.find((x) => x.id === id)!);
    const placed: string[] = [];
    try {
      // bottom-up: a disk layer's parent is in place before it is re-pointed at it
      for (const l of [...fetch].reverse()) {
        const dst = kindFile(l);
        const src = path.join(staging, l.id);
        if (l.kind === 'disk') {
          // what the source wrote must read nothing but its own clusters and the backing named next
          const h = readHeader(src);
          if (h.externalData || h.encrypted) throw new NsError('disk_invalid', `layer ${l.id} from the source names an external data file or is encrypted: refused`);
          const backing = l.parentId ? await localPath(l.parentId) : plan.templateDisk;
          await setBackingFile(src, backing);
          checkQcow2Backing(src, (b) => b === backing);
        }
        fs.chmodSync(src, 0o444);
        fs.renameSync(src, dst);
        placed.push(dst);
      }
      fsyncDir(layout.layers);
      await snapshots.transaction(async () => {
        const now = Date.now();
        for (const l of [...fetch].reverse()) {
          const file = kindFile(l);
          // (a disk layer's header now names this host's paths: its digest here is computed at its first export from here)
          const sha256 = l.kind === 'disk' ? undefined : l.sha256;
          await snapshots.insertLayer({ id: l.id, kind: l.kind, path: file, parentId: l.parentId, bytes: allocatedBytes(file), createdAt: now, ...(sha256 ? { sha256 } : {}) });
        }
        await snapshots.insert(plan.snapshot);
      });
      return reused;
    } catch (err) {
      for (const f of placed) fs.rmSync(f, { force: true });
      throw err;
    }
  }
}


interface Plan {
  /** The layers this server lacks (the others it holds already). */
  fetch: ManifestLayer[];
  /** This host's copy of the template disk the chain rests on. */
  templateDisk: string;
  /** The snapshot as recorded here (kernel and initrd under this host's cache dir). */
  snapshot: SnapshotRecord;
}

export function isFile(file: string): boolean {
  try {
    return fs.lstatSync(file).isFile();
  } catch {
    return false;
  }
}

export function readHeader(file: string): ReturnType<typeof readQcow2Header> {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    return readQcow2Header(fd, file);
  } finally {
    fs.closeSync(fd);
  }
}


/** The source's manifest, checked field by field (a source is another server, but its answer is input). */
function validManifest(body: unknown, snapshotId: string, source: string): Manifest {
  const bad = (why: string) => new NsError('artifact_source_failed', `the manifest of snapshot ${snapshotId} from ${source} is invalid: ${why}`, { details: { source } });
  const m = body as Partial<Manifest> | null;
  if (!m || typeof m !== 'object' || !m.snapshot || typeof m.snapshot !== 'object' || !Array.isArray(m.layers)) throw bad('not a manifest');
  const s = m.snapshot;
  if (s.id !== snapshotId) throw bad(`it is snapshot ${String(s.id)}`);
  const abs = (p: unknown): p is string => typeof p === 'string' && p.startsWith('/') && path.normalize(p) === p && !p.includes('\0');
  if (!abs(m.cacheDir) || !abs(m.layersDir) || !abs(m.templateDisk) || !isTemplateDiskPath(m.cacheDir, m.templateDisk)) throw bad('its paths');
  if (!s.vmConfig || typeof s.vmConfig !== 'object' || !abs(s.vmConfig.kernel) || !abs(s.vmConfig.initrd)) throw bad('its vmConfig');
  const obj = (v: unknown) => typeof v === 'object' && v !== null;
  if (
    !['reusable', 'hibernate', 'fork'].includes(s.kind as string) ||
    typeof s.sandboxId !== 'string' ||
    typeof s.template !== 'string' ||
    !obj(s.metadata) ||
    !obj(s.envs) ||
    !obj(s.requirements) ||
    !Array.isArray(s.volumes) ||
    !Number.isSafeInteger(s.createdAt) ||
    !(s.pauseMs === null || typeof s.pauseMs === 'number')
  ) {
    throw bad('its snapshot record');
  }
  const layers = new Map<string, ManifestLayer>();
  for (const l of m.layers) {
    if (
      !l ||
      typeof l.id !== 'string' ||
      !LAYER_ID_RE.test(l.id) ||
      !['mem', 'state', 'disk'].includes(l.kind) ||
      !(l.parentId === null || (typeof l.parentId === 'string' && LAYER_ID_RE.test(l.parentId))) ||
      !Number.isSafeInteger(l.bytes) ||
      l.bytes < 0 ||
      typeof l.sha256 !== 'string' ||
      !SHA256_RE.test(l.sha256) ||
      layers.has(l.id)
    ) {
      throw bad(`layer ${JSON.stringify(l).slice(0, 200)}`);
    }
    layers.set(l.id, { id: l.id, kind: l.kind, parentId: l.parentId, bytes: l.bytes, sha256: l.sha256 });
  }
  if (layers.get(s.memLayer)?.kind !== 'mem' || layers.get(s.stateLayer)?.kind !== 'state') throw bad('its RAM or state layer');
  // the disk chain from the snapshot's disk layer down is exactly the manifest's disk layers, in order
  const chain: ManifestLayer[] = [];
  for (let id: string | null = s.diskLayer; id; ) {
    const l = layers.get(id);
    if (l?.kind !== 'disk' || chain.includes(l)) throw bad('its disk chain');
    chain.push(l);
    id = l.parentId;
  }
  const disks = [...layers.values()].filter((l) => l.kind === 'disk');
  if (disks.length !== chain.length || layers.size !== chain.length + 2) throw bad('layers outside the snapshot');
  if (!SNAPSHOT_ID_RE.test(s.id)) throw bad('its id');
  return { snapshot: s as SnapshotRecord, layers: [layers.get(s.memLayer)!, layers.get(s.stateLayer)!, ...chain], templateDisk: m.templateDisk, cacheDir: m.cacheDir, layersDir: m.layersDir };
}
