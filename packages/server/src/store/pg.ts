import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { migrate, migrationsDir, postgresTarget } from './migrate.js';
import { runCommitted, type Sql, type TxContext } from './sql.js';

/** BIGINT (ms since epoch, ids, counts) as a JS number: every value the store keeps fits in 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** `?` placeholders (outside quoted strings) as PostgreSQL's `$1, $2, ...`; cached per statement. */
const converted = new Map<string, string>();
export function toPgPlaceholders(sql: string): string {
  let out = converted.get(sql);
  if (out !== undefined) return out;
  let n = 0;
  let quoted = false;
  out = '';
  for (const ch of sql) {
    if (ch === "'") quoted = !quoted;
    out += ch === '?' && !quoted ? `$${++n}` : ch;
  }
  if (converted.size < 1000) converted.set(sql, out);
  return out;
}

/**
 * PostgreSQL through `pg` (node-postgres): a pool of connections. A transaction takes one of them
 * from BEGIN to COMMIT; queries outside transactions take any. Several control-plane processes may
 * share the database: see `SandboxStore.transition` (conditional updates) and docs/ARCHITECTURE.md.
 */
export class PgSql implements Sql {
  readonly dialect = 'postgres';
  private readonly als = new AsyncLocalStorage<TxContext<pg.PoolClient>>();

  constructor(readonly pool: pg.Pool) {}

  private conn(): pg.Pool | pg.PoolClient {
    const t = this.als.getStore();
    return t && !t.done ? t.conn : this.pool;
  }

  private async query<T>(sql: string, params: readonly unknown[]): Promise<pg.QueryResult<T & pg.QueryResultRow>> {
    return this.conn().query<T & pg.QueryResultRow>(toPgPlaceholders(sql), params.map((p) => (p === undefined ? null : p)));
  }

  async all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return (await this.query<T>(sql, params)).rows;
  }

  async get<T>(sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
    return (await this.query<T>(sql, params)).rows[0];
  }

  async run(sql: string, params: readonly unknown[] = []): Promise<number> {
    return (await this.query(sql, params)).rowCount ?? 0;
  }

  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    const cur = this.als.getStore();
    if (cur && !cur.done) return fn();
    const client = await this.pool.connect();
    const ctx: TxContext<pg.PoolClient> = { conn: client, done: false, onCommit: [] };
    let broken = false;
    try {
      await client.query('BEGIN');
      let out: T;
      try {
        out = await this.als.run(ctx, fn);
        ctx.done = true;
        await client.query('COMMIT');
      } catch (err) {
        ctx.done = true;
        await client.query('ROLLBACK').catch(() => (broken = true));
        throw err;
      }
      runCommitted(this.als as AsyncLocalStorage<unknown>, ctx.onCommit);
      return out;
    } finally {
      client.release(broken);
    }
  }

  afterCommit(fn: () => void): void {
    const t = this.als.getStore();
    if (t && !t.done) t.onCommit.push(fn);
    else runCommitted(this.als as AsyncLocalStorage<unknown>, [fn]);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Connects to `url` (postgres://...), applies pending migrations (under their advisory lock). */
export async function openPostgres(url: string, opts: { max?: number } = {}): Promise<PgSql> {
  const pool = new pg.Pool({ connectionString: url, max: opts.max ?? 10, types, application_name: 'nullspace' });
  // (an idle connection that fails, e.g. the database restarted: the pool drops it, the next query reconnects)
  pool.on('error', () => {});
  try {
    const client = await pool.connect();
    try {
      await migrate(postgresTarget(client), migrationsDir('postgres'));
    } finally {
      client.release();
    }
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  return new PgSql(pool);
}
