import type { Sql } from './sql.js';

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
  constructor(private readonly sql: Sql) {}

  /** Records a volume; false when its name is taken (one insert: two racing creates cannot both have it). */
  async insert(v: VolumeRecord): Promise<boolean> {
    return (await this.sql.run('INSERT INTO volumes (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING', [v.id, v.name, v.createdAt])) === 1;
  }

  async byName(name: string): Promise<VolumeRecord | undefined> {
    const r = await this.sql.get<Row>('SELECT * FROM volumes WHERE name = ?', [name]);
    return r ? fromRow(r) : undefined;
  }

  async byId(id: string): Promise<VolumeRecord | undefined> {
    const r = await this.sql.get<Row>('SELECT * FROM volumes WHERE id = ?', [id]);
    return r ? fromRow(r) : undefined;
  }

  async all(): Promise<VolumeRecord[]> {
    return (await this.sql.all<Row>('SELECT * FROM volumes ORDER BY created_at, id')).map(fromRow);
  }

  async delete(id: string): Promise<void> {
    await this.sql.run('DELETE FROM volumes WHERE id = ?', [id]);
  }

  /** Sandboxes that are not ended and mount the volume (paused ones included: they remount it). */
  async users(volumeId: string): Promise<Array<{ id: string; state: string }>> {
    const mounts =
      this.sql.dialect === 'postgres'
        ? `sandboxes.volumes::jsonb @> jsonb_build_array(jsonb_build_object('volumeId', ?::text))`
        : `EXISTS (SELECT 1 FROM json_each(sandboxes.volumes) WHERE json_extract(json_each.value, '$.volumeId') = ?)`;
    return this.sql.all<{ id: string; state: string }>(`SELECT id, state FROM sandboxes WHERE state NOT IN ('killed', 'failed') AND ${mounts} ORDER BY created_at, id`, [
      volumeId,
    ]);
  }
}
