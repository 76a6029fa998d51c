import fs from 'node:fs';
import path from 'node:path';
import { NsError, VOLUME_FIRST_SLOT, type VolumeDevice } from '@nullspace/runtime';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { VolumeAttachment, VolumeRecord, VolumeStore } from './store/volumes.js';
import { newId } from './util.js';

export const VOLUME_NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const MAX_VOLUMES_PER_SANDBOX = 8;
/** Guest paths no volume is mounted at or under (spec/agent.json vol.mount.reservedPaths: the agent refuses them too, symbolic links resolved). */
export const RESERVED_GUEST_PATHS = ['/proc', '/sys', '/dev', '/run', '/boot', '/etc', '/usr', '/bin', '/sbin', '/lib', '/lib64'];

/**
 * Shared volumes: durable directories under <data dir>/volumes/<id> (the host path comes from the
 * volume's id, never from user input), exported to sandboxes over virtio-9p. Several sandboxes may
 * mount one volume at once and see each other's writes. Volumes are never copied into snapshots:
 * restores remount the volume's current content.
 */
export class VolumeService {
  constructor(
    private readonly config: Config,
    private readonly store: VolumeStore,
    private readonly log: Logger,
  ) {}

  get root(): string {
    return path.join(this.config.dataDir, 'volumes');
  }

  /** Sandbox QEMU processes traverse this (0711) to their volumes; each volume is 2770 root:volume group. */
  init(): void {
    fs.mkdirSync(this.root, { recursive: true });
    fs.chmodSync(this.root, 0o711);
  }

  hostPath(volumeId: string): string {
    if (!/^vol_[0-9a-z]{16}$/.test(volumeId)) throw new NsError('internal', `refusing a host path for malformed volume id ${JSON.stringify(volumeId)}`);
    return path.join(this.root, volumeId);
  }

  checkName(name: unknown): string {
    if (typeof name !== 'string' || !VOLUME_NAME_RE.test(name)) {
      throw new NsError('invalid_volume_name', `volume name ${JSON.stringify(name)?.slice(0, 80)} must match ${VOLUME_NAME_RE} (1-63 characters)`, {
        details: { field: 'name' },
      });
    }
    return name;
  }

  async create(name: string): Promise<VolumeRecord> {
    this.checkName(name);
    const taken = () => new NsError('already_exists', `volume ${name} already exists`, { details: { name } });
    if (await this.store.byName(name)) throw taken();
    const rec: VolumeRecord = { id: newId('vol'), name, createdAt: Date.now() };
    const dir = this.hostPath(rec.id);
    fs.mkdirSync(dir, { mode: 0o770 });
    fs.chownSync(dir, 0, this.config.volumeGid);
    fs.chmodSync(dir, 0o2770);
    let inserted = false;
    try {
      inserted = await this.store.insert(rec);
    } finally {
      if (!inserted) fs.rmSync(dir, { recursive: true, force: true });
    }
    // (a create of the same name got it between the check and the insert)
    if (!inserted) throw taken();
    this.log.info({ volume: name, volumeId: rec.id }, 'volume created');
    return rec;
  }

  async get(name: string): Promise<VolumeRecord> {
    const v = typeof name === 'string' && VOLUME_NAME_RE.test(name) ? await this.store.byName(name) : undefined;
    if (!v) throw new NsError('volume_not_found', `volume ${name} not found`, { details: { name } });
    return v;
  }

  list(): Promise<VolumeRecord[]> {
    return this.store.all();
  }

  users(v: VolumeRecord): Promise<Array<{ id: string; state: string }>> {
    return this.store.users(v.id);
  }

  /** Deletes a volume and its data. Refused while a sandbox (running or paused) mounts it. */
  async delete(name: string): Promise<void> {
    const v = await this.get(name);
    const users = await this.store.users(v.id);
    if (users.length) {
      throw new NsError('volume_in_use', `volume ${name} is mounted by ${users.map((u) => `${u.id} (${u.state})`).join(', ')}`, {
        details: { name, sandboxes: users.map((u) => u.id) },
      });
    }
    await this.store.delete(v.id);
    fs.rmSync(this.hostPath(v.id), { recursive: true, force: true });
    this.log.info({ volume: name, volumeId: v.id }, 'volume deleted');
  }

  /** Bytes used by a volume's files. */
  sizeBytes(v: VolumeRecord): number {
    let total = 0;
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) total += fs.statSync(p).blocks * 512;
      }
    };
    try {
      walk(this.hostPath(v.id));
    } catch {
      /* raced with a delete */
    }
    return total;
  }

  /** Validates a create request's `{guestPath: volumeName}` map into attachments (tags and slots in order). */
  async attachments(requested: Record<string, string>): Promise<VolumeAttachment[]> {
    const entries = Object.entries(requested);
    if (entries.length > MAX_VOLUMES_PER_SANDBOX) {
      throw new NsError('bad_request', `at most ${MAX_VOLUMES_PER_SANDBOX} volumes per sandbox`, { details: { field: 'volumes' } });
    }
    const paths: string[] = [];
    const out: VolumeAttachment[] = [];
    for (const [i, [guestPath, name]] of entries.entries()) {
      const p = checkGuestPath(guestPath);
      for (const other of paths) {
        if (p === other || p.startsWith(other + '/') || other.startsWith(p + '/')) {
          throw new NsError('bad_request', `volume mount paths ${other} and ${p} overlap`, { details: { field: 'volumes' } });
        }
      }
      paths.push(p);
      const v = await this.get(name);
      out.push({ volumeId: v.id, name: v.name, path: p, tag: `v${i}`, slot: VOLUME_FIRST_SLOT + i });
    }
    return out;
  }

  /**
   * The VM devices for `attachments`. A volume deleted since they were recorded is refused with
   * 409 `volume_missing`, or, with `allowMissing`, exported as an empty placeholder and not mounted.
   */
  /** Whether the volume an attachment names still exists (one deleted is exported as a placeholder, never mounted). */
  async exists(a: VolumeAttachment): Promise<boolean> {
    return (await this.store.byId(a.volumeId)) !== undefined;
  }

  async devices(
    attachments: VolumeAttachment[],
    onCmdline: boolean,
    opts: { allowMissing: boolean },
  ): Promise<{ devices: Array<Omit<VolumeDevice, 'hostPath'> & { hostPath: string | null }>; missing: string[] }> {
    const missing: string[] = [];
    for (const a of attachments) if (!(await this.exists(a))) missing.push(a.name);
    if (missing.length && !opts.allowMissing) {
      throw new NsError('volume_missing', `volume(s) ${missing.join(', ')} no longer exist; restore with allowMissingVolumes to start without them`, {
        details: { volumes: missing },
      });
    }
    // (a deleted one: null, the VM host exports an empty placeholder in its place)
    const devices = attachments.map((a) => ({ tag: a.tag, hostPath: missing.includes(a.name) ? null : this.hostPath(a.volumeId), slot: a.slot, onCmdline }));
    return { devices, missing };
  }
}

function checkGuestPath(p: string): string {
  const normal = path.posix.normalize(p);
  if (!p.startsWith('/') || p !== normal.replace(/\/$/, '') || p === '/' || p.includes('\0') || p.length > 1024) {
    throw new NsError('invalid_path', `volume mount path ${JSON.stringify(p)} must be a normalized absolute path other than /`, { details: { field: 'volumes' } });
  }
  for (const r of RESERVED_GUEST_PATHS) {
    if (p === r || p.startsWith(r + '/')) {
      throw new NsError('invalid_path', `volume mount path ${p} is inside the system directory ${r}`, { details: { field: 'volumes' } });
    }
  }
  return p;
}
