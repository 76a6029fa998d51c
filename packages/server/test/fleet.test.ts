import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NsError } from '@nullspace/runtime';
import { FleetService, type HostReport } from '../src/fleet/service.js';
import { createLogger } from '../src/log.js';
import { openSqliteStore, type Store } from '../src/store/index.js';

/**
 * The control plane's side of the fleet on a real SQLite store, with the clock in the test's hands
 * (`sweep(now)`): joins, credentials, lost after N missed heartbeats, fencing, drains. The same
 * over real processes and network namespaces: test/fleet.test.ts.
 */
const TOKEN = 'join-token-0123456789';
const HB = 1000;
const report: HostReport = {
  url: 'http://10.0.0.2:7071',
  fingerprint: { qemuVersion: '7.2.0', machine: 'pc-i440fx-7.2', accel: 'tcg', cpuModel: 'max', hostCpu: '', deviceSet: 'd', hostKernel: 'k', templates: [] },
  capacity: { memoryMiB: 1024, availableMemoryMiB: 512, vcpus: 2, diskMiB: 10, freeDiskMiB: 5 },
  counts: { sandboxes: 0 },
};
const local = () => ({ fingerprint: report.fingerprint, capacity: report.capacity, counts: { sandboxes: 7 } });

let store: Store | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await store?.close();
  store = undefined;
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function fleet(joinToken: string | null = TOKEN): Promise<FleetService> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-fleet-'));
  dirs.push(dir);
  store = await openSqliteStore(dir);
  return new FleetService(store.hosts, { joinToken: joinToken ?? undefined, heartbeatMs: HB, lostAfter: 3 }, local, createLogger('silent'));
}

const code = async (p: Promise<unknown> | (() => unknown)) => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return (err as NsError).code;
  }
  return 'no error';
};

describe('FleetService', () => {
  it('lists the control plane as host "local" first, fleet or not', async () => {
    for (const token of [null, TOKEN]) {
      const f = await fleet(token);
      const hosts = await f.list();
      expect(hosts.map((h) => [h.hostId, h.state, h.url, h.counts.sandboxes])).toEqual([['local', 'ready', null, 7]]);
      expect(await code(f.drain('local'))).toBe('bad_request');
      await store!.close();
      store = undefined;
    }
  });

  it('refuses joins without the fleet, with a wrong token, and heartbeats with a wrong credential', async () => {
    const off = await fleet(null);
    expect(await code(off.join(TOKEN, { ...report, controlCredential: 'c'.repeat(40) }))).toBe('fleet_disabled');
    await store!.close();
    store = undefined;
    const f = await fleet();
    expect(await code(f.join(undefined, { ...report, controlCredential: 'c'.repeat(40) }))).toBe('join_token_invalid');
    expect(await code(f.join(TOKEN + 'x', { ...report, controlCredential: 'c'.repeat(40) }))).toBe('join_token_invalid');
    const a = await f.join(TOKEN, { ...report, controlCredential: 'c'.repeat(40) });
    const b = await f.join(TOKEN, { ...report, controlCredential: 'd'.repeat(40) });
    expect(a.hostId).not.toBe(b.hostId);
    expect(await code(f.heartbeat(a.hostId, b.credential, report))).toBe('host_credential_invalid');
    expect(await code(f.heartbeat(a.hostId, undefined, report))).toBe('host_credential_invalid');
    expect(await code(f.heartbeat('host_nope', a.credential, report))).toBe('host_credential_invalid');
    expect((await f.heartbeat(a.hostId, a.credential, report)).state).toBe('ready');
    // only digests of the hosts' credentials are stored
    const rows = await store!.sql.all<{ credential_digest: string }>('SELECT credential_digest FROM hosts');
    expect(rows.map((r) => r.credential_digest)).not.toContain(a.credential);
    expect(await code(f.get('host_nope'))).toBe('host_not_found');
    expect(await code(f.drain('host_nope'))).toBe('host_not_found');
  });

  it("compares a snapshot's requirements with each host's fingerprint, naming the fields that differ", async () => {
    const f = await fleet();
    const other = await f.join(TOKEN, { ...report, fingerprint: { ...report.fingerprint, cpuModel: 'qemu64' }, controlCredential: 'c'.repeat(40) });
    const same = await f.join(TOKEN, { ...report, controlCredential: 'd'.repeat(40) });
    const fp = report.fingerprint;
    const req = { qemuVersion: fp.qemuVersion, machine: fp.machine, accel: fp.accel, cpuModel: 'max', hostCpu: '', memoryMiB: 512, vcpus: 1, deviceSet: 'd', kernelRelease: 'x', agentVersion: 'y', template: 'base' };
    const hosts = await f.compatibility(req, { memoryMiB: 512, vcpus: 1 });
    // (two joins in one millisecond list by id: compared by id, not by position)
    const byId = new Map(hosts.map((h) => [h.hostId, h]));
    expect(hosts.length).toBe(3);
    expect(hosts[0]!.hostId).toBe('local');
    expect([byId.get('local')?.compatible, byId.get(other.hostId)?.compatible, byId.get(same.hostId)?.compatible]).toEqual([true, false, true]);
    expect(byId.get(other.hostId)!.mismatches).toEqual([{ field: 'cpuModel', snapshot: 'max', host: 'qemu64' }]);
    // the VM shape is compared as the local check does
    expect((await f.compatibility(req, { memoryMiB: 1024, vcpus: 1 }))[0]!.mismatches).toEqual([{ field: 'memoryMiB', snapshot: 512, host: 1024 }]);
  });

  it('a sweep that comes late (this process stalled) gives hosts a full window: it did not hear their heartbeats', async () => {
    const f = await fleet();
    const a = await f.join(TOKEN, { ...report, controlCredential: 'c'.repeat(40) });
    const t0 = Date.parse((await f.get(a.hostId)).lastHeartbeat);
    expect(await f.tick(t0 + HB)).toEqual([]);
    expect(await f.tick(t0 + 2 * HB)).toEqual([]);
    // the next tick comes 5 intervals late: the last heartbeat heard is 7 intervals old, yet the
    // host is not lost (its heartbeats of meanwhile wait unread)...
    const resumed = t0 + 7 * HB;
    expect(await f.tick(resumed)).toEqual([]);
    expect(await f.tick(resumed + HB)).toEqual([]);
    expect((await f.get(a.hostId)).state).toBe('ready');
    // ...until it stays silent for a full window from then
    expect(await f.tick(resumed + 2 * HB)).toEqual([]);
    expect(await f.tick(resumed + 3 * HB - 1)).toEqual([]);
    expect(await f.tick(resumed + 3 * HB + 1)).toEqual([a.hostId]);
    // (ticks on time do find a silent host lost: the same silence seen by a process that was there)
    const g = await fleet();
    const b = await g.join(TOKEN, { ...report, controlCredential: 'd'.repeat(40) });
    const t1 = Date.parse((await g.get(b.hostId)).lastHeartbeat);
    for (let t = t1 + HB; t < t1 + 3 * HB; t += HB) expect(await g.tick(t)).toEqual([]);
    expect(await g.tick(t1 + 3 * HB + 1)).toEqual([b.hostId]);
  });

  it('a host is lost after N missed heartbeats, not before; back, it is fenced (epoch + 1) and keeps its drain', async () => {
    const f = await fleet();
    const a = await f.join(TOKEN, { ...report, controlCredential: 'c'.repeat(40) });
    const t0 = Date.parse((await f.get(a.hostId)).lastHeartbeat);
    expect(await f.sweep(t0 + 3 * HB)).toEqual([]);
    expect((await f.get(a.hostId)).state).toBe('ready');
    expect(await f.sweep(t0 + 3 * HB + 1)).toEqual([a.hostId]);
    expect(await f.sweep(t0 + 5 * HB)).toEqual([]); // lost once
    const lost = await f.get(a.hostId);
    expect([lost.state, lost.epoch, lost.fencedAt]).toEqual(['lost', 1, null]);
    // drained while lost: back, it is draining, not ready
    expect((await f.drain(a.hostId)).state).toBe('lost');
    const back = await f.heartbeat(a.hostId, a.credential, report);
    expect(back).toEqual({ state: 'draining', epoch: 2, heartbeatMs: HB });
    const view = await f.get(a.hostId);
    expect(view.lostAt).toBeNull();
    expect(view.fencedAt).not.toBeNull();
    // an ordinary heartbeat does not move the epoch
    expect((await f.heartbeat(a.hostId, a.credential, report)).epoch).toBe(2);
  });
});
