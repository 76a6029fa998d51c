-- PostgreSQL twin of ../0012_2026-12-05_placements.sql
CREATE TABLE placements (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  host_id TEXT NOT NULL,
  view TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  ended_at BIGINT,
  PRIMARY KEY (kind, id, host_id)
);
CREATE INDEX placements_host ON placements (host_id, kind);

ALTER TABLE hosts ADD COLUMN events_cursor BIGINT NOT NULL DEFAULT 0;
