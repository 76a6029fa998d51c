import path from 'node:path';
import { openDb } from './db.js';
import { EventStore } from './events.js';
import { HostStore } from './hosts.js';
import { PlacementStore } from './placements.js';
import { openPostgres } from './pg.js';
import { SandboxStore, type TransitionEvent } from './sandboxes.js';
import { SnapshotStore } from './snapshots.js';
import { SqliteSql, type Sql } from './sql.js';
import { VolumeStore } from './volumes.js';
import { WebhookStore } from './webhooks.js';

/**
 * The control-plane store: every record the server keeps (sandboxes and their event rows,
 * snapshots and layers, volumes, the public event log, webhooks and their deliveries), behind async
 * methods grouped by kind. All of them query through one `Sql` connection (SQLite or PostgreSQL),
 * so a `transaction` spans any of them.
 */
export interface Store {
  readonly sql: Sql;
  readonly sandboxes: SandboxStore;
  readonly snapshots: SnapshotStore;
  readonly volumes: VolumeStore;
  readonly events: EventStore;
  readonly webhooks: WebhookStore;
  readonly hosts: HostStore;
  readonly placements: PlacementStore;
  transaction<T>(fn: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** Told of every recorded lifecycle step (the test-only lifecycle trace). */
  onTransition?: ((e: TransitionEvent) => void) | undefined;
}

export function storeOver(sql: Sql, opts: StoreOptions = {}): Store {
  return {
    sql,
    sandboxes: new SandboxStore(sql, opts.onTransition),
    snapshots: new SnapshotStore(sql),
    volumes: new VolumeStore(sql),
    events: new EventStore(sql),
    webhooks: new WebhookStore(sql),
    hosts: new HostStore(sql),
    placements: new PlacementStore(sql),
    transaction: (fn) => sql.transaction(fn),
    close: () => sql.close(),
  };
}

/** The SQLite store of a data dir (nullspace.db, created and migrated as needed). */
export async function openSqliteStore(dataDir: string, opts: StoreOptions = {}): Promise<Store> {
  return storeOver(new SqliteSql(await openDb(path.join(dataDir, 'nullspace.db'))), opts);
}

/**
 * The server's store: PostgreSQL when a database URL is configured (`serve --database`,
 * NULLSPACE_DATABASE_URL), else SQLite in the data dir. Pending migrations are applied first.
 */
export async function openStore(config: { dataDir: string; databaseUrl: string | undefined }, opts: StoreOptions = {}): Promise<Store> {
  if (config.databaseUrl) return storeOver(await openPostgres(config.databaseUrl), opts);
  return openSqliteStore(config.dataDir, opts);
}
