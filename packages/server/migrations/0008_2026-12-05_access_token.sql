-- A random secret per sandbox, minted at create: what a client of the E2B-compatible envd surface
-- (docs/api.md, "E2B compatibility") shows as X-Access-Token. It lives with the record, so it
-- survives hibernate/resume and server restarts; ended sandboxes keep it (nothing opens them).
ALTER TABLE sandboxes ADD COLUMN access_token TEXT;
