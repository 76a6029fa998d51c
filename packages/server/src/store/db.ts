import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

export type Db = Database.Database;

export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

/**
 * Opens (creating) the SQLite database and applies pending migrations: plain SQL files named
 * NNNN_date_name.sql, applied in order, each in one transaction, recorded in schema_migrations.
 */
export function openDb(file: string, migrationsDir = MIGRATIONS_DIR): Db {
  const db = new Database(file);
  fs.chmodSync(file, 0o600);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`);
  const applied = new Set((db.prepare('SELECT name FROM schema_migrations').all() as Array<{ name: string }>).map((r) => r.name));
  const files = fs.readdirSync(migrationsDir).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
  for (const f of files) {
    if (applied.has(f)) continue;
    const sql = fs.readFileSync(path.join(migrationsDir, f), 'utf8');
    db.transaction(() => {
      db.exec(sql);
      db.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)').run(f, Date.now());
    })();
  }
  return db;
}

/** What a data dir's database holds: rows per table, and the sandbox records that have ended. */
export interface StoreCounts {
  sandboxes: number;
  endedSandboxes: number;
  sandbox_events: number;
  snapshots: number;
  layers: number;
  volumes: number;
}

/**
 * Counts the rows of a data dir's database, read-only (a server may have it open, or have stopped):
 * for operators' checks such as the soak's leftovers.
 */
export function storeCounts(dataDir: string): StoreCounts {
  const db = new Database(path.join(dataDir, 'nullspace.db'), { readonly: true, fileMustExist: true });
  try {
    const n = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
    return {
      sandboxes: n('SELECT COUNT(*) AS n FROM sandboxes'),
      endedSandboxes: n(`SELECT COUNT(*) AS n FROM sandboxes WHERE state IN ('killed', 'failed')`),
      sandbox_events: n('SELECT COUNT(*) AS n FROM sandbox_events'),
      snapshots: n('SELECT COUNT(*) AS n FROM snapshots'),
      layers: n('SELECT COUNT(*) AS n FROM layers'),
      volumes: n('SELECT COUNT(*) AS n FROM volumes'),
    };
  } finally {
    db.close();
  }
}
