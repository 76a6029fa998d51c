import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  FileNotFoundError,
  InvalidArgumentError,
  Sandbox,
  SandboxNotFoundError,
  SandboxNotRunningError,
  TemplateNotFoundError,
  TimeoutError,
} from 'nullspace';
import { conn, killAll, sandbox } from './helpers.js';
import { leftoverQemu } from './env.js';
import { cleanupDataDir, ownServer, pools, tempDataDir, waitFor } from './servers.js';

describe('TypeScript SDK against real sandboxes', () => {
  let sbx: Sandbox;
  beforeAll(async () => {
    sbx = await Sandbox.create({ ...conn(), template: 'base', metadata: { suite: 'nullspace-tests', role: 'shared' } });
  });
  afterAll(() => killAll(sbx));

  it('runs the product example: write, read, python', async () => {
    await sbx.files.write('/workspace/state.txt', 'baseline\n');
    expect(await sbx.files.read('/workspace/state.txt')).toBe('baseline\n');
    const r = await sbx.commands.run("python3 -c 'print(6*7)'");
    expect(r.stdout).toBe('42\n');
    expect(r.exitCode).toBe(0);
  });

  it('reports state, template and metadata', async () => {
    const info = await sbx.getInfo();
    expect(info).toMatchObject({ sandboxId: sbx.sandboxId, state: 'running', template: 'base', metadata: { role: 'shared' }, memoryMiB: 512, vcpus: 1 });
    expect(info.expiresAt!.getTime()).toBeGreaterThan(Date.now());
    expect(await sbx.isRunning()).toBe(true);
    const again = await Sandbox.connect(sbx.sandboxId, conn());
    expect((await again.commands.run('cat /workspace/state.txt')).stdout).toBe('baseline\n');
  });

  it('has a current clock, its id as hostname, and /workspace as cwd', async () => {
    const r = await sbx.commands.run('date +%s; hostname; pwd');
    const [epoch, hostname, cwd] = r.stdout.trim().split('\n');
    expect(Math.abs(Number(epoch) - Date.now() / 1000)).toBeLessThan(5);
    expect(hostname).toBe(sbx.sandboxId);
    expect(cwd).toBe('/workspace');
  });

  it('writes and reads bytes, and streams 8 MiB both ways', async () => {
    const small = Uint8Array.from([0, 1, 2, 255, 254, 10, 13]);
    await sbx.files.write('/workspace/bin/small.bin', small);
    expect(Buffer.from(await sbx.files.read('/workspace/bin/small.bin', { format: 'bytes' }))).toEqual(Buffer.from(small));

    const big = randomBytes(8 * 1024 * 1024);
    let offset = 0;
    const upload = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (offset >= big.length) return controller.close();
        controller.enqueue(big.subarray(offset, offset + 300_000));
        offset += 300_000;
      },
    });
    const info = await sbx.files.write('/workspace/bin/big.bin', upload);
    expect(info.size).toBe(big.length);
    const h = createHash('sha256');
    let n = 0;
    for await (const chunk of (await sbx.files.read('/workspace/bin/big.bin', { format: 'stream' })) as unknown as AsyncIterable<Uint8Array>) {
      h.update(chunk);
      n += chunk.length;
    }
    expect(n).toBe(big.length);
    expect(h.digest('hex')).toBe(createHash('sha256').update(big).digest('hex'));
    const inGuest = await sbx.commands.run('sha256sum /workspace/bin/big.bin');
    expect(inGuest.stdout.split(' ')[0]).toBe(createHash('sha256').update(big).digest('hex'));
  });

  it('lists, stats, makes dirs, renames and removes', async () => {
    expect(await sbx.files.makeDir('/workspace/tree/a/b')).toBe(true);
    expect(await sbx.files.makeDir('/workspace/tree/a/b')).toBe(false);
    await sbx.files.write([
      { path: '/workspace/tree/one.txt', data: '1' },
      { path: '/workspace/tree/a/two.txt', data: '22' },
    ]);
    const top = await sbx.files.list('/workspace/tree');
    expect(top.map((e) => [e.name, e.type])).toEqual([
      ['a', 'dir'],
      ['one.txt', 'file'],
    ]);
    const deep = await sbx.files.list('/workspace/tree', { depth: 3 });
    expect(deep.map((e) => e.path)).toEqual(expect.arrayContaining(['/workspace/tree/a/two.txt', '/workspace/tree/a/b']));
    const st = await sbx.files.getInfo('/workspace/tree/a/two.txt');
    expect(st).toMatchObject({ type: 'file', size: 2, name: 'two.txt' });
    expect(st.modifiedTime.getTime()).toBeGreaterThan(Date.now() - 60_000);
    const moved = await sbx.files.rename('/workspace/tree/one.txt', '/workspace/tree/a/uno.txt');
    expect(moved.path).toBe('/workspace/tree/a/uno.txt');
    expect(await sbx.files.exists('/workspace/tree/one.txt')).toBe(false);
    expect(await sbx.files.exists('/workspace/tree/a/uno.txt')).toBe(true);
    await sbx.files.remove('/workspace/tree');
    expect(await sbx.files.exists('/workspace/tree')).toBe(false);
    await expect(sbx.files.read('/workspace/tree/a/uno.txt')).rejects.toBeInstanceOf(FileNotFoundError);
    await expect(sbx.files.list('/workspace/nothing')).rejects.toMatchObject({ code: 'file_not_found', status: 404 });
  });

  it('runs commands with exit codes, stderr, cwd, envs and stdin', async () => {
    const r = await sbx.commands.run('echo out; echo err >&2; exit 7');
    expect(r).toMatchObject({ exitCode: 7, stdout: 'out\n', stderr: 'err\n', timedOut: false });
    const env = await sbx.commands.run('echo "$GREETING from $(pwd)"', { cwd: '/tmp', envs: { GREETING: 'hello' } });
    expect(env.stdout).toBe('hello from /tmp\n');
    const cat = await sbx.commands.run('tr a-z A-Z', { input: 'shout\n' });
    expect(cat.stdout).toBe('SHOUT\n');
    const missing = await sbx.commands.run('definitely-not-a-command');
    expect(missing.exitCode).toBe(127);
  });

  it('streams output while the command runs', async () => {
    const chunks: Array<[string, number]> = [];
    const t0 = Date.now();
    const r = await sbx.commands.run('for i in 1 2 3; do echo tick $i; sleep 0.5; done', {
      onStdout: (d) => chunks.push([d, Date.now() - t0]),
    });
    expect(r.stdout).toBe('tick 1\ntick 2\ntick 3\n');
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    // the first line arrived well before the command ended
    expect(chunks[0]![1]).toBeLessThan(chunks[chunks.length - 1]![1] - 700);
  });

  it('says how much output it lost when the client fell behind (the rest is intact)', async () => {
    const total = 30_000_000;
    let blocked = false;
    const r = await sbx.commands.run(`head -c ${total} /dev/zero | tr '\\0' a`, {
      timeoutMs: 120_000,
      onStdout: () => {
        // a consumer that stops reading for a while: the server keeps at most 4 MiB for it
        if (!blocked) {
          blocked = true;
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 8000);
        }
      },
    });
    expect(r.exitCode).toBe(0);
    expect(r.lostBytes).toBeGreaterThan(0);
    expect(r.stdout.length + r.lostBytes).toBe(total);
    expect(/^a*$/.test(r.stdout)).toBe(true);
    // a client that keeps up loses nothing
    expect((await sbx.commands.run('head -c 100000 /dev/zero | wc -c')).lostBytes).toBe(0);
  });

  it('keeps the agent\'s answers within a frame: long command lines are listed shortened', async () => {
    const long = `true # ${'<&>'.repeat(40_000)}`;
    for (let i = 0; i < 3; i++) expect((await sbx.commands.run(long)).exitCode).toBe(0);
    const listed = (await sbx.commands.list()).filter((p) => p.cmd.startsWith('true # <&>'));
    expect(listed.length).toBeGreaterThanOrEqual(3);
    for (const p of listed) expect(Buffer.byteLength(p.cmd)).toBeLessThanOrEqual(2048 + 3);
    // and the agent still answers
    expect((await sbx.commands.run('echo alive')).stdout).toBe('alive\n');
  });

  it('never turns a device node or a FIFO into a file, nor blocks on one', async () => {
    await expect(sbx.files.write('/dev/null', 'x')).rejects.toMatchObject({ code: 'bad_request', status: 400 });
    await sbx.commands.run('rm -f /tmp/fifo && mkfifo /tmp/fifo');
    await expect(sbx.files.write('/tmp/fifo', 'x', { append: true })).rejects.toMatchObject({ code: 'bad_request' });
    await expect(sbx.files.write('/tmp/fifo', 'x')).rejects.toMatchObject({ code: 'bad_request' });
    expect((await sbx.commands.run('test -c /dev/null && test -p /tmp/fifo && echo intact')).stdout).toBe('intact\n');
  });

  it('kills a command that outlives its timeout and says so', async () => {
    const t0 = Date.now();
    const err = await sbx.commands.run('echo started; sleep 30', { timeoutMs: 1500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as TimeoutError).code).toBe('command_timeout');
    expect((err as TimeoutError).result).toMatchObject({ timedOut: true, stdout: 'started\n', signal: 'SIGKILL' });
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect((await sbx.commands.run('pgrep -x sleep || echo none')).stdout.trim()).toBe('none');
  });

  it('runs background commands: list, stdin, wait, kill', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    expect(h.pid).toBeGreaterThan(1);
    const listed = await sbx.commands.list();
    expect(listed.find((p) => p.pid === h.pid)).toMatchObject({ running: true, cmd: 'cat' });
    await h.sendStdin('via stdin\n', { close: true });
    const done = await h.wait();
    expect(done).toMatchObject({ exitCode: 0, stdout: 'via stdin\n' });

    const sleeper = await sbx.commands.run('sleep 60', { background: true });
    expect(await sleeper.kill()).toBe(true);
    const killed = await sleeper.wait();
    expect(killed.signal).toBe('SIGKILL');
    expect(await sbx.commands.kill(sleeper.pid)).toBe(false);
    await expect(sbx.commands.connect(999_999)).rejects.toMatchObject({ code: 'process_not_found' });
  });

  it('lists sandboxes with metadata filters and pagination', async () => {
    const ids: string[] = [];
    for await (const s of Sandbox.list({ ...conn(), query: { metadata: { role: 'shared' } } })) ids.push(s.sandboxId);
    expect(ids).toContain(sbx.sandboxId);
    const none: string[] = [];
    for await (const s of Sandbox.list({ ...conn(), query: { metadata: { role: 'no-such-role' } } })) none.push(s.sandboxId);
    expect(none).toEqual([]);
    // pages of one: two sandboxes of their own (other tests' sandboxes come and go meanwhile)
    const tag = randomBytes(6).toString('hex');
    const a = await sandbox({ metadata: { page: tag } });
    const b = await sandbox({ metadata: { page: tag } });
    const pager = Sandbox.list({ ...conn(), limit: 1, query: { metadata: { page: tag } } });
    const page1 = await pager.nextItems();
    expect(page1).toHaveLength(1);
    expect(pager.hasNext).toBe(true);
    const page2 = await pager.nextItems();
    expect(page2).toHaveLength(1);
    const page3 = pager.hasNext ? await pager.nextItems() : [];
    expect(page3).toEqual([]);
    expect(pager.hasNext).toBe(false);
    expect([...page1, ...page2].map((s) => s.sandboxId).sort()).toEqual([a.sandboxId, b.sandboxId].sort());
  });

  it('extends the timeout', async () => {
    const before = (await sbx.getInfo()).expiresAt!.getTime();
    await sbx.setTimeout(600_000);
    const after = await sbx.getInfo();
    expect(after.timeoutMs).toBe(600_000);
    expect(after.expiresAt!.getTime()).toBeGreaterThan(before);
  });
});

describe('TypeScript SDK errors', () => {
  it('maps unknown ids, templates and keys to typed errors', async () => {
    await expect(Sandbox.connect('sbx_0000000000000000', conn())).rejects.toBeInstanceOf(SandboxNotFoundError);
    await expect(Sandbox.create({ ...conn(), template: 'missing' })).rejects.toBeInstanceOf(TemplateNotFoundError);
    await expect(Sandbox.create({ ...conn(), apiKey: 'not-the-key-at-all' })).rejects.toBeInstanceOf(AuthenticationError);
    await expect(Sandbox.create({ ...conn(), timeoutMs: 10 })).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await Sandbox.kill('sbx_0000000000000000', conn())).toBe(false);
  });

  it('kills idempotently; a killed sandbox refuses work with 409', async () => {
    const s = await sandbox();
    await s.kill();
    await s.kill();
    expect(await Sandbox.kill(s.sandboxId, conn())).toBe(true);
    const info = await s.getInfo();
    expect(info).toMatchObject({ state: 'killed', endReason: 'killed by request' });
    await expect(s.files.read('/etc/hostname')).rejects.toBeInstanceOf(SandboxNotRunningError);
    await expect(s.commands.run('true')).rejects.toMatchObject({ code: 'sandbox_not_running', status: 409 });
    await expect(s.setTimeout(10_000)).rejects.toBeInstanceOf(SandboxNotRunningError);
  });
});

describe('warm pool', () => {
  it('hands out prepared sandboxes that are fresh: own identity, randomness, clock and environment, no processes', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '2' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const health = () => pools(server);
    await waitFor('a full warm pool', async () => ((await health()).warmPool.ready === 2 ? true : undefined), 60_000);
    // the prepared VMs are running already; each create takes one of them (its QEMU process)
    const prepared = new Set(leftoverQemu(dataDir));
    expect(prepared.size).toBe(2);
    const [a, b] = await Promise.all([0, 1].map((i) => Sandbox.create({ ...c, template: 'base', envs: { WHO: `sandbox-${i}` } })));
    try {
      for (const s of [a!, b!]) {
        const pid = leftoverQemu(`nullspace-${s.sandboxId}`)[0];
        expect(prepared.has(pid!)).toBe(true);
        // the warm-up process start of its preparation is not listed, and nothing runs
        expect(await s.commands.list()).toEqual([]);
      }
      const probe = 'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; cat /proc/sys/kernel/random/boot_id /etc/machine-id; hostname; date +%s; echo "$WHO"';
      const [ra, rb] = await Promise.all([a!.commands.run(probe), b!.commands.run(probe)]);
      const [randA, bootA, machineA, hostA, clockA, whoA] = ra.stdout.trim().split('\n');
      const [randB, bootB, machineB, hostB, clockB, whoB] = rb.stdout.trim().split('\n');
      expect(randA).toMatch(/^[0-9a-f]{32}$/);
      expect(randA).not.toBe(randB);
      expect(bootA).not.toBe(bootB);
      expect(machineA).toMatch(/^[0-9a-f]{32}$/);
      expect(machineA).not.toBe(machineB);
      expect([hostA, hostB]).toEqual([a!.sandboxId, b!.sandboxId]);
      for (const clock of [clockA, clockB]) expect(Math.abs(Number(clock) - Date.now() / 1000)).toBeLessThan(5);
      expect([whoA, whoB]).toEqual(['sandbox-0', 'sandbox-1']);
      // the pool refills in the background
      await waitFor('the warm pool refilled', async () => ((await health()).warmPool.ready === 2 ? true : undefined), 60_000);
    } finally {
      await Promise.all([a!.kill(), b!.kill()]);
    }
    // prepared VMs are not sandboxes: they go with the server
    await server.close();
    expect(leftoverQemu(dataDir)).toEqual([]);
  });
});

describe('TCG translation buffer', () => {
  it('NULLSPACE_TCG_BUFFER_MIB caps each VM\'s translation buffer (under TCG); the sandbox works as usual', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_TCG_BUFFER_MIB: '48' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const s = await Sandbox.create(c);
    try {
      expect((await s.commands.run("python3 -c 'import json, email, http.client; print(6*7)'")).stdout).toBe('42\n');
      const pid = leftoverQemu(`nullspace-${s.sandboxId}`)[0]!;
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const accel = argv[argv.indexOf('-accel') + 1]!;
      if (server.host.profile.accel === 'kvm') {
        expect(accel).toBe('kvm');
        return;
      }
      expect(accel).toBe('tcg,thread=multi,tb-size=48');
      // the buffer is QEMU's one anonymous executable mapping: 48 MiB instead of 1 GiB
      const exec = fs
        .readFileSync(`/proc/${pid}/maps`, 'utf8')
        .split('\n')
        .filter((l) => / rwxp 00000000 00:00 0\s*$/.test(l))
        .map((l) => l.split(' ')[0]!.split('-').map((h) => parseInt(h, 16)))
        .map(([a, b]) => (b! - a!) / 2 ** 20);
      expect(exec.length).toBeGreaterThan(0);
      expect(Math.max(...exec)).toBeLessThanOrEqual(48);
    } finally {
      await s.kill();
    }
  });

  it('refuses a buffer too small to be useful, clearly', async () => {
    const { loadConfig } = await import('@nullspace/server');
    expect(() => loadConfig({ ...process.env, NULLSPACE_API_KEY: 'k'.repeat(20), NULLSPACE_TCG_BUFFER_MIB: '4' }, { dataDir: tempDataDir() })).toThrow(/NULLSPACE_TCG_BUFFER_MIB/);
  });
});
