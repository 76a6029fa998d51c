-- PostgreSQL twin of ../0010_2026-12-05_hosts.sql
CREATE TABLE hosts (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  credential_digest TEXT NOT NULL,
  control_credential TEXT NOT NULL,
  draining INTEGER NOT NULL DEFAULT 0,
  fingerprint TEXT NOT NULL,
  capacity TEXT NOT NULL,
  counts TEXT NOT NULL,
  epoch BIGINT NOT NULL DEFAULT 1,
  joined_at BIGINT NOT NULL,
  last_heartbeat BIGINT NOT NULL,
  lost_at BIGINT,
  fenced_at BIGINT
);
