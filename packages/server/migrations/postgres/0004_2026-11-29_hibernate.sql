-- PostgreSQL twin of ../0004_2026-11-29_hibernate.sql
ALTER TABLE sandboxes ADD COLUMN on_timeout TEXT NOT NULL DEFAULT 'kill' CHECK (on_timeout IN ('kill', 'hibernate'));
ALTER TABLE sandboxes ADD COLUMN remaining_ms BIGINT;
ALTER TABLE sandboxes ADD COLUMN paused_at BIGINT;
