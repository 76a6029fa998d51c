-- PostgreSQL twin of ../0005_2026-11-29_volumes.sql
CREATE TABLE volumes (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  created_at  BIGINT NOT NULL
);

ALTER TABLE sandboxes ADD COLUMN volumes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE snapshots ADD COLUMN volumes TEXT NOT NULL DEFAULT '[]';
