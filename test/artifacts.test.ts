import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox } from 'nullspace';
import { checkQcow2Backing } from '@nullspace/runtime';
import { randomBytes } from 'node:crypto';
import { apiKeyDigestHex, loadConfig, snapshotGrant, startServer, type RunningServer } from '@nullspace/server';
import { cleanupDataDir, ownServer, req, statusAndCode, tempDataDir, waitFor } from './servers.js';

/**
 * Moving a snapshot between two servers (docs/api.md "Artifacts"): two real servers on one machine,
 * each with its own data dir (one cache dir, so one template disk), a snapshot taken on A imported
 * into B with a grant of A and restored there with its memory (a process and the value it holds)
 * and its files; a second snapshot of the same sandbox moves only its new layers, its RAM as the
 * pages that changed since the first (a delta onto B's copy of it); what may not pass
 * (a tampered layer, a grant expired, for another snapshot or on the import route, unknown ids,
 * ids that are not ids) does not.
 */

interface ManifestLayer {
  id: string;
  kind: 'mem' | 'state' | 'disk';
  parentId: string | null;
  bytes: number;
  sha256: string;
}
interface Manifest {
  snapshot: { id: string; memLayer: string; stateLayer: string; diskLayer: string; vmConfig: { kernel: string } };
  layers: ManifestLayer[];
  templateDisk: string;
  cacheDir: string;
  layersDir: string;
}
interface Imported {
  snapshotId: string;
  layersFetched: number;
  layersReused: number;
  bytesFetched: number;
}

const code = statusAndCode;

/** The files of a data dir's layer store (and its staging area). */
const layerFiles = (dataDir: string) => fs.readdirSync(path.join(dataDir, 'layers')).filter((f) => f !== '.staging');
const staged = (dataDir: string) => {
  const s = path.join(dataDir, 'layers', '.staging');
  return fs.existsSync(s) ? fs.readdirSync(s) : [];
};

/** Flips one byte of a (root-owned, read-only) layer file in place; returns the undo. */
function flipByte(file: string, at: number): () => void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  const orig = b[0]!;
  fs.writeSync(fd, Buffer.from([orig ^ 0xff]), 0, 1, at);
  fs.closeSync(fd);
  return () => {
    const fd2 = fs.openSync(file, 'r+');
    fs.writeSync(fd2, Buffer.from([orig]), 0, 1, at);
    fs.closeSync(fd2);
  };
}

// a process that keeps a random value only in its memory and writes it to /tmp/answer when asked
const HOLDER = `v=$(od -An -N8 -tx8 /dev/urandom | tr -d ' '); echo $$ > /tmp/holder.pid; while :; do if [ -e /tmp/ask ]; then rm -f /tmp/ask; echo "$v" > /tmp/answer; fi; sleep 0.1; done`;
async function ask(s: Sandbox): Promise<string> {
  await s.commands.run('rm -f /tmp/answer; touch /tmp/ask');
  const v = await waitFor('the holder to answer', async () => {
    const r = await s.commands.run('cat /tmp/answer 2>/dev/null || true');
    return r.stdout.trim() || undefined;
  }, 60_000);
  // (the value is on no disk: only the process holds it)
  await s.commands.run('rm -f /tmp/answer');
  return v;
}

/**
 * An in-process server in runtime-host mode (what `nullspace host` runs): every route needs its
 * control credential, of which it keeps only the sha256, and grants are checked against that digest.
 */
async function hostModeServer(dataDir: string, env: Record<string, string>): Promise<RunningServer & { key: string }> {
  const credential = `ctl-${randomBytes(16).toString('hex')}`;
  const digest = apiKeyDigestHex(credential);
  const config = loadConfig({ ...process.env, NULLSPACE_LOG_LEVEL: 'warn', ...env }, { dataDir, port: 0 });
  const server = await startServer(config, { hostMode: { keyDigest: () => digest } });
  onTestFinished(() => server.close());
  return Object.assign(server, { key: credential });
}

describe('artifacts: a snapshot moves from one server to another', () => {
  it('imports a snapshot with its memory, then only the new layers of the next one; refuses what it must', async () => {
    const dirA = tempDataDir();
    const dirB = tempDataDir();
    cleanupDataDir(dirA);
    cleanupDataDir(dirB);
    const env = { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_FAULT_INJECTION: 'gc-on-request-only' };
    // A is a runtime host (its grants keyed by the digest of its control credential), B a plain server
    const A = await hostModeServer(dirA, env);
    const B = await ownServer(dirB, env);
    const keyA = apiKeyDigestHex(A.key);
    const cA = { apiUrl: A.url, apiKey: A.key };
    const cB = { apiUrl: B.url, apiKey: B.key };
    const open: Sandbox[] = [];
    try {
      const src = await Sandbox.create(cA);
      open.push(src);
      await src.files.write('/tmp/from-a.txt', 'written on A\n');
      await src.files.write('/workspace/disk.txt', 'on the disk of A\n');
      await src.commands.run(HOLDER, { background: true, timeoutMs: 0 });
      await waitFor('the holder to start', async () => ((await src.commands.run('cat /tmp/holder.pid 2>/dev/null || true')).stdout.trim() || undefined));
      const pid = (await src.commands.run('cat /tmp/holder.pid')).stdout.trim();
      const value = await ask(src);
      expect(value).toMatch(/^[0-9a-f]{16}$/);
      const snap1 = await src.createSnapshot();

      // the manifest: RAM, state, the disk chain; each layer's size and sha256
      const m1r = await req(A, 'GET', `/v1/artifacts/snapshots/${snap1.id}/manifest`);
      expect(m1r.status, JSON.stringify(m1r.json)).toBe(200);
      const m1 = m1r.json as unknown as Manifest;
      expect(m1.snapshot.id).toBe(snap1.id);
      expect(m1.layers.map((l) => l.kind)).toEqual(['mem', 'state', 'disk']);
      expect(m1.layers.map((l) => l.id)).toEqual([m1.snapshot.memLayer, m1.snapshot.stateLayer, m1.snapshot.diskLayer]);
      for (const l of m1.layers) {
        expect(l.sha256).toMatch(/^[0-9a-f]{64}$/);
        expect(l.bytes).toBe(fs.statSync(path.join(dirA, 'layers', `${l.id}.${l.kind === 'disk' ? 'qcow2' : l.kind}`)).size);
      }
      expect(m1.templateDisk.startsWith(`${m1.cacheDir}/templates/`)).toBe(true);
      expect(m1.layersDir).toBe(path.join(dirA, 'layers'));

      // a layer, with the API key or a grant for its snapshot
      const grant1 = snapshotGrant(keyA, snap1.id, 600_000);
      const stateLayer = m1.layers[1]!;
      const lr = await req(A, 'GET', `/v1/artifacts/layers/${stateLayer.id}?snapshot=${snap1.id}`, { auth: `Grant ${grant1}` });
      expect(lr.status).toBe(200);
      expect(lr.headers.get('content-type')).toBe('application/octet-stream');
      expect(Number(lr.headers.get('content-length'))).toBe(stateLayer.bytes);
      expect(lr.buf.length).toBe(stateLayer.bytes);

      // ---- refusals ----
      // neither key nor grant, a wrong key
      for (const auth of ['', 'Bearer wrong-key-wrong-key', 'Grant ']) {
        expect(code(await req(A, 'GET', `/v1/artifacts/snapshots/${snap1.id}/manifest`, { auth })), auth).toEqual([401, 'unauthorized']);
        expect(code(await req(A, 'GET', `/v1/artifacts/layers/${stateLayer.id}?snapshot=${snap1.id}`, { auth })), auth).toEqual([401, 'unauthorized']);
        expect(code(await req(B, 'POST', '/v1/artifacts/import', { auth, body: { snapshotId: snap1.id, source: A.url, grant: grant1 } })), auth).toEqual([401, 'unauthorized']);
      }
      const expired = snapshotGrant(keyA, snap1.id, -1);
      expect(code(await req(A, 'GET', `/v1/artifacts/snapshots/${snap1.id}/manifest`, { auth: `Grant ${expired}` }))).toEqual([401, 'grant_expired']);
      const wrongKey = snapshotGrant(apiKeyDigestHex('not the key'), snap1.id, 60_000);
      expect(code(await req(A, 'GET', `/v1/artifacts/snapshots/${snap1.id}/manifest`, { auth: `Grant ${wrongKey}` }))).toEqual([401, 'grant_invalid']);
      expect(code(await req(A, 'GET', `/v1/artifacts/snapshots/${snap1.id}/manifest`, { auth: `Grant ${grant1.slice(0, -1)}${grant1.endsWith('0') ? '1' : '0'}` }))).toEqual([401, 'grant_invalid']);
      const other = snapshotGrant(keyA, 'snap_0000000000000000', 60_000);
      expect(code(await req(A, 'GET', `/v1/artifacts/snapshots/${snap1.id}/manifest`, { auth: `Grant ${other}` }))).toEqual([403, 'grant_forbidden']);
      expect(code(await req(A, 'GET', `/v1/artifacts/layers/${stateLayer.id}?snapshot=${snap1.id}`, { auth: `Grant ${other}` }))).toEqual([403, 'grant_forbidden']);
      // a grant opens nothing else (the import, a sandbox list)
      expect(code(await req(A, 'GET', '/v1/sandboxes', { auth: `Grant ${grant1}` }))).toEqual([401, 'unauthorized']);
      expect(code(await req(B, 'POST', '/v1/artifacts/import', { auth: `Grant ${snapshotGrant(apiKeyDigestHex(B.key), snap1.id, 60_000)}`, body: { snapshotId: snap1.id, source: A.url, grant: grant1 } }))).toEqual([
        401,
        'unauthorized',
      ]);
      // a layer of another snapshot (the grant for the one asked about does not open it)
      expect(code(await req(A, 'GET', `/v1/artifacts/layers/lyr_0000000000000000?snapshot=${snap1.id}`))).toEqual([404, 'layer_not_found']);
      expect(code(await req(A, 'GET', '/v1/artifacts/snapshots/snap_0000000000000000/manifest'))).toEqual([404, 'snapshot_not_found']);
      // ids that are not ids
      expect((await req(A, 'GET', `/v1/artifacts/layers/..%2F..%2Fnullspace.db?snapshot=${snap1.id}`)).status).toBe(400);
      expect((await req(A, 'GET', `/v1/artifacts/layers/${stateLayer.id}?snapshot=..%2Fsnap`)).status).toBe(400);
      expect((await req(A, 'GET', `/v1/artifacts/snapshots/snap_..%2F..%2Fx/manifest`)).status).toBe(400);
      expect(code(await req(B, 'POST', '/v1/artifacts/import', { body: { snapshotId: '../../etc', source: A.url, grant: grant1 } }))).toEqual([400, 'validation_failed']);
      expect(code(await req(B, 'POST', '/v1/artifacts/import', { body: { snapshotId: snap1.id, source: `${A.url}/x?y`, grant: grant1 } }))).toEqual([400, 'validation_failed']);
      // what the source says, as the importer's codes
      const imp = (snapshotId: string, grant: string, source = A.url) => req(B, 'POST', '/v1/artifacts/import', { body: { snapshotId, source, grant } });
      expect(code(await imp('snap_0000000000000000', other))).toEqual([404, 'snapshot_not_found']);
      expect(code(await imp(snap1.id, expired))).toEqual([502, 'artifact_source_refused']);
      expect(code(await imp(snap1.id, other))).toEqual([502, 'artifact_source_refused']);
      expect(code(await imp(snap1.id, grant1, 'http://127.0.0.1:1'))).toEqual([502, 'artifact_source_unreachable']);
      // a server whose cache has no such template disk: nothing fetched, nothing recorded
      const dirC = tempDataDir();
      cleanupDataDir(dirC);
      const cacheC = `${dirC}-cache`;
      onTestFinished(() => fs.rmSync(cacheC, { recursive: true, force: true }));
      const C = await ownServer(dirC, { ...env, NULLSPACE_CACHE_DIR: cacheC });
      const noTemplate = await req(C, 'POST', '/v1/artifacts/import', { body: { snapshotId: snap1.id, source: A.url, grant: grant1 } });
      expect(code(noTemplate)).toEqual([409, 'template_missing']);
      expect(noTemplate.json.error.details.templateDisk).toBe(m1.templateDisk.replace(m1.cacheDir, cacheC));
      expect(layerFiles(dirC)).toEqual([]);
      await C.close();

      // a layer changed on A after its digest was recorded: refused, nothing recorded or left on B
      const beforeB = layerFiles(dirB);
      const memFile = path.join(dirA, 'layers', `${m1.snapshot.memLayer}.mem`);
      const undo = flipByte(memFile, Math.floor(m1.layers[0]!.bytes / 2));
      let tampered;
      try {
        tampered = await imp(snap1.id, grant1);
      } finally {
        undo();
      }
      expect(code(tampered), JSON.stringify(tampered.json)).toEqual([502, 'artifact_digest_mismatch']);
      expect(tampered.json.error.details.layerId).toBe(m1.snapshot.memLayer);
      expect(code(await req(B, 'GET', `/v1/snapshots/${snap1.id}`))).toEqual([404, 'snapshot_not_found']);
      expect(layerFiles(dirB)).toEqual(beforeB);
      expect(staged(dirB)).toEqual([]);

      // ---- the import ----
      const i1r = await imp(snap1.id, grant1);
      expect(i1r.status, JSON.stringify(i1r.json)).toBe(200);
      const i1 = i1r.json as unknown as Imported;
      expect(i1).toEqual({ snapshotId: snap1.id, layersFetched: 3, layersReused: 0, bytesFetched: m1.layers.reduce((a, l) => a + l.bytes, 0) });
      // B exports it in turn, with a grant of its own key
      expect((await req(B, 'GET', `/v1/artifacts/snapshots/${snap1.id}/manifest`, { auth: `Grant ${snapshotGrant(apiKeyDigestHex(B.key), snap1.id, 60_000)}` })).status).toBe(200);
      // again: nothing moves
      expect((await imp(snap1.id, grant1)).json).toEqual({ snapshotId: snap1.id, layersFetched: 0, layersReused: 3, bytesFetched: 0 });
      // B's layers: root-owned, read-only, the disk layer backing onto the template disk (the same one here)
      for (const l of m1.layers) {
        const st = fs.statSync(path.join(dirB, 'layers', `${l.id}.${l.kind === 'disk' ? 'qcow2' : l.kind}`));
        expect([st.uid, st.mode & 0o777]).toEqual([0, 0o444]);
      }
      checkQcow2Backing(path.join(dirB, 'layers', `${m1.snapshot.diskLayer}.qcow2`), (b) => b === m1.templateDisk);

      // restored on B: the same process with the same value in its memory, and the files
      const onB = await Sandbox.create({ ...cB, snapshotId: snap1.id });
      open.push(onB);
      expect(await onB.files.read('/tmp/from-a.txt')).toBe('written on A\n');
      expect(await onB.files.read('/workspace/disk.txt')).toBe('on the disk of A\n');
      expect((await onB.commands.run(`kill -0 ${pid} && echo alive`)).stdout.trim()).toBe('alive');
      expect(await ask(onB)).toBe(value);
      await onB.kill();

      // ---- the next snapshot of the same sandbox: only its new layers move ----
      await src.files.write('/workspace/second.txt', 'second\n');
      const snap2 = await src.createSnapshot();
      const m2 = (await req(A, 'GET', `/v1/artifacts/snapshots/${snap2.id}/manifest`)).json as unknown as Manifest;
      expect(m2.layers.map((l) => l.kind)).toEqual(['mem', 'state', 'disk', 'disk']);
      // its chain rests on the first snapshot's disk layer, which B has
      expect(m2.layers[3]!.id).toBe(m1.snapshot.diskLayer);
      const grant2 = snapshotGrant(keyA, snap2.id, 600_000);
      // a layer of another snapshot is not read through this one (with the key or this one's grant)
      expect(code(await req(A, 'GET', `/v1/artifacts/layers/${m2.snapshot.memLayer}?snapshot=${snap1.id}`))).toEqual([404, 'layer_not_found']);
      expect(code(await req(A, 'GET', `/v1/artifacts/layers/${m2.snapshot.memLayer}?snapshot=${snap1.id}`, { auth: `Grant ${grant1}` }))).toEqual([404, 'layer_not_found']);
      expect((await req(A, 'GET', `/v1/artifacts/layers/${m2.snapshot.memLayer}?snapshot=${snap2.id}`, { auth: `Grant ${grant2}` })).status).toBe(200);
      // two imports at once (and the collector meanwhile): one fetches, the other finds it done
      const [a, b, gc] = await Promise.all([imp(snap2.id, grant2), imp(snap2.id, grant2), req(B, 'POST', '/v1/gc')]);
      expect([a.status, b.status, gc.status], JSON.stringify([a.json, b.json])).toEqual([200, 200, 200]);
      const results = [a.json, b.json] as unknown as Imported[];
      const i2 = results.find((r) => r.layersFetched > 0)!;
      expect(results.map((r) => r.layersFetched).sort()).toEqual([0, 3]);
      expect(i2).toMatchObject({ snapshotId: snap2.id, layersFetched: 3, layersReused: 1 });
      // the first snapshot's disk layer did not move; its RAM and state moved as what changed since
      // the first snapshot's, which B holds: much less than the first import
      expect(m1.layers[2]!.bytes).toBeGreaterThan(0);
      expect(i2.bytesFetched).toBeLessThan(i1.bytesFetched / 4);
      // the new top layer backs onto B's copy of the first one
      checkQcow2Backing(path.join(dirB, 'layers', `${m2.snapshot.diskLayer}.qcow2`), (x) => x === path.join(dirB, 'layers', `${m1.snapshot.diskLayer}.qcow2`));
      const onB2 = await Sandbox.create({ ...cB, snapshotId: snap2.id });
      open.push(onB2);
      expect(await onB2.files.read('/workspace/second.txt')).toBe('second\n');
      expect(await onB2.files.read('/workspace/disk.txt')).toBe('on the disk of A\n');
      expect(await ask(onB2)).toBe(value);
      // B's layer store: every layer held by its snapshots, no file it does not know, nothing staged
      const report = (await req(B, 'POST', '/v1/gc')).json as { freed: unknown[]; orphanFiles: string[]; retained: Array<{ layerId: string }> };
      expect([report.freed, report.orphanFiles]).toEqual([[], []]);
      expect(report.retained.map((r) => r.layerId)).toEqual(expect.arrayContaining([...m1.layers, ...m2.layers].map((l) => l.id)));
      expect(staged(dirB)).toEqual([]);
    } finally {
      await Promise.all(open.map((s) => s.kill().catch(() => {})));
    }
  }, 900_000);
});
