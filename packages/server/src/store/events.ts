import type { Db } from './db.js';

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

/** The body a webhook receives for an event (also what SSE sends as `data`). */
export function eventBody(e: EventRecord): string {
  return JSON.stringify({ id: e.id, type: e.type, sandboxId: e.sandboxId, at: new Date(e.at).toISOString(), data: e.data });
}

/** The public event log, and the webhook outbox rows each event adds in its own transaction. */
export class EventStore {
  constructor(private readonly db: Db) {}

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /**
   * Appends an event and, in the same transaction, one pending delivery per webhook subscribed to
   * its type: an event is never recorded without its deliveries, nor a delivery without its event.
   */
  append(e: Omit<EventRecord, 'id'>): EventRecord {
    return this.transaction(() => {
      const res = this.db.prepare('INSERT INTO events (type, sandbox_id, at, data) VALUES (?, ?, ?, ?)').run(e.type, e.sandboxId, e.at, JSON.stringify(e.data));
      const rec: EventRecord = { id: Number(res.lastInsertRowid), ...e };
      this.db
        .prepare(
          `INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, body, next_attempt_at, created_at)
           SELECT id, ?, ?, ?, ?, ? FROM webhooks
           WHERE events = '[]' OR EXISTS (SELECT 1 FROM json_each(webhooks.events) WHERE value = ?)`,
        )
        .run(rec.id, rec.type, eventBody(rec), e.at, e.at, rec.type);
      return rec;
    });
  }

  /** Events after `cursor` (an event id) matching `filter`, oldest first. */
  after(cursor: number, filter: EventFilter, limit: number): EventRecord[] {
    const where = ['id > ?'];
    const params: unknown[] = [cursor];
    if (filter.sandboxId !== undefined) {
      where.push('sandbox_id = ?');
      params.push(filter.sandboxId);
    }
    if (filter.types?.length) {
      where.push(`type IN (${filter.types.map(() => '?').join(',')})`);
      params.push(...filter.types);
    }
    return (this.db.prepare(`SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`).all(...params, limit) as Row[]).map(fromRow);
  }

  /** The id of the latest event (0: none ever; ids are never reused, so this is the live edge). */
  latestId(): number {
    const r = this.db.prepare(`SELECT seq FROM sqlite_sequence WHERE name = 'events'`).get() as { seq: number } | undefined;
    return r?.seq ?? 0;
  }

  /**
   * Drops events older than `before` and all but the latest `keep`, and finished deliveries older
   * than `before` (pending ones stay until delivered or given up). Returns the events dropped.
   */
  prune(before: number, keep: number): number {
    return this.transaction(() => {
      const byAge = this.db.prepare('DELETE FROM events WHERE at < ?').run(before).changes;
      const byCount = this.db.prepare('DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)').run(keep).changes;
      this.db.prepare(`DELETE FROM webhook_deliveries WHERE status != 'pending' AND finished_at < ?`).run(before);
      return byAge + byCount;
    });
  }
}
