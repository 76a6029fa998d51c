import { AsyncLocalStorage } from 'node:async_hooks';
import type Database from 'better-sqlite3';

export type Dialect = 'sqlite' | 'postgres';

/**
 * The connection every store class queries through: one per server, over SQLite (better-sqlite3,
 * sqlite.ts below) or PostgreSQL (pg.ts). Statements are written once with `?` placeholders in the
 * SQL both databases share; where they differ (JSON, sequences) a store asks `dialect`.
 *
 * `transaction(fn)` runs `fn` in one database transaction: every query made while `fn` runs (by any
 * store, through any await) belongs to it (an AsyncLocalStorage carries it), and `fn` may nest
 * further `transaction` calls, which join the outer one. Nothing outside `fn` sees its writes before
 * it commits.
 */
export interface Sql {
  readonly dialect: Dialect;
  all<T>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  get<T>(sql: string, params?: readonly unknown[]): Promise<T | undefined>;
  /** Runs a statement; resolves to the number of rows it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>;
  transaction<T>(fn: () => Promise<T>): Promise<T>;
  /** Calls `fn` once the current transaction commits (at once when none is open; never on rollback). */
  afterCommit(fn: () => void): void;
  close(): Promise<void>;
}

/** What AsyncLocalStorage carries while a transaction runs. */
export interface TxContext<C> {
  conn: C;
  /** Over: a query still carrying it (work `fn` left running) goes outside the transaction. */
  done: boolean;
  onCommit: Array<() => void>;
}

/** Runs the callbacks of a committed transaction outside its async context. */
export function runCommitted(als: AsyncLocalStorage<unknown>, fns: Array<() => void>): void {
  if (fns.length) als.exit(() => setImmediate(() => fns.forEach((f) => f())));
}

/**
 * SQLite through better-sqlite3: one synchronous connection. A transaction holds it from BEGIN to
 * COMMIT across the awaits in `fn`, so a query from outside the transaction waits for it (a FIFO
 * queue) rather than slipping into it. Outside transactions, queries run at once, as before.
 */
export class SqliteSql implements Sql {
  readonly dialect = 'sqlite';
  private readonly als = new AsyncLocalStorage<TxContext<null>>();
  /** Settles when the open transaction (if any) and the ones queued behind it are over. */
  private tail: Promise<void> = Promise.resolve();
  private open = 0;

  constructor(readonly db: Database.Database) {}

  private inTx(): boolean {
    const t = this.als.getStore();
    return t !== undefined && !t.done;
  }

  private async ready(): Promise<void> {
    while (this.open > 0 && !this.inTx()) await this.tail;
  }

  async all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    await this.ready();
    return this.db.prepare(sql).all(...params) as T[];
  }

  async get<T>(sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
    await this.ready();
    return this.db.prepare(sql).get(...params) as T | undefined;
  }

  async run(sql: string, params: readonly unknown[] = []): Promise<number> {
    await this.ready();
    return this.db.prepare(sql).run(...params).changes;
  }

  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    if (this.inTx()) return fn();
    this.open++;
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    const ctx: TxContext<null> = { conn: null, done: false, onCommit: [] };
    try {
      await prev;
      this.db.exec('BEGIN IMMEDIATE');
      let out: T;
      try {
        out = await this.als.run(ctx, fn);
        ctx.done = true;
        this.db.exec('COMMIT');
      } catch (err) {
        ctx.done = true;
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw err;
      }
      runCommitted(this.als as AsyncLocalStorage<unknown>, ctx.onCommit);
      return out;
    } finally {
      this.open--;
      release();
    }
  }

  afterCommit(fn: () => void): void {
    const t = this.als.getStore();
    if (t && !t.done) t.onCommit.push(fn);
    else runCommitted(this.als as AsyncLocalStorage<unknown>, [fn]);
  }

  async close(): Promise<void> {
    await this.tail;
    this.db.close();
  }
}

/** `INSERT INTO table (keys) VALUES (?, ...)` of a row given as column -> value. */
export function insertSql(table: string, row: Record<string, unknown>, suffix = ''): [string, unknown[]] {
  const cols = Object.keys(row);
  return [`INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})${suffix ? ` ${suffix}` : ''}`, Object.values(row)];
}

/** A condition "the JSON object in `column` has `key` = `value`" (metadata filters). */
export function jsonFieldEquals(dialect: Dialect, column: string, key: string, value: string): [string, unknown[]] {
  return dialect === 'postgres' ? [`(${column}::jsonb ->> ?) = ?`, [key, value]] : [`json_extract(${column}, ?) = ?`, [`$.${JSON.stringify(key)}`, value]];
}

/** `column IN (?, ...)` over `values` (never empty). */
export function inList(column: string, values: readonly unknown[]): string {
  return `${column} IN (${values.map(() => '?').join(',')})`;
}
