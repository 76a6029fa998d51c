-- PostgreSQL twin of ../0006_2026-12-01_preview.sql
ALTER TABLE sandboxes ADD COLUMN traffic_token TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN allow_public_traffic INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN auto_resume INTEGER NOT NULL DEFAULT 0;
-- sandboxes recorded before: a token of their own (gen_random_uuid: a CSPRNG, PostgreSQL 13+)
UPDATE sandboxes SET traffic_token = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '') WHERE traffic_token = '';
