import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type Database from 'better-sqlite3';
import type { Dialect } from './sql.js';

/**
 * Versioned migrations: plain SQL files named NNNN_date_name.sql, applied in order, each in one
 * transaction, recorded by name in schema_migrations. SQLite's are in migrations/, PostgreSQL's in
 * migrations/postgres/ under the same names: every migration exists in both dialects (the store
 * test checks it), so that both databases always have the same schema version.
 */
export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

export function migrationsDir(dialect: Dialect, root = MIGRATIONS_DIR): string {
  return dialect === 'postgres' ? path.join(root, 'postgres') : root;
}

/** The migration files of a directory, in order. */
export function migrationNames(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d{4}_.*\.sql$/.test(f))
    .sort();
}

/** What the runner needs of a database. */
export interface MigrationTarget {
  /** Runs `fn` holding the database's migration lock (two processes starting together take turns). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** Names already applied (creates schema_migrations when missing). */
  applied(): Promise<Set<string>>;
  /** Runs `sql` and records `name` as applied, in one transaction. */
  apply(name: string, sql: string): Promise<void>;
}

/** Applies the pending migrations of `dir` to `target`; resolves to the names applied. */
export async function migrate(target: MigrationTarget, dir: string): Promise<string[]> {
  const names = migrationNames(dir);
  return target.exclusive(async () => {
    const applied = await target.applied();
    const done: string[] = [];
    for (const name of names) {
      if (applied.has(name)) continue;
      await target.apply(name, fs.readFileSync(path.join(dir, name), 'utf8'));
      done.push(name);
    }
    return done;
  });
}

const CREATE_TABLE = 'CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)';

/**
 * SQLite: one process opens a data dir's database (the server's data dir lock), so the lock is the
 * write transaction each migration runs in (BEGIN IMMEDIATE), which also re-checks it is pending.
 */
export function sqliteTarget(db: Database.Database): MigrationTarget {
  return {
    exclusive: (fn) => fn(),
    applied: async () => {
      db.exec(CREATE_TABLE);
      return new Set((db.prepare('SELECT name FROM schema_migrations').all() as Array<{ name: string }>).map((r) => r.name));
    },
    apply: async (name, sql) => {
      db.transaction(() => {
        if (db.prepare('SELECT 1 FROM schema_migrations WHERE name = ?').get(name)) return;
        db.exec(sql);
        db.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)').run(name, Date.now());
      }).immediate();
    },
  };
}

/** A PostgreSQL connection as the runner uses it (a pg.Client or a pool's client). */
export interface PgConnection {
  query(sql: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
}

/** The advisory lock key of migrations (any bigint the database's other users do not use). */
export const MIGRATION_LOCK_KEY = 0x6e756c6c_6d6967n.toString(); // "null" "mig"

/**
 * PostgreSQL: the runner holds a session-level advisory lock while it reads and applies, so that
 * control-plane processes starting together against one database apply each migration once; the
 * others wait, then find nothing pending.
 */
export function postgresTarget(conn: PgConnection): MigrationTarget {
  return {
    exclusive: async (fn) => {
      await conn.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
      try {
        return await fn();
      } finally {
        await conn.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]);
      }
    },
    applied: async () => {
      await conn.query(CREATE_TABLE);
      return new Set((await conn.query('SELECT name FROM schema_migrations')).rows.map((r) => String(r.name)));
    },
    apply: async (name, sql) => {
      await conn.query('BEGIN');
      try {
        await conn.query(sql);
        await conn.query('INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)', [name, Date.now()]);
        await conn.query('COMMIT');
      } catch (err) {
        await conn.query('ROLLBACK').catch(() => {});
        throw err;
      }
    },
  };
}
