-- PostgreSQL twin of ../0009_2026-12-05_egress.sql
ALTER TABLE sandboxes ADD COLUMN egress TEXT;
ALTER TABLE sandboxes ADD COLUMN egress_refused BIGINT NOT NULL DEFAULT 0;
