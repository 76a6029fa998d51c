-- The sandbox a fork child was forked from.
ALTER TABLE sandboxes ADD COLUMN forked_from TEXT;
