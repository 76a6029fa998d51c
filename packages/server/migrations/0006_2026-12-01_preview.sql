-- Preview URLs: each sandbox's traffic token (a random secret of its own, never the API key), whether
-- its ports are served without one, and whether a request wakes it when hibernated.
ALTER TABLE sandboxes ADD COLUMN traffic_token TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN allow_public_traffic INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN auto_resume INTEGER NOT NULL DEFAULT 0;
-- sandboxes recorded before: a token of their own
UPDATE sandboxes SET traffic_token = lower(hex(randomblob(24))) WHERE traffic_token = '';
