/**
 * The real sandbox manager (every module of packages/server/src/sandbox, a real SQLite store) on a
 * fake VM host (test/fakes.ts): lifecycle paths and their faults in milliseconds, no QEMU. The end
 * to end suite (test/*.test.ts) covers the same paths on real VMs.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { NsError } from '@nullspace/runtime';
import type { SandboxState } from '../src/sandbox/lifecycle.js';
import { FakeServer, fakeTemplate } from './fakes.js';

const servers: FakeServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.destroy();
});

async function server(env: Record<string, string> = {}): Promise<FakeServer> {
  const s = new FakeServer(env);
  servers.push(s);
  await s.start();
  return s;
}

const req = { template: 'base', metadata: {}, envs: {}, timeoutMs: 60_000, allowInternetAccess: true };

/** What a sandbox holds on the host: its VM, uid claim, directory, admission slot. */
function holdings(s: FakeServer, id: string) {
  return {
    vm: s.vms.vmOf(id) !== undefined,
    uid: [...s.vms.uids.values()].some((o) => o.endsWith(` ${id}`)),
    dir: fs.existsSync(s.layout.sandboxDir(id)),
  };
}

const until = async (what: string, fn: () => boolean | Promise<boolean>) => {
  for (let i = 0; i < 200 && !(await fn()); i++) await new Promise((r) => setTimeout(r, 5));
  if (!(await fn())) throw new Error(`timed out waiting for ${what}`);
};

describe('lifecycle on a fake VM host', () => {
  it('create, then kill: everything the sandbox held is released; killing twice is a no-op', async () => {
    const s = await server();
    const rec = await s.manager.create(req);
    expect(rec.state).toBe('running');
    expect(holdings(s, rec.id)).toEqual({ vm: true, uid: true, dir: true });
    expect(s.manager.usage).toEqual({ sandboxes: 1, memoryMiB: 512 });
    const guest = s.vms.vmOf(rec.id)!.guest;
    expect(guest.ops()).toEqual(['sys.init']);
    expect(guest.calls[0]!.args).toMatchObject({ hostname: rec.id, machineId: rec.identity.machineId, bootId: rec.identity.bootId });

    const killed = await s.manager.kill(rec.id);
    expect(killed).toMatchObject({ state: 'killed', endReason: 'killed by request', errorCode: null, pid: null });
    expect(holdings(s, rec.id)).toEqual({ vm: false, uid: false, dir: false });
    expect(s.manager.usage).toEqual({ sandboxes: 0, memoryMiB: 0 });
    const events = (await s.store.events(rec.id)).map((e) => `${e.from}>${e.to}`);
    expect(await s.manager.kill(rec.id)).toMatchObject({ state: 'killed' });
    expect((await s.store.events(rec.id)).map((e) => `${e.from}>${e.to}`)).toEqual(events);
    expect(events).toEqual(['null>creating', 'creating>running', 'running>killing', 'killing>killed']);
  });

  it('a create that fails after its uid was claimed ends failed and leaves nothing (uid, files, admission)', async () => {
    const s = await server();
    s.vms.failLaunchAfterUid = true;
    const err = (await s.manager.create(req).catch((e: unknown) => e)) as NsError;
    expect(err).toBeInstanceOf(NsError);
    expect(err.code).toBe('vm_start_failed');
    const [rec] = (await s.store.list({ limit: 10 })).items;
    expect(rec).toMatchObject({ state: 'failed', errorCode: 'vm_start_failed' });
    expect(rec!.endReason).toContain('fault: qemu did not start');
    expect(s.vms.uids.size).toBe(0);
    expect(holdings(s, rec!.id)).toEqual({ vm: false, uid: false, dir: false });
    expect(s.manager.usage).toEqual({ sandboxes: 0, memoryMiB: 0 });
    // and the next create works
    expect((await s.manager.create(req)).state).toBe('running');
  });

  it('a create whose restore fails after QEMU started kills that QEMU', async () => {
    const s = await server();
    const launched = s.vms.launched.length;
    s.vms.onLaunch = (vm) => (vm.failRestore = new NsError('restore_failed', 'fault: loading device state'));
    await expect(s.manager.create(req)).rejects.toMatchObject({ code: 'restore_failed' });
    expect(s.vms.launched.length).toBe(launched + 1);
    expect(s.vms.launched.at(-1)!.gone).toBe(true);
    expect(s.vms.running.size).toBe(0);
  });

  it('a VM that dies fails its sandbox (vm_exited) and releases what it held', async () => {
    const s = await server();
    const rec = await s.manager.create(req);
    const before = s.layersReleased;
    s.vms.vmOf(rec.id)!.die('qemu killed by SIGKILL');
    await until('failed', async () => (await s.store.get(rec.id))!.state === 'failed');
    expect(await s.store.get(rec.id)).toMatchObject({ errorCode: 'vm_exited', endReason: 'the VM exited unexpectedly: qemu killed by SIGKILL' });
    expect(holdings(s, rec.id)).toEqual({ vm: false, uid: false, dir: false });
    expect(s.manager.usage.sandboxes).toBe(0);
    expect(s.layersReleased).toBeGreaterThan(before);
  });

  it('hibernate then resume: the same sandbox, its remaining timeout, a new VM; hibernating twice returns the snapshot', async () => {
    const s = await server();
    const rec = await s.manager.create(req);
    const first = s.vms.vmOf(rec.id)!;
    const snap = await s.manager.hibernate(rec.id);
    expect(snap).toMatchObject({ kind: 'hibernate', sandboxId: rec.id });
    const paused = (await s.store.get(rec.id))!;
    expect(paused).toMatchObject({ state: 'paused', pid: null, expiresAt: null });
    expect(paused.remainingMs).toBeGreaterThan(50_000);
    expect(first.gone).toBe(true);
    expect(first.guest.ops()).toEqual(['sys.init', 'sys.freeze']);
    expect(holdings(s, rec.id)).toEqual({ vm: false, uid: false, dir: false });
    expect((await s.manager.hibernate(rec.id)).id).toBe(snap.id);

    const resumed = await s.manager.resume(rec.id);
    expect(resumed).toMatchObject({ state: 'running', remainingMs: null, pausedAt: null, diskParentLayer: snap.diskLayer });
    expect(resumed.expiresAt! - Date.now()).toBeGreaterThan(50_000);
    const second = s.vms.vmOf(rec.id)!;
    expect(second).not.toBe(first);
    expect(second.guest.calls.at(-1)).toMatchObject({ op: 'sys.init', args: { hostname: rec.id, bootId: rec.identity.bootId } });
    await s.manager.kill(rec.id);
  });

  it('a VM that dies during hibernation fails the sandbox, drops its hibernations and releases its layers', async () => {
    const s = await server();
    const rec = await s.manager.create(req);
    s.vms.vmOf(rec.id)!.dieDuringCapture = true;
    const before = s.layersReleased;
    await expect(s.manager.hibernate(rec.id)).rejects.toMatchObject({ code: 'vm_exited' });
    expect(await s.store.get(rec.id)).toMatchObject({ state: 'failed', errorCode: 'vm_exited' });
    expect((await s.store.get(rec.id))!.endReason).toMatch(/^the VM exited during hibernation/);
    expect(await s.snapshots.hibernations(rec.id)).toEqual([]);
    expect(holdings(s, rec.id)).toEqual({ vm: false, uid: false, dir: false });
    expect(s.layersReleased).toBeGreaterThan(before);
    expect(s.manager.usage.sandboxes).toBe(0);
  });

  it('a resume that fails goes back to paused, its new VM and files gone, and can be tried again', async () => {
    const s = await server();
    const rec = await s.manager.create(req);
    await s.manager.hibernate(rec.id);
    s.vms.onLaunch = (vm) => {
      vm.failRestore = new NsError('restore_failed', 'fault: loading device state');
      s.vms.onLaunch = () => {};
    };
    await expect(s.manager.resume(rec.id)).rejects.toMatchObject({ code: 'restore_failed' });
    expect(await s.store.get(rec.id)).toMatchObject({ state: 'paused', pid: null, diskParentLayer: null });
    expect(holdings(s, rec.id)).toEqual({ vm: false, uid: false, dir: false });
    expect(s.manager.usage.sandboxes).toBe(0);
    expect((await s.manager.resume(rec.id)).state).toBe('running');
    await s.manager.kill(rec.id);
  });

  it('kill while a create is under way: the create finishes first, the kill then ends it', async () => {
    const s = await server();
    const creating = s.manager.create(req);
    await until('record', async () => (await s.store.list({ limit: 10 })).items.length === 1);
    const id = (await s.store.list({ limit: 10 })).items[0]!.id;
    const [created, killed] = await Promise.all([creating, s.manager.kill(id)]);
    expect(created.state).toBe('running');
    expect(killed.state).toBe('killed');
    expect(holdings(s, id)).toEqual({ vm: false, uid: false, dir: false });
  });
});

describe('warm slots on a fake VM host', () => {
  it('a create takes a ready slot; a slot whose source changed (the template rebuilt) is discarded, not used', async () => {
    const s = await server({ NULLSPACE_WARM_POOL: '1' });
    await until('a ready slot', () => s.manager.warmPool.ready === 1);
    const slotVm = s.vms.launched[0]!;
    const taken = await s.manager.create(req);
    expect(taken.id).toBe(slotVm.spec.id);
    expect(slotVm.guest.ops()).toEqual(['sys.init', 'sys.warmup', 'sys.init']);
    await until('a new ready slot', () => s.manager.warmPool.ready === 1);
    const stale = s.vms.launched.at(-1)!;
    // the template is rebuilt while that slot waits: it was restored from the old files
    s.template = fakeTemplate(s.cacheDir, 'base', 'fedcba9876543210');
    const created = await s.manager.create(req);
    expect(created.id).not.toBe(stale.spec.id);
    expect(stale.gone).toBe(true);
    expect((await s.store.get(created.id))!.vmSpec!.disk).toContain(created.id);
    expect(s.vms.vmOf(created.id)!.backing).toBe(s.template.disk);
    await s.manager.kill(taken.id);
    await s.manager.kill(created.id);
  });

  it('a slot whose QEMU died meanwhile is discarded and the create prepares its own VM', async () => {
    const s = await server({ NULLSPACE_WARM_POOL: '1' });
    await until('a ready slot', () => s.manager.warmPool.ready === 1);
    const slot = s.vms.launched[0]!;
    slot.die();
    const rec = await s.manager.create(req);
    expect(rec.id).not.toBe(slot.spec.id);
    expect(rec.state).toBe('running');
    await s.manager.kill(rec.id);
  });
});

describe('recovery at start on a fake VM host (the matrix of lifecycle.ts `recover`)', () => {
  /** A server with one sandbox in `state` (its VM alive or not), restarted. */
  async function found(state: SandboxState, vmAlive: boolean, hibernationRecorded = false): Promise<{ s: FakeServer; id: string }> {
    const s = await server();
    const rec = await s.manager.create(req);
    const id = rec.id;
    if (hibernationRecorded || state === 'resuming') {
      // a recorded hibernation: capture it for real, then put the VM back as if it still ran
      await s.manager.hibernate(id);
    }
    await s.stop();
    if (!vmAlive) await s.vms.vmOf(id)?.kill();
    // the record as an interrupted operation left it
    const at = hibernationRecorded ? s.snapshots_createdAt(id) - 1 : Date.now();
    s.setState(id, state, at);
    if (vmAlive && !s.vms.vmOf(id)) s.reviveVm(id);
    await s.start();
    return { s, id };
  }

  const cases: Array<[SandboxState, boolean, boolean, SandboxState, boolean]> = [
    // state, VM alive, hibernation recorded -> state after start, VM still running
    ['creating', true, false, 'failed', false],
    ['running', true, false, 'running', true],
    ['running', false, false, 'failed', false],
    ['hibernating', true, false, 'running', true],
    ['hibernating', false, false, 'failed', false],
    ['hibernating', true, true, 'paused', false],
    ['resuming', false, false, 'paused', false],
    ['killing', true, false, 'killed', false],
  ];
  for (const [state, alive, recorded, after, running] of cases) {
    it(`${state}, VM ${alive ? 'alive' : 'gone'}${recorded ? ', hibernation recorded' : ''} -> ${after}`, async () => {
      const { s, id } = await found(state, alive, recorded);
      expect((await s.store.get(id))!.state).toBe(after);
      expect(s.vms.vmOf(id) !== undefined).toBe(running);
      expect(holdings(s, id)).toEqual({ vm: running, uid: running, dir: running });
      expect(s.manager.usage.sandboxes).toBe(running ? 1 : 0);
      if (after === 'failed') expect((await s.store.get(id))!.errorCode).toBe('vm_exited');
      if (running) {
        // taken over: its agent reconnected (sys.init again), and it is killed like any other
        await until('reconnected', () => s.vms.vmOf(id)!.guest.ops().filter((o) => o === 'sys.init').length >= 2);
        expect((await s.manager.kill(id)).state).toBe('killed');
      }
    });
  }

  it('kills QEMU processes of the data dir that no record owns', async () => {
    const s = await server();
    const rec = await s.manager.create(req);
    await s.stop();
    s.db = await (await import('../src/store/db.js')).openDb(s.layout.db);
    s.db.prepare('DELETE FROM sandbox_events WHERE sandbox_id = ?').run(rec.id);
    s.db.prepare('DELETE FROM sandboxes WHERE id = ?').run(rec.id);
    s.db.close();
    expect(s.vms.vmOf(rec.id)).toBeDefined();
    await s.start();
    expect(s.vms.vmOf(rec.id)).toBeUndefined();
    expect(fs.existsSync(s.layout.sandboxDir(rec.id))).toBe(false);
  });
});

describe('N-way fork on a fake VM host', () => {
  it('one capture for all children; a child that fails to start takes the whole request down: those started are killed, admission released', async () => {
    const s = await server();
    const src = await s.manager.create(req);
    const { children } = await s.manager.fork(src.id, { count: 3 });
    expect(children).toHaveLength(3);
    expect(new Set(children.map((c) => c.snapshotId)).size).toBe(1);
    expect(new Set(children.map((c) => c.identity.machineId)).size).toBe(3);
    expect(s.manager.usage.sandboxes).toBe(4);
    const forked = await s.events.after(0, { types: ['forked'] });
    expect(forked).toHaveLength(1);
    expect(forked[0]!.data).toMatchObject({ children: children.map((c) => c.id) });
    for (const c of children) await s.manager.kill(c.id);

    // the third child of four fails
    let launches = 0;
    s.vms.onLaunch = (vm) => {
      if (++launches === 3) vm.failRestore = new NsError('restore_failed', 'fault: loading device state');
    };
    await expect(s.manager.fork(src.id, { count: 4 })).rejects.toMatchObject({ code: 'restore_failed' });
    s.vms.onLaunch = () => {};
    const live = (await s.store.list({ limit: 100, states: ['creating', 'running', 'hibernating', 'paused', 'resuming', 'killing'] })).items.map((r) => r.id);
    expect(live).toEqual([src.id]);
    expect(s.manager.usage).toEqual({ sandboxes: 1, memoryMiB: 512 });
    expect([...s.vms.running.values()].map((vm) => vm.spec.id)).toEqual([src.id]);
    expect(await s.events.after(0, { types: ['forked'] })).toHaveLength(1);
    // no fork capture left behind, and the source forks again
    expect((await s.manager.fork(src.id, { count: 2 })).children).toHaveLength(2);
  });

  it('refuses a count admission cannot take whole, before the source is captured', async () => {
    const s = await server({ NULLSPACE_MAX_SANDBOXES: '3' });
    const src = await s.manager.create(req);
    const disk = (await s.store.get(src.id))!.vmSpec!.disk;
    await expect(s.manager.fork(src.id, { count: 3 })).rejects.toMatchObject({ code: 'too_many_sandboxes' });
    expect((await s.store.get(src.id))!.vmSpec!.disk).toBe(disk);
    expect(s.manager.usage.sandboxes).toBe(1);
    await expect(s.manager.fork(src.id, { count: 0 })).rejects.toMatchObject({ code: 'validation_failed' });
    await expect(s.manager.fork(src.id, { count: 33 })).rejects.toMatchObject({ code: 'validation_failed' });
  });
});
