import { insertSql, type Sql } from './sql.js';

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
  constructor(private readonly sql: Sql) {}

  async insert(w: WebhookRecord): Promise<void> {
    await this.sql.run(...insertSql('webhooks', { id: w.id, url: w.url, events: JSON.stringify(w.events), secret: w.secret, created_at: w.createdAt }));
  }

  async get(id: string): Promise<WebhookRecord | undefined> {
    const r = await this.sql.get<HookRow>('SELECT * FROM webhooks WHERE id = ?', [id]);
    return r ? hook(r) : undefined;
  }

  async list(): Promise<WebhookRecord[]> {
    return (await this.sql.all<HookRow>('SELECT * FROM webhooks ORDER BY created_at, id')).map(hook);
  }

  async count(): Promise<number> {
    return Number((await this.sql.get<{ n: number }>('SELECT COUNT(*) AS n FROM webhooks'))!.n);
  }

  /** Deletes a webhook and its deliveries (pending ones are never sent). */
  async delete(id: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM webhooks WHERE id = ?', [id])) === 1;
  }

  async delivery(id: number): Promise<DeliveryRecord | undefined> {
    const r = await this.sql.get<DeliveryRow>('SELECT * FROM webhook_deliveries WHERE id = ?', [id]);
    return r ? delivery(r) : undefined;
  }

  /** A webhook's deliveries, newest first, older than `before` (a delivery id) when given. */
  async deliveries(webhookId: string, limit: number, before?: number): Promise<DeliveryRecord[]> {
    const rows = await this.sql.all<DeliveryRow>(
      `SELECT * FROM webhook_deliveries WHERE webhook_id = ? ${before !== undefined ? 'AND id < ?' : ''} ORDER BY id DESC LIMIT ?`,
      before !== undefined ? [webhookId, before, limit] : [webhookId, limit],
    );
    return rows.map(delivery);
  }

  /**
   * For each webhook, its oldest pending delivery when that one is due by `now`: deliveries of one
   * webhook go out one at a time, in event order (a later one waits while an earlier one is retried).
   */
  async due(now: number): Promise<DeliveryRecord[]> {
    const rows = await this.sql.all<DeliveryRow>(
      `SELECT d.* FROM webhook_deliveries d
       JOIN (SELECT webhook_id, MIN(id) AS id FROM webhook_deliveries WHERE status = 'pending' GROUP BY webhook_id) h ON h.id = d.id
       WHERE d.next_attempt_at <= ? ORDER BY d.id`,
      [now],
    );
    return rows.map(delivery);
  }

  /** When the next pending delivery of any webhook is due (undefined: none pending). */
  async nextDueAt(): Promise<number | undefined> {
    const r = await this.sql.get<{ at: number | null }>(
      `SELECT MIN(d.next_attempt_at) AS at FROM webhook_deliveries d
       JOIN (SELECT webhook_id, MIN(id) AS id FROM webhook_deliveries WHERE status = 'pending' GROUP BY webhook_id) h ON h.id = d.id`,
    );
    return r?.at ?? undefined;
  }

  /** Records an attempt: delivered, retried at `nextAttemptAt`, or given up (failed). */
  async attempted(id: number, r: { at: number; status: DeliveryStatus; responseStatus: number | null; error: string | null; nextAttemptAt: number }): Promise<void> {
    await this.sql.run(
      `UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, last_attempt_at = ?, response_status = ?, error = ?, next_attempt_at = ?,
         finished_at = CASE WHEN ? = 'pending' THEN NULL ELSE CAST(? AS BIGINT) END
       WHERE id = ?`,
      [r.status, r.at, r.responseStatus, r.error, r.nextAttemptAt, r.status, r.at, id],
    );
  }

  /** Keeps a webhook's latest `keep` finished deliveries (the log is bounded per webhook). */
  async trim(webhookId: string, keep: number): Promise<void> {
    await this.sql.run(
      `DELETE FROM webhook_deliveries WHERE webhook_id = ? AND status != 'pending'
         AND id <= (SELECT id FROM webhook_deliveries WHERE webhook_id = ? AND status != 'pending' ORDER BY id DESC LIMIT 1 OFFSET ?)`,
      [webhookId, webhookId, keep],
    );
  }
}
