import { randomBytes } from 'node:crypto';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ConflictError, Sandbox, Snapshot, Volume, VolumeNotFoundError } from 'nullspace';
import { api, conn, duringSnapshots, sandbox } from './helpers.js';

/** A volume deleted when the test ends (after the test's sandboxes are killed). */
async function volume(): Promise<Volume> {
  const v = await Volume.create(`t-${randomBytes(4).toString('hex')}`, conn());
  onTestFinished(async () => {
    await Volume.delete(v.name, conn()).catch(() => {});
  });
  return v;
}

describe('shared volumes', () => {
  it('two sandboxes share a volume and see each other\'s writes; its data survives their kill', async () => {
    const v = await volume();
    const a = await sandbox({ volumes: { '/mnt/data': v.name } });
    const b = await sandbox({ volumes: { '/srv/shared': v.name } });
    expect((await a.getInfo()).volumes).toEqual({ '/mnt/data': v.name });
    await a.files.write('/mnt/data/from-a.txt', 'written by a');
    expect(await b.files.read('/srv/shared/from-a.txt')).toBe('written by a');
    await b.commands.run('mkdir -p /srv/shared/dir && echo b > /srv/shared/dir/from-b.txt');
    expect((await a.commands.run('cat /mnt/data/dir/from-b.txt')).stdout).toBe('b\n');
    // a file of one sandbox can be appended to by the other (host side they run as different users)
    expect((await b.commands.run('echo more >> /srv/shared/from-a.txt && cat /srv/shared/from-a.txt')).stdout).toBe('written by amore\n');
    const info = await Volume.get(v.name, conn());
    expect(info.mountedBy.sort()).toEqual([a.sandboxId, b.sandboxId].sort());
    await expect(Volume.delete(v.name, conn())).rejects.toMatchObject({ code: 'volume_in_use', status: 409 });
    await a.kill();
    await b.kill();
    const c = await sandbox({ volumes: { '/data': v.name } });
    expect(await c.files.read('/data/from-a.txt')).toBe('written by amore\n');
  });

  it('snapshot, fork and hibernate never copy a volume: restores remount its current content', async () => {
    const v = await volume();
    const s = await sandbox({ volumes: { '/mnt/v': v.name } });
    await s.files.write('/mnt/v/state', 'at snapshot');
    await s.files.write('/workspace/disk', 'root disk at snapshot');
    const snap = await s.createSnapshot();
    expect(snap.volumes).toEqual({ '/mnt/v': v.name });
    // the source keeps its volume mounted after the capture
    await s.files.write('/mnt/v/state', 'after snapshot');

    const child = await sandbox({ snapshotId: snap.id });
    expect(await child.files.read('/workspace/disk')).toBe('root disk at snapshot');
    expect(await child.files.read('/mnt/v/state')).toBe('after snapshot');

    await s.files.write('/mnt/v/state', 'before fork');
    const forked = await s.fork();
    onTestFinished(async () => {
      await forked.kill().catch(() => {});
    });
    expect(await forked.files.read('/mnt/v/state')).toBe('before fork');
    await forked.files.write('/mnt/v/state', 'written by the fork');
    expect(await s.files.read('/mnt/v/state')).toBe('written by the fork');

    await s.hibernate();
    await child.files.write('/mnt/v/state', 'written while the source was paused');
    const resumed = await Sandbox.connect(s.sandboxId, conn());
    expect(await resumed.files.read('/mnt/v/state')).toBe('written while the source was paused');
    await Snapshot.delete(snap.id, conn());
  });

  it('a snapshot records its volumes: a deleted one is a clear 409 volume_missing, or restores without it on request', async () => {
    const v = await volume();
    const s = await sandbox({ volumes: { '/mnt/gone': v.name } });
    const snap = await s.createSnapshot();
    onTestFinished(async () => {
      await Snapshot.delete(snap.id, conn()).catch(() => {});
    });
    await s.kill();
    await Volume.delete(v.name, conn());
    const err = await Sandbox.create({ ...conn(), snapshotId: snap.id }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ code: 'volume_missing' });
    const without = await sandbox({ snapshotId: snap.id, allowMissingVolumes: true });
    const mounted = async (sbx: Sandbox) => (await sbx.commands.run('mountpoint -q /mnt/gone && echo mounted || echo not mounted')).stdout;
    expect(await mounted(without)).toBe('not mounted\n');
    // such a sandbox lives on without it: its snapshots, forks and hibernation never mount the placeholder
    const again = await without.createSnapshot();
    onTestFinished(async () => {
      await Snapshot.delete(again.id, conn()).catch(() => {});
    });
    expect(await mounted(without)).toBe('not mounted\n');
    const child = await without.fork();
    onTestFinished(async () => {
      await child.kill().catch(() => {});
    });
    expect(await mounted(child)).toBe('not mounted\n');
    await without.hibernate();
    const resumed = await Sandbox.connect(without.sandboxId, conn());
    expect(await mounted(resumed)).toBe('not mounted\n');
    // a create from its snapshot still asks for the choice
    await expect(Sandbox.create({ ...conn(), snapshotId: again.id })).rejects.toMatchObject({ code: 'volume_missing' });
  });

  it('a process holding a file open on a volume makes the capture fail with volume_busy naming it; the volume is intact', async () => {
    const v = await volume();
    const s = await sandbox({ volumes: { '/mnt/busy': v.name } });
    await s.files.write('/mnt/busy/log', 'line\n');
    const holder = await s.commands.run('exec 3>>/mnt/busy/log; exec sleep 300', { background: true, timeoutMs: 0 });
    await s.commands.run('until pgrep -x sleep >/dev/null; do sleep 0.1; done', { timeoutMs: 60_000 });
    const err = await s.createSnapshot().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'volume_busy', status: 409 });
    expect((err as Error).message).toMatch(/sleep \(pid \d+\)/);
    expect(await s.files.read('/mnt/busy/log')).toBe('line\n');
    await s.files.write('/mnt/busy/log', 'still writable\n', { append: true });
    await holder.kill();
    await holder.wait().catch(() => {});
    const snap = await s.createSnapshot();
    await Snapshot.delete(snap.id, conn());
  });

  it('file writes under a volume while it is unmounted for a snapshot wait and land in the volume, never on the root disk', async () => {
    const v = await volume();
    const s = await sandbox({ volumes: { '/mnt/w': v.name } });
    // also through a symbolic link whose path does not say it leads into the volume
    await s.commands.run('ln -s /mnt/w /workspace/vlink');
    const written: string[] = [];
    const { failed } = await duringSnapshots(s, 2, async (i) => {
      await s.files.write(`/mnt/w/f${i}`, `file ${i}`);
      written.push(`f${i}`);
      await s.files.write(`/workspace/vlink/s${i}`, `via link ${i}`);
      written.push(`s${i}`);
    });
    expect(failed).toEqual([]);
    // every file is in the volume (seen by another sandbox) ...
    const other = await sandbox({ volumes: { '/v': v.name } });
    const listed = (await other.commands.run('ls /v')).stdout.split('\n').filter(Boolean).sort();
    expect(listed).toEqual([...written].sort());
    // ... and nothing under the mount point on the source's root disk
    // (the root file system bound elsewhere shows what the volume's mount covers; the link, made on
    // the root disk, shows that the bind worked)
    const under = await s.commands.run('set -e; mkdir -p /tmp/rootfs; mount --bind / /tmp/rootfs; trap "umount /tmp/rootfs" EXIT; readlink /tmp/rootfs/workspace/vlink; ls -A /tmp/rootfs/mnt/w');
    expect(under).toMatchObject({ exitCode: 0, stdout: '/mnt/w\n', stderr: '' });
  });

  it('a recursive remove never crosses into a mounted volume: refused before anything is removed', async () => {
    const v = await volume();
    const s = await sandbox({ volumes: { '/workspace/proj/data': v.name } });
    await s.files.write('/workspace/proj/data/keep.txt', 'kept');
    await s.files.write('/workspace/proj/src.txt', 'src');
    const err = await s.files.remove('/workspace/proj', { recursive: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'bad_request', status: 400 });
    expect((err as Error).message).toMatch(/mounted at \/workspace\/proj\/data/);
    expect(await s.files.read('/workspace/proj/data/keep.txt')).toBe('kept');
    expect(await s.files.read('/workspace/proj/src.txt')).toBe('src');
  });

  it('refuses bad names, unknown volumes and bad mount paths', async () => {
    for (const name of ['../x', '', 'x'.repeat(300), 'UPPER', 'a/b', '.hidden']) {
      const res = await api('POST', '/v1/volumes', { name });
      expect(res.status, JSON.stringify(name)).toBe(400);
    }
    expect((await api('GET', '/v1/volumes/..%2F..%2Fetc')).status).toBe(404);
    await expect(Volume.get('no-such-volume', conn())).rejects.toBeInstanceOf(VolumeNotFoundError);
    await expect(Volume.delete('no-such-volume', conn())).resolves.toBe(false);
    const v = await volume();
    await expect(Volume.create(v.name, conn())).rejects.toMatchObject({ code: 'already_exists', status: 409 });
    await expect(Sandbox.create({ ...conn(), volumes: { '/mnt/x': 'no-such-volume' } })).rejects.toMatchObject({ code: 'volume_not_found' });
    for (const p of ['relative', '/', '/proc/x', '/mnt/../etc', '/etc']) {
      const res = await api('POST', '/v1/sandboxes', { volumes: { [p]: v.name } });
      expect(res.status, p).toBe(400);
    }
    const list = await Volume.list(conn());
    expect(list.map((x) => x.name)).toContain(v.name);
  });
});
