import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox, type SandboxMetrics } from 'nullspace';
import { loadConfig, startServer } from '@nullspace/server';
import { tracked } from './clones.js';
import { cleanupDataDir, cli, ownServer, tempDataDir, waitFor } from './servers.js';

const MiB = 1024 * 1024;

describe('sandbox metrics', () => {
  it('samples CPU, guest memory, host memory and disk; CPU rises under a burner and memory under an allocation within a couple of samples', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_METRICS_INTERVAL_MS: '1000', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const sbx = tracked(await Sandbox.create(c));
    const info = await sbx.getInfo();
    const samples = async (since: number, n: number): Promise<SandboxMetrics[]> =>
      waitFor(`${n} samples since ${since}`, async () => {
        const m = await sbx.getMetrics({ start: since });
        return m.length >= n ? m : undefined;
      }, 60_000);

    const idle = await samples(0, 2);
    for (const m of idle) {
      expect(m.cpuCount).toBe(info.vcpus);
      expect(m.memTotalBytes).toBeGreaterThan(300 * MiB);
      expect(m.memTotalBytes).toBeLessThanOrEqual(info.memoryMiB * MiB);
      expect(m.memUsedBytes).toBeGreaterThan(0);
      expect(m.memUsedBytes).toBeLessThan(m.memTotalBytes);
      expect(m.hostMemBytes).toBeGreaterThan(10 * MiB);
      expect(m.diskTotalBytes).toBeGreaterThanOrEqual(1024 * MiB);
      expect(m.diskUsedBytes).toBeGreaterThan(0);
      expect(m.cpuUsedPct).toBeGreaterThanOrEqual(0);
      expect(m.cpuUsedPct).toBeLessThanOrEqual(100);
    }
    const idleCpu = Math.min(...idle.map((m) => m.cpuUsedPct));
    expect(idleCpu).toBeLessThan(50);
    const baseMem = Math.max(...idle.map((m) => m.memUsedBytes));
    const baseHost = Math.max(...idle.map((m) => m.hostMemBytes ?? 0));

    // a CPU burner: within a couple of samples CPU use is near all of its vCPUs
    const burnAt = Date.now();
    await sbx.commands.run('yes > /dev/null', { background: true, timeoutMs: 0 });
    const burning = await samples(burnAt, 3);
    expect(Math.max(...burning.slice(0, 3).map((m) => m.cpuUsedPct)), JSON.stringify(burning.map((m) => m.cpuUsedPct))).toBeGreaterThan(80);
    await sbx.commands.run('pkill yes || true');

    // 256 MiB allocated and touched: guest memory in use and the VM's host memory grow by about that
    const allocAt = Date.now();
    await sbx.commands.run(`python3 -c "b = bytearray(256*1024*1024)
import time
time.sleep(600)" > /dev/null 2>&1 &
while [ "$(awk '/MemAvailable/ {print $2}' /proc/meminfo)" -gt $(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) - ${Math.floor(baseMem / 1024)} - 200*1024 )) ]; do sleep 0.2; done`, { timeoutMs: 60_000 });
    const grown = await waitFor('memory growth in the samples', async () => {
      const m = await sbx.getMetrics({ start: allocAt });
      return m.find((x) => x.memUsedBytes > baseMem + 200 * MiB);
    }, 30_000);
    expect(grown.hostMemBytes!).toBeGreaterThan(baseHost + 150 * MiB);

    // disk: the guest's root file system as df sees it; 64 MiB written show in the samples
    const dfSize = Number((await sbx.commands.run('df -B1 --output=size / | tail -1')).stdout.trim());
    expect(idle[0]!.diskTotalBytes).toBe(dfSize);
    const baseDisk = Math.max(...idle.map((m) => m.diskUsedBytes));
    const writeAt = Date.now();
    await sbx.commands.run('head -c 64M /dev/urandom > /workspace/disk-blob && sync', { timeoutMs: 120_000 });
    await waitFor('disk use growth in the samples', async () => {
      const m = await sbx.getMetrics({ start: writeAt });
      return m.find((x) => x.diskUsedBytes > baseDisk + 48 * MiB);
    }, 30_000);

    // a window: only the samples within it
    const all = await sbx.getMetrics();
    const mid = all[Math.floor(all.length / 2)]!.timestamp;
    const window = await sbx.getMetrics({ start: mid, end: new Date(mid.getTime() + 1500) });
    expect(window.length).toBeGreaterThan(0);
    for (const m of window) {
      expect(m.timestamp.getTime()).toBeGreaterThanOrEqual(mid.getTime());
      expect(m.timestamp.getTime()).toBeLessThanOrEqual(mid.getTime() + 1500);
    }
    for (let i = 1; i < all.length; i++) expect(all[i]!.timestamp.getTime()).toBeGreaterThan(all[i - 1]!.timestamp.getTime());

    // the CLI
    const out = await cli({ url: server.url, key: server.key }, ['sandbox', 'metrics', sbx.sandboxId]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout.split('\n')[0]).toMatch(/^TIME\s+CPU%/);
    expect(out.stdout.trim().split('\n').length).toBeGreaterThan(2);
    const json = await cli({ url: server.url, key: server.key }, ['sandbox', 'metrics', sbx.sandboxId, '--json', '--start', String(allocAt)]);
    expect((JSON.parse(json.stdout) as unknown[]).length).toBeGreaterThan(0);

    // the Prometheus route (the API key required)
    const prom = await fetch(`${server.url}/v1/metrics`, { headers: { authorization: `Bearer ${server.key}` } });
    expect(prom.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await prom.text();
    expect(text).toMatch(/^nullspace_sandboxes_running 1$/m);
    expect(text).toMatch(new RegExp(`^nullspace_sandbox_host_memory_bytes\\{sandbox_id="${sbx.sandboxId}"\\} \\d+$`, 'm'));
    expect(text).toMatch(/^# TYPE nullspace_host_memory_available_bytes gauge$/m);
    expect((await fetch(`${server.url}/v1/metrics`)).status).toBe(401);

    // bad input; an unknown sandbox
    const bad = async (q: string) => (await fetch(`${server.url}/v1/sandboxes/${sbx.sandboxId}/metrics?${q}`, { headers: { authorization: `Bearer ${server.key}` } })).json() as Promise<{ error: { code: string } }>;
    expect((await bad('start=yesterday')).error.code).toBe('validation_failed');
    expect((await bad('start=2000&end=1000')).error.code).toBe('validation_failed');
    expect((await bad('since=1')).error.code).toBe('validation_failed');
    const none = await fetch(`${server.url}/v1/sandboxes/sbx_0000000000000000/metrics`, { headers: { authorization: `Bearer ${server.key}` } });
    expect(none.status).toBe(404);

    // a killed sandbox keeps no samples
    await sbx.kill();
    await waitFor('samples dropped', async () => ((await fetch(`${server.url}/v1/sandboxes/${sbx.sandboxId}/metrics`, { headers: { authorization: `Bearer ${server.key}` } }).then((r) => r.json())) as { metrics: unknown[] }).metrics.length === 0 ? true : undefined, 10_000);
  });

  it('keeps a sandbox\'s samples across a hibernation and a server restart, and drops them when it ends', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const env = { NULLSPACE_METRICS_INTERVAL_MS: '500', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' };
    const first = await ownServer(dataDir, env);
    const c = { apiUrl: first.url, apiKey: first.key };
    const sbx = tracked(await Sandbox.create(c));
    const atLeast = async (s: Sandbox, n: number, since = 0) =>
      waitFor(`${n} samples`, async () => {
        const m = await s.getMetrics({ start: since });
        return m.length >= n ? m : undefined;
      }, 60_000);
    const stamps = (m: SandboxMetrics[]) => m.map((x) => x.timestamp.getTime());
    const early = stamps(await atLeast(sbx, 3));

    // hibernated: the samples taken while it ran stay
    await sbx.hibernate();
    const paused = stamps(await sbx.getMetrics());
    expect(paused.slice(0, early.length)).toEqual(early);
    const resumedAt = Date.now();
    const again = await Sandbox.connect(sbx.sandboxId, c);
    await atLeast(again, 2, resumedAt);

    // a server restart on the same data dir: every sample taken before is still there, then new ones
    const before = stamps(await again.getMetrics());
    await first.close();
    const second = await startServer(loadConfig({ ...process.env, NULLSPACE_LOG_LEVEL: 'warn', NULLSPACE_API_KEY: first.key, ...env }, { dataDir, port: 0 }));
    onTestFinished(() => second.close());
    const c2 = { apiUrl: second.url, apiKey: first.key };
    const restartedAt = Date.now();
    const after = await Sandbox.connect(sbx.sandboxId, c2);
    expect(stamps(await after.getMetrics()).slice(0, before.length)).toEqual(before);
    await atLeast(after, 2, restartedAt);

    // ended: none, and its file is gone
    const file = path.join(dataDir, 'metrics', `${sbx.sandboxId}.jsonl`);
    expect(fs.existsSync(file)).toBe(true);
    await after.kill();
    expect(await after.getMetrics()).toEqual([]);
    expect(fs.existsSync(file)).toBe(false);
  });
});
