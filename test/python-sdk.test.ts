import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { cleanupDataDir, ownServer, tempDataDir } from './servers.js';
import { unittestCounts, writeLayerReport } from './report.js';

const repo = path.resolve(__dirname, '..');

/** Runs a command to its end (killed after `timeoutMs`), without blocking this process's event loop. */
function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.once('error', reject);
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

it('Python SDK: its unit and integration tests pass against a real server, and leave no sandbox alive', async () => {
  // a server of its own: whatever is alive on it afterwards was left by the Python tests
  const dataDir = tempDataDir();
  cleanupDataDir(dataDir);
  const server = await ownServer(dataDir);
  // (not spawnSync: the server runs in this process and must keep answering meanwhile)
  const r = await run('python3', ['-m', 'unittest', 'discover', '-s', 'sdk/python/tests', '-v'], {
    cwd: repo,
    env: { ...process.env, PYTHONPATH: path.join(repo, 'sdk/python'), NULLSPACE_TEST_API_URL: server.url, NULLSPACE_TEST_API_KEY: server.key },
    timeoutMs: 900_000,
  });
  const output = `${r.stdout}\n${r.stderr}`;
  const counts = unittestCounts(output);
  writeLayerReport('python', { passed: counts.ran - counts.skipped - counts.failures - counts.errors, failed: counts.failures + counts.errors, skipped: counts.skipped });
  if (r.status !== 0) console.error(output);
  expect(r.status, output.slice(-3000)).toBe(0);
  // the integration tests ran (they skip only without a server)
  expect(output).not.toMatch(/skipped 'NULLSPACE_TEST_API_URL/);
  expect(output).toMatch(/\nOK/);
  expect(counts.ran).toBeGreaterThan(0);

  const res = await fetch(`${server.url}/v1/sandboxes?limit=1000&state=creating,running,hibernating,paused,resuming,killing`, {
    headers: { authorization: `Bearer ${server.key}` },
  });
  const { sandboxes } = (await res.json()) as { sandboxes: Array<{ sandboxId: string; state: string; metadata: Record<string, string> }> };
  expect(sandboxes.map((s) => `${s.sandboxId} ${s.state} ${JSON.stringify(s.metadata)}`), 'sandboxes the Python tests left alive').toEqual([]);
  expect(fs.existsSync(dataDir)).toBe(true);
}, 900_000);
