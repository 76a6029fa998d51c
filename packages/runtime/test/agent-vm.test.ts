import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloneFile, createOverlay, findTemplate, hostProfile, Vm } from '@nullspace/runtime';
import { CACHE_DIR, TEST_ROOT } from '../../../test/env.js';

/**
 * The agent inside a real VM restored from the base template, driven directly through the runtime
 * (no server): reconnects, and an idle VM with nobody connected does not spin its vCPU.
 */
const cacheDir = CACHE_DIR;
const root = path.join(TEST_ROOT, `vm-${randomBytes(3).toString('hex')}`);
let vm: Vm | undefined;

function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

beforeAll(async () => {
  const t = findTemplate(cacheDir, 'base');
  if (!t) throw new Error('base template missing (the global setup builds it)');
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  await cloneFile(t.memFile, path.join(root, 'mem'));
  await createOverlay(t.disk, path.join(root, 'disk.qcow2'));
  const profile = await hostProfile({ accel: t.requirements.accel as 'kvm' | 'tcg', cpuModel: t.requirements.cpuModel });
  vm = await Vm.launch(
    profile,
    {
      id: `vmtest-${randomBytes(3).toString('hex')}`,
      memoryMiB: t.memoryMiB,
      vcpus: t.vcpus,
      kernel: t.image.kernel,
      initrd: t.image.initrd,
      cmdline: t.image.cmdline,
      ramFile: path.join(root, 'mem'),
      disk: path.join(root, 'disk.qcow2'),
      diskSizeBytes: t.image.diskSizeMiB * 1024 * 1024,
      runDir: path.join(root, 'run'),
      consoleLog: false,
      allowInternetAccess: false,
    },
    true,
  );
  await vm.restoreState(t.stateFile);
});

afterAll(async () => {
  await vm?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('agent inside a VM', () => {
  it('serves files and processes after a restore', async () => {
    const agent = await vm!.connectAgent(15_000);
    const w = agent.open('fs.write', { path: '/workspace/x.txt' });
    await w.write(Buffer.from('inside'));
    w.end();
    await w.result;
    const out: Buffer[] = [];
    const r = await agent.open('proc.start', { cmd: 'cat /workspace/x.txt; uname -r' }, { onData: (_c, b) => void out.push(b) }).result;
    expect(r.exitCode).toBe(0);
    expect(Buffer.concat(out).toString()).toMatch(/^inside\d+\.\d+/);
  });

  it('refuses to start a process while user processes are frozen, instead of freezing itself', async () => {
    const agent = await vm!.connectAgent(15_000);
    await agent.call('sys.freeze', {});
    try {
      await expect(agent.open('proc.start', { cmd: 'true' }).result).rejects.toMatchObject({ code: 'io_error', message: expect.stringMatching(/frozen/) });
      // it still answers
      expect(await agent.call('sys.info', {})).toBeTruthy();
    } finally {
      await agent.call('sys.thaw', {});
    }
    expect((await agent.open('proc.start', { cmd: 'true' }).result).exitCode).toBe(0);
  });

  it('survives the host disconnecting and reconnecting, many times', async () => {
    for (let i = 0; i < 5; i++) {
      vm!.disconnectAgent();
      const agent = await vm!.connectAgent(15_000);
      const info = await agent.call('sys.info');
      expect(info.protocol).toBe(1);
    }
    // a process started in one session can be followed from the next
    const agent = vm!.agent!;
    const started = agent.open('proc.start', { cmd: 'sleep 1; echo late' });
    // (one call at a time: a list still in flight when the session is cut below would reject unheard)
    let pid: number | undefined;
    while (pid === undefined) {
      const { processes } = await agent.call('proc.list');
      pid = processes.find((x) => x.cmd === 'sleep 1; echo late')?.pid;
      if (pid === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    started.cancel();
    vm!.disconnectAgent();
    const again = await vm!.connectAgent(15_000);
    const out: Buffer[] = [];
    const end = await again.open('proc.attach', { pid }, { onData: (_c, b) => void out.push(b) }).result;
    expect(end.exitCode).toBe(0);
    expect(Buffer.concat(out).toString()).toBe('late\n');
  });

  it('does not spin the vCPU while nobody is connected', async () => {
    vm!.disconnectAgent();
    await new Promise((r) => setTimeout(r, 1000));
    const hz = 100; // USER_HZ
    const before = cpuTicks(vm!.pid);
    await new Promise((r) => setTimeout(r, 4000));
    const used = (cpuTicks(vm!.pid) - before) / hz;
    // an idle guest costs a little (timer ticks under emulation); a spinning one costs ~4 s here
    expect(used).toBeLessThan(1.0);
    const agent = await vm!.connectAgent(15_000);
    expect((await agent.call('sys.info')).protocol).toBe(1);
  });
});
