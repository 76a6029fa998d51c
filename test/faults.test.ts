import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { RateLimitError, Sandbox } from 'nullspace';
import { conn, sandbox } from './helpers.js';
import { cleanupDataDir, freePort, ownServer, qemuPid, serverProcess, tempDataDir, waitFor } from './servers.js';

describe('faults', () => {
  it('reports a sandbox whose QEMU was killed from outside as failed, cleans its files, keeps serving others', async () => {
    const victim = await sandbox();
    const pid = qemuPid(victim.sandboxId);
    expect(pid).toBeGreaterThan(0);
    const dir = path.join(inject('dataDir'), 'sandboxes', victim.sandboxId);
    expect(fs.existsSync(dir)).toBe(true);
    process.kill(pid!, 'SIGKILL');
    const info = await waitFor('failed state', async () => {
      const i = await victim.getInfo();
      return i.state === 'failed' ? i : undefined;
    });
    expect(info.errorCode).toBe('vm_exited');
    expect(info.endReason).toMatch(/exited unexpectedly/);
    expect(fs.existsSync(dir)).toBe(false);
    await expect(victim.commands.run('true')).rejects.toMatchObject({ code: 'sandbox_not_running' });
    const other = await sandbox();
    expect((await other.commands.run('echo alive')).stdout).toBe('alive\n');
  });

  it('kills a sandbox past its timeout', async () => {
    const s = await sandbox({ timeoutMs: 2000 });
    const info = await waitFor('timeout kill', async () => {
      const i = await s.getInfo();
      return i.state === 'killed' ? i : undefined;
    });
    expect(info.endReason).toMatch(/^timeout/);
    expect(qemuPid(s.sandboxId)).toBeUndefined();
  });

  it('handles concurrent kills of one sandbox and concurrent creates', async () => {
    const created = await Promise.all([sandbox(), sandbox(), sandbox()]);
    expect(new Set(created.map((s) => s.sandboxId)).size).toBe(3);
    const outs = await Promise.all(created.map((s, i) => s.commands.run(`echo ${i}`)));
    expect(outs.map((o) => o.stdout)).toEqual(['0\n', '1\n', '2\n']);
    const target = created[0]!;
    await Promise.all([target.kill(), target.kill(), Sandbox.kill(target.sandboxId, conn())]);
    expect((await target.getInfo()).state).toBe('killed');
    expect(qemuPid(target.sandboxId)).toBeUndefined();
  });

  it('fails a command stream cleanly when its sandbox is killed mid-command', async () => {
    const s = await sandbox();
    let begun!: () => void;
    const begin = new Promise<void>((r) => (begun = r));
    const run = s.commands.run('echo begin; sleep 30', { onStdout: (d) => d.includes('begin') && begun() }).then(
      () => undefined,
      (e: unknown) => e,
    );
    // killed once the command has surely started (it printed), however slow the guest
    await begin;
    await s.kill();
    expect(await run).toMatchObject({ code: expect.stringMatching(/agent_unavailable|stream_ended/) });
  });
});

describe('admission control', () => {
  it('refuses sandboxes past the configured limit with 429, and admits again after a kill', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_MAX_SANDBOXES: '1' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const first = await Sandbox.create(c);
    try {
      const err = await Sandbox.create(c).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RateLimitError);
      expect((err as RateLimitError).code).toBe('too_many_sandboxes');
      expect((err as RateLimitError).status).toBe(429);
    } finally {
      await first.kill();
    }
    const second = await Sandbox.create(c);
    await second.kill();
  });

  it('refuses sandboxes when the host memory reserve would be crossed, with 503', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_MIN_HOST_AVAILABLE_MIB: String(10 * 1024 * 1024) });
    const err = await Sandbox.create({ apiUrl: server.url, apiKey: server.key }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'insufficient_memory', status: 503 });
  });
});

describe('server restart', () => {
  it('re-adopts running sandboxes after kill -9 of the server, and marks those whose QEMU is gone', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const key = 'restart-key-0123456789';
    const port = freePort();
    const first = await serverProcess(dataDir, key, port);
    const c = { apiUrl: first.url, apiKey: key };
    const keep = await Sandbox.create(c);
    const lose = await Sandbox.create(c);
    await keep.files.write('/workspace/note.txt', 'survives');
    const bg = await keep.commands.run('sleep 600', { background: true });
    await first.kill();
    // QEMU outlives the server; one of them dies while no server runs
    expect(qemuPid(keep.sandboxId)).toBeGreaterThan(0);
    process.kill(qemuPid(lose.sandboxId)!, 'SIGKILL');
    await waitFor('qemu gone', async () => (qemuPid(lose.sandboxId) === undefined ? true : undefined));

    const second = await serverProcess(dataDir, key, port);
    const again = await Sandbox.connect(keep.sandboxId, { apiUrl: second.url, apiKey: key });
    expect(await again.files.read('/workspace/note.txt')).toBe('survives');
    expect((await again.commands.list()).find((p) => p.pid === bg.pid)?.running).toBe(true);
    expect((await again.commands.run('echo after restart')).stdout).toBe('after restart\n');
    expect(await Sandbox.getInfo(lose.sandboxId, { apiUrl: second.url, apiKey: key })).toMatchObject({ state: 'failed', errorCode: 'vm_exited' });
    await again.kill();
    expect(qemuPid(keep.sandboxId)).toBeUndefined();
  });
});
