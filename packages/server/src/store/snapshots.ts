import type { EgressRules, RestoreRequirements } from '@nullspace/runtime';
import { decodeCursor, encodeCursor } from './cursor.js';
import { inList, insertSql, jsonFieldEquals, type Sql } from './sql.js';
import type { VolumeAttachment } from './volumes.js';

export type LayerKind = 'disk' | 'mem' | 'state';

export interface LayerRecord {
  id: string;
  kind: LayerKind;
  path: string;
  parentId: string | null;
  bytes: number;
  createdAt: number;
  /** The sha256 (hex) of its file, once computed (at its first export) or checked (at its import). */
  sha256?: string;
}

export type SnapshotKind = 'reusable' | 'hibernate' | 'fork';

export interface VmConfig {
  kernel: string;
  initrd: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  diskSizeBytes: number;
  allowInternetAccess: boolean;
  /** The sandbox's egress rules when captured (its children's unless they are given their own). */
  egress?: EgressRules | null;
}

export interface SnapshotRecord {
  id: string;
  sandboxId: string;
  kind: SnapshotKind;
  template: string;
  metadata: Record<string, string>;
  envs: Record<string, string>;
  memLayer: string;
  stateLayer: string;
  diskLayer: string;
  vmConfig: VmConfig;
  requirements: RestoreRequirements;
  pauseMs: number | null;
  /** The shared volumes it expects (never copied into it). */
  volumes: VolumeAttachment[];
  createdAt: number;
}

interface SnapRow {
  id: string;
  sandbox_id: string;
  kind: string;
  template: string;
  metadata: string;
  envs: string;
  mem_layer: string;
  state_layer: string;
  disk_layer: string;
  vm_config: string;
  requirements: string;
  pause_ms: number | null;
  volumes: string;
  created_at: number;
}

interface LayerRow {
  id: string;
  kind: string;
  path: string;
  parent_id: string | null;
  bytes: number;
  created_at: number;
  sha256: string | null;
}

const snap = (r: SnapRow): SnapshotRecord => ({
  id: r.id,
  sandboxId: r.sandbox_id,
  kind: r.kind as SnapshotKind,
  template: r.template,
  metadata: JSON.parse(r.metadata) as Record<string, string>,
  envs: JSON.parse(r.envs) as Record<string, string>,
  memLayer: r.mem_layer,
  stateLayer: r.state_layer,
  diskLayer: r.disk_layer,
  vmConfig: JSON.parse(r.vm_config) as VmConfig,
  requirements: JSON.parse(r.requirements) as RestoreRequirements,
  pauseMs: r.pause_ms,
  volumes: JSON.parse(r.volumes) as VolumeAttachment[],
  createdAt: r.created_at,
});

const layer = (r: LayerRow): LayerRecord => ({
  id: r.id,
  kind: r.kind as LayerKind,
  path: r.path,
  parentId: r.parent_id,
  bytes: r.bytes,
  createdAt: r.created_at,
  ...(r.sha256 ? { sha256: r.sha256 } : {}),
});

export interface SnapshotQuery {
  sandboxId?: string | undefined;
  kinds?: SnapshotKind[] | undefined;
  metadata?: Record<string, string> | undefined;
  limit: number;
  nextToken?: string | undefined;
}

/** Snapshots and the layers they (and sandboxes) are made of. */
export class SnapshotStore {
  constructor(private readonly sql: Sql) {}

  transaction<T>(fn: () => Promise<T>): Promise<T> {
    return this.sql.transaction(fn);
  }

  async insertLayer(l: LayerRecord): Promise<void> {
    await this.sql.run(...insertSql('layers', { id: l.id, kind: l.kind, path: l.path, parent_id: l.parentId, bytes: l.bytes, created_at: l.createdAt, sha256: l.sha256 ?? null }));
  }

  /** Records the digest of a layer's file (computed once: layers are immutable). */
  async setLayerDigest(id: string, sha256: string): Promise<void> {
    await this.sql.run('UPDATE layers SET sha256 = ? WHERE id = ?', [sha256, id]);
  }

  async deleteLayer(id: string): Promise<void> {
    await this.sql.run('DELETE FROM layers WHERE id = ?', [id]);
  }

  async layer(id: string): Promise<LayerRecord | undefined> {
    const r = await this.sql.get<LayerRow>('SELECT * FROM layers WHERE id = ?', [id]);
    return r ? layer(r) : undefined;
  }

  async layerByPath(path: string): Promise<LayerRecord | undefined> {
    const r = await this.sql.get<LayerRow>('SELECT * FROM layers WHERE path = ?', [path]);
    return r ? layer(r) : undefined;
  }

  async layers(): Promise<LayerRecord[]> {
    return (await this.sql.all<LayerRow>('SELECT * FROM layers ORDER BY created_at, id')).map(layer);
  }

  /** Number of disk layers from `id` up to the template disk. */
  async depth(id: string | null): Promise<number> {
    let n = 0;
    for (let cur = id; cur; cur = (await this.layer(cur))?.parentId ?? null) n++;
    return n;
  }

  async insert(s: SnapshotRecord): Promise<void> {
    await this.sql.run(
      ...insertSql('snapshots', {
        id: s.id,
        sandbox_id: s.sandboxId,
        kind: s.kind,
        template: s.template,
        metadata: JSON.stringify(s.metadata),
        envs: JSON.stringify(s.envs),
        mem_layer: s.memLayer,
        state_layer: s.stateLayer,
        disk_layer: s.diskLayer,
        vm_config: JSON.stringify(s.vmConfig),
        requirements: JSON.stringify(s.requirements),
        pause_ms: s.pauseMs,
        volumes: JSON.stringify(s.volumes),
        created_at: s.createdAt,
      }),
    );
  }

  /** Points a snapshot at an equivalent disk layer (a flattened copy of its chain). */
  async setDiskLayer(id: string, layerId: string): Promise<void> {
    await this.sql.run('UPDATE snapshots SET disk_layer = ? WHERE id = ?', [layerId, id]);
  }

  async get(id: string): Promise<SnapshotRecord | undefined> {
    const r = await this.sql.get<SnapRow>('SELECT * FROM snapshots WHERE id = ?', [id]);
    return r ? snap(r) : undefined;
  }

  /** Hibernation snapshots of a sandbox, newest first. */
  async hibernations(sandboxId: string): Promise<SnapshotRecord[]> {
    return (await this.sql.all<SnapRow>(`SELECT * FROM snapshots WHERE sandbox_id = ? AND kind = 'hibernate' ORDER BY created_at DESC, id DESC`, [sandboxId])).map(snap);
  }

  async delete(id: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM snapshots WHERE id = ?', [id])) === 1;
  }

  async all(): Promise<SnapshotRecord[]> {
    return (await this.sql.all<SnapRow>('SELECT * FROM snapshots')).map(snap);
  }

  async list(q: SnapshotQuery): Promise<{ items: SnapshotRecord[]; nextToken: string | undefined }> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.sandboxId) {
      where.push('sandbox_id = ?');
      params.push(q.sandboxId);
    }
    if (q.kinds?.length) {
      where.push(inList('kind', q.kinds));
      params.push(...q.kinds);
    }
    for (const [k, v] of Object.entries(q.metadata ?? {})) {
      const [cond, p] = jsonFieldEquals(this.sql.dialect, 'metadata', k, v);
      where.push(cond);
      params.push(...p);
    }
    if (q.nextToken) {
      const c = decodeCursor(q.nextToken);
      where.push('(created_at > ? OR (created_at = ? AND id > ?))');
      params.push(c.createdAt, c.createdAt, c.id);
    }
    const rows = await this.sql.all<SnapRow>(`SELECT * FROM snapshots ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`, [
      ...params,
      q.limit + 1,
    ]);
    const items = rows.slice(0, q.limit).map(snap);
    const last = items[items.length - 1];
    return { items, nextToken: rows.length > q.limit && last ? encodeCursor(last.createdAt, last.id) : undefined };
  }
}
