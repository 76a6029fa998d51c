import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';

it('the benchmark runs (--quick) and prints its table', () => {
  const r = spawnSync(process.execPath, [path.resolve(__dirname, '../packages/cli/dist/bench/main.js'), '--quick'], {
    encoding: 'utf8',
    timeout: 600_000,
    env: { ...process.env, NULLSPACE_LOG_LEVEL: 'error' },
  });
  expect(r.status, r.stderr).toBe(0);
  for (const row of ['create from template -> agent answering', 'command round trip (true)', '1 MiB file write + read', 'idle sandbox memory (QEMU PSS)']) {
    expect(r.stdout).toContain(row);
  }
  expect(r.stdout).toMatch(/median\s+p95/);
}, 600_000);
