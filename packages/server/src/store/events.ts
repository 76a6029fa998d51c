import { inList, insertSql, type Sql } from './sql.js';

/** One event of the public log (`GET /v1/events`, webhooks). */
export interface EventRecord {
  /** Monotonic (SQLite AUTOINCREMENT: never reused, even after pruning). */
  id: number;
  type: string;
  sandboxId: string;
  at: number;
  data: Record<string, unknown>;
}

export interface EventFilter {
  sandboxId?: string | undefined;
  /** Any of these types (none: every type). */
  types?: readonly string[] | undefined;
}

interface Row {
  id: number;
  type: string;
  sandbox_id: string;
  at: number;
  data: string;
}

const fromRow = (r: Row): EventRecord => ({ id: r.id, type: r.type, sandboxId: r.sandbox_id, at: r.at, data: JSON.parse(r.data) as Record<string, unknown> });

/** The advisory lock appends take on PostgreSQL (any bigint the database's other users do not use). */
const EVENTS_LOCK_KEY = 0x6e756c6c_657674n.toString(); // "null" "evt"

/** The body a webhook receives for an event (also what SSE sends as `data`). */
export function eventBody(e: EventRecord): string {
  return JSON.stringify({ id: e.id, type: e.type, sandboxId: e.sandboxId, at: new Date(e.at).toISOString(), data: e.data });
}

/** The public event log, and the webhook outbox rows each event adds in its own transaction. */
export class EventStore {
  constructor(private readonly sql: Sql) {}

  transaction<T>(fn: () => Promise<T>): Promise<T> {
    return this.sql.transaction(fn);
  }

  /** Calls `fn` once the current transaction (if any) commits. */
  afterCommit(fn: () => void): void {
    this.sql.afterCommit(fn);
  }

  /**
   * Appends an event and, in the same transaction, one pending delivery per webhook subscribed to
   * its type: an event is never recorded without its deliveries, nor a delivery without its event.
   */
  async append(e: Omit<EventRecord, 'id'>): Promise<EventRecord> {
    return this.transaction(async () => {
      // PostgreSQL: appends take turns until their transaction commits, so that ids commit in order
      // (a reader at cursor n never later finds an id below n appear); SQLite's writers already do
      if (this.sql.dialect === 'postgres') await this.sql.run('SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))', [EVENTS_LOCK_KEY]);
      const r = await this.sql.get<{ id: number }>(...insertSql('events', { type: e.type, sandbox_id: e.sandboxId, at: e.at, data: JSON.stringify(e.data) }, 'RETURNING id'));
      const rec: EventRecord = { id: Number(r!.id), ...e };
      const subscribed =
        this.sql.dialect === 'postgres'
          ? `events = '[]' OR webhooks.events::jsonb @> jsonb_build_array(?::text)`
          : `events = '[]' OR EXISTS (SELECT 1 FROM json_each(webhooks.events) WHERE value = ?)`;
      await this.sql.run(
        `INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, body, next_attempt_at, created_at)
         SELECT id, CAST(? AS BIGINT), ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT) FROM webhooks WHERE ${subscribed}`,
        [rec.id, rec.type, eventBody(rec), e.at, e.at, rec.type],
      );
      return rec;
    });
  }

  /** Events after `cursor` (an event id) matching `filter`, oldest first. */
  async after(cursor: number, filter: EventFilter, limit: number): Promise<EventRecord[]> {
    const where = ['id > ?'];
    const params: unknown[] = [cursor];
    if (filter.sandboxId !== undefined) {
      where.push('sandbox_id = ?');
      params.push(filter.sandboxId);
    }
    if (filter.types?.length) {
      where.push(inList('type', filter.types));
      params.push(...filter.types);
    }
    return (await this.sql.all<Row>(`SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`, [...params, limit])).map(fromRow);
  }

  /** The id of the latest event (0: none ever; ids are never reused, so this is the live edge). */
  async latestId(): Promise<number> {
    // PostgreSQL: the latest committed id (a sequence's value may belong to a transaction still open)
    const r =
      this.sql.dialect === 'postgres'
        ? await this.sql.get<{ seq: number | null }>('SELECT MAX(id) AS seq FROM events')
        : await this.sql.get<{ seq: number }>(`SELECT seq FROM sqlite_sequence WHERE name = 'events'`);
    return Number(r?.seq ?? 0);
  }

  /**
   * Drops events older than `before` and all but the latest `keep`, and finished deliveries older
   * than `before` (pending ones stay until delivered or given up). Returns the events dropped.
   */
  async prune(before: number, keep: number): Promise<number> {
    return this.transaction(async () => {
      const byAge = await this.sql.run('DELETE FROM events WHERE at < ?', [before]);
      const byCount = await this.sql.run('DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)', [keep]);
      await this.sql.run(`DELETE FROM webhook_deliveries WHERE status != 'pending' AND finished_at < ?`, [before]);
      return byAge + byCount;
    });
  }
}
