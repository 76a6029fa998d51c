import { expect, it } from 'vitest';
import { runScript } from './servers.js';

it('the benchmark runs (--quick) and prints its table', async () => {
  // (SIGTERM: the benchmark then removes everything it started)
  const r = await runScript('packages/cli/dist/bench/main.js', ['--quick'], { env: { NULLSPACE_LOG_LEVEL: 'error' }, timeoutMs: 590_000, signal: 'SIGTERM' });
  expect(r.code, r.stderr).toBe(0);
  for (const row of ['create from template -> agent answering', 'command round trip (true)', '1 MiB file write + read', 'idle sandbox memory (QEMU PSS)', 'template build, 3 steps + service: cold', 'create from custom template -> service answers', 'image import (busybox', 'preview URL request (keep-alive)', 'request to hibernated autoResume -> answer', 'E2B SDK: command round trip (true)', 'egress: download (32 MiB), no rules']) {
    expect(r.stdout).toContain(row);
  }
  expect(r.stdout).toMatch(/median\s+p95/);
  expect(r.stdout).not.toMatch(/image import rows:/);
}, 600_000);
