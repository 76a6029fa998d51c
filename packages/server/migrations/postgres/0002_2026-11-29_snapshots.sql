-- PostgreSQL twin of ../0002_2026-11-29_snapshots.sql
CREATE TABLE layers (
  id          TEXT PRIMARY KEY,
  kind        TEXT NOT NULL CHECK (kind IN ('disk', 'mem', 'state')),
  path        TEXT NOT NULL UNIQUE,
  parent_id   TEXT REFERENCES layers (id),
  bytes       BIGINT NOT NULL,
  created_at  BIGINT NOT NULL
);
CREATE INDEX layers_parent ON layers (parent_id);

CREATE TABLE snapshots (
  id            TEXT PRIMARY KEY,
  sandbox_id    TEXT NOT NULL,
  kind          TEXT NOT NULL CHECK (kind IN ('reusable', 'hibernate', 'fork')),
  template      TEXT NOT NULL,
  metadata      TEXT NOT NULL DEFAULT '{}',
  envs          TEXT NOT NULL DEFAULT '{}',
  mem_layer     TEXT NOT NULL REFERENCES layers (id),
  state_layer   TEXT NOT NULL REFERENCES layers (id),
  disk_layer    TEXT NOT NULL REFERENCES layers (id),
  vm_config     TEXT NOT NULL,
  requirements  TEXT NOT NULL,
  pause_ms      BIGINT,
  created_at    BIGINT NOT NULL
);
CREATE INDEX snapshots_sandbox ON snapshots (sandbox_id, created_at);
CREATE INDEX snapshots_created ON snapshots (created_at, id);

ALTER TABLE sandboxes ADD COLUMN disk_parent_layer TEXT REFERENCES layers (id);
