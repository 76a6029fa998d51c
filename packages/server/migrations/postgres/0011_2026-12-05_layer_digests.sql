-- PostgreSQL twin of ../0011_2026-12-05_layer_digests.sql
ALTER TABLE layers ADD COLUMN sha256 TEXT;
