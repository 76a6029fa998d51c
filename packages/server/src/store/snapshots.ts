import type { EgressRules, RestoreRequirements } from '@nullspace/runtime';
import { decodeCursor, encodeCursor } from './cursor.js';
import type { Db } from './db.js';
import type { VolumeAttachment } from './volumes.js';

export type LayerKind = 'disk' | 'mem' | 'state';

export interface LayerRecord {
  id: string;
  kind: LayerKind;
  path: string;
  parentId: string | null;
  bytes: number;
  createdAt: number;
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
  constructor(private readonly db: Db) {}

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  insertLayer(l: LayerRecord): void {
    this.db
      .prepare('INSERT INTO layers (id, kind, path, parent_id, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(l.id, l.kind, l.path, l.parentId, l.bytes, l.createdAt);
  }

  deleteLayer(id: string): void {
    this.db.prepare('DELETE FROM layers WHERE id = ?').run(id);
  }

  layer(id: string): LayerRecord | undefined {
    const r = this.db.prepare('SELECT * FROM layers WHERE id = ?').get(id) as LayerRow | undefined;
    return r ? layer(r) : undefined;
  }

  layerByPath(path: string): LayerRecord | undefined {
    const r = this.db.prepare('SELECT * FROM layers WHERE path = ?').get(path) as LayerRow | undefined;
    return r ? layer(r) : undefined;
  }

  layers(): LayerRecord[] {
    return (this.db.prepare('SELECT * FROM layers ORDER BY created_at, id').all() as LayerRow[]).map(layer);
  }

  /** Number of disk layers from `id` up to the template disk. */
  depth(id: string | null): number {
    let n = 0;
    for (let cur = id; cur; cur = this.layer(cur)?.parentId ?? null) n++;
    return n;
  }

  insert(s: SnapshotRecord): void {
    this.db
      .prepare(
        `INSERT INTO snapshots (id, sandbox_id, kind, template, metadata, envs, mem_layer, state_layer, disk_layer, vm_config, requirements, pause_ms, volumes, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        s.id,
        s.sandboxId,
        s.kind,
        s.template,
        JSON.stringify(s.metadata),
        JSON.stringify(s.envs),
        s.memLayer,
        s.stateLayer,
        s.diskLayer,
        JSON.stringify(s.vmConfig),
        JSON.stringify(s.requirements),
        s.pauseMs,
        JSON.stringify(s.volumes),
        s.createdAt,
      );
  }

  /** Points a snapshot at an equivalent disk layer (a flattened copy of its chain). */
  setDiskLayer(id: string, layerId: string): void {
    this.db.prepare('UPDATE snapshots SET disk_layer = ? WHERE id = ?').run(layerId, id);
  }

  get(id: string): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE id = ?').get(id) as SnapRow | undefined;
    return r ? snap(r) : undefined;
  }

  /** Hibernation snapshots of a sandbox, newest first. */
  hibernations(sandboxId: string): SnapshotRecord[] {
    return (this.db.prepare(`SELECT * FROM snapshots WHERE sandbox_id = ? AND kind = 'hibernate' ORDER BY created_at DESC, id DESC`).all(sandboxId) as SnapRow[]).map(
      snap,
    );
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(id).changes === 1;
  }

  all(): SnapshotRecord[] {
    return (this.db.prepare('SELECT * FROM snapshots').all() as SnapRow[]).map(snap);
  }

  list(q: SnapshotQuery): { items: SnapshotRecord[]; nextToken: string | undefined } {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.sandboxId) {
      where.push('sandbox_id = ?');
      params.push(q.sandboxId);
    }
    if (q.kinds?.length) {
      where.push(`kind IN (${q.kinds.map(() => '?').join(',')})`);
      params.push(...q.kinds);
    }
    for (const [k, v] of Object.entries(q.metadata ?? {})) {
      where.push('json_extract(metadata, ?) = ?');
      params.push(`$.${JSON.stringify(k)}`, v);
    }
    if (q.nextToken) {
      const c = decodeCursor(q.nextToken);
      where.push('(created_at > ? OR (created_at = ? AND id > ?))');
      params.push(c.createdAt, c.createdAt, c.id);
    }
    const rows = this.db
      .prepare(`SELECT * FROM snapshots ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`)
      .all(...params, q.limit + 1) as SnapRow[];
    const items = rows.slice(0, q.limit).map(snap);
    const last = items[items.length - 1];
    return { items, nextToken: rows.length > q.limit && last ? encodeCursor(last.createdAt, last.id) : undefined };
  }
}
