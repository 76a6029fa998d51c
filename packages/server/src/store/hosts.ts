import type { Sql } from './sql.js';

/** A runtime host as the control plane records it (migration 0010). */
export interface HostRecord {
  id: string;
  /** Where its listener is reached (http://addr:port). */
  url: string;
  /** sha256 (hex) of the credential the host presents to the control plane. */
  credentialDigest: string;
  /** The secret the control plane presents to the host's listener. */
  controlCredential: string;
  draining: boolean;
  fingerprint: unknown;
  capacity: unknown;
  counts: unknown;
  /** Incremented each time the host comes back after being lost (fencing). */
  epoch: number;
  joinedAt: number;
  lastHeartbeat: number;
  lostAt: number | null;
  fencedAt: number | null;
}

interface Row {
  id: string;
  url: string;
  credential_digest: string;
  control_credential: string;
  draining: number;
  fingerprint: string;
  capacity: string;
  counts: string;
  epoch: number;
  joined_at: number;
  last_heartbeat: number;
  lost_at: number | null;
  fenced_at: number | null;
}

const fromRow = (r: Row): HostRecord => ({
  id: r.id,
  url: r.url,
  credentialDigest: r.credential_digest,
  controlCredential: r.control_credential,
  draining: r.draining === 1,
  fingerprint: JSON.parse(r.fingerprint) as unknown,
  capacity: JSON.parse(r.capacity) as unknown,
  counts: JSON.parse(r.counts) as unknown,
  epoch: r.epoch,
  joinedAt: r.joined_at,
  lastHeartbeat: r.last_heartbeat,
  lostAt: r.lost_at,
  fencedAt: r.fenced_at,
});

/** The hosts table (SQLite or PostgreSQL, through the store's one `Sql`). */
export class HostStore {
  constructor(private readonly sql: Sql) {}

  async insert(h: HostRecord): Promise<void> {
    await this.sql.run(
      `INSERT INTO hosts (id, url, credential_digest, control_credential, draining, fingerprint, capacity, counts, epoch, joined_at, last_heartbeat, lost_at, fenced_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [h.id, h.url, h.credentialDigest, h.controlCredential, h.draining ? 1 : 0, JSON.stringify(h.fingerprint), JSON.stringify(h.capacity), JSON.stringify(h.counts), h.epoch, h.joinedAt, h.lastHeartbeat, h.lostAt, h.fencedAt],
    );
  }

  async get(id: string): Promise<HostRecord | undefined> {
    const r = await this.sql.get<Row>('SELECT * FROM hosts WHERE id = ?', [id]);
    return r ? fromRow(r) : undefined;
  }

  async list(): Promise<HostRecord[]> {
    return (await this.sql.all<Row>('SELECT * FROM hosts ORDER BY joined_at, id')).map(fromRow);
  }

  /**
   * Records a heartbeat; a host that was lost is fenced (epoch + 1, fenced_at = now) in the same
   * statement. Returns the record after it (undefined: no such host).
   */
  async heartbeat(id: string, now: number, hb: { url: string; fingerprint: unknown; capacity: unknown; counts: unknown }): Promise<HostRecord | undefined> {
    const r = await this.sql.get<Row>(
      `UPDATE hosts SET url = ?, fingerprint = ?, capacity = ?, counts = ?, last_heartbeat = ?,
         epoch = epoch + CASE WHEN lost_at IS NOT NULL THEN 1 ELSE 0 END,
         fenced_at = CASE WHEN lost_at IS NOT NULL THEN CAST(? AS BIGINT) ELSE fenced_at END, lost_at = NULL
       WHERE id = ? RETURNING *`,
      [hb.url, JSON.stringify(hb.fingerprint), JSON.stringify(hb.capacity), JSON.stringify(hb.counts), now, now, id],
    );
    return r ? fromRow(r) : undefined;
  }

  async setDraining(id: string, draining: boolean): Promise<HostRecord | undefined> {
    const r = await this.sql.get<Row>('UPDATE hosts SET draining = ? WHERE id = ? RETURNING *', [draining ? 1 : 0, id]);
    return r ? fromRow(r) : undefined;
  }

  /** The last event of host `id` relayed (0: none yet). */
  async eventsCursor(id: string): Promise<number> {
    const r = await this.sql.get<{ events_cursor: number | string }>('SELECT events_cursor FROM hosts WHERE id = ?', [id]);
    return r ? Number(r.events_cursor) : 0;
  }

  /** Moves host `id`'s relay cursor from `from` to `to`; false: another relay moved it first. */
  async advanceEventsCursor(id: string, from: number, to: number): Promise<boolean> {
    return (await this.sql.run('UPDATE hosts SET events_cursor = ? WHERE id = ? AND events_cursor = ?', [to, id, from])) === 1;
  }

  /** Marks lost every host not lost yet whose last heartbeat is older than `before`; the ids marked. */
  async markLost(before: number, now: number): Promise<string[]> {
    return (await this.sql.all<{ id: string }>('UPDATE hosts SET lost_at = ? WHERE lost_at IS NULL AND last_heartbeat < ? RETURNING id', [now, before])).map((r) => r.id);
  }
}
