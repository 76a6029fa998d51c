import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

/** Debian's PostgreSQL (the `postgresql` package: scripts/setup.sh installs it). */
export const PG_BIN = process.env.NULLSPACE_PG_BIN || '/usr/lib/postgresql/15/bin';

/** A private PostgreSQL cluster of a test file. */
export interface PgCluster {
  /** The cluster's directory: its data, log and unix socket (it listens on no TCP port). */
  dir: string;
  /** postgres:// URL of database `db` (default: the maintenance database `postgres`). */
  url(db?: string): string;
  /** Creates a fresh, empty database; resolves to its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Stops the cluster at once and removes its directory (idempotent). */
  stop(): void;
}

/**
 * initdb refuses to run as root: when the tests run as root, the cluster belongs to the
 * `postgres` user the Debian package creates (or `nobody`), and runs as it.
 */
function clusterUser(): { name: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ['postgres', 'nobody']) {
    const r = spawnSync('id', ['-u', name], { encoding: 'utf8' });
    if (r.status === 0) {
      const uid = Number(r.stdout.trim());
      const gid = Number(spawnSync('id', ['-g', name], { encoding: 'utf8' }).stdout.trim());
      return { name, uid, gid };
    }
  }
  throw new Error('tests run as root and there is neither a postgres nor a nobody user to run PostgreSQL as');
}

function run(user: string | undefined, bin: string, args: string[]): string {
  const cmd = user ? 'runuser' : path.join(PG_BIN, bin);
  const full = user ? ['-u', user, '--', path.join(PG_BIN, bin), ...args] : args;
  return execFileSync(cmd, full, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Starts a PostgreSQL cluster of its own for a test file (one per file: initdb takes a second or
 * two): initdb in a new directory under /tmp (a short path, for the socket), listening only on a
 * unix socket there, trust authentication (nothing else can reach the socket's directory), fsync
 * off (the tests never need durability across a power cut). `stop` (call it in afterAll) removes it;
 * should the process end without, an exit hook stops it.
 */
export function startPostgres(): PgCluster {
  if (!fs.existsSync(path.join(PG_BIN, 'initdb'))) throw new Error(`PostgreSQL is not installed (${PG_BIN}/initdb): scripts/setup.sh installs the postgresql package`);
  const user = clusterUser();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nspg-'));
  const data = path.join(dir, 'data');
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', stop);
    if (fs.existsSync(path.join(data, 'postmaster.pid'))) {
      try {
        run(user?.name, 'pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        /* not running */
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  try {
    fs.chmodSync(dir, 0o700);
    if (user) fs.chownSync(dir, user.uid, user.gid);
    run(user?.name, 'initdb', ['-D', data, '-U', 'nullspace', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
    const opts = `-c listen_addresses='' -k ${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100`;
    run(user?.name, 'pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-o', opts, '-w', '-t', '60', 'start']);
  } catch (err) {
    const log = fs.existsSync(path.join(dir, 'log')) ? fs.readFileSync(path.join(dir, 'log'), 'utf8') : '';
    stop();
    throw new Error(`starting PostgreSQL failed: ${(err as Error).message}\n${log}`);
  }
  const url = (db = 'postgres') => `postgres://nullspace@localhost/${db}?host=${encodeURIComponent(dir)}`;
  return {
    dir,
    url,
    stop,
    async createDatabase(name = `t_${randomBytes(6).toString('hex')}`) {
      const c = new pg.Client({ connectionString: url() });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return url(name);
    },
  };
}
