/**
 * The real server with its control-plane records in PostgreSQL (`serve --database`): a private
 * cluster of this file (test/postgres.ts), real VMs.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, Snapshot } from 'nullspace';
import { startPostgres, type PgCluster } from './postgres.js';
import { cleanupDataDir, freePort, serverProcess, tempDataDir } from './servers.js';

let cluster: PgCluster;
beforeAll(() => {
  cluster = startPostgres();
}, 120_000);
afterAll(() => cluster?.stop());

async function rows<T>(url: string, sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql)).rows as T[];
  } finally {
    await c.end();
  }
}

describe('a server on PostgreSQL', () => {
  it('create, command, snapshot and restore, hibernate and resume, kill; a restart on the same database finds its records', async () => {
    const url = await cluster.createDatabase();
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const key = 'pgstore-key-0123456789abcdef';
    const port = freePort();
    let srv = await serverProcess(dataDir, key, port, {}, ['--database', url]);
    expect(srv.output()).toContain('; database postgres://nullspace@localhost/');
    const c = { apiUrl: srv.url, apiKey: key };

    const s = await Sandbox.create({ ...c, metadata: { suite: 'pgstore' } });
    expect((await s.commands.run('echo hello from pg')).stdout).toBe('hello from pg\n');
    await s.files.write('/workspace/a', 'A');
    const snap = await s.createSnapshot({ metadata: { kind: 'pg' } });
    const restored = await Sandbox.create({ ...c, snapshotId: snap.id });
    expect(await restored.files.read('/workspace/a')).toBe('A');
    await s.files.write('/workspace/b', 'B');
    await s.hibernate();
    expect((await Sandbox.getInfo(s.sandboxId, c)).state).toBe('paused');
    const back = await Sandbox.connect(s.sandboxId, c);
    expect(await back.files.read('/workspace/b')).toBe('B');
    await restored.kill();

    // the records are in PostgreSQL, and the data dir has no SQLite database
    expect(fs.existsSync(path.join(dataDir, 'nullspace.db'))).toBe(false);
    const states = await rows<{ id: string; state: string }>(url, 'SELECT id, state FROM sandboxes ORDER BY created_at');
    expect(states).toEqual([
      { id: s.sandboxId, state: 'running' },
      { id: restored.sandboxId, state: 'killed' },
    ]);
    const types = (await rows<{ type: string }>(url, `SELECT type FROM events WHERE sandbox_id = '${s.sandboxId}' ORDER BY id`)).map((r) => r.type);
    expect(types).toEqual(['created', 'snapshotted', 'paused', 'resumed']);

    // a restart (kill -9: nothing flushed on the way out) on the same database re-adopts the running sandbox
    await srv.kill();
    srv = await serverProcess(dataDir, key, port, {}, ['--database', url]);
    expect((await Sandbox.getInfo(s.sandboxId, c)).state).toBe('running');
    expect((await Sandbox.getInfo(restored.sandboxId, c)).state).toBe('killed');
    const listed: string[] = [];
    for await (const x of Snapshot.list({ ...c, metadata: { kind: 'pg' } })) listed.push(x.id);
    expect(listed).toEqual([snap.id]);
    const again = await Sandbox.connect(s.sandboxId, c);
    expect((await again.commands.run('cat /workspace/a /workspace/b')).stdout).toBe('AB');
    await again.kill();
    expect((await rows<{ state: string }>(url, `SELECT state FROM sandboxes WHERE id = '${s.sandboxId}'`))[0]!.state).toBe('killed');
  });
});
