import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect, it, onTestFinished } from 'vitest';
import { leftoverQemu } from './env.js';

const SOAK = path.resolve(__dirname, '../packages/cli/dist/soak/main.js');

/**
 * Runs `npm run soak` (its built entry point): its exit code, output and data dir. Asynchronously:
 * a worker blocked for minutes would miss vitest's own calls.
 */
async function soak(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [SOAK, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  // the soak removes everything it started on SIGTERM too
  onTestFinished(() => void child.kill('SIGTERM'));
  const status = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { status, stdout, stderr, out: `${stdout}\n${stderr}`, dataDir: /data dir (\S+),/.exec(stderr)?.[1] ?? '' };
}

/** Nothing of the run is left on the host: its data dir, its QEMU processes, its uid claims. */
function expectNothingLeft(dataDir: string): void {
  expect(dataDir).not.toBe('');
  expect(fs.existsSync(dataDir)).toBe(false);
  expect(leftoverQemu(`${dataDir}/`)).toEqual([]);
  const claims = path.join(process.env.NULLSPACE_RUN_DIR ?? '/run/nullspace', 'vm-uids');
  const ours = (fs.existsSync(claims) ? fs.readdirSync(claims) : []).filter((f) => {
    try {
      return fs.readFileSync(path.join(claims, f), 'utf8').startsWith(`${dataDir} `);
    } catch {
      return false;
    }
  });
  expect(ours).toEqual([]);
}

const row = (name: string, result: 'pass' | 'FAIL') => new RegExp(`^${name.replace(/[()']/g, '\\$&')}\\s.*\\s${result}$`, 'm');

it('the soak runs a cycle after its warm-up, prints its table and meets every target', async () => {
  const r = await soak(['--cycles', '1']);
  expect(r.status, r.out).toBe(0);
  for (const name of ['cycles failed', 'sandboxes not ended (API)', 'server open fds', 'server RSS (MiB)', 'after the stop: QEMU processes', 'after the stop: DB rows in layers']) {
    expect(r.stdout).toMatch(row(name, 'pass'));
  }
  expect(r.stdout).toMatch(/^whole cycle \(not the warm-up\)\s+1\s/m);
  expect(r.stdout).not.toContain('FAIL');
  expect(r.stdout).toContain('soak passed');
  expectNothingLeft(r.dataDir);
}, 900_000);

it('a missed target fails the soak (a sandbox leaked on purpose), which still removes everything it started', async () => {
  const r = await soak(['--cycles', '0'], { NULLSPACE_SOAK_INJECT: 'leak-sandbox' });
  expect(r.status, r.out).toBe(1);
  expect(r.stdout).toMatch(row('cycles failed', 'pass'));
  for (const name of ['sandboxes not ended (API)', "QEMU processes beyond the pools' slots", 'after the stop: QEMU processes', 'after the stop: uid claims', 'after the stop: DB rows in sandboxes']) {
    expect(r.stdout).toMatch(row(name, 'FAIL'));
  }
  expect(r.stdout).toContain('soak FAILED');
  expectNothingLeft(r.dataDir);
}, 900_000);

it.skipIf(fs.existsSync(path.resolve(__dirname, '../packages/cli/dist/fuzz/index.js')))('--fuzz-minutes without the fuzzer module says so, before starting anything', async () => {
  const r = await soak(['--fuzz-minutes', '1']);
  expect(r.status).toBe(1);
  expect(r.stderr).toContain('--fuzz-minutes needs the API fuzzer');
  expect(r.dataDir).toBe('');
});
