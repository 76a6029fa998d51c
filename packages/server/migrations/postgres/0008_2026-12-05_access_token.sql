-- PostgreSQL twin of ../0008_2026-12-05_access_token.sql
ALTER TABLE sandboxes ADD COLUMN access_token TEXT;
