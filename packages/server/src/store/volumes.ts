import type { Db } from './db.js';

export interface VolumeRecord {
  id: string;
  name: string;
  createdAt: number;
}

/** A volume as a sandbox mounts it (also what a snapshot expects). */
export interface VolumeAttachment {
  volumeId: string;
  name: string;
  /** Absolute guest path. */
  path: string;
  /** virtio-9p mount tag and PCI slot (fixed for the sandbox's lifetime, carried by its snapshots). */
  tag: string;
  slot: number;
}

interface Row {
  id: string;
  name: string;
  created_at: number;
}

const fromRow = (r: Row): VolumeRecord => ({ id: r.id, name: r.name, createdAt: r.created_at });

export class VolumeStore {
  constructor(private readonly db: Db) {}

  insert(v: VolumeRecord): void {
    this.db.prepare('INSERT INTO volumes (id, name, created_at) VALUES (?, ?, ?)').run(v.id, v.name, v.createdAt);
  }

  byName(name: string): VolumeRecord | undefined {
    const r = this.db.prepare('SELECT * FROM volumes WHERE name = ?').get(name) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  byId(id: string): VolumeRecord | undefined {
    const r = this.db.prepare('SELECT * FROM volumes WHERE id = ?').get(id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  all(): VolumeRecord[] {
    return (this.db.prepare('SELECT * FROM volumes ORDER BY created_at, id').all() as Row[]).map(fromRow);
  }

  delete(id: string): void {
    this.db.prepare('DELETE FROM volumes WHERE id = ?').run(id);
  }

  /** Sandboxes that are not ended and mount the volume (paused ones included: they remount it). */
  users(volumeId: string): Array<{ id: string; state: string }> {
    return this.db
      .prepare(
        `SELECT id, state FROM sandboxes WHERE state NOT IN ('killed', 'failed')
           AND EXISTS (SELECT 1 FROM json_each(sandboxes.volumes) WHERE json_extract(json_each.value, '$.volumeId') = ?)`,
      )
      .all(volumeId) as Array<{ id: string; state: string }>;
  }
}
