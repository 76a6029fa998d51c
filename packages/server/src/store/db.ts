import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate, migrationsDir, MIGRATIONS_DIR, sqliteTarget } from './migrate.js';

export type Db = Database.Database;

/** Opens (creating) a SQLite database and applies its pending migrations (migrate.ts). */
export async function openDb(file: string, migrationsRoot = MIGRATIONS_DIR): Promise<Db> {
  const db = new Database(file);
  try {
    fs.chmodSync(file, 0o600);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    await migrate(sqliteTarget(db), migrationsDir('sqlite', migrationsRoot));
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
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
