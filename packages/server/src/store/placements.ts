import type { Sql } from './sql.js';

/** What the fleet places on joined hosts (migration 0012). */
export type PlacementKind = 'sandbox' | 'snapshot' | 'volume';

export interface PlacementRecord {
  kind: PlacementKind;
  id: string;
  hostId: string;
  /** The last view of the object the control plane saw (shown while its host is lost). */
  view: Record<string, unknown>;
  createdAt: number;
  /** A sandbox killed through the control plane (a host that comes back is told to kill it). */
  endedAt: number | null;
}

interface Row {
  kind: string;
  id: string;
  host_id: string;
  view: string;
  created_at: number;
  ended_at: number | null;
}

const fromRow = (r: Row): PlacementRecord => ({
  kind: r.kind as PlacementKind,
  id: r.id,
  hostId: r.host_id,
  view: JSON.parse(r.view) as Record<string, unknown>,
  createdAt: Number(r.created_at),
  endedAt: r.ended_at === null ? null : Number(r.ended_at),
});

/**
 * Which joined host runs a sandbox, holds a snapshot's copy, keeps a volume (SQLite or PostgreSQL,
 * through the store's one `Sql`). Objects of the control plane's own host have no row.
 */
export class PlacementStore {
  constructor(private readonly sql: Sql) {}

  /** Records (or refreshes the view of) `kind` `id` on `hostId`. */
  async put(kind: PlacementKind, id: string, hostId: string, view: Record<string, unknown>, now = Date.now()): Promise<void> {
    await this.sql.run(
      `INSERT INTO placements (kind, id, host_id, view, created_at, ended_at) VALUES (?, ?, ?, ?, ?, NULL)
       ON CONFLICT (kind, id, host_id) DO UPDATE SET view = excluded.view`,
      [kind, id, hostId, JSON.stringify(view), now],
    );
  }

  /** Where `kind` `id` lives (a snapshot: each copy), oldest first. */
  async of(kind: PlacementKind, id: string): Promise<PlacementRecord[]> {
    return (await this.sql.all<Row>('SELECT * FROM placements WHERE kind = ? AND id = ? ORDER BY created_at, host_id', [kind, id])).map(fromRow);
  }

  async list(kind: PlacementKind): Promise<PlacementRecord[]> {
    return (await this.sql.all<Row>('SELECT * FROM placements WHERE kind = ? ORDER BY created_at, id', [kind])).map(fromRow);
  }

  async onHost(hostId: string): Promise<PlacementRecord[]> {
    return (await this.sql.all<Row>('SELECT * FROM placements WHERE host_id = ? ORDER BY created_at, id', [hostId])).map(fromRow);
  }

  /** Marks `kind` `id` ended (killed through the control plane); true if it was not ended yet. */
  async end(kind: PlacementKind, id: string, now = Date.now()): Promise<boolean> {
    return (await this.sql.run('UPDATE placements SET ended_at = ? WHERE kind = ? AND id = ? AND ended_at IS NULL', [now, kind, id])) > 0;
  }

  /** Forgets `kind` `id` (on one host, or everywhere). */
  async remove(kind: PlacementKind, id: string, hostId?: string): Promise<void> {
    if (hostId === undefined) await this.sql.run('DELETE FROM placements WHERE kind = ? AND id = ?', [kind, id]);
    else await this.sql.run('DELETE FROM placements WHERE kind = ? AND id = ? AND host_id = ?', [kind, id, hostId]);
  }
}
