-- Where the fleet's objects live (docs/ARCHITECTURE.md "Fleet"): which joined host runs a sandbox,
-- which hosts hold a copy of a snapshot, which host a volume lives on. Sandboxes of the control
-- plane's own host ("local") have no row. `view` is the last view of the object the control plane
-- saw (JSON): what it shows while the host is lost. `ended_at`: a sandbox killed through the control
-- plane (while its host was lost: a host that comes back is told to kill it).
CREATE TABLE placements (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  host_id TEXT NOT NULL,
  view TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  ended_at INTEGER,
  PRIMARY KEY (kind, id, host_id)
);
CREATE INDEX placements_host ON placements (host_id, kind);

-- The last event of each host the control plane relayed into its own event log (fleet/relay.ts):
-- advanced by a conditional update in the transaction that appends the event, so that of several
-- control planes on one database exactly one relays each event, and a restart resumes after it.
ALTER TABLE hosts ADD COLUMN events_cursor INTEGER NOT NULL DEFAULT 0;
