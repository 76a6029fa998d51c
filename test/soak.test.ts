import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { leftoverQemu } from './env.js';
import { runScript, uidClaims } from './servers.js';

const SOAK = 'packages/cli/dist/soak/main.js';

/** Runs `npm run soak` (its built entry point): its exit code, output and data dir. */
async function soak(args: string[], env: Record<string, string> = {}) {
  // (SIGTERM: the soak then removes everything it started)
  const r = await runScript(SOAK, args, { env, timeoutMs: 880_000, signal: 'SIGTERM' });
  return { ...r, out: `${r.stdout}\n${r.stderr}`, dataDir: /data dir (\S+),/.exec(r.stderr)?.[1] ?? '' };
}

/** Nothing of the run is left on the host: its data dir, its QEMU processes, its uid claims. */
function expectNothingLeft(dataDir: string): void {
  expect(dataDir).not.toBe('');
  expect(fs.existsSync(dataDir)).toBe(false);
  expect(leftoverQemu(`${dataDir}/`)).toEqual([]);
  expect(uidClaims(dataDir)).toEqual([]);
}

const row = (name: string, result: 'pass' | 'FAIL') => new RegExp(`^${name.replace(/[()']/g, '\\$&')}\\s.*\\s${result}$`, 'm');

it('the soak runs a cycle after its warm-up, prints its table and meets every target', async () => {
  const r = await soak(['--cycles', '1', '--warmup', '1']);
  expect(r.code, r.out).toBe(0);
  for (const name of ['cycles failed', 'sandboxes not ended (API)', 'server open fds', 'server RSS (MiB)', 'after the stop: QEMU processes', 'after the stop: DB rows in layers']) {
    expect(r.stdout).toMatch(row(name, 'pass'));
  }
  expect(r.stdout).toMatch(/^whole cycle \(not the warm-up\)\s+1\s/m);
  expect(r.stdout).not.toContain('FAIL');
  expect(r.stdout).toContain('soak passed');
  expectNothingLeft(r.dataDir);
}, 900_000);

it('a missed target fails the soak (a sandbox leaked on purpose), which still removes everything it started', async () => {
  const r = await soak(['--cycles', '0', '--warmup', '1'], { NULLSPACE_SOAK_INJECT: 'leak-sandbox' });
  expect(r.code, r.out).toBe(1);
  expect(r.stdout).toMatch(row('cycles failed', 'pass'));
  for (const name of ['sandboxes not ended (API)', "QEMU processes beyond the pools' slots", 'after the stop: QEMU processes', 'after the stop: uid claims', 'after the stop: DB rows in sandboxes']) {
    expect(r.stdout).toMatch(row(name, 'FAIL'));
  }
  expect(r.stdout).toContain('soak FAILED');
  expectNothingLeft(r.dataDir);
}, 900_000);

it.skipIf(fs.existsSync(path.resolve(__dirname, '../packages/cli/dist/fuzz/index.js')))('--fuzz-minutes without the fuzzer module says so, before starting anything', async () => {
  const r = await soak(['--fuzz-minutes', '1']);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain('--fuzz-minutes needs the API fuzzer');
  expect(r.dataDir).toBe('');
});
