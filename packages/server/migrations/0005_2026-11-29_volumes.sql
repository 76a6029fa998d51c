-- Shared volumes: durable host directories (<data dir>/volumes/<id>) mounted into sandboxes over 9p.
CREATE TABLE volumes (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  created_at  INTEGER NOT NULL
);

-- The volumes a sandbox mounts and a snapshot expects: JSON arrays of
-- {volumeId, name, path, tag, slot}.
ALTER TABLE sandboxes ADD COLUMN volumes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE snapshots ADD COLUMN volumes TEXT NOT NULL DEFAULT '[]';
