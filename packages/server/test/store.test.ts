/**
 * The control-plane store, run against both implementations (SQLite in a temp dir, PostgreSQL in a
 * private cluster of this file): every method the server uses, transactions, migrations, and, on
 * PostgreSQL, several store instances (as several control-plane processes) racing the same moves.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NsError } from '@nullspace/runtime';
import { startPostgres, type PgCluster } from '../../../test/postgres.js';
import { openSqliteStore, storeOver, type Store } from '../src/store/index.js';
import { MIGRATIONS_DIR, migrationNames, migrationsDir } from '../src/store/migrate.js';
import { openPostgres } from '../src/store/pg.js';
import type { SandboxRecord } from '../src/store/sandboxes.js';
import type { LayerRecord, SnapshotRecord } from '../src/store/snapshots.js';
import type { SandboxState } from '../src/sandbox/lifecycle.js';

let cluster: PgCluster | undefined;
const opened: Store[] = [];
const dirs: string[] = [];

beforeAll(() => {
  cluster = startPostgres();
}, 120_000);

afterAll(async () => {
  for (const s of opened) await s.close().catch(() => {});
  cluster?.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const IMPLS = [
  {
    name: 'sqlite',
    open: async (): Promise<Store> => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsstore-'));
      dirs.push(dir);
      const s = await openSqliteStore(dir);
      opened.push(s);
      return s;
    },
  },
  {
    name: 'postgres',
    open: async (url?: string): Promise<Store> => {
      const s = storeOver(await openPostgres(url ?? (await cluster!.createDatabase())));
      opened.push(s);
      return s;
    },
  },
] as const;

let seq = 0;
const T0 = 1_790_000_000_000;

function sandbox(over: Partial<SandboxRecord> = {}): SandboxRecord {
  const n = ++seq;
  return {
    id: `sbx_${String(n).padStart(16, '0')}`,
    state: 'creating',
    template: 'base',
    snapshotId: null,
    metadata: {},
    envs: { A: 'b' },
    memoryMiB: 512,
    vcpus: 1,
    allowInternetAccess: true,
    timeoutMs: 300_000,
    createdAt: T0 + n,
    startedAt: null,
    expiresAt: null,
    endedAt: null,
    endReason: null,
    errorCode: null,
    pid: null,
    identity: { machineId: 'm'.repeat(32), bootId: 'b' },
    vmSpec: null,
    requirements: null,
    diskParentLayer: null,
    forkedFrom: null,
    onTimeout: 'kill',
    remainingMs: null,
    pausedAt: null,
    volumes: [],
    trafficToken: `tok${n}`,
    allowPublicTraffic: false,
    autoResume: false,
    accessToken: `acc${n}`,
    egress: null,
    egressRefused: 0,
    updatedAt: T0 + n,
    ...over,
  };
}

function layer(kind: LayerRecord['kind'], parentId: string | null = null): LayerRecord {
  const n = ++seq;
  return { id: `lyr_${n}`, kind, path: `/layers/lyr_${n}.${kind}`, parentId, bytes: 1000 * n, createdAt: T0 + n };
}

async function snapshotWithLayers(s: Store, sandboxId: string, over: Partial<SnapshotRecord> = {}): Promise<SnapshotRecord> {
  const mem = layer('mem');
  const state = layer('state');
  const disk = layer('disk');
  const n = ++seq;
  const snap: SnapshotRecord = {
    id: `snap_${n}`,
    sandboxId,
    kind: 'reusable',
    template: 'base',
    metadata: {},
    envs: {},
    memLayer: mem.id,
    stateLayer: state.id,
    diskLayer: disk.id,
    vmConfig: { kernel: '/k', initrd: '/i', cmdline: 'c', memoryMiB: 512, vcpus: 1, diskSizeBytes: 1 << 30, allowInternetAccess: true },
    requirements: { arch: 'x86_64' } as unknown as SnapshotRecord['requirements'],
    pauseMs: 12,
    volumes: [],
    createdAt: T0 + n,
    ...over,
  };
  await s.snapshots.transaction(async () => {
    for (const l of [mem, state, disk]) await s.snapshots.insertLayer(l);
    await s.snapshots.insert(snap);
  });
  return snap;
}

const busy = (p: Promise<unknown>) => expect(p).rejects.toMatchObject({ code: 'sandbox_busy' });

describe.each(IMPLS)('the store on $name', (impl) => {
  it('sandboxes: insert, get (every field round-trips), list with filters and pages, states, events', async () => {
    const s = await impl.open();
    const a = sandbox({ metadata: { team: 'x', 'we"ird.key': 'v' }, vmSpec: { disk: '/d' } as unknown as SandboxRecord['vmSpec'], volumes: [{ volumeId: 'vol_1', name: 'v', path: '/mnt', tag: 'v0', slot: 8 }] });
    const b = sandbox({ metadata: { team: 'y' } });
    const c = sandbox({ metadata: { team: 'x' }, createdAt: a.createdAt, id: `${a.id.slice(0, -1)}z` });
    for (const r of [a, b, c]) await s.sandboxes.insert(r);
    expect(await s.sandboxes.get(a.id)).toEqual(a);
    expect(await s.sandboxes.get('sbx_missing')).toBeUndefined();

    // pages in (created_at, id) order, a tie on created_at broken by id
    const p1 = await s.sandboxes.list({ limit: 2 });
    expect(p1.items.map((r) => r.id)).toEqual([a.id, c.id]);
    const p2 = await s.sandboxes.list({ limit: 2, nextToken: p1.nextToken! });
    expect(p2.items.map((r) => r.id)).toEqual([b.id]);
    expect(p2.nextToken).toBeUndefined();
    expect((await s.sandboxes.list({ limit: 10, metadata: { team: 'x' } })).items.map((r) => r.id)).toEqual([a.id, c.id]);
    expect((await s.sandboxes.list({ limit: 10, metadata: { 'we"ird.key': 'v' } })).items.map((r) => r.id)).toEqual([a.id]);
    expect((await s.sandboxes.list({ limit: 10, metadata: { team: 'x', 'we"ird.key': 'no' } })).items).toEqual([]);
    await expect(s.sandboxes.list({ limit: 1, nextToken: 'garbage' })).rejects.toMatchObject({ code: 'bad_request' });

    await s.sandboxes.transition(b.id, 'creating', 'running', 'started', { startedAt: T0 + 100, expiresAt: T0 + 200, pid: 42 });
    expect((await s.sandboxes.list({ limit: 10, states: ['running'] })).items.map((r) => r.id)).toEqual([b.id]);
    expect((await s.sandboxes.inStates(['creating'])).map((r) => r.id)).toEqual([a.id, c.id]);
    expect(await s.sandboxes.get(b.id)).toMatchObject({ state: 'running', startedAt: T0 + 100, expiresAt: T0 + 200, pid: 42 });
    expect((await s.sandboxes.events(b.id)).map((e) => [e.from, e.to, e.reason])).toEqual([
      [null, 'creating', 'created'],
      ['creating', 'running', 'started'],
    ]);
    expect(await s.sandboxes.lastTransitionAt(b.id, 'running')).toBeGreaterThan(0);
    expect(await s.sandboxes.lastTransitionAt(b.id, 'paused')).toBeUndefined();
  });

  it('transition: only from the stored state (sandbox_busy otherwise), only along the lifecycle', async () => {
    const s = await impl.open();
    const r = sandbox();
    await s.sandboxes.insert(r);
    await busy(s.sandboxes.transition(r.id, 'running', 'killing', 'kill'));
    await expect(s.sandboxes.transition(r.id, 'creating', 'paused', 'nope')).rejects.toMatchObject({ code: 'invalid_transition' });
    const moved = await s.sandboxes.transition(r.id, 'creating', 'running', 'started', { vmSpec: { disk: '/x' } as unknown as SandboxRecord['vmSpec'] });
    expect(moved).toMatchObject({ state: 'running', vmSpec: { disk: '/x' } });
    await busy(s.sandboxes.transition('sbx_gone', 'running', 'killing', 'kill'));
    // a failed move records no event row
    expect(await s.sandboxes.events(r.id)).toHaveLength(2);
  });

  it('patch (conditional on the state when asked), expired, pausedBefore, pruneEnded', async () => {
    const s = await impl.open();
    const r = sandbox();
    await s.sandboxes.insert(r);
    await s.sandboxes.transition(r.id, 'creating', 'running', 'started', { expiresAt: T0 + 10 });
    expect(await s.sandboxes.patch(r.id, { timeoutMs: 5, expiresAt: T0 + 20 })).toBe(true);
    expect(await s.sandboxes.patch(r.id, { timeoutMs: 6 }, ['paused'])).toBe(false);
    expect(await s.sandboxes.get(r.id)).toMatchObject({ timeoutMs: 5, expiresAt: T0 + 20 });
    expect(await s.sandboxes.patch(r.id, { timeoutMs: 7 }, ['running', 'paused'])).toBe(true);
    expect((await s.sandboxes.expired(T0 + 19)).map((x) => x.id)).not.toContain(r.id);
    expect((await s.sandboxes.expired(T0 + 20)).map((x) => x.id)).toContain(r.id);

    await s.sandboxes.transition(r.id, 'running', 'hibernating', 'hibernate');
    await s.sandboxes.transition(r.id, 'hibernating', 'paused', 'hibernated', { pausedAt: T0 + 50, remainingMs: 99, pid: null });
    expect((await s.sandboxes.pausedBefore(T0 + 51)).map((x) => x.id)).toEqual([r.id]);
    expect(await s.sandboxes.pausedBefore(T0 + 50)).toEqual([]);

    await s.sandboxes.transition(r.id, 'paused', 'killing', 'kill');
    await s.sandboxes.transition(r.id, 'killing', 'killed', 'killed', { endedAt: T0 + 60, endReason: 'killed by request' });
    expect(await s.sandboxes.pruneEnded(T0 + 60)).toBe(0);
    expect(await s.sandboxes.pruneEnded(T0 + 61)).toBe(1);
    expect(await s.sandboxes.get(r.id)).toBeUndefined();
    expect(await s.sandboxes.events(r.id)).toEqual([]);
  });

  it('snapshots and layers: insert in one transaction, get, list, hibernations, depth, setDiskLayer, delete', async () => {
    const s = await impl.open();
    const r = sandbox();
    await s.sandboxes.insert(r);
    const a = await snapshotWithLayers(s, r.id, { metadata: { k: 'v' } });
    const h1 = await snapshotWithLayers(s, r.id, { kind: 'hibernate' });
    const h2 = await snapshotWithLayers(s, r.id, { kind: 'hibernate' });
    expect(await s.snapshots.get(a.id)).toEqual(a);
    expect((await s.snapshots.hibernations(r.id)).map((x) => x.id)).toEqual([h2.id, h1.id]);
    expect((await s.snapshots.all()).map((x) => x.id).sort()).toEqual([a.id, h1.id, h2.id].sort());
    const p1 = await s.snapshots.list({ sandboxId: r.id, kinds: ['reusable', 'hibernate'], limit: 2 });
    expect(p1.items.map((x) => x.id)).toEqual([a.id, h1.id]);
    expect((await s.snapshots.list({ limit: 2, nextToken: p1.nextToken })).items.map((x) => x.id)).toEqual([h2.id]);
    expect((await s.snapshots.list({ metadata: { k: 'v' }, limit: 10 })).items.map((x) => x.id)).toEqual([a.id]);
    expect((await s.snapshots.list({ kinds: ['fork'], limit: 10 })).items).toEqual([]);

    // a chain of disk layers
    const l1 = layer('disk');
    const l2 = layer('disk', l1.id);
    const l3 = layer('disk', l2.id);
    for (const l of [l1, l2, l3]) await s.snapshots.insertLayer(l);
    expect(await s.snapshots.depth(l3.id)).toBe(3);
    expect(await s.snapshots.depth(null)).toBe(0);
    expect(await s.snapshots.layer(l2.id)).toEqual(l2);
    expect(await s.snapshots.layerByPath(l3.path)).toEqual(l3);
    expect((await s.snapshots.layers()).map((l) => l.id)).toEqual(expect.arrayContaining([l1.id, l2.id, l3.id, a.memLayer]));
    await s.snapshots.setDiskLayer(a.id, l3.id);
    expect((await s.snapshots.get(a.id))!.diskLayer).toBe(l3.id);
    // (a layer in use by a snapshot or a child layer cannot go: the foreign keys hold)
    await expect(s.snapshots.deleteLayer(l2.id)).rejects.toThrow();
    expect(await s.snapshots.delete(a.id)).toBe(true);
    expect(await s.snapshots.delete(a.id)).toBe(false);
    await s.snapshots.deleteLayer(a.memLayer);
    expect(await s.snapshots.layer(a.memLayer)).toBeUndefined();
  });

  it('a transaction spans the stores: all or nothing; afterCommit runs after a commit only', async () => {
    const s = await impl.open();
    const r = sandbox();
    const committed: string[] = [];
    await expect(
      s.transaction(async () => {
        await s.sandboxes.insert(r);
        await s.events.append({ type: 'created', sandboxId: r.id, at: T0, data: {} });
        s.events.afterCommit(() => committed.push('rolled back'));
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await s.sandboxes.get(r.id)).toBeUndefined();
    expect(await s.events.after(0, { sandboxId: r.id }, 10)).toEqual([]);
    await s.transaction(async () => {
      await s.sandboxes.insert(r);
      s.events.afterCommit(() => committed.push('committed'));
      // nested: joins the outer transaction
      await s.transaction(() => s.sandboxes.transition(r.id, 'creating', 'running', 'started'));
    });
    await new Promise((res) => setImmediate(res));
    expect(committed).toEqual(['committed']);
    expect((await s.sandboxes.get(r.id))!.state).toBe('running');
  });

  it('hosts: insert, get, list, heartbeat (a lost host is fenced: epoch + 1), setDraining, markLost', async () => {
    const s = await impl.open();
    const host = (id: string, joinedAt: number) => ({
      id,
      url: `http://10.0.0.${joinedAt - T0}:7071`,
      credentialDigest: 'd'.repeat(64),
      controlCredential: 'c'.repeat(40),
      draining: false,
      fingerprint: { cpuModel: 'max' },
      capacity: { memoryMiB: 1024 },
      counts: { sandboxes: 0 },
      epoch: 1,
      joinedAt,
      lastHeartbeat: joinedAt,
      lostAt: null,
      fencedAt: null,
    });
    await s.hosts.insert(host('host_b', T0 + 2));
    await s.hosts.insert(host('host_a', T0 + 1));
    expect(await s.hosts.get('host_a')).toEqual(host('host_a', T0 + 1));
    expect(await s.hosts.get('host_nope')).toBeUndefined();
    expect((await s.hosts.list()).map((h) => h.id)).toEqual(['host_a', 'host_b']);
    // a heartbeat of a host that is not lost: no fencing
    const hb = { url: 'http://10.0.0.9:7071', fingerprint: { cpuModel: 'qemu64' }, capacity: { memoryMiB: 2048 }, counts: { sandboxes: 3 } };
    expect(await s.hosts.heartbeat('host_a', T0 + 10, hb)).toMatchObject({ ...hb, lastHeartbeat: T0 + 10, epoch: 1, lostAt: null, fencedAt: null });
    // lost: only those not lost yet and silent since before the bound
    expect(await s.hosts.markLost(T0 + 5, T0 + 20)).toEqual(['host_b']);
    expect(await s.hosts.markLost(T0 + 5, T0 + 21)).toEqual([]);
    expect((await s.hosts.get('host_b'))?.lostAt).toBe(T0 + 20);
    // back: fenced in the same statement
    expect(await s.hosts.heartbeat('host_b', T0 + 30, hb)).toMatchObject({ epoch: 2, lostAt: null, fencedAt: T0 + 30, lastHeartbeat: T0 + 30 });
    expect(await s.hosts.heartbeat('host_b', T0 + 31, hb)).toMatchObject({ epoch: 2, fencedAt: T0 + 30 });
    expect(await s.hosts.heartbeat('host_nope', T0 + 31, hb)).toBeUndefined();
    expect((await s.hosts.setDraining('host_a', true))?.draining).toBe(true);
    expect((await s.hosts.setDraining('host_a', false))?.draining).toBe(false);
    expect(await s.hosts.setDraining('host_nope', true)).toBeUndefined();
    // the event relay's cursor: moved only from where the mover saw it (one relay per event)
    expect(await s.hosts.eventsCursor('host_a')).toBe(0);
    expect(await s.hosts.advanceEventsCursor('host_a', 0, 7)).toBe(true);
    expect(await s.hosts.advanceEventsCursor('host_a', 0, 8)).toBe(false);
    expect(await s.hosts.eventsCursor('host_a')).toBe(7);
    expect(await s.hosts.eventsCursor('host_nope')).toBe(0);
  });

  it('placements: put (a view refreshed, never a second row), of (each copy), list, onHost, end once, remove', async () => {
    const s = await impl.open();
    await s.placements.put('sandbox', 'sbx_a', 'host_1', { state: 'running' }, T0 + 1);
    await s.placements.put('sandbox', 'sbx_b', 'host_2', { state: 'running' }, T0 + 2);
    await s.placements.put('sandbox', 'sbx_a', 'host_1', { state: 'paused' }, T0 + 3);
    expect(await s.placements.of('sandbox', 'sbx_a')).toEqual([{ kind: 'sandbox', id: 'sbx_a', hostId: 'host_1', view: { state: 'paused' }, createdAt: T0 + 1, endedAt: null }]);
    expect(await s.placements.of('sandbox', 'sbx_nope')).toEqual([]);
    // a snapshot's copies
    await s.placements.put('snapshot', 'snap_x', 'host_2', { k: 1 }, T0 + 4);
    await s.placements.put('snapshot', 'snap_x', 'host_1', { k: 1 }, T0 + 5);
    expect((await s.placements.of('snapshot', 'snap_x')).map((p) => p.hostId)).toEqual(['host_2', 'host_1']);
    expect((await s.placements.list('sandbox')).map((p) => p.id)).toEqual(['sbx_a', 'sbx_b']);
    expect((await s.placements.onHost('host_1')).map((p) => `${p.kind}:${p.id}`)).toEqual(['sandbox:sbx_a', 'snapshot:snap_x']);
    expect(await s.placements.end('sandbox', 'sbx_a', T0 + 9)).toBe(true);
    expect(await s.placements.end('sandbox', 'sbx_a', T0 + 10)).toBe(false);
    expect((await s.placements.of('sandbox', 'sbx_a'))[0]?.endedAt).toBe(T0 + 9);
    await s.placements.remove('snapshot', 'snap_x', 'host_2');
    expect((await s.placements.of('snapshot', 'snap_x')).map((p) => p.hostId)).toEqual(['host_1']);
    await s.placements.remove('snapshot', 'snap_x');
    expect(await s.placements.of('snapshot', 'snap_x')).toEqual([]);
  });

  it('volumes: insert, byName, byId, all, users (not ended, mounting it), delete', async () => {
    const s = await impl.open();
    expect(await s.volumes.insert({ id: 'vol_1', name: 'one', createdAt: T0 })).toBe(true);
    expect(await s.volumes.insert({ id: 'vol_2', name: 'two', createdAt: T0 + 1 })).toBe(true);
    // a name is taken once, whoever asks at the same time
    const racing = await Promise.all([
      s.volumes.insert({ id: 'vol_3', name: 'one', createdAt: T0 + 2 }),
      s.volumes.insert({ id: 'vol_4', name: 'three', createdAt: T0 + 2 }),
      s.volumes.insert({ id: 'vol_5', name: 'three', createdAt: T0 + 2 }),
    ]);
    expect(racing[0]).toBe(false);
    expect(racing.slice(1).sort()).toEqual([false, true]);
    expect(await s.volumes.byId('vol_3')).toBeUndefined();
    expect(await s.volumes.byName('one')).toEqual({ id: 'vol_1', name: 'one', createdAt: T0 });
    expect(await s.volumes.byId('vol_2')).toEqual({ id: 'vol_2', name: 'two', createdAt: T0 + 1 });
    expect((await s.volumes.all()).map((v) => v.name)).toEqual(['one', 'two', 'three']);
    const att = (volumeId: string, name: string) => ({ volumeId, name, path: `/mnt/${name}`, tag: 'v0', slot: 8 });
    const u = sandbox({ volumes: [att('vol_1', 'one')] });
    const both = sandbox({ volumes: [att('vol_2', 'two'), att('vol_1', 'one')] });
    const ended = sandbox({ volumes: [att('vol_1', 'one')] });
    for (const r of [u, both, ended]) await s.sandboxes.insert(r);
    await s.sandboxes.transition(ended.id, 'creating', 'failed', 'failed');
    expect(await s.volumes.users('vol_1')).toEqual([
      { id: u.id, state: 'creating' },
      { id: both.id, state: 'creating' },
    ]);
    expect((await s.volumes.users('vol_2')).map((x) => x.id)).toEqual([both.id]);
    await s.volumes.delete('vol_2');
    expect(await s.volumes.byId('vol_2')).toBeUndefined();
  });

  it('events and webhooks: append with outbox rows per subscribed webhook, after, latestId, prune; the delivery log', async () => {
    const s = await impl.open();
    expect(await s.events.latestId()).toBe(0);
    await s.webhooks.insert({ id: 'wh_all', url: 'http://a', events: [], secret: 's1', createdAt: T0 });
    await s.webhooks.insert({ id: 'wh_paused', url: 'http://b', events: ['paused'], secret: 's2', createdAt: T0 + 1 });
    expect(await s.webhooks.count()).toBe(2);
    expect(await s.webhooks.get('wh_paused')).toEqual({ id: 'wh_paused', url: 'http://b', events: ['paused'], secret: 's2', createdAt: T0 + 1 });
    expect((await s.webhooks.list()).map((w) => w.id)).toEqual(['wh_all', 'wh_paused']);

    const e1 = await s.events.append({ type: 'created', sandboxId: 'sbx_a', at: T0 + 10, data: { template: 'base' } });
    const e2 = await s.events.append({ type: 'paused', sandboxId: 'sbx_a', at: T0 + 20, data: {} });
    const e3 = await s.events.append({ type: 'created', sandboxId: 'sbx_b', at: T0 + 30, data: {} });
    expect([e1.id < e2.id, e2.id < e3.id]).toEqual([true, true]);
    expect(await s.events.latestId()).toBe(e3.id);
    expect(await s.events.after(0, {}, 10)).toEqual([e1, e2, e3]);
    expect(await s.events.after(e1.id, { sandboxId: 'sbx_a' }, 10)).toEqual([e2]);
    expect(await s.events.after(0, { types: ['created'] }, 1)).toEqual([e1]);

    // deliveries: wh_all got three, wh_paused one
    expect((await s.webhooks.deliveries('wh_all', 10)).map((d) => d.eventId)).toEqual([e3.id, e2.id, e1.id]);
    const [dp] = await s.webhooks.deliveries('wh_paused', 10);
    expect(dp).toMatchObject({ eventId: e2.id, eventType: 'paused', status: 'pending', attempts: 0, nextAttemptAt: T0 + 20 });
    expect(JSON.parse(dp!.body)).toMatchObject({ id: e2.id, type: 'paused', sandboxId: 'sbx_a' });
    const all = await s.webhooks.deliveries('wh_all', 10);
    expect((await s.webhooks.deliveries('wh_all', 10, all[0]!.id)).map((d) => d.eventId)).toEqual([e2.id, e1.id]);

    // one due per webhook, its oldest pending
    expect((await s.webhooks.due(T0 + 15)).map((d) => [d.webhookId, d.eventId])).toEqual([['wh_all', e1.id]]);
    expect((await s.webhooks.due(T0 + 100)).map((d) => [d.webhookId, d.eventId])).toEqual([
      ['wh_all', e1.id],
      ['wh_paused', e2.id],
    ]);
    expect(await s.webhooks.nextDueAt()).toBe(T0 + 10);
    const first = all[2]!;
    await s.webhooks.attempted(first.id, { at: T0 + 40, status: 'pending', responseStatus: 500, error: 'down', nextAttemptAt: T0 + 1000 });
    expect(await s.webhooks.delivery(first.id)).toMatchObject({ status: 'pending', attempts: 1, responseStatus: 500, error: 'down', lastAttemptAt: T0 + 40, finishedAt: null });
    expect(await s.webhooks.nextDueAt()).toBe(T0 + 20);
    await s.webhooks.attempted(first.id, { at: T0 + 50, status: 'delivered', responseStatus: 200, error: null, nextAttemptAt: T0 + 50 });
    expect(await s.webhooks.delivery(first.id)).toMatchObject({ status: 'delivered', attempts: 2, finishedAt: T0 + 50 });
    await s.webhooks.attempted(all[1]!.id, { at: T0 + 60, status: 'failed', responseStatus: null, error: 'gone', nextAttemptAt: T0 + 60 });
    await s.webhooks.trim('wh_all', 1);
    expect((await s.webhooks.deliveries('wh_all', 10)).map((d) => [d.eventId, d.status])).toEqual([
      [e3.id, 'pending'],
      [e2.id, 'failed'],
    ]);

    // pruning: by age, then all but the latest `keep`; finished deliveries older than the cut
    expect(await s.events.prune(T0 + 15, 100)).toBe(1);
    expect(await s.events.prune(0, 1)).toBe(1);
    expect(await s.events.after(0, {}, 10)).toEqual([e3]);
    expect(await s.events.latestId()).toBe(e3.id);
    await s.events.prune(T0 + 1_000_000, 100);
    expect((await s.webhooks.deliveries('wh_all', 10)).map((d) => d.status)).toEqual(['pending']);

    expect(await s.webhooks.delete('wh_all')).toBe(true);
    expect(await s.webhooks.delete('wh_all')).toBe(false);
    expect(await s.webhooks.deliveries('wh_all', 10)).toEqual([]);
    expect(await s.webhooks.get('wh_all')).toBeUndefined();
  });

  it('two transitions racing the same move: exactly one wins, the other is sandbox_busy', async () => {
    const s = await impl.open();
    for (let i = 0; i < 10; i++) {
      const r = sandbox();
      await s.sandboxes.insert(r);
      await s.sandboxes.transition(r.id, 'creating', 'running', 'started');
      const results = await Promise.allSettled([s.sandboxes.transition(r.id, 'running', 'killing', 'a'), s.sandboxes.transition(r.id, 'running', 'hibernating', 'b')]);
      expect(results.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
      const lost = results.find((x) => x.status === 'rejected');
      expect((lost as PromiseRejectedResult).reason).toBeInstanceOf(NsError);
      expect((lost as PromiseRejectedResult).reason).toMatchObject({ code: 'sandbox_busy' });
      expect(await s.sandboxes.events(r.id)).toHaveLength(3);
    }
  });
});

describe('migrations', () => {
  it('every migration exists for both databases, under the same name (add the PostgreSQL twin of a new one)', () => {
    expect(migrationNames(migrationsDir('postgres'))).toEqual(migrationNames(migrationsDir('sqlite', MIGRATIONS_DIR)));
  });

  it('PostgreSQL: processes starting together against one database apply each migration once', async () => {
    const url = await cluster!.createDatabase();
    const stores = await Promise.all([IMPLS[1].open(url), IMPLS[1].open(url), IMPLS[1].open(url)]);
    const names = await stores[0]!.sql.all<{ name: string }>('SELECT name FROM schema_migrations ORDER BY name');
    expect(names.map((r) => r.name)).toEqual(migrationNames(migrationsDir('postgres')));
    // and a later start finds nothing to do
    await IMPLS[1].open(url);
  });
});

describe('PostgreSQL: several control-plane processes (one pool each) on one database', () => {
  it('racing the same transition: exactly one wins, every time; the loser sees sandbox_busy and the record is never moved twice', async () => {
    const url = await cluster!.createDatabase();
    const a = await IMPLS[1].open(url);
    const b = await IMPLS[1].open(url);
    const moves: Array<[SandboxState, SandboxState]> = [
      ['running', 'killing'],
      ['running', 'hibernating'],
    ];
    for (let i = 0; i < 25; i++) {
      const r = sandbox();
      await a.sandboxes.insert(r);
      await b.sandboxes.transition(r.id, 'creating', 'running', 'started');
      const [m1, m2] = i % 2 ? moves : [moves[1]!, moves[0]!];
      const results = await Promise.allSettled([a.sandboxes.transition(r.id, ...m1!, 'from a'), b.sandboxes.transition(r.id, ...m2!, 'from b')]);
      const won = results.filter((x) => x.status === 'fulfilled') as Array<PromiseFulfilledResult<SandboxRecord>>;
      expect(won).toHaveLength(1);
      expect((results.find((x) => x.status === 'rejected') as PromiseRejectedResult).reason).toMatchObject({ code: 'sandbox_busy' });
      const rec = (await a.sandboxes.get(r.id))!;
      expect(rec.state).toBe(won[0]!.value.state);
      const events = await b.sandboxes.events(r.id);
      expect(events.map((e) => e.from)).toEqual([null, 'creating', 'running']);
    }
  });

  it('events appended by both commit in id order: a reader following the log misses none', async () => {
    const url = await cluster!.createDatabase();
    const a = await IMPLS[1].open(url);
    const b = await IMPLS[1].open(url);
    const seen: number[] = [];
    let cursor = 0;
    let done = false;
    const reader = (async () => {
      while (!done) {
        for (const e of await a.events.after(cursor, {}, 100)) {
          seen.push(e.id);
          cursor = e.id;
        }
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    const writer = (s: Store, who: string) =>
      Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          s.transaction(async () => {
            await s.events.append({ type: 'created', sandboxId: `${who}${i}`, at: T0, data: {} });
            // (the transaction stays open a moment after its append, as a transition's does)
            await new Promise((r) => setTimeout(r, i % 3));
          }),
        ),
      );
    await Promise.all([writer(a, 'a'), writer(b, 'b')]);
    done = true;
    await reader;
    for (const e of await a.events.after(cursor, {}, 1000)) seen.push(e.id);
    expect(seen).toHaveLength(80);
    expect(new Set(seen).size).toBe(80);
  });
});
