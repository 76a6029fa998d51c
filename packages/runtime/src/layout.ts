import path from 'node:path';
import { NsError } from './errors.js';

/** Ids are `prefix_` + 16 lowercase alphanumerics; only validated ids ever become host paths. */
export const SANDBOX_ID_RE = /^sbx_[0-9a-z]{16}$/;
export const SNAPSHOT_ID_RE = /^snap_[0-9a-z]{16}$/;
export const LAYER_ID_RE = /^lyr_[0-9a-z]{16}$/;

export type LayerFileKind = 'mem' | 'state' | 'disk';
const LAYER_EXT: Record<LayerFileKind, string> = { mem: 'mem', state: 'state', disk: 'qcow2' };
/** Names of a sandbox's disk overlays: the first one, and those each capture switches to. */
const OVERLAY_RE = /^disk-[0-9a-z]+\.qcow2$/;

/**
 * Every host path of a data dir and the file-name patterns in it, in one place:
 *
 *   <data dir>/nullspace.db                  the store (SQLite; absent when on PostgreSQL)
 *   <data dir>/sandboxes/<sbx id>/           owned by the sandbox's uid (0700)
 *       mem                                  its RAM (a reflink copy of a template or snapshot RAM image)
 *       disk-0.qcow2, disk-<t>.qcow2         its active overlay (and earlier ones QEMU still reads)
 *       missing-<tag>                        an empty placeholder for a volume deleted meanwhile
 *       run/                                 QEMU's sockets, pid file and log (vmPaths)
 *   <data dir>/layers/<lyr id>.mem|.state|.qcow2   frozen layers, root-owned, read-only
 *   <data dir>/layers/.staging/<snap id>/    captures in progress (emptied at start)
 *   <data dir>/layers/.staging/import-<snap id>/   layers of an import being fetched (idem)
 *   <data dir>/volumes/<vol id>/             shared volumes
 *   <data dir>/metrics/<sbx id>.jsonl        a sandbox's metrics samples (server-owned, 0600)
 *
 * Paths are built only from validated ids (a malformed id is refused, never joined).
 */
export class DataDirLayout {
  constructor(readonly root: string) {}

  get db(): string {
    return path.join(this.root, 'nullspace.db');
  }

  get sandboxes(): string {
    return path.join(this.root, 'sandboxes');
  }

  sandboxDir(id: string): string {
    return path.join(this.sandboxes, validSandboxId(id));
  }

  /** The files a new VM of sandbox `id` starts with. */
  sandboxFiles(id: string): { dir: string; ram: string; disk: string; runDir: string } {
    const dir = this.sandboxDir(id);
    return { dir, ram: path.join(dir, 'mem'), disk: path.join(dir, 'disk-0.qcow2'), runDir: path.join(dir, 'run') };
  }

  /** The overlay a capture switches sandbox `id` onto (named by the time, unique per capture). */
  nextOverlay(id: string, now = Date.now()): string {
    return path.join(this.sandboxDir(id), `disk-${now.toString(36)}.qcow2`);
  }

  /** Whether `file` is one of sandbox `id`'s own overlays (what a re-adopted QEMU reports is only believed then). */
  isOverlayOf(id: string, file: string): boolean {
    return path.dirname(file) === this.sandboxDir(id) && OVERLAY_RE.test(path.basename(file));
  }

  /** Whether a file name in a sandbox directory is an overlay. */
  static isOverlayName(name: string): boolean {
    return OVERLAY_RE.test(name);
  }

  /** The empty directory a volume deleted meanwhile is replaced with. */
  volumePlaceholder(id: string, tag: string): string {
    return path.join(this.sandboxDir(id), `missing-${tag}`);
  }

  /** A command-line fragment only a QEMU of sandbox `id` of this data dir has (its RAM file). */
  qemuMarker(id: string): string {
    return `mem-path=${path.join(this.sandboxDir(id), 'mem')},`;
  }

  /** How this data dir names its claim on a sandbox uid (host-wide registry), and the prefix of all its claims. */
  uidOwner(id: string): string {
    return `${this.root} ${id}`;
  }

  get uidOwnerPrefix(): string {
    return `${this.root} `;
  }

  get layers(): string {
    return path.join(this.root, 'layers');
  }

  get staging(): string {
    return path.join(this.layers, '.staging');
  }

  stagingFor(snapshotId: string): string {
    if (!SNAPSHOT_ID_RE.test(snapshotId)) throw new NsError('internal', `refusing a host path for malformed snapshot id ${JSON.stringify(snapshotId)}`);
    return path.join(this.staging, snapshotId);
  }

  /** Where an import of snapshot `snapshotId` fetches the layers it lacks before they are checked and placed. */
  importStagingFor(snapshotId: string): string {
    if (!SNAPSHOT_ID_RE.test(snapshotId)) throw new NsError('internal', `refusing a host path for malformed snapshot id ${JSON.stringify(snapshotId)}`);
    return path.join(this.staging, `import-${snapshotId}`);
  }

  layerFile(id: string, kind: LayerFileKind): string {
    if (!LAYER_ID_RE.test(id)) throw new NsError('internal', `refusing a host path for malformed layer id ${JSON.stringify(id)}`);
    return path.join(this.layers, `${id}.${LAYER_EXT[kind]}`);
  }

  /** Whether `file` lies in the layer store (not a template's disk below it). */
  inLayers(file: string): boolean {
    return file.startsWith(this.layers + '/');
  }

  get volumes(): string {
    return path.join(this.root, 'volumes');
  }

  volumeDir(volumeId: string): string {
    return path.join(this.volumes, volumeId);
  }

  get metrics(): string {
    return path.join(this.root, 'metrics');
  }

  /** Where sandbox `id`'s metrics samples are kept for its life (JSON lines, oldest first). */
  metricsFile(id: string): string {
    return path.join(this.metrics, `${validSandboxId(id)}.jsonl`);
  }
}

function validSandboxId(id: string): string {
  if (!SANDBOX_ID_RE.test(id)) throw new NsError('internal', `refusing a host path for malformed sandbox id ${JSON.stringify(id)}`);
  return id;
}

/** A template build's disk: `<cache>/templates/<name>-<16 hex>/disk.qcow2` (public, shared by every data dir). */
export function isTemplateDiskPath(cacheDir: string, file: string): boolean {
  const templates = path.join(cacheDir, 'templates');
  if (path.normalize(file) !== file || path.basename(file) !== 'disk.qcow2' || path.dirname(path.dirname(file)) !== templates) return false;
  return /^[a-z0-9][a-z0-9-]*-[0-9a-f]{16}$/.test(path.basename(path.dirname(file)));
}
