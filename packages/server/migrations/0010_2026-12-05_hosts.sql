-- Runtime hosts that joined this control plane (docs/ARCHITECTURE.md "Fleet"). The state shown is
-- derived: lost when lost_at is set (no heartbeat for N intervals), else draining or ready. A host
-- that heartbeats again after being lost is fenced: epoch + 1, fenced_at set, lost_at cleared.
-- credential_digest: sha256 (hex) of the credential the host presents; control_credential: the
-- secret the control plane presents to the host's listener (the host keeps only its digest).
CREATE TABLE hosts (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  credential_digest TEXT NOT NULL,
  control_credential TEXT NOT NULL,
  draining INTEGER NOT NULL DEFAULT 0,
  fingerprint TEXT NOT NULL,
  capacity TEXT NOT NULL,
  counts TEXT NOT NULL,
  epoch INTEGER NOT NULL DEFAULT 1,
  joined_at INTEGER NOT NULL,
  last_heartbeat INTEGER NOT NULL,
  lost_at INTEGER,
  fenced_at INTEGER
);
