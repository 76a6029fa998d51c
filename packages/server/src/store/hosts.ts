import type { Db } from './db.js';

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

/**
 * The hosts table. Its methods return Promises: the store is becoming asynchronous (one interface,
 * SQLite and PostgreSQL implementations); this one runs on SQLite today.
 */
export class HostStore {
  constructor(private readonly db: Db) {}

  async insert(h: HostRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO hosts (id, url, credential_digest, control_credential, draining, fingerprint, capacity, counts, epoch, joined_at, last_heartbeat, lost_at, fenced_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(h.id, h.url, h.credentialDigest, h.controlCredential, h.draining ? 1 : 0, JSON.stringify(h.fingerprint), JSON.stringify(h.capacity), JSON.stringify(h.counts), h.epoch, h.joinedAt, h.lastHeartbeat, h.lostAt, h.fencedAt);
  }

  async get(id: string): Promise<HostRecord | undefined> {
    const r = this.db.prepare('SELECT * FROM hosts WHERE id = ?').get(id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  async list(): Promise<HostRecord[]> {
    return (this.db.prepare('SELECT * FROM hosts ORDER BY joined_at, id').all() as Row[]).map(fromRow);
  }

  /**
   * Records a heartbeat; a host that was lost is fenced (epoch + 1, fenced_at = now) in the same
   * statement. Returns the record after it (undefined: no such host).
   */
  async heartbeat(id: string, now: number, hb: { url: string; fingerprint: unknown; capacity: unknown; counts: unknown }): Promise<HostRecord | undefined> {
    const r = this.db
      .prepare(
        `UPDATE hosts SET url = ?, fingerprint = ?, capacity = ?, counts = ?, last_heartbeat = ?,
           epoch = epoch + (lost_at IS NOT NULL), fenced_at = CASE WHEN lost_at IS NOT NULL THEN ? ELSE fenced_at END, lost_at = NULL
         WHERE id = ? RETURNING *`,
      )
      .get(hb.url, JSON.stringify(hb.fingerprint), JSON.stringify(hb.capacity), JSON.stringify(hb.counts), now, now, id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  async setDraining(id: string, draining: boolean): Promise<HostRecord | undefined> {
    const r = this.db.prepare('UPDATE hosts SET draining = ? WHERE id = ? RETURNING *').get(draining ? 1 : 0, id) as Row | undefined;
    return r ? fromRow(r) : undefined;
  }

  /** Marks lost every host not lost yet whose last heartbeat is older than `before`; the ids marked. */
  async markLost(before: number, now: number): Promise<string[]> {
    return (this.db.prepare('UPDATE hosts SET lost_at = ? WHERE lost_at IS NULL AND last_heartbeat < ? RETURNING id').all(now, before) as Array<{ id: string }>).map((r) => r.id);
  }
}
