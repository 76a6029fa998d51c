-- Hibernation: what a sandbox does when its timeout expires, and its remaining timeout while paused.
ALTER TABLE sandboxes ADD COLUMN on_timeout TEXT NOT NULL DEFAULT 'kill' CHECK (on_timeout IN ('kill', 'hibernate'));
ALTER TABLE sandboxes ADD COLUMN remaining_ms INTEGER;
ALTER TABLE sandboxes ADD COLUMN paused_at INTEGER;
