-- Snapshot artifacts are layers: RAM images, device states and frozen qcow2 disk layers, all
-- read-only files under <data dir>/layers. A disk layer backs onto its parent layer, or (no parent)
-- onto a template's disk in the cache.
CREATE TABLE layers (
  id          TEXT PRIMARY KEY,
  kind        TEXT NOT NULL CHECK (kind IN ('disk', 'mem', 'state')),
  path        TEXT NOT NULL UNIQUE,
  parent_id   TEXT REFERENCES layers (id),
  bytes       INTEGER NOT NULL,
  created_at  INTEGER NOT NULL
);
CREATE INDEX layers_parent ON layers (parent_id);

-- A snapshot is metadata over three layers captured at one paused instant. Deleting a snapshot
-- deletes this row at once; its layers go when nothing references them (see gc.ts).
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
  vm_config     TEXT NOT NULL,   -- JSON: kernel, initrd, cmdline, memoryMiB, vcpus, diskSizeBytes, allowInternetAccess
  requirements  TEXT NOT NULL,   -- JSON RestoreRequirements
  pause_ms      INTEGER,
  created_at    INTEGER NOT NULL
);
CREATE INDEX snapshots_sandbox ON snapshots (sandbox_id, created_at);
CREATE INDEX snapshots_created ON snapshots (created_at, id);

-- The frozen layer a sandbox's active overlay backs onto (NULL: its template's disk).
ALTER TABLE sandboxes ADD COLUMN disk_parent_layer TEXT REFERENCES layers (id);
