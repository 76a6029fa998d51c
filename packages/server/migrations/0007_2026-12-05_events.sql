-- The public event log (GET /v1/events, webhooks): every lifecycle change users see, in order. Pruned
-- by age and count (NULLSPACE_EVENT_RETENTION_MS, NULLSPACE_EVENT_MAX).
CREATE TABLE events (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,   -- monotonic: the SSE event id
  type        TEXT NOT NULL,
  sandbox_id  TEXT NOT NULL,
  at          INTEGER NOT NULL,                    -- ms since epoch
  data        TEXT NOT NULL DEFAULT '{}'           -- JSON object
);
CREATE INDEX events_sandbox ON events (sandbox_id, id);

-- Webhook subscriptions: events of the listed types (JSON array; [] is every type) are POSTed to url,
-- signed with secret.
CREATE TABLE webhooks (
  id          TEXT PRIMARY KEY,
  url         TEXT NOT NULL,
  events      TEXT NOT NULL DEFAULT '[]',
  secret      TEXT NOT NULL,
  created_at  INTEGER NOT NULL
);

-- The outbox and the delivery log: one row per (webhook, event), written in the event's own
-- transaction, delivered in id order per webhook by the background worker.
CREATE TABLE webhook_deliveries (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  event_id         INTEGER NOT NULL,
  event_type       TEXT NOT NULL,
  body             TEXT NOT NULL,                  -- the JSON body sent (the same on every attempt)
  status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  INTEGER NOT NULL,
  last_attempt_at  INTEGER,
  response_status  INTEGER,
  error            TEXT,
  created_at       INTEGER NOT NULL,
  finished_at      INTEGER
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, status, id);
