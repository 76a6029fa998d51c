-- Sandboxes: one row per sandbox ever created (ended ones are pruned after a retention period).
CREATE TABLE sandboxes (
  id              TEXT PRIMARY KEY,
  state           TEXT NOT NULL,
  template        TEXT NOT NULL,
  snapshot_id     TEXT,
  metadata        TEXT NOT NULL DEFAULT '{}',   -- JSON object of strings
  envs            TEXT NOT NULL DEFAULT '{}',   -- JSON object of strings (default environment)
  memory_mib      INTEGER NOT NULL,
  vcpus           INTEGER NOT NULL,
  allow_internet  INTEGER NOT NULL,
  timeout_ms      INTEGER NOT NULL,
  created_at      INTEGER NOT NULL,             -- ms since epoch
  started_at      INTEGER,
  expires_at      INTEGER,
  ended_at        INTEGER,
  end_reason      TEXT,
  error_code      TEXT,
  pid             INTEGER,
  identity        TEXT NOT NULL,                -- JSON {machineId, bootId}
  vm_spec         TEXT,                         -- JSON VmSpec of the running VM
  requirements    TEXT,                         -- JSON RestoreRequirements
  updated_at      INTEGER NOT NULL
);
CREATE INDEX sandboxes_state ON sandboxes (state);
CREATE INDEX sandboxes_created ON sandboxes (created_at, id);

-- Lifecycle transitions, for operators (what happened to a sandbox and why).
CREATE TABLE sandbox_events (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  sandbox_id  TEXT NOT NULL,
  at          INTEGER NOT NULL,
  from_state  TEXT,
  to_state    TEXT NOT NULL,
  reason      TEXT
);
CREATE INDEX sandbox_events_sandbox ON sandbox_events (sandbox_id, seq);
