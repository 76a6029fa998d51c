-- Egress rules: each sandbox's allowOut/denyOut lists (JSON {"allowOut": [...], "denyOut": [...]},
-- NULL without rules), and the connections refused by them in its VM lives that ended (the live
-- VM's own count is added when the sandbox is read).
ALTER TABLE sandboxes ADD COLUMN egress TEXT;
ALTER TABLE sandboxes ADD COLUMN egress_refused INTEGER NOT NULL DEFAULT 0;
