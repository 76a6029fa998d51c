-- PostgreSQL twin of ../0003_2026-11-29_fork.sql
ALTER TABLE sandboxes ADD COLUMN forked_from TEXT;
