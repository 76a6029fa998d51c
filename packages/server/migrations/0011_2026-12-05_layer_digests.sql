-- The sha256 (hex) of a layer's file: layers are immutable once recorded, so it is computed once, at
-- the layer's first export (GET /v1/artifacts/snapshots/{id}/manifest), or taken from the manifest a
-- layer was imported with (checked while it was fetched). NULL: not computed yet.
ALTER TABLE layers ADD COLUMN sha256 TEXT;
