-- PostgreSQL twin of ../0001_2026-11-29_sandboxes.sql (same columns; times and counts are BIGINT,
-- JSON is kept as TEXT like SQLite's, queried with ::jsonb where needed).
CREATE TABLE sandboxes (
  id              TEXT PRIMARY KEY,
  state           TEXT NOT NULL,
  template        TEXT NOT NULL,
  snapshot_id     TEXT,
  metadata        TEXT NOT NULL DEFAULT '{}',
  envs            TEXT NOT NULL DEFAULT '{}',
  memory_mib      INTEGER NOT NULL,
  vcpus           INTEGER NOT NULL,
  allow_internet  INTEGER NOT NULL,
  timeout_ms      BIGINT NOT NULL,
  created_at      BIGINT NOT NULL,
  started_at      BIGINT,
  expires_at      BIGINT,
  ended_at        BIGINT,
  end_reason      TEXT,
  error_code      TEXT,
  pid             INTEGER,
  identity        TEXT NOT NULL,
  vm_spec         TEXT,
  requirements    TEXT,
  updated_at      BIGINT NOT NULL
);
CREATE INDEX sandboxes_state ON sandboxes (state);
CREATE INDEX sandboxes_created ON sandboxes (created_at, id);

CREATE TABLE sandbox_events (
  seq         BIGSERIAL PRIMARY KEY,
  sandbox_id  TEXT NOT NULL,
  at          BIGINT NOT NULL,
  from_state  TEXT,
  to_state    TEXT NOT NULL,
  reason      TEXT
);
CREATE INDEX sandbox_events_sandbox ON sandbox_events (sandbox_id, seq);
