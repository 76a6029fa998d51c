import type { Db } from './db.js';

export interface WebhookRecord {
  id: string;
  url: string;
  /** Event types delivered (empty: every type). */
  events: string[];
  secret: string;
  createdAt: number;
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface DeliveryRecord {
  id: number;
  webhookId: string;
  eventId: number;
  eventType: string;
  body: string;
  status: DeliveryStatus;
  attempts: number;
  nextAttemptAt: number;
  lastAttemptAt: number | null;
  responseStatus: number | null;
  error: string | null;
  createdAt: number;
  finishedAt: number | null;
}

interface HookRow {
  id: string;
  url: string;
  events: string;
  secret: string;
  created_at: number;
}

interface DeliveryRow {
  id: number;
  webhook_id: string;
  event_id: number;
  event_type: string;
  body: string;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: number;
  last_attempt_at: number | null;
  response_status: number | null;
  error: string | null;
  created_at: number;
  finished_at: number | null;
}

const hook = (r: HookRow): WebhookRecord => ({ id: r.id, url: r.url, events: JSON.parse(r.events) as string[], secret: r.secret, createdAt: r.created_at });

const delivery = (r: DeliveryRow): DeliveryRecord => ({
  id: r.id,
  webhookId: r.webhook_id,
  eventId: r.event_id,
  eventType: r.event_type,
  body: r.body,
  status: r.status,
  attempts: r.attempts,
  nextAttemptAt: r.next_attempt_at,
  lastAttemptAt: r.last_attempt_at,
  responseStatus: r.response_status,
  error: r.error,
  createdAt: r.created_at,
  finishedAt: r.finished_at,
});

/** Webhook subscriptions and their outbox / delivery log (rows added by EventStore.append). */
export class WebhookStore {
  constructor(private readonly db: Db) {}

  insert(w: WebhookRecord): void {
    this.db.prepare('INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?)').run(w.id, w.url, JSON.stringify(w.events), w.secret, w.createdAt);
  }

  get(id: string): WebhookRecord | undefined {
    const r = this.db.prepare('SELECT * FROM webhooks WHERE id = ?').get(id) as HookRow | undefined;
    return r ? hook(r) : undefined;
  }

  list(): WebhookRecord[] {
    return (this.db.prepare('SELECT * FROM webhooks ORDER BY created_at, id').all() as HookRow[]).map(hook);
  }

  count(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM webhooks').get() as { n: number }).n;
  }

  /** Deletes a webhook and its deliveries (pending ones are never sent). */
  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM webhooks WHERE id = ?').run(id).changes === 1;
  }

  /** A webhook's deliveries, newest first, older than `before` (a delivery id) when given. */
  deliveries(webhookId: string, limit: number, before?: number): DeliveryRecord[] {
    const rows = this.db
      .prepare(`SELECT * FROM webhook_deliveries WHERE webhook_id = ? ${before !== undefined ? 'AND id < ?' : ''} ORDER BY id DESC LIMIT ?`)
      .all(...(before !== undefined ? [webhookId, before, limit] : [webhookId, limit])) as DeliveryRow[];
    return rows.map(delivery);
  }

  /**
   * For each webhook, its oldest pending delivery when that one is due by `now`: deliveries of one
   * webhook go out one at a time, in event order (a later one waits while an earlier one is retried).
   */
  due(now: number): DeliveryRecord[] {
    const rows = this.db
      .prepare(
        `SELECT d.* FROM webhook_deliveries d
         JOIN (SELECT webhook_id, MIN(id) AS id FROM webhook_deliveries WHERE status = 'pending' GROUP BY webhook_id) h ON h.id = d.id
         WHERE d.next_attempt_at <= ? ORDER BY d.id`,
      )
      .all(now) as DeliveryRow[];
    return rows.map(delivery);
  }

  /** When the next pending delivery of any webhook is due (undefined: none pending). */
  nextDueAt(): number | undefined {
    const r = this.db
      .prepare(
        `SELECT MIN(d.next_attempt_at) AS at FROM webhook_deliveries d
         JOIN (SELECT webhook_id, MIN(id) AS id FROM webhook_deliveries WHERE status = 'pending' GROUP BY webhook_id) h ON h.id = d.id`,
      )
      .get() as { at: number | null };
    return r.at ?? undefined;
  }

  /** Records an attempt: delivered, retried at `nextAttemptAt`, or given up (failed). */
  attempted(id: number, r: { at: number; status: DeliveryStatus; responseStatus: number | null; error: string | null; nextAttemptAt: number }): void {
    this.db
      .prepare(
        `UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, last_attempt_at = ?, response_status = ?, error = ?, next_attempt_at = ?,
           finished_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END
         WHERE id = ?`,
      )
      .run(r.status, r.at, r.responseStatus, r.error, r.nextAttemptAt, r.status, r.at, id);
  }

  /** Keeps a webhook's latest `keep` finished deliveries (the log is bounded per webhook). */
  trim(webhookId: string, keep: number): void {
    this.db
      .prepare(
        `DELETE FROM webhook_deliveries WHERE webhook_id = ? AND status != 'pending'
           AND id <= (SELECT id FROM webhook_deliveries WHERE webhook_id = ? AND status != 'pending' ORDER BY id DESC LIMIT 1 OFFSET ?)`,
      )
      .run(webhookId, webhookId, keep);
  }
}
