-- PostgreSQL twin of ../0007_2026-12-05_events.sql. Event ids come from a sequence; appends take an
-- advisory lock until they commit (store/events.ts), so that ids become visible in order.
CREATE TABLE events (
  id          BIGSERIAL PRIMARY KEY,
  type        TEXT NOT NULL,
  sandbox_id  TEXT NOT NULL,
  at          BIGINT NOT NULL,
  data        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_sandbox ON events (sandbox_id, id);

CREATE TABLE webhooks (
  id          TEXT PRIMARY KEY,
  url         TEXT NOT NULL,
  events      TEXT NOT NULL DEFAULT '[]',
  secret      TEXT NOT NULL,
  created_at  BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
  id               BIGSERIAL PRIMARY KEY,
  webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  event_id         BIGINT NOT NULL,
  event_type       TEXT NOT NULL,
  body             TEXT NOT NULL,
  status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  BIGINT NOT NULL,
  last_attempt_at  BIGINT,
  response_status  INTEGER,
  error            TEXT,
  created_at       BIGINT NOT NULL,
  finished_at      BIGINT
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, status, id);
